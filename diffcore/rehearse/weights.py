"""Stand-in weights for a rehearsal: random, seeded weights in exactly the files `--weights W` expects.

Every file below has the real format, key layout and architecture, so that the paper profile's own, unpatched loading
code reads it; only the numbers are random, so every image, score and accuracy made with them means nothing.

Under W (names as plan.jobs.paper_paths and the rehearsal use them):
- `cosxl.safetensors`: Stability's CosXL single file, i.e. the SDXL UNet, VAE and both text encoders in the original
  (SGM/LDM) key layout, float16, plus ComfyUI's two `edm_vpred.*` scalars. Read by generate.load_pipeline through
  diffusers' own `StableDiffusionXLPipeline.from_single_file(path, config=W/sdxl-base-1.0, local_files_only=True)`.
- `sdxl-base-1.0/`: the config folder of stabilityai/stable-diffusion-xl-base-1.0 (model_index.json, each
  component's config, the EulerDiscrete scheduler, the two real CLIP BPE tokenizers; no weights): that call's config.
- `sdxl-vae-fp16-fix/`: madebyollin/sdxl-vae-fp16-fix, an AutoencoderKL folder (SDXL VAE architecture, float32, its
  own seed). Read by load_pipeline's `vae=`.
- `clip-vit-b-32/open_clip_model.safetensors`: OpenAI's CLIP ViT-B/32 as an open_clip state dict (float16). Read by
  filter.load_clip as "ViT-B-32-quickgelu".
- `wide_resnet101_2.pth`: torchvision's Wide_ResNet101_2_Weights.IMAGENET1K_V1 format, torch.save of the state dict
  (1000 classes, float16 as that file). Read by models.build_model(pretrained=).
- `instruct-pix2pix/`: timbrooks/instruct-pix2pix, a diffusers StableDiffusionInstructPix2PixPipeline folder (SD 1.5
  UNet with 8 input channels, SD VAE, CLIP ViT-L/14 text encoder, the real tokenizer, EulerAncestral scheduler, no
  safety checker; float32). Read by edit.load_editor.

Sizes (`SIZES`): "full" has the real shapes (a ~7 GB cosxl.safetensors; for a GPU machine's disk and memory) and
"tiny" the same structure at toy widths (levels, block types, layers per block, transformer depths that differ per
level, the text_time embedding, two text encoders whose widths add up to the cross-attention width, a 4-level VAE
that downsamples by 8), written in seconds on a CPU. CLIP ViT-B/32 and Wide-ResNet-101-2 have their real
architecture in both sizes (their names fix it). Real, in both sizes: file formats, key names and layouts, tensor
dtypes, configs' structure, the BPE vocabulary (49408 tokens) and merges, the schedulers' configs.

The CosXL file is made by our own diffusers -> original converter (`cosxl_state_dict`), the inverse of what diffusers'
single-file loader does (diffusers/loaders/single_file_utils.py: convert_ldm_unet_checkpoint,
convert_ldm_vae_checkpoint, convert_ldm_clip_checkpoint, convert_open_clip_checkpoint); tests load it with that
loader and compare every tensor with the modules it came from.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from ..bench.models import SDXL_TEXT, SDXL_TEXT_2, SDXL_UNET, SDXL_VAE
from ..engine.checks import json_text
from ..engine.runtime import derive_seed, provenance

# ---------------------------------------------------------------- presets
# stabilityai/stable-diffusion-xl-base-1.0 unet/config.json (bench.models.SDXL_UNET, which the GPU benchmarks time),
# equivalently Stability-AI/generative-models configs/inference/sd_xl_base.yaml (model_channels 320, channel_mult
# [1, 2, 4], num_res_blocks 2, transformer_depth [1, 2, 10], context_dim 2048, adm_in_channels 2816, num_head_channels
# 64): 2,567,463,684 parameters. attention_head_dim (5, 10, 20) names head COUNTS (head width 64); cross_attention_dim
# 2048 = 768 (CLIP ViT-L) + 1280 (OpenCLIP bigG) hidden states; projection_class_embeddings_input_dim 2816 = 6
# micro-conditioning numbers x 256 + the 1280 pooled text embedding.
SDXL_UNET_FULL = dict(SDXL_UNET)
# stabilityai/stable-diffusion-xl-base-1.0 vae/config.json (the SD VAE architecture, SDXL's scaling factor): the
# benchmarks' SDXL_VAE with the file's force_upcast (SDXL's VAE overflows in fp16, REFERENCE; the fp16-fix sets False).
SDXL_VAE_FULL = {**SDXL_VAE, "in_channels": 3, "out_channels": 3, "force_upcast": True}
# text_encoder/config.json of SDXL base and of SD 1.5: CLIP ViT-L/14's text tower (QuickGELU), 123,060,480 parameters.
# eos_token_id 2 is what those files say: transformers then pools at the argmax id (<|endoftext|>, the largest).
TEXT_FILE = dict(vocab_size=49408, max_position_embeddings=77, layer_norm_eps=1e-5, bos_token_id=0, eos_token_id=2,
                 pad_token_id=1)  # fmt: skip
CLIP_L_TEXT_FULL = {**SDXL_TEXT, **TEXT_FILE}  # the benchmarks' widths (bench.models), the files' ids
# text_encoder_2/config.json of SDXL base: OpenCLIP ViT-bigG/14's text tower (GELU), 694,659,840 parameters.
OPEN_CLIP_G_TEXT_FULL = {**SDXL_TEXT_2, **TEXT_FILE}
# timbrooks/instruct-pix2pix unet/config.json: SD 1.5's UNet with conv_in widened to 8 channels (noisy latent + image
# latent), 859,532,484 parameters.
SD15_UNET_FULL = dict(
    sample_size=64,
    in_channels=8,
    out_channels=4,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    attention_head_dim=8,  # again a head count (head width 40..160)
    cross_attention_dim=768,
    norm_num_groups=32,
)
SD_VAE_FULL = {**SDXL_VAE_FULL, "sample_size": 512, "scaling_factor": 0.18215}  # SD 1.x VAE: 83,653,863 parameters

# Tiny: the structure of the real ones (levels, block types, layers per block, a transformer depth that differs per
# level, the text_time embedding, cross-attention width = the two text widths) at toy widths.
TINY_SDXL_UNET = dict(
    sample_size=8,
    block_out_channels=(32, 64, 128),
    transformer_layers_per_block=(1, 2, 3),
    attention_head_dim=(1, 2, 4),  # head width 32
    cross_attention_dim=32 + 64,  # the tiny text widths below
    addition_time_embed_dim=8,
    projection_class_embeddings_input_dim=6 * 8 + 64,
)
TINY_SD15_UNET = dict(sample_size=8, block_out_channels=(32, 64, 64, 64), attention_head_dim=2, cross_attention_dim=32)
TINY_VAE = dict(sample_size=64, block_out_channels=(32, 32, 64, 64))  # 4 levels: latents are 1/8 of the image
# Tiny text towers: the real vocabulary and context (the real tokenizer feeds them), toy widths and depths.
TINY_CLIP_L_TEXT = dict(
    hidden_size=32, intermediate_size=64, num_attention_heads=2, num_hidden_layers=2, projection_dim=32
)
TINY_OPEN_CLIP_G_TEXT = dict(
    hidden_size=64, intermediate_size=128, num_attention_heads=4, num_hidden_layers=2, projection_dim=64
)

SIZES = {
    "full": {
        "unet": SDXL_UNET_FULL,
        "vae": SDXL_VAE_FULL,
        "text_encoder": CLIP_L_TEXT_FULL,
        "text_encoder_2": OPEN_CLIP_G_TEXT_FULL,
        "edit_unet": SD15_UNET_FULL,
        "edit_vae": SD_VAE_FULL,
        "edit_text_encoder": CLIP_L_TEXT_FULL,
    },
    "tiny": {
        "unet": {**SDXL_UNET_FULL, **TINY_SDXL_UNET},
        "vae": {**SDXL_VAE_FULL, **TINY_VAE},
        # The two widths must differ, as 768 and 1280 do: diffusers picks the loader of each text encoder by
        # whether the file's position-embedding width equals the encoder's (create_diffusers_clip_model_from_ldm).
        # Two layers are enough for text encoder 2: diffusers' "xl_base" detection key (resblocks.9, single_file_utils
        # CHECKPOINT_KEY_NAMES) is only read when no config= is given, and diffcore always passes config_dir.
        "text_encoder": {**CLIP_L_TEXT_FULL, **TINY_CLIP_L_TEXT},
        "text_encoder_2": {**OPEN_CLIP_G_TEXT_FULL, **TINY_OPEN_CLIP_G_TEXT},
        "edit_unet": {**SD15_UNET_FULL, **TINY_SD15_UNET},
        "edit_vae": {**SD_VAE_FULL, **TINY_VAE},
        "edit_text_encoder": {**CLIP_L_TEXT_FULL, **TINY_CLIP_L_TEXT},
    },
}

# model_index.json of stabilityai/stable-diffusion-xl-base-1.0
SDXL_MODEL_INDEX = {
    "_class_name": "StableDiffusionXLPipeline",
    "force_zeros_for_empty_prompt": True,
    "scheduler": ["diffusers", "EulerDiscreteScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "tokenizer_2": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}
# stabilityai/stable-diffusion-xl-base-1.0 scheduler/scheduler_config.json
SDXL_SCHEDULER = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    prediction_type="epsilon",
    interpolation_type="linear",
    timestep_spacing="leading",
    steps_offset=1,
    use_karras_sigmas=False,
)
# timbrooks/instruct-pix2pix scheduler/scheduler_config.json: EulerAncestral over SD's scaled-linear betas.
EDIT_SCHEDULER = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
)
# CosXL's EDM v-prediction noise range: two scalar float32 tensors that CosXL files carry (leejet/stable-diffusion.cpp
# model.cpp lists "edm_vpred.sigma_min" as "Found in CosXL" and detects CosXL by "edm_vpred.sigma_max"; ComfyUI reads
# them in comfy/supported_models.py SDXL.model_type -> V_PREDICTION_EDM and writes them as 0-d .float() tensors in
# comfy_extras/nodes_model_merging.py save_checkpoint). The values are not readable offline: ours are ComfyUI's
# ModelSamplingContinuousEDM defaults, which are also the authors' EDMEulerScheduler's (generate.COSXL_SCHEDULER).
# diffusers ignores both keys.
COSXL_EDM_VPRED = {"edm_vpred.sigma_max": 120.0, "edm_vpred.sigma_min": 0.002}
CONTEXT_LENGTH = 77  # CLIP's text context: tokenizer model_max_length and position embeddings

# Storage dtype of each file, as the real one (the CLIP choice is ours: half the size, exact in an fp32 model).
FILE_DTYPES = {
    "cosxl": torch.float16,  # cosxl.safetensors is ~6.9 GB for 3.47 G parameters
    "vae_fp16_fix": torch.float32,  # sdxl-vae-fp16-fix's diffusion_pytorch_model.safetensors (335 MB)
    "clip": torch.float16,
    "wide_resnet101_2": torch.float16,  # IMAGENET1K_V1: 242.9 MB for 126.9 M parameters (torchvision docs)
    "instruct_pix2pix": torch.float32,  # timbrooks/instruct-pix2pix's safetensors (unet 3.44 GB)
}
FILES = {  # name -> path under the weights folder (plan.jobs.paper_paths and the rehearsal's edit model)
    "sdxl_config": "sdxl-base-1.0",
    "cosxl": "cosxl.safetensors",
    "vae_fp16_fix": "sdxl-vae-fp16-fix",
    "clip": "clip-vit-b-32/open_clip_model.safetensors",
    "wide_resnet101_2": "wide_resnet101_2.pth",
    "instruct_pix2pix": "instruct-pix2pix",
}
MANIFEST = "rehearsal-weights.json"  # size and seed of what the folder holds: a re-run with others is refused
NOTE = "random stand-in weights in the real formats: images, scores and accuracies made with them mean nothing"


# ---------------------------------------------------------------- seeded components
@contextlib.contextmanager
def seeded(seed: int, dtype: torch.dtype = torch.float32) -> Iterator[None]:
    """Modules built inside draw their initial weights from `seed` and are created in `dtype` (a full-size float16
    UNet never exists in float32: half the memory); the caller's RNG state and default dtype are restored after."""
    previous = torch.get_default_dtype()  # process-wide, like the RNG: build from one thread at a time
    # Module constructors draw from torch's global generator, so it is seeded inside a fork and restored after.
    with torch.random.fork_rng(devices=[]):  # CPU RNG only; modules are built on the CPU
        torch.manual_seed(seed)
        torch.set_default_dtype(dtype)
        try:
            yield
        finally:
            torch.set_default_dtype(previous)


def clip_tokenizer(pad_token: str = "<|endoftext|>"):
    """The real CLIP BPE tokenizer (49408 tokens), built offline from open_clip's bundled bpe_simple_vocab_16e6.txt.gz
    exactly as open_clip's SimpleTokenizer builds its vocabulary (open_clip/tokenizer.py): 256 byte symbols, the same
    with '</w>', one token per merge, then the two special tokens. SDXL's tokenizer pads with <|endoftext|>,
    tokenizer_2 with "!" (id 0), which then also turns a "!" in a prompt into id 0 as in SDXL (diffusers#4153)."""
    from transformers import CLIPTokenizer

    vocab, merges = _bpe()
    return CLIPTokenizer(vocab=dict(vocab), merges=list(merges), pad_token=pad_token, model_max_length=CONTEXT_LENGTH)


@functools.cache
def _bpe() -> tuple[tuple[tuple[str, int], ...], tuple[tuple[str, str], ...]]:
    """(token, id) pairs and merges of open_clip's vocabulary, read once per process (about a second)."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    lines = gzip.open(default_bpe()).read().decode("utf-8").split("\n")
    merges = tuple(tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1])  # line 0 is the version header
    units = list(bytes_to_unicode().values())
    vocab = units + [u + "</w>" for u in units] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    return tuple((t, i) for i, t in enumerate(vocab)), merges


def text_encoder(cfg: dict, projection: bool = False):
    """A transformers CLIPTextModel (or ...WithProjection) from a preset dict, in the current default dtype."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cls = CLIPTextModelWithProjection if projection else CLIPTextModel
    return cls(CLIPTextConfig(**cfg, architectures=[cls.__name__])).eval()


def _check_size(size: str) -> dict:
    if size not in SIZES:
        raise ValueError(f"size={size!r}: expected one of {sorted(SIZES)}")
    return SIZES[size]


def build_sdxl_components(size: str = "tiny", seed: int = 0) -> dict:
    """The SDXL components cosxl.safetensors is written from, as diffusers/transformers objects (float16, the file's
    dtype): `StableDiffusionXLPipeline(**build_sdxl_components(size, seed))` holds the same weights as the file."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel

    cfg, dtype = _check_size(size), FILE_DTYPES["cosxl"]
    with seeded(derive_seed(seed, "rehearse", "unet"), dtype):
        unet = UNet2DConditionModel(**cfg["unet"]).eval()
    with seeded(derive_seed(seed, "rehearse", "vae"), dtype):
        vae = AutoencoderKL(**cfg["vae"]).eval()
    with seeded(derive_seed(seed, "rehearse", "text_encoder"), dtype):
        te1 = text_encoder(cfg["text_encoder"])
    with seeded(derive_seed(seed, "rehearse", "text_encoder_2"), dtype):
        te2 = text_encoder(cfg["text_encoder_2"], projection=True)
    return dict(
        unet=unet,
        vae=vae,
        text_encoder=te1,
        text_encoder_2=te2,
        tokenizer=clip_tokenizer("<|endoftext|>"),
        tokenizer_2=clip_tokenizer("!"),
        scheduler=EulerDiscreteScheduler(**SDXL_SCHEDULER),
    )


def build_edit_components(size: str = "tiny", seed: int = 0) -> dict:
    """The InstructPix2Pix pipeline's components (float32), as StableDiffusionInstructPix2PixPipeline takes them."""
    from diffusers import AutoencoderKL, EulerAncestralDiscreteScheduler, UNet2DConditionModel

    cfg, dtype = _check_size(size), FILE_DTYPES["instruct_pix2pix"]
    with seeded(derive_seed(seed, "rehearse", "edit_unet"), dtype):
        unet = UNet2DConditionModel(**cfg["edit_unet"]).eval()
    with seeded(derive_seed(seed, "rehearse", "edit_vae"), dtype):
        vae = AutoencoderKL(**cfg["edit_vae"]).eval()
    with seeded(derive_seed(seed, "rehearse", "edit_text_encoder"), dtype):
        te = text_encoder(cfg["edit_text_encoder"])
    return dict(
        unet=unet,
        vae=vae,
        text_encoder=te,
        tokenizer=clip_tokenizer("<|endoftext|>"),
        scheduler=EulerAncestralDiscreteScheduler(**EDIT_SCHEDULER),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


# ---------------------------------------------------------------- diffusers -> original (SGM / LDM) key layout
# ResBlock parts: sgm openaimodel.ResBlock has in_layers = (GroupNorm, SiLU, conv), emb_layers = (SiLU, Linear),
# out_layers = (GroupNorm, SiLU, Dropout, conv), skip_connection; diffusers' ResnetBlock2D names them as below
# (single_file_utils.update_unet_resnet_ldm_to_diffusers renames them back).
UNET_RESNET_PARTS = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
# Top-level UNet modules (single_file_utils DIFFUSERS_TO_LDM_MAPPING["unet"]): time_embed and label_emb.0 are
# (Linear, SiLU, Linear) sequences, out is (GroupNorm, SiLU, conv).
UNET_TOP = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}


def _unet_resnet(rest: list[str]) -> str:
    return ".".join([UNET_RESNET_PARTS[rest[0]], *rest[1:]])


def unet_key_to_original(key: str, config: dict) -> str:
    """One diffusers UNet2DConditionModel key -> its name in the original UNetModel (without model.diffusion_model.).

    Original layout (sgm openaimodel.UNetModel): input_blocks[0] = conv_in, then per level L resnet(+transformer)
    blocks and, except at the last level, one downsampler block (`.0.op`); middle_block = resnet, transformer,
    resnet; output_blocks: per level L+1 resnet(+transformer) blocks, the level's upsampler appended to its last
    block, as `.2` after a transformer or `.1` without one. Transformer keys are the same in both layouts.
    """
    per = config["layers_per_block"] + 1  # blocks per level: L resnets (+1 downsampler) down, L+1 resnets up
    p = key.split(".")
    module, _, leaf = key.rpartition(".")
    if module in UNET_TOP:
        return f"{UNET_TOP[module]}.{leaf}"
    if p[0] == "mid_block":  # middle_block = resnet 0, transformer, resnet 1
        kind, j, rest = p[1], int(p[2]), p[3:]
        if kind == "resnets":
            return f"middle_block.{2 * j}.{_unet_resnet(rest)}"
        if kind == "attentions":
            return ".".join(["middle_block.1", *rest])
    elif p[0] in ("down_blocks", "up_blocks"):
        i, kind, j, rest = int(p[1]), p[2], int(p[3]), p[4:]
        if kind == "downsamplers":  # rest: conv.weight
            return ".".join([f"input_blocks.{(i + 1) * per}.0.op", *rest[1:]])
        if kind == "upsamplers":  # rest: conv.weight
            slot = 2 if "CrossAttn" in config["up_block_types"][i] else 1
            return ".".join([f"output_blocks.{i * per + per - 1}.{slot}", *rest])
        block = f"input_blocks.{1 + i * per + j}" if p[0] == "down_blocks" else f"output_blocks.{i * per + j}"
        if kind == "resnets":
            return f"{block}.0.{_unet_resnet(rest)}"
        if kind == "attentions":
            return ".".join([f"{block}.1", *rest])
    raise KeyError(f"{key}: no original (SGM) name known for this UNet key")


def unet_to_original(state: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    if not isinstance(config["layers_per_block"], int):
        raise ValueError(f"layers_per_block={config['layers_per_block']}: the original layout needs one int")
    return {"model.diffusion_model." + unet_key_to_original(k, config): v for k, v in state.items()}


# VAE mid-block attention (single_file_utils.update_vae_attentions_ldm_to_diffusers): the original AttnBlock's
# q, k, v and proj_out are 1x1 convolutions, diffusers' Attention has Linear layers of the same (out, in) weights.
VAE_ATTENTION_PARTS = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def vae_key_to_original(key: str, config: dict) -> str:
    """One diffusers AutoencoderKL key -> its name in the original (ldm/sgm) AutoencoderKL (without
    first_stage_model.). The decoder's `up` list is stored in reverse order: diffusers' up_blocks[i] is up[n-1-i]
    (single_file_utils.convert_ldm_vae_checkpoint)."""
    n = len(config["block_out_channels"])
    p = key.split(".")
    if p[0] in ("quant_conv", "post_quant_conv") or p[1:2] in (["conv_in"], ["conv_out"]):
        return key
    side, rest = p[0], p[1:]
    if rest[0] in ("down_blocks", "up_blocks"):
        i, kind, j, tail = int(rest[1]), rest[2], int(rest[3]), rest[4:]
        level = f"down.{i}" if rest[0] == "down_blocks" else f"up.{n - 1 - i}"
        if kind in ("downsamplers", "upsamplers"):
            return ".".join([side, level, "downsample" if kind == "downsamplers" else "upsample", *tail])
        if kind == "resnets":
            tail = ["nin_shortcut" if tail[0] == "conv_shortcut" else tail[0], *tail[1:]]
            return ".".join([side, level, "block", str(j), *tail])
    elif rest[0] == "mid_block":
        kind, j, tail = rest[1], int(rest[2]), ".".join(rest[3:])
        if kind == "resnets":
            return f"{side}.mid.block_{j + 1}.{tail}"
        part, _, leaf = tail.rpartition(".")
        return f"{side}.mid.attn_1.{VAE_ATTENTION_PARTS[part]}.{leaf}"
    elif rest[0] == "conv_norm_out":
        return ".".join([side, "norm_out", *rest[1:]])
    raise KeyError(f"{key}: no original (ldm) name known for this VAE key")


def vae_to_original(state: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in state.items():
        name = vae_key_to_original(k, config)
        if ".mid.attn_1." in name and name.endswith("weight") and v.ndim == 2:
            v = v.reshape(*v.shape, 1, 1)  # (C, C) Linear -> (C, C, 1, 1) conv, as the original file stores it
        out["first_stage_model." + name] = v
    return out


def clip_l_to_original(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Text encoder 1 (SGM FrozenCLIPEmbedder wraps a transformers CLIPTextModel): the transformers names under
    conditioner.embedders.0.transformer.text_model. (single_file_utils LDM_CLIP_PREFIX_TO_REMOVE). transformers >= 5.6
    dropped CLIPTextModel's `text_model.` level, which diffusers strips again when loading; position_ids, a
    non-persistent buffer now, is in the files SDXL and ComfyUI wrote (supported_models.SDXL
    .process_clip_state_dict_for_saving) and ignored on load."""
    out = {}
    for k, v in state.items():
        k = k if k.startswith("text_model.") else "text_model." + k
        out["conditioner.embedders.0.transformer." + k] = v
    out["conditioner.embedders.0.transformer.text_model.embeddings.position_ids"] = torch.arange(CONTEXT_LENGTH)[None]
    return out


# OpenCLIP text tower names (open_clip/transformer.py: ResidualAttentionBlock ln_1, attn (nn.MultiheadAttention),
# ln_2, mlp.c_fc, mlp.c_proj; TextTransformer token_embedding, positional_embedding, ln_final, text_projection);
# the inverse of single_file_utils DIFFUSERS_TO_LDM_MAPPING["openclip"].
OPEN_CLIP_LAYER_PARTS = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
    "self_attn.out_proj": "attn.out_proj",
}
OPEN_CLIP_TOP = {
    "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
    "text_model.embeddings.position_embedding.weight": "positional_embedding",
    "text_model.final_layer_norm.weight": "ln_final.weight",
    "text_model.final_layer_norm.bias": "ln_final.bias",
}


def open_clip_text_to_original(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Text encoder 2 (SGM FrozenOpenCLIPEmbedder2 holds an open_clip CLIP without its image tower) under
    conditioner.embedders.1.model.: q/k/v projections concatenated into nn.MultiheadAttention's in_proj (q, k, v
    order; diffusers splits them by the text_projection's first dimension, convert_open_clip_checkpoint), and
    text_projection stored as open_clip uses it, x @ P with P (width, embed_dim): the Linear weight transposed."""
    out, qkv = {}, {}
    for k, v in state.items():
        if k in OPEN_CLIP_TOP:
            out[OPEN_CLIP_TOP[k]] = v
        elif k == "text_projection.weight":
            out["text_projection"] = v.T.contiguous()  # (embed_dim, width) -> (width, embed_dim)
        elif k.startswith("text_model.encoder.layers."):
            n, part = k.removeprefix("text_model.encoder.layers.").split(".", 1)
            module, _, leaf = part.rpartition(".")
            if module in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
                qkv.setdefault((n, leaf), {})[module[-6]] = v  # module[-6] is q, k or v
            else:
                out[f"transformer.resblocks.{n}.{OPEN_CLIP_LAYER_PARTS[module]}.{leaf}"] = v
        else:
            raise KeyError(f"{k}: no open_clip name known for this text-encoder key")
    for (n, leaf), parts in qkv.items():
        stacked = torch.cat([parts["q"], parts["k"], parts["v"]])  # (3 * width, width) or (3 * width,)
        out[f"transformer.resblocks.{n}.attn.in_proj_{leaf}"] = stacked
    # open_clip's CLIP keeps logit_scale (initialised to log(1/0.07)); SDXL files carry it unused
    # (stable-diffusion.cpp lists conditioner.embedders.1.model.logit_scale among the tensors it skips).
    out["logit_scale"] = torch.tensor(math.log(1 / 0.07), dtype=next(iter(state.values())).dtype)
    return {"conditioner.embedders.1.model." + k: v for k, v in out.items()}


def cosxl_state_dict(components: dict) -> dict[str, torch.Tensor]:
    """The whole CosXL-style single file (SGM layout) from build_sdxl_components' modules."""
    unet, vae = components["unet"], components["vae"]
    state = {
        **unet_to_original(unet.state_dict(), dict(unet.config)),
        **vae_to_original(vae.state_dict(), dict(vae.config)),
        **clip_l_to_original(components["text_encoder"].state_dict()),
        **open_clip_text_to_original(components["text_encoder_2"].state_dict()),
    }
    state.update({k: torch.tensor(v, dtype=torch.float32) for k, v in COSXL_EDM_VPRED.items()})  # 0-d, as ComfyUI
    return {k: v.detach().contiguous() for k, v in state.items()}


# ---------------------------------------------------------------- writing the files
@contextlib.contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    """Write to a hidden sibling (a file or a folder), then rename it into place: `path` exists only complete."""
    tmp = path.with_name(f".{path.name}.partial")
    if tmp.is_dir():  # left by a killed run
        shutil.rmtree(tmp)
    tmp.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    yield tmp
    os.replace(tmp, path)


def _save_safetensors(state: dict[str, torch.Tensor], path: Path, note: str) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata={"format": "pt", "diffcore": note})


def write_sdxl_config(dst: Path, size: str, seed: int) -> None:
    """stabilityai/stable-diffusion-xl-base-1.0 without weights: what from_single_file(config=) reads."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig

    cfg = _check_size(size)
    dst.mkdir()
    (dst / "model_index.json").write_text(json_text(SDXL_MODEL_INDEX, indent=2) + "\n")
    EulerDiscreteScheduler(**SDXL_SCHEDULER).save_config(dst / "scheduler")
    with torch.device("meta"):  # configs only: no weights are drawn
        UNet2DConditionModel(**cfg["unet"]).save_config(dst / "unet")
        AutoencoderKL(**cfg["vae"]).save_config(dst / "vae")
    for name, arch in (("text_encoder", "CLIPTextModel"), ("text_encoder_2", "CLIPTextModelWithProjection")):
        CLIPTextConfig(**cfg[name], architectures=[arch]).save_pretrained(dst / name)
    save_tokenizer(clip_tokenizer("<|endoftext|>"), dst / "tokenizer")
    save_tokenizer(clip_tokenizer("!"), dst / "tokenizer_2")


def save_tokenizer(tokenizer, dst: Path) -> None:
    """save_pretrained (tokenizer.json, tokenizer_config.json) plus vocab.json and merges.txt, the files the hub
    folders hold (a CLIPTokenizer loads from either)."""
    tokenizer.save_pretrained(dst)
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    (dst / "vocab.json").write_text(json_text(model["vocab"], ensure_ascii=False))
    merges = [" ".join(m) if isinstance(m, list) else m for m in model["merges"]]
    (dst / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")


def write_cosxl(dst: Path, size: str, seed: int) -> None:
    """At full size the modules are built in float16 (6.9 GB) and safetensors serialises a copy: ~14 GB host memory."""
    _save_safetensors(cosxl_state_dict(build_sdxl_components(size, seed)), dst, f"rehearsal stand-in {size} {seed}")


def write_vae_fp16_fix(dst: Path, size: str, seed: int) -> None:
    """madebyollin/sdxl-vae-fp16-fix's layout: the SDXL VAE architecture, force_upcast False, its own seed."""
    from diffusers import AutoencoderKL

    with seeded(derive_seed(seed, "rehearse", "vae_fp16_fix"), FILE_DTYPES["vae_fp16_fix"]):
        vae = AutoencoderKL(**{**_check_size(size)["vae"], "force_upcast": False}).eval()
    vae.save_pretrained(dst, safe_serialization=True)


def write_clip(dst: Path, size: str, seed: int) -> None:
    """open_clip's ViT-B/32 (QuickGELU, as OpenAI's weights) state dict; the architecture is fixed by the name."""
    import open_clip

    with seeded(derive_seed(seed, "rehearse", "clip")):  # built in float32 (open_clip's init), stored as float16
        model = open_clip.create_model("ViT-B-32-quickgelu", pretrained=None)
    state = {k: v.to(FILE_DTYPES["clip"]) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    _save_safetensors(state, dst, f"rehearsal stand-in {seed}")


def write_wide_resnet(dst: Path, size: str, seed: int) -> None:
    """torchvision's format: torch.save of wide_resnet101_2(weights=None).state_dict(), 1000 ImageNet classes."""
    import torchvision

    with seeded(derive_seed(seed, "rehearse", "wide_resnet101_2")):  # torchvision's init in float32
        model = torchvision.models.wide_resnet101_2(weights=None)
    dtype = FILE_DTYPES["wide_resnet101_2"]
    torch.save({k: v.to(dtype) if v.is_floating_point() else v for k, v in model.state_dict().items()}, dst)


def write_instruct_pix2pix(dst: Path, size: str, seed: int) -> None:
    from diffusers import StableDiffusionInstructPix2PixPipeline

    pipe = StableDiffusionInstructPix2PixPipeline(**build_edit_components(size, seed))
    pipe.save_pretrained(dst, safe_serialization=True)


WRITERS = {  # FILES' order: the small config folder first
    "sdxl_config": write_sdxl_config,
    "cosxl": write_cosxl,
    "vae_fp16_fix": write_vae_fp16_fix,
    "clip": write_clip,
    "wide_resnet101_2": write_wide_resnet,
    "instruct_pix2pix": write_instruct_pix2pix,
}


def _size_of(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _claim(root: Path, size: str, seed: int) -> None:
    """Record (size, seed) in the folder, or refuse a folder that holds weights of another size or seed."""
    path = root / MANIFEST
    want = {"kind": "diffcore-rehearsal-weights", "size": size, "seed": seed, "note": NOTE, "files": FILES}
    if path.is_file():
        have = json.loads(path.read_text())
        if (have.get("size"), have.get("seed")) != (size, seed):
            raise ValueError(
                f"{root} holds stand-in weights of size={have.get('size')!r} seed={have.get('seed')}, not "
                f"size={size!r} seed={seed}: pass another folder or delete it"
            )
        return
    root.mkdir(parents=True, exist_ok=True)
    path.write_text(json_text({**want, "provenance": provenance()}, indent=2) + "\n")


def write_weights(
    root: str | Path, size: str = "tiny", seed: int = 0, progress: Callable[[str], None] | None = None
) -> dict[str, Path]:
    """Write every stand-in file under `root` (see the module docstring) and return {name: path} (names of FILES).

    A file or folder that is already there is kept (each is renamed into place only once complete), so a re-run is
    fast; a folder written with another size or seed is refused. `progress(line)` gets one line per component.
    """
    _check_size(size)
    root = Path(root)
    _claim(root, size, seed)
    paths = {name: root / rel for name, rel in FILES.items()}
    for name, path in paths.items():
        if path.exists():
            if progress:
                progress(f"weights: {FILES[name]} is there, kept")
            continue
        t0 = time.perf_counter()
        with _atomic(path) as tmp:
            WRITERS[name](tmp, size, seed)
        if progress:
            mb = _size_of(path) / 2**20
            progress(f"weights: wrote {FILES[name]} ({size}, {mb:.1f} MiB) in {time.perf_counter() - t0:.1f} s")
    return paths
