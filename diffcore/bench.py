"""`python -m diffcore.bench`: generation, filtering and mixed training timed side by side, ratios printed.

Paper-sized architectures are built from their configs with random weights (same cost as real weights), so the
benchmark runs with no weights at hand; `--arch tiny` builds small ones so it also runs on any CPU. Every
number comes from one run, baseline and diffcore's path measured on the same machine one after the other.

- generation: the stock diffusers SDXL pipeline (one image at a time, then batched) vs `fastgen.FastGenerator`,
  at the authors' settings (EDMEuler v-prediction, 50 steps, guidance 12 with a negative prompt, 512 px),
  including CLIP filtering on the device and writing the PNG files; the FLOP floor from a FLOP count of one
  UNet call and the device's measured bf16 matmul rate;
- training: Eq. (9) overhead A_O = (T_aug - T_van) / T_van * 100 of every registered method at equal batch size,
  on tensors already on the device (`time_training`) and end to end with diffcore's loader reading a real JPEG
  and its generated PNG per sample (`time_training_loader`).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .runtime import provenance, resolve_device

ASSETS = Path(__file__).parent / "assets"

# stabilityai/stable-diffusion-xl-base-1.0 unet/config.json (CosXL has the same architecture)
SDXL_UNET = dict(act_fn="silu", addition_embed_type="text_time", addition_embed_type_num_heads=64,
                 addition_time_embed_dim=256, attention_head_dim=(5, 10, 20), block_out_channels=(320, 640, 1280),
                 cross_attention_dim=2048, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D",
                                                             "CrossAttnDownBlock2D"),
                 in_channels=4, layers_per_block=2, norm_num_groups=32, out_channels=4,
                 projection_class_embeddings_input_dim=2816, sample_size=128, transformer_layers_per_block=(1, 2, 10),
                 up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), use_linear_projection=True)
SDXL_VAE = dict(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, layers_per_block=2, norm_num_groups=32,
                sample_size=1024, scaling_factor=0.13025, force_upcast=False)
# text encoders: CLIP ViT-L/14 text tower, OpenCLIP ViT-bigG/14 text tower with projection
SDXL_TEXT = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                 projection_dim=768, hidden_act="quick_gelu")
SDXL_TEXT_2 = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
                   projection_dim=1280, hidden_act="gelu")
# a small SDXL-architecture stand-in for CPUs (same blocks, far fewer channels)
TINY_UNET = dict(block_out_channels=(32, 64), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
                 down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
                 use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
                 transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=6 * 8 + 64,
                 cross_attention_dim=128, norm_num_groups=8)
TINY_VAE = dict(block_out_channels=(16, 32), down_block_types=("DownEncoderBlock2D",) * 2,
                up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, layers_per_block=1, norm_num_groups=8,
                sample_size=64, scaling_factor=0.13025, force_upcast=False)
TINY_TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                 projection_dim=64, hidden_act="quick_gelu")
ARCHS = {"sdxl": (SDXL_UNET, SDXL_VAE, SDXL_TEXT, SDXL_TEXT_2, "ViT-B-32"),
         "tiny": (TINY_UNET, TINY_VAE, TINY_TEXT, TINY_TEXT, None)}
PROMPT = "Generate heavy snow to the {}, a natural object"  # the paper's contextual template (Sec. 3)
NEGATIVE = ("train, car, newspaper, sunlight, people, human, tree, cityscape, road, landscape, bus, building, desk, "
            "computer, paper texture, windows, streets, rails, traffic, sky, road lines, traffic lights")  # authors'


# ---------------------------------------------------------------- models with random weights
def random_sdxl(arch: str, device: torch.device, dtype: torch.dtype):
    """A StableDiffusionXLPipeline of the given architecture with random weights, built on the device."""
    from diffusers import AutoencoderKL, EDMEulerScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from .generate import COSXL_SCHEDULER

    unet_cfg, vae_cfg, t1, t2, _ = ARCHS[arch]
    tok = CLIPTokenizer.from_pretrained(ASSETS / "tiny-t2i" / "tokenizer", model_max_length=77)  # real CLIP BPE
    text = dict(vocab_size=49408, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)
    with torch.device(device):  # initialise straight on the GPU: a 2.6B-parameter UNet takes minutes on a CPU
        unet = UNet2DConditionModel(**unet_cfg)
        vae = AutoencoderKL(**vae_cfg)
        te1 = CLIPTextModel(CLIPTextConfig(**text, **t1))
        te2 = CLIPTextModelWithProjection(CLIPTextConfig(**text, **t2))
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=te1, text_encoder_2=te2, tokenizer=tok, tokenizer_2=tok,
                                     unet=unet, scheduler=EDMEulerScheduler(**COSXL_SCHEDULER))
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device, dtype)


def random_clip(arch: str, device: torch.device, dtype: torch.dtype):
    """filter.ClipEncoder around an open_clip model with random weights (ViT-B/32, the authors' filter)."""
    import open_clip

    from .filter import ClipEncoder

    name = ARCHS[arch][4]
    if name is None:  # the shipped tiny CLIP config
        from .profiles import TINY_CLIP_CONFIG

        open_clip.add_model_config(TINY_CLIP_CONFIG)
        name = TINY_CLIP_CONFIG.stem
    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=None, device=device)
    return ClipEncoder(model.to(dtype), preprocess, device)


def unet_flops_per_image_step(pipe, size: int) -> float:
    """FLOPs of one UNet call on a CFG pair (2 latents), i.e. per image and step, counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    u, dev, dt = pipe.unet, pipe.unet.device, pipe.unet.dtype
    lat = torch.zeros(2, 4, size // 8, size // 8, device=dev, dtype=dt)            # (2, 4, h, w)
    ctx = torch.zeros(2, 77, u.config.cross_attention_dim, device=dev, dtype=dt)    # (2, 77, D)
    pooled = torch.zeros(2, u.add_embedding.linear_1.in_features - 6 * u.config.addition_time_embed_dim,
                         device=dev, dtype=dt)
    ids = torch.zeros(2, 6, device=dev, dtype=dt)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        u(lat, torch.tensor(1.0, device=dev), encoder_hidden_states=ctx,
          added_cond_kwargs={"text_embeds": pooled, "time_ids": ids})
    return float(fc.get_total_flops())


def matmul_tflops(device: torch.device, n: int = 8192, reps: int = 10) -> float:
    """The device's bf16 matmul rate, measured now (the FLOP floor's denominator)."""
    if device.type != "cuda":
        n, reps = 1024, 3
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    _sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2 * n ** 3 * reps / (time.perf_counter() - t) / 1e12


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_reset(device):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gb(device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


# ---------------------------------------------------------------- generation
def _write_pngs(pool: ThreadPoolExecutor, images: np.ndarray, folder: Path, start: int) -> list:
    from PIL import Image

    return [pool.submit(lambda im, p: Image.fromarray(im).save(p, compress_level=1), im, folder / f"{start + k}.png")
            for k, im in enumerate(images)]


def bench_generation(arch: str, device: torch.device, batch_sizes: list[int], steps: int, size: int,
                     guidance: float, one_at_a_time: int, fp8: bool, compile_mode: str, log=print,
                     on_row=lambda res: None, production_batches: int = 3, step_caches: tuple[int, ...] = (),
                     regional: bool = False) -> dict:
    """Stock pipeline (batch 1 and each batch size) vs FastGenerator (each batch size), s per image; and
    `make_counterparts` itself (the code `diffcore generate` runs) over `production_batches` batches; and the
    opt-in variants (fp8, each DeepCache interval of `step_caches`), each compared with the stock images."""
    from .fastgen import FastConfig, FastGenerator, clip_embed_on_device, to_uint8
    from .generate import GenerateConfig, generate_images

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(0)  # every later variant rebuilds the same weights
        pipe = random_sdxl(arch, device, dtype)
    clip = random_clip(arch, device, dtype)
    n_params = sum(p.numel() for p in pipe.unet.parameters())
    flops = unet_flops_per_image_step(pipe, size)
    peak = matmul_tflops(device)
    res = {"arch": arch, "unet_params": n_params, "size": size, "steps": steps, "guidance": guidance,
           "flops_per_image_step": flops, "matmul_tflops": peak,
           "floor_s_per_image": flops * steps / (peak * 1e12), "rows": []}
    log(f"UNet {n_params / 1e6:.1f}M params, {flops / 1e9:.2f} GFLOP per image-step, bf16 matmul {peak:.1f} TFLOP/s "
        f"-> floor {res['floor_s_per_image']:.3f} s/img at {steps} steps")
    labels = ["n02123045 tabby cat", "n01440764 tench"]

    def prompts(n):
        return [PROMPT.format(labels[i % 2]) for i in range(n)], [NEGATIVE] * n, list(range(1000, 1000 + n))

    def timed(fn, n, name, bs):
        _sync(device), _peak_reset(device)
        t = time.perf_counter()
        out = fn(n)
        _sync(device)
        dt = (time.perf_counter() - t) / n
        row = {"path": name, "batch_size": bs, "images": n, "s_per_image": dt, "peak_gb": _peak_gb(device)}
        res["rows"].append(row)
        on_row(res)  # written as it goes: a run cut short keeps what it measured
        log(f"  {name:<34} batch {bs:>3}: {dt:7.3f} s/img" + (f", peak {row['peak_gb']:.1f} GB" if row["peak_gb"] else ""))
        return out

    def timed_loop(pipe, clip, cfg, batches, name):
        row = time_make_counterparts(pipe, clip, cfg, batches)
        res["rows"].append({"path": name, **row, "peak_gb": _peak_gb(device)})
        on_row(res)
        log(f"  {name:<34} batch {cfg.batch_size:>3}: {row['s_per_image']:7.3f} s/img (median batch cycle of the "
            f"real loop: generate, CLIP filter, PNG, commit)")

    warm = GenerateConfig(steps=2, guidance_scale=guidance, size=size, batch_size=1)
    generate_images(pipe, *prompts(1), warm)  # cuDNN/cuBLAS warm-up, not timed
    cfg1 = GenerateConfig(steps=steps, guidance_scale=guidance, size=size, batch_size=1)
    timed(lambda n: generate_images(pipe, *prompts(n), cfg1), one_at_a_time, "stock pipeline", 1)
    stock_imgs = {}
    for bs in batch_sizes:
        cfg = GenerateConfig(steps=steps, guidance_scale=guidance, size=size, batch_size=bs)
        generate_images(pipe, *prompts(bs), GenerateConfig(steps=2, guidance_scale=guidance, size=size, batch_size=bs))
        stock_imgs[bs] = timed(lambda n: generate_images(pipe, *prompts(n), cfg), bs, "stock pipeline", bs)
    variants = [(f"diffcore {str(dtype).removeprefix('torch.')}", FastConfig(compile_mode=compile_mode))]
    if fp8 and device.type == "cuda":
        variants.append(("diffcore fp8 (opt-in)", FastConfig(compile_mode=compile_mode, fp8=True)))
    if regional:
        variants.append(("diffcore regional compile", FastConfig(compile_mode=compile_mode, compile_scope="regional")))
    variants += [(f"diffcore step-cache {n} (opt-in)", FastConfig(compile_mode=compile_mode, step_cache=n))
                 for n in step_caches]
    for k, (name, fast) in enumerate(variants):
        if k > 0:  # a fresh copy with the same weights: the variant before compiled or wrapped the UNet in place
            del pipe
            if device.type == "cuda":
                torch.cuda.empty_cache()
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(0)
                pipe = random_sdxl(arch, device, dtype)
        gen = None
        for bs in batch_sizes:
            cfg = GenerateConfig(steps=steps, guidance_scale=guidance, size=size, batch_size=bs)
            if gen is None:
                gen = FastGenerator(pipe, cfg, fast)
            gen.cfg = cfg
            t0 = time.perf_counter()
            gen.images(*prompts(bs))  # compiles for this batch shape
            compile_s = time.perf_counter() - t0
            with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(4) as pool:
                def run(n):
                    x = gen.images(*prompts(n))                                     # (n, 3, H, W) on the device
                    emb = clip_embed_on_device(clip, x)                             # (n, D)
                    keep = (emb * emb.roll(1, 0)).sum(1) > 0.0  # S > tau on the device (stand-in sources/tau)
                    u8 = to_uint8(x).permute(0, 2, 3, 1).cpu().numpy()              # (n, H, W, 3)
                    futures = _write_pngs(pool, u8[keep.cpu().numpy()], Path(tmp), 0)
                    return u8, futures
                u8, futures = timed(run, bs, f"{name} + CLIP filter + PNG", bs)
                [f.result() for f in futures]
            row = res["rows"][-1]
            row["compile_s"] = compile_s
            ref = stock_imgs[bs]
            d = np.abs(u8.astype(np.int16) - ref.astype(np.int16))
            row["vs_stock_max_abs"], row["vs_stock_mean_abs"] = int(d.max()), float(d.mean())
            e_ref, e_new = (clip_embed_on_device(clip, torch.from_numpy(a).to(device).permute(0, 3, 1, 2).float() / 255)
                            for a in (ref, u8))
            row["vs_stock_clip_cos"] = float((e_ref * e_new).sum(1).mean())
            if production_batches and k == 0:
                timed_loop(gen, clip, cfg, production_batches, f"{name} make_counterparts (what runs)")
        del gen
    # CLIP filtering alone, per image, on the device
    x = torch.rand(max(batch_sizes), 3, size, size, device=device)
    clip_embed_on_device(clip, x)
    _sync(device)
    t = time.perf_counter()
    for _ in range(5):
        clip_embed_on_device(clip, x)
    _sync(device)
    res["clip_s_per_image"] = (time.perf_counter() - t) / (5 * len(x))
    return res


class _Stamped:
    """A FastGenerator (or SimulatedGPU) that notes when each batch starts: the loop's cycle time per batch."""

    def __init__(self, pipe):
        self.pipe, self.starts = pipe, []

    def call_pipeline(self, *args, **kw):
        self.starts.append(time.perf_counter())
        return self.pipe.call_pipeline(*args, **kw)

    def __getattr__(self, name):
        if name == "pipe":
            raise AttributeError(name)
        return getattr(self.pipe, name)


def time_make_counterparts(pipe, clip, cfg, batches: int, io_threads: int = 4) -> dict:
    """`make_counterparts` with `pipe` over `batches` full batches of synthetic 500x375 JPEG sources.

    s_per_image: the median time from one batch's start to the next's, per image: generation, the CLIP filter
    (source decoding, preprocessing), PNG encoding and the durable commit as the loop overlaps them. One attempt
    per source, so every batch is full (a shorter batch would recompile a compiled UNet).
    """
    from . import counterparts as C
    from . import prompts as P
    from .data import image_folder
    from .filter import FilterConfig

    n = cfg.batch_size * batches
    with tempfile.TemporaryDirectory() as tmp:
        real, _ = synthetic_pairs(Path(tmp) / "data", n)
        stamped = _Stamped(pipe)
        t = time.perf_counter()
        C.make_counterparts(image_folder(real), stamped, clip, Path(tmp) / "out",
                            P.PromptConfig(dataset_type="natural object"), cfg,
                            FilterConfig(z_pairs=20, max_attempts=1), C.CounterpartConfig(), progress=False,
                            io_threads=io_threads)
        wall = time.perf_counter() - t
    cycles = np.diff(stamped.starts) / cfg.batch_size if len(stamped.starts) > 1 else [wall / n]
    return {"batch_size": cfg.batch_size, "images": n, "s_per_image": float(np.median(cycles)),
            "wall_s_per_image_incl_tau": wall / n, "io_threads": io_threads}


# ---------------------------------------------------------------- what the opt-in modes change
def opt_in_effect(intervals: tuple[int, ...] = (2, 3, 5), fp8: bool = True, half_steps: bool = True,
                  sources: int = 200, seed: int = 0, log=print, figure: str | Path | None = None) -> dict:
    """What each opt-in mode does to the images DiffCoRe-Mix keeps, with the embedded profile's TRAINED tiny models
    on the CPU: exact; the step cache at each interval of `intervals`; fp8 (the same Float8Linear swap as
    `--fp8`, run by torch's float8 matmul on the CPU); half the denoising steps.

    For `sources` digits (first attempt of each, the profile's seeds), per mode: s per image, the share the CLIP
    filter accepts (S > tau_k, Eq. 5, tau from the same profile), the CLIP cosine between each image and the exact
    image of its seed, and the mean pixel change. The tiny models are stand-ins: their numbers show the direction
    and size of each effect on this pipeline, not on CosXL/SDXL. The fp8 time is not a speed measurement (the CPU
    has no float8 units). `figure`: a PNG with the first 12 images of each mode in a row (same seed per column).
    """
    import copy
    from dataclasses import replace

    from . import counterparts as C
    from . import prompts as P
    from .cli import open_dataset
    from .fastgen import FastConfig, FastGenerator, to_fp8_linears
    from .filter import FilterConfig, cosine, load_clip
    from .generate import GenerateConfig, draw_images, load_pipeline
    from .profiles import profile
    from .runtime import derive_seed
    from .stepcache import uninstall

    prof, cpu = profile("embedded"), torch.device("cpu")
    gen_cfg, filt = GenerateConfig(**prof["generate"]), FilterConfig(**prof["filter"])
    prompt_cfg = P.PromptConfig(**prof["prompt"])
    ds = open_dataset(prof["dataset"], None, "train")
    pick = np.random.default_rng(seed).permutation(len(ds))[:sources]
    pipe, clip = load_pipeline(gen_cfg, cpu, torch.float32), load_clip(filt, cpu)
    taus = C.thresholds(ds, clip, filt)
    labels = [ds.labels[i] for i in pick]
    texts = [P.contextual_prompt(ds.classes[k], prompt_cfg) for k in labels]
    negs = [P.negative_prompt(prompt_cfg)] * len(pick)
    seeds = [derive_seed(gen_cfg.run_seed, ds.ids[i], 0) for i in pick]
    src = clip.embed([ds.load(int(i)) for i in pick])                                  # (n, D)
    tau = torch.tensor([taus[k] for k in labels])                                      # (n,)
    modes = [("exact", gen_cfg, 1, False)] + [(f"step cache {n}", gen_cfg, n, False) for n in intervals]
    modes += [("fp8", gen_cfg, 1, True)] if fp8 else []
    modes += [(f"{gen_cfg.steps // 2} steps", replace(gen_cfg, steps=gen_cfg.steps // 2), 1, False)] if half_steps else []
    res = {"profile": "embedded (tiny trained stand-ins)", "sources": len(pick), "steps": gen_cfg.steps, "rows": []}
    exact, shown = None, []
    for name, cfg, n, fp in modes:
        unet = pipe.unet
        if fp:  # a float8 copy of the UNet, as FastGenerator(fp8=True) makes on a GPU
            pipe.unet = copy.deepcopy(unet)
            to_fp8_linears(pipe.unet)
        cfg = replace(cfg, step_cache=n)
        fast = FastGenerator(pipe, cfg, FastConfig(compile=False, channels_last=False, step_cache=n))
        draw_images(fast, texts[:8], negs[:8], seeds[:8], replace(cfg, batch_size=8))  # warm-up, not timed
        t = time.perf_counter()
        images, _ = draw_images(fast, texts, negs, seeds, cfg)                          # (n, H, W, 3) uint8
        dt = (time.perf_counter() - t) / len(pick)
        uninstall(pipe)
        pipe.unet = unet
        emb = clip.embed([Image.fromarray(im) for im in images])                       # (n, D)
        if exact is None:
            exact = (images, emb, dt)
        row = {"mode": name, "step_cache": n, "fp8": fp, "steps": cfg.steps, "s_per_image": dt,
               "speedup": None if fp else exact[2] / dt,
               "accepted_pct": float((cosine(src, emb) > tau).float().mean()) * 100,
               "clip_cos_to_exact": float((emb * exact[1]).sum(1).mean()),
               "mean_abs_pixel_change": float(np.abs(images.astype(np.int16) - exact[0].astype(np.int16)).mean())}
        res["rows"].append(row)
        shown.append(images[:12])
        speed = "time not a speed (no float8 units on a CPU)" if fp else f"x{row['speedup']:.2f}"
        log(f"  {name:<13} {dt * 1e3:7.1f} ms/img ({speed}), filter accepts {row['accepted_pct']:.1f}%, "
            f"CLIP cos to exact {row['clip_cos_to_exact']:.4f}, mean |d pixel| {row['mean_abs_pixel_change']:.2f}/255")
    if figure is not None:
        res["figure"] = str(image_rows(shown, [m[0].replace("step cache ", "N=") for m in modes], figure))
    return res


def image_rows(rows: list[np.ndarray], labels: list[str], path: str | Path, scale: int = 3) -> Path:
    """A PNG: one row of (k, H, W, 3) uint8 images per entry, its label on the left, upscaled `scale` times."""
    from PIL import ImageDraw

    k, h, w, _ = rows[0].shape
    pad, left = 4, 44
    sheet = Image.new("RGB", (left + k * (w * scale + pad), len(rows) * (h * scale + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (images, label) in enumerate(zip(rows, labels)):
        y = pad + r * (h * scale + pad)
        draw.text((4, y + h * scale // 2 - 6), label, fill="black")
        for c, im in enumerate(images):
            sheet.paste(Image.fromarray(im).resize((w * scale, h * scale), Image.NEAREST),
                        (left + c * (w * scale + pad), y))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return Path(path)


# ---------------------------------------------------------------- the generation loop's host work
class SimulatedGPU:
    """Stands in for a FastGenerator in `make_counterparts`: sleeps `s_per_image` per image (a GPU busy with the
    UNet leaves the CPU free, as a sleep does) and returns one of 16 smooth random `size` px images per seed,
    made once (so making them costs the loop nothing). The images come back on the CPU: draw_images' checks and
    uint8 conversion, GPU work in a real run, count as host time here (an upper bound)."""

    def __init__(self, size: int, s_per_image: float, bank: int = 16):
        g = torch.Generator().manual_seed(0)
        low = torch.rand(bank, 3, 8, 8, generator=g)                                              # (K, 3, 8, 8)
        x = torch.nn.functional.interpolate(low, size=(size, size), mode="bicubic")               # (K, 3, H, W)
        self.bank = (x + 0.03 * torch.rand(bank, 3, size, size, generator=g)).clamp(0, 1)        # photo grain
        self.s_per_image = s_per_image

    def call_pipeline(self, prompts, negatives, generators) -> torch.Tensor:
        """FastGenerator's batch call: (b, 3, H, W) in [0, 1] after `s_per_image` seconds per image."""
        time.sleep(self.s_per_image * len(prompts))
        pick = torch.tensor([int(g.initial_seed()) % len(self.bank) for g in generators])        # (b,)
        return self.bank[pick]                                                                   # (b, 3, H, W)


class _ClipOnGPU(torch.nn.Module):
    """encode_image at no host cost (on an H100 CLIP ViT-B/32 takes 0.03 ms per image): the host work timed is
    the preprocessing, the decoding and the writing, not a CPU running a ViT."""

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3)).repeat(1, 4)  # (b, 12)


def time_host_loop(s_per_image: float = 0.346, batch_size: int = 32, batches: int = 4, size: int = 512,
                   io_threads: tuple[int, ...] = (0, 4), log=print) -> list[dict]:
    """Host time per image that `make_counterparts` adds to the GPU's, for each `io_threads` (0: in line).

    The real loop (source decoding, CLIP preprocessing, filtering, PNG encoding, fsync'd commits) around a
    simulated GPU that takes `s_per_image` (default: diffcore's measured 0.346 s on an H100 at batch 32). The
    cycle time between two pipeline calls minus the GPU's share is what the host adds on the critical path.
    """
    import open_clip

    from .filter import ClipEncoder
    from .generate import GenerateConfig

    preprocess = open_clip.image_transform(224, is_train=False)  # ViT-B/32's eval preprocessing
    clip = ClipEncoder(_ClipOnGPU(), preprocess, torch.device("cpu"))
    gen = GenerateConfig(model="simulated", steps=50, guidance_scale=12.0, size=size, batch_size=batch_size)
    rows = []
    for threads in io_threads:
        run = time_make_counterparts(SimulatedGPU(size, s_per_image), clip, gen, batches, io_threads=threads)
        host_ms = (run["s_per_image"] - s_per_image) * 1e3
        rows.append({"io_threads": threads, "batch_size": batch_size, "images": run["images"], "size": size,
                     "simulated_gpu_s_per_image": s_per_image, "cycle_s_per_image": run["s_per_image"],
                     "host_ms_per_image": host_ms, "host_share_pct": host_ms / (s_per_image * 1e3) * 100})
        log(f"  io_threads {threads}: {host_ms:6.1f} ms/img of host work on the critical path "
            f"(+{rows[-1]['host_share_pct']:.1f}% over {s_per_image:.3f} s/img on the GPU)")
    return rows


# ---------------------------------------------------------------- training, Eq. (9)
def time_training(methods: list[str], batch_sizes: list[int], model: str = "digits-cnn", image_size: int = 32,
                  steps: int = 20, warmup: int = 3, device: str = "auto", rounds: int = 3, num_classes: int = 10,
                  amp: bool = False, channels_last: bool = False) -> list[dict]:
    """ms per training step of every method at equal batch size, on tensors already on the device.

    Methods are timed in interleaved rounds (vanilla, m1, m2, ..., vanilla, m1, ...) and the median round is
    kept, so slow drift of a shared machine hits all methods alike. overhead_pct is Eq. (9) against vanilla.
    """
    from .methods import Batch
    from .models import build_model
    from .train import TrainConfig, method_for

    dev = resolve_device(device)
    if "vanilla" not in methods:
        methods = ["vanilla", *methods]
    rows = []
    for bs in batch_sizes:
        g = torch.Generator(device=dev).manual_seed(0)
        net = build_model(model, num_classes, image_size=image_size).to(dev)
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        x = torch.randn(bs, 3, image_size, image_size, device=dev)          # (B, 3, S, S)
        batch = Batch(x, torch.randint(0, num_classes, (bs,), device=dev), num_classes,
                      gen=torch.randn_like(x), is_pair=torch.ones(bs, dtype=torch.bool, device=dev))
        impl = {m: method_for(TrainConfig(method=m, model=model)) for m in methods}

        def step(method):
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                logits, target = method.forward(net, batch, g)
                loss = method.loss(logits.float(), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        times = {m: [] for m in methods}
        for m in methods:
            for _ in range(warmup):
                step(impl[m])
        for _ in range(rounds):
            for m in methods:
                _sync(dev)
                t = time.perf_counter()
                for _ in range(steps):
                    step(impl[m])
                _sync(dev)
                times[m].append((time.perf_counter() - t) / steps * 1e3)
        base = statistics.median(times["vanilla"])
        for m in methods:
            ms = statistics.median(times[m])
            rows.append({"method": m, "batch_size": bs, "ms_per_batch": ms, "overhead_pct": (ms - base) / base * 100,
                         "model": model, "image_size": image_size, "device": str(dev), "amp": amp,
                         "loader": "tensors on device"})
    return rows


def synthetic_pairs(root: Path, n: int, classes: int = 4, real_size=(500, 375), gen_size: int = 512, seed: int = 0):
    """An ImageFolder of n smooth random JPEGs (ImageNet-like size) and one generated-style PNG per image."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    real, gen = root / "real", root / "gen"
    paths = {}
    for i in range(n):
        c = i % classes
        (real / f"class{c}").mkdir(parents=True, exist_ok=True)
        gen.mkdir(parents=True, exist_ok=True)
        low = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)  # smooth content compresses like photos, not noise
        Image.fromarray(low).resize(real_size, Image.BICUBIC).save(real / f"class{c}" / f"{i:05d}.jpg", quality=90)
        Image.fromarray(low).resize((gen_size, gen_size), Image.BICUBIC).save(gen / f"{i:05d}.png")
        paths[i] = gen / f"{i:05d}.png"
    return real, paths


def time_training_loader(batch_sizes: list[int], model: str = "resnet50", image_size: int = 224, steps: int = 20,
                         warmup: int = 3, device: str = "auto", workers: int = 4, n_images: int = 256,
                         amp: bool = False, channels_last: bool = False, method: str = "diffcore",
                         loaders: tuple[str, ...] = ("pil", "device", "resident")) -> list[dict]:
    """ms per step end to end, each sample read from disk: one JPEG (vanilla) or a JPEG + its PNG (pairs).

    loader "pil": train.PairedTrainingSet (decode + augment per sample on CPU workers);
    loader "device": loader.CachedPairs (decoded once, timed separately) + loader.to_device_batch;
    loader "resident": the same caches copied to the device once, batches gathered there (no workers).
    """
    from torch.utils.data import BatchSampler, DataLoader, Subset, SubsetRandomSampler

    from . import loader as L
    from .data import image_folder
    from .models import build_model
    from .train import IMAGENET_MEAN, IMAGENET_STD, PairedTrainingSet, TrainConfig, method_for, train_step, \
        transforms_for

    dev = resolve_device(device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        real, gen_paths = synthetic_pairs(Path(tmp), n_images)
        ds = image_folder(real)
        order = [gen_paths[int(Path(ds.path(i)).stem)] for i in range(len(ds))]
        counterparts = {ds.ids[i]: order[i] for i in range(len(ds))}
        side = round(image_size * 256 / 224)
        t = time.perf_counter()
        caches = (L.DecodedCache(Path(tmp) / "real.npy", len(ds), side).fill(ds.load, workers),
                  L.DecodedCache(Path(tmp) / "gen.npy", len(ds), side).fill(lambda i: Image.open(order[i]), workers))
        decode_once_ms = (time.perf_counter() - t) / (2 * len(ds)) * 1e3
        resident = {}  # method -> L.ResidentPairs: uploaded once for every batch size
        for kind in loaders:
            for bs in batch_sizes:
                net = build_model(model, len(ds.classes), image_size=image_size).to(dev)
                if channels_last:
                    net = net.to(memory_format=torch.channels_last)
                opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
                res = {}
                for m in ("vanilla", method):
                    cfg = TrainConfig(method=m, model=model, image_size=image_size, batch_size=bs)
                    pairs = counterparts if m != "vanilla" else {}
                    if kind == "pil":
                        full = PairedTrainingSet(ds, pairs, transforms_for(cfg, True))
                    else:
                        full = L.CachedPairs(ds.labels, caches[0], [(i, i) for i in range(len(ds)) if pairs], caches[1])
                    items = range(len(ds)) if m == "vanilla" else range(len(ds), len(full))  # real only | pairs only
                    if kind == "resident":  # batches gathered on the device: no workers, no host copies
                        if m not in resident:
                            resident[m] = L.ResidentPairs(full, dev)
                        dl = L.ResidentBatches(resident[m], BatchSampler(SubsetRandomSampler(list(items)), bs,
                                                                         drop_last=True))
                    else:
                        dl = DataLoader(Subset(full, list(items)), batch_size=bs, shuffle=True, drop_last=True,
                                        num_workers=workers, pin_memory=dev.type == "cuda",
                                        persistent_workers=workers > 0)
                    impl, g = method_for(cfg), torch.Generator(device=dev).manual_seed(0)
                    aug_g = torch.Generator(device=dev).manual_seed(1)
                    res[m] = _time_loader_steps(dl, warmup, steps, dev, lambda batch: train_step(
                        net, opt, batch if kind == "pil" else L.to_device_batch(
                            batch, image_size, "imagenet", IMAGENET_MEAN, IMAGENET_STD, aug_g, dev),
                        cfg, impl, len(ds.classes), g, dev), amp)
                for m, ms in res.items():
                    rows.append({"method": m, "batch_size": bs, "ms_per_batch": ms,
                                 "overhead_pct": (ms - res["vanilla"]) / res["vanilla"] * 100, "model": model,
                                 "image_size": image_size, "device": str(dev), "amp": amp, "loader": kind,
                                 "workers": 0 if kind == "resident" else workers,
                                 "decode_once_ms_per_image": None if kind == "pil" else decode_once_ms, "reads": "JPEG" if m == "vanilla" else "JPEG + PNG"})
    return rows


def _time_loader_steps(dl, warmup: int, steps: int, dev, step, amp: bool) -> float:
    done, t = 0, None
    while done < warmup + steps:
        for batch in dl:
            if done == warmup:
                _sync(dev)
                t = time.perf_counter()
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                step(batch)
            done += 1
            if done == warmup + steps:
                break
    _sync(dev)
    return (time.perf_counter() - t) / steps * 1e3


# ---------------------------------------------------------------- Markdown tables from a bench JSON file
def report(bench: dict) -> str:
    """The Markdown tables of the sections a bench JSON holds (generation, host, optin, training, loader)."""
    parts = [table(bench[k]) for k, table in (("generation", _md_generation), ("host", _md_host),
                                              ("optin", _md_optin), ("training", _md_training),
                                              ("loader", _md_loader)) if k in bench]
    return "\n\n".join(parts)


def _md(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _md_generation(g: dict) -> str:
    rows = []
    for r in g["rows"]:
        stock = next((x["s_per_image"] for x in g["rows"] if x["path"] == "stock pipeline"
                      and x["batch_size"] == r["batch_size"]), None)
        ratio = "" if r["path"] == "stock pipeline" or stock is None else f"×{stock / r['s_per_image']:.2f}"
        change = f"{r['vs_stock_max_abs']}/255" if "vs_stock_max_abs" in r else ""
        peak = f"{r['peak_gb']:.1f}" if r.get("peak_gb") else ""
        compile_s = f"{r['compile_s']:.0f}" if r.get("compile_s") and g.get("arch") == "sdxl" else ""
        rows.append([r["path"], str(r["batch_size"]), f"{r['s_per_image']:.3f}", ratio, change, peak, compile_s])
    return _md(["path", "batch", "s/img", "vs stock, same batch", "max pixel change vs stock", "peak GPU GB",
                "first batch incl. compile (s)"], rows)


def _md_host(rows: list[dict]) -> str:
    gpu = rows[0]["simulated_gpu_s_per_image"]
    return _md(["`--io-threads`", "host work on the critical path per image", f"on top of {gpu:.3f} s/img of GPU time"],
               [[f"{r['io_threads']}" + (" (in line)" if r["io_threads"] == 0 else ""),
                 f"{r['host_ms_per_image']:.1f} ms", f"+{r['host_share_pct']:.1f}%"] for r in rows])


def _md_optin(res: dict) -> str:
    rows = []
    for r in res["rows"]:
        ms = r["s_per_image"] * 1e3
        speed = f"({ms:.1f}, emulated)" if r["fp8"] else f"{ms:.1f}" if r["mode"] == "exact" else \
            f"{ms:.1f} (×{r['speedup']:.2f})"
        change = "0" if r["mean_abs_pixel_change"] == 0 else f"{r['mean_abs_pixel_change']:.2f}/255"
        rows.append([r["mode"], speed, f"{r['accepted_pct']:.1f}%", f"{r['clip_cos_to_exact']:.4f}", change])
    return _md(["mode", "ms/img (speed-up)", "filter accepts (S > τ_k)", "CLIP cos to the exact image of the same seed",
                "mean pixel change"], rows)


def _pct(x: float | None) -> str:
    return "" if x is None else f"{x:+.1f}%".replace("-", "−")


def _md_loader(rows: list[dict]) -> str:
    """Eq. 9 overhead of the mixing method over vanilla, per loader (rows: time_training_loader's)."""
    sizes = sorted({r["batch_size"] for r in rows})
    mixed = [r for r in rows if r["method"] != "vanilla"]
    kinds = list(dict.fromkeys(r["loader"] for r in mixed))
    pct = {(r["loader"], r["batch_size"]): r["overhead_pct"] for r in mixed}
    return _md(["loader"] + [f"batch {b}" for b in sizes], [[k] + [_pct(pct.get((k, b))) for b in sizes] for k in kinds])


def _md_training(rows: list[dict]) -> str:
    """ms per step and Eq. 9 overhead per method, tensors already on the device (rows: time_training's)."""
    sizes = sorted({r["batch_size"] for r in rows})
    cell = {(r["method"], r["batch_size"]): f"{r['ms_per_batch']:.2f} ({_pct(r['overhead_pct'])})" for r in rows}
    methods = list(dict.fromkeys(r["method"] for r in rows))
    return _md(["method"] + [f"batch {b}: ms (Eq. 9)" for b in sizes],
               [[m] + [cell.get((m, b), "") for b in sizes] for m in methods])


# ---------------------------------------------------------------- command line
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m diffcore.bench", description=__doc__.splitlines()[0])
    # no `choices=`: Python 3.11's argparse checks an empty nargs="*" list against them and fails
    p.add_argument("what", nargs="*", metavar="{generation,host,optin,training,loader}",
                   help="what to time (default: all five)")
    p.add_argument("--arch", choices=sorted(ARCHS), help="default: sdxl on CUDA, tiny on CPU")
    p.add_argument("--device", default="auto")
    p.add_argument("--steps", type=int, help="denoising steps (default 50 on sdxl, 10 on tiny)")
    p.add_argument("--size", type=int, help="image side (default 512 on sdxl, 64 on tiny)")
    p.add_argument("--guidance", type=float, default=12.0)
    p.add_argument("--gen-batch", type=int, nargs="+", help="default 16 32 on sdxl, 8 on tiny")
    p.add_argument("--one-at-a-time", type=int, default=2, help="images for the stock batch-1 baseline")
    p.add_argument("--fp8", action="store_true", help="also time the opt-in FP8 UNet (CUDA)")
    p.add_argument("--compile-mode", default="default")
    p.add_argument("--regional", action="store_true",
                   help="generation: also time the regional compile (transformer blocks only; CUDA)")
    p.add_argument("--loop-batches", type=int, default=3,
                   help="generation: batches of the timed make_counterparts run (0: skip it)")
    p.add_argument("--step-cache", type=int, nargs="*", default=[],
                   help="generation: also time these opt-in DeepCache intervals (e.g. 2 3)")
    p.add_argument("--optin-intervals", type=int, nargs="+", default=[2, 3, 5],
                   help="optin: step-cache intervals whose effect on the filter is measured")
    p.add_argument("--optin-sources", type=int, default=200, help="optin: digits generated per mode")
    p.add_argument("--host-gpu-s", type=float, default=0.346,
                   help="host: simulated GPU s per image (default: diffcore's measured H100 figure at batch 32)")
    p.add_argument("--host-batches", type=int, default=4, help="host: batches of 32 per variant")
    p.add_argument("--train-model", help="default resnet50 at 224 px on CUDA, digits-cnn at 32 px on CPU")
    p.add_argument("--train-batch", type=int, nargs="+", default=[16, 32, 64])
    p.add_argument("--methods", nargs="+", help="default: every registered method")
    p.add_argument("--train-steps", type=int, default=20, help="timed steps per method and round")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is kept")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    p.add_argument("--amp", action="store_true", help="bf16 autocast + channels_last for training (CUDA)")
    p.add_argument("--out", help="write every measured number here (JSON)")
    p.add_argument("--report", metavar="JSON", help="print the Markdown tables of a bench JSON file and exit "
                   "(the tables in benchmarks/README.md are this output; a test checks they still match)")
    a = p.parse_args(argv)
    if a.report:
        print(report(json.loads(Path(a.report).read_text())))
        return 0
    parts = ["generation", "host", "optin", "training", "loader"]
    if any(w not in parts for w in a.what):
        p.error(f"what={a.what}: expected any of {parts}")
    a.what = a.what or parts
    dev = resolve_device(a.device)
    gpu = dev.type == "cuda"
    arch = a.arch or ("sdxl" if gpu else "tiny")
    args = sys.argv[1:] if argv is None else argv
    out = {"provenance": provenance(dev), "command": "python -m diffcore.bench " + " ".join(args),
           "date": time.strftime("%Y-%m-%d")}
    print(f"device: {out['provenance'].get('device', dev)}")

    def save(section=None, value=None):
        if section is not None:
            out[section] = value
        if a.out:
            Path(a.out).parent.mkdir(parents=True, exist_ok=True)
            Path(a.out).write_text(json.dumps(out, indent=2))

    if "generation" in a.what:
        out["generation"] = bench_generation(arch, dev, a.gen_batch or ([16, 32] if arch == "sdxl" else [8]),
                                             a.steps or (50 if arch == "sdxl" else 10),
                                             a.size or (512 if arch == "sdxl" else 64), a.guidance, a.one_at_a_time,
                                             a.fp8, a.compile_mode, on_row=lambda r: save("generation", r),
                                             step_caches=tuple(a.step_cache), production_batches=a.loop_batches,
                                             regional=a.regional)
        _print_generation(out["generation"])
    if "optin" in a.what:
        print("\nopt-in modes (step cache, fp8, half the steps): their effect on what the filter keeps, "
              "embedded trained tiny models")
        fig = None if a.out is None else Path(a.out).with_suffix(".optin.png")
        out["optin"] = opt_in_effect(tuple(a.optin_intervals), sources=a.optin_sources, figure=fig)
        save()
    if "host" in a.what:
        print("\ngeneration loop's host work, GPU simulated (make_counterparts: decode, CLIP preprocess, PNG, commit)")
        out["host"] = time_host_loop(a.host_gpu_s, batches=a.host_batches)
        save()
    model = a.train_model or ("resnet50" if gpu else "digits-cnn")
    size = 224 if model == "resnet50" else 32
    if "training" in a.what:
        from .methods import REGISTRY

        methods = a.methods or [m for m, cls in REGISTRY.items() if cls.uses != "edits"]
        out["training"] = time_training(methods, a.train_batch, model, size, steps=a.train_steps, rounds=a.rounds,
                                        device=a.device, amp=a.amp, channels_last=a.amp)
        save()
        _print_rows("training step, tensors on the device (Eq. 9 overhead vs vanilla)", out["training"])
    if "loader" in a.what:
        out["loader"] = time_training_loader(a.train_batch, model, size, steps=a.train_steps, device=a.device,
                                             workers=a.workers, amp=a.amp, channels_last=a.amp)
        save()
        _print_rows("training step with diffcore's loader (JPEG vs JPEG + generated PNG per sample)", out["loader"])
    save()
    return 0


def _print_generation(g: dict) -> None:
    rows = g["rows"]
    one = next(r["s_per_image"] for r in rows if r["path"] == "stock pipeline" and r["batch_size"] == 1)
    print(f"\ngeneration ({g['arch']}, {g['size']} px, {g['steps']} steps): floor {g['floor_s_per_image']:.3f} s/img; "
          f"CLIP filter {g['clip_s_per_image'] * 1e3:.2f} ms/img")
    for r in rows:
        stock = next((s["s_per_image"] for s in rows if s["path"] == "stock pipeline"
                      and s["batch_size"] == r["batch_size"]), None)
        extra = "" if r["path"] == "stock pipeline" or "vs_stock_max_abs" not in r else \
            f"  x{one / r['s_per_image']:.1f} vs stock b1, x{stock / r['s_per_image']:.2f} vs stock same batch; " \
            f"vs stock images: max|d| {r['vs_stock_max_abs']}, CLIP cos {r['vs_stock_clip_cos']:.4f}"
        print(f"  {r['path']:<36} b{r['batch_size']:<3} {r['s_per_image']:.3f} s/img{extra}")


def _print_rows(title: str, rows: list[dict]) -> None:
    print(f"\n{title}")
    for r in rows:
        print(f"  {r['model']} {r['image_size']}px b{r['batch_size']:<3} {r['method']:<12} {r['loader'][:18]:<18} "
              f"{r['ms_per_batch']:8.2f} ms/batch  overhead {r['overhead_pct']:+6.1f}%")


if __name__ == "__main__":
    raise SystemExit(main())

