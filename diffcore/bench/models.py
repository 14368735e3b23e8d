"""Paper-sized (and tiny) architectures with random weights: the same cost as real weights, no weights needed;
their FLOPs, and the device's matmul rate (the floor under any generation speed)."""

from __future__ import annotations

import time

import torch

from ..profiles import ASSETS

# stabilityai/stable-diffusion-xl-base-1.0 unet/config.json (CosXL has the same architecture)
SDXL_UNET = dict(
    act_fn="silu",
    addition_embed_type="text_time",
    addition_embed_type_num_heads=64,
    addition_time_embed_dim=256,
    attention_head_dim=(5, 10, 20),
    block_out_channels=(320, 640, 1280),
    cross_attention_dim=2048,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    in_channels=4,
    layers_per_block=2,
    norm_num_groups=32,
    out_channels=4,
    projection_class_embeddings_input_dim=2816,
    sample_size=128,
    transformer_layers_per_block=(1, 2, 10),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    use_linear_projection=True,
)
SDXL_VAE = dict(
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    latent_channels=4,
    layers_per_block=2,
    norm_num_groups=32,
    sample_size=1024,
    scaling_factor=0.13025,
    force_upcast=False,
)
# text encoders: CLIP ViT-L/14 text tower, OpenCLIP ViT-bigG/14 text tower with projection
SDXL_TEXT = dict(
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    projection_dim=768,
    hidden_act="quick_gelu",
)
SDXL_TEXT_2 = dict(
    hidden_size=1280,
    intermediate_size=5120,
    num_hidden_layers=32,
    num_attention_heads=20,
    projection_dim=1280,
    hidden_act="gelu",
)
# a small SDXL-architecture stand-in for CPUs (same blocks, far fewer channels)
TINY_UNET = dict(
    block_out_channels=(32, 64),
    layers_per_block=1,
    sample_size=8,
    in_channels=4,
    out_channels=4,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    attention_head_dim=(2, 4),
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=8,
    transformer_layers_per_block=(1, 2),
    projection_class_embeddings_input_dim=6 * 8 + 64,
    cross_attention_dim=128,
    norm_num_groups=8,
)
TINY_VAE = dict(
    block_out_channels=(16, 32),
    down_block_types=("DownEncoderBlock2D",) * 2,
    up_block_types=("UpDecoderBlock2D",) * 2,
    latent_channels=4,
    layers_per_block=1,
    norm_num_groups=8,
    sample_size=64,
    scaling_factor=0.13025,
    force_upcast=False,
)
TINY_TEXT = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=2,
    projection_dim=64,
    hidden_act="quick_gelu",
)
ARCHS = {
    "sdxl": (SDXL_UNET, SDXL_VAE, SDXL_TEXT, SDXL_TEXT_2, "ViT-B-32"),
    "tiny": (TINY_UNET, TINY_VAE, TINY_TEXT, TINY_TEXT, None),
}
PROMPT = "Generate heavy snow to the {}, a natural object"  # the paper's contextual template (Sec. 3)
NEGATIVE = (
    "train, car, newspaper, sunlight, people, human, tree, cityscape, road, landscape, bus, building, desk, "
    "computer, paper texture, windows, streets, rails, traffic, sky, road lines, traffic lights"
)  # authors'


# ---------------------------------------------------------------- models with random weights
def random_sdxl(arch: str, device: torch.device, dtype: torch.dtype):
    """A StableDiffusionXLPipeline of the given architecture with random weights, built on the device."""
    from diffusers import AutoencoderKL, EDMEulerScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from ..generate import COSXL_SCHEDULER

    unet_cfg, vae_cfg, t1, t2, _ = ARCHS[arch]
    tok = CLIPTokenizer.from_pretrained(ASSETS / "tiny-t2i" / "tokenizer", model_max_length=77)  # real CLIP BPE
    text = dict(
        vocab_size=49408, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407
    )
    with torch.device(device):  # initialise straight on the GPU: a 2.6B-parameter UNet takes minutes on a CPU
        unet = UNet2DConditionModel(**unet_cfg)
        vae = AutoencoderKL(**vae_cfg)
        te1 = CLIPTextModel(CLIPTextConfig(**text, **t1))
        te2 = CLIPTextModelWithProjection(CLIPTextConfig(**text, **t2))
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=te1,
        text_encoder_2=te2,
        tokenizer=tok,
        tokenizer_2=tok,
        unet=unet,
        scheduler=EDMEulerScheduler(**COSXL_SCHEDULER),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device, dtype)


def random_clip(arch: str, device: torch.device, dtype: torch.dtype):
    """filter.ClipEncoder around an open_clip model with random weights (ViT-B/32, the authors' filter)."""
    import open_clip

    from ..filter import ClipEncoder

    name = ARCHS[arch][4]
    if name is None:  # the shipped tiny CLIP config
        from ..profiles import TINY_CLIP_CONFIG

        open_clip.add_model_config(TINY_CLIP_CONFIG)
        name = TINY_CLIP_CONFIG.stem
    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=None, device=device)
    return ClipEncoder(model.to(dtype), preprocess, device)


def unet_flops_per_image_step(pipe, size: int) -> float:
    """FLOPs of one UNet call on a CFG pair (2 latents), i.e. per image and step, counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    u, dev, dt = pipe.unet, pipe.unet.device, pipe.unet.dtype
    lat = torch.zeros(2, 4, size // 8, size // 8, device=dev, dtype=dt)  # (2, 4, h, w)
    ctx = torch.zeros(2, 77, u.config.cross_attention_dim, device=dev, dtype=dt)  # (2, 77, D)
    pooled = torch.zeros(
        2, u.add_embedding.linear_1.in_features - 6 * u.config.addition_time_embed_dim, device=dev, dtype=dt
    )
    ids = torch.zeros(2, 6, device=dev, dtype=dt)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        u(
            lat,
            torch.tensor(1.0, device=dev),
            encoder_hidden_states=ctx,
            added_cond_kwargs={"text_embeds": pooled, "time_ids": ids},
        )
    return float(fc.get_total_flops())


def matmul_tflops(device: torch.device, n: int = 8192, reps: int = 10) -> float:
    """The device's bf16 matmul rate, measured now (the FLOP floor's denominator)."""
    if device.type != "cuda":
        n, reps = 1024, 3
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e12


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_reset(device):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gb(device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def flop_report(intervals: tuple[int, ...] = (2, 3, 5)) -> dict:
    """Shallow FLOP share and FLOP-based speed-up estimates for the SDXL UNet and the tiny stand-ins."""
    from .. import tiny
    from ..engine.stepcache import call_flops, expected_speedup, meta_unet

    # name: (config, sample shape (CFG batch 2, 4 latent channels, latent side), what it is)
    cases = {
        "sdxl": (SDXL_UNET, (2, 4, 64, 64), "SDXL base UNet, 512 px (64x64 latent), CFG batch 2"),
        "bench-tiny": (
            TINY_UNET,
            (2, 4, 32, 32),
            "bench.py's tiny SDXL-architecture stand-in, 64 px (32x32 latent: its VAE downsamples by 2), CFG batch 2",
        ),
        "embedded-tiny": (
            tiny.UNET_CONFIG,
            (2, 4, 8, 8),
            "the embedded profile's tiny SD-style UNet (tiny.UNET_CONFIG), 32 px (8x8 latent), CFG batch 2",
        ),
    }
    out = {
        "note": "FLOP counts on the meta device (torch FlopCounterMode); speed-ups are ESTIMATES assuming time "
        "proportional to FLOPs, not measurements",
        "torch": torch.__version__,
    }
    for name, (cfg, shape, what) in cases.items():
        full, shallow = call_flops(meta_unet(cfg), shape)
        share = shallow / full
        out[name] = {
            "what": what,
            "sample_shape": list(shape),
            "full_gflop": round(full / 1e9, 2),
            "shallow_gflop": round(shallow / 1e9, 2),
            "shallow_flop_share": round(share, 4),
            "estimated_unet_speedup": {str(n): round(expected_speedup(n, share), 2) for n in intervals},
        }
    return out
