"""Text-to-image generation with context guidance, Eq. (4).

diffusers' SD/SDXL pipelines compute noise_pred = uncond + w * (text - uncond) with the negative prompt in the
uncond slot, which is exactly Eq. (4) with w = 1 + gamma: (1 + gamma) * eps(P_c) - gamma * eps(P_n).
At w = 1 guidance is off and the negative prompt is ignored, so w <= 1 is refused when a negative prompt is set.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .engine.checks import check_fields
from .engine.fastgen import FastConfig, FastGenerator, check_fast_path
from .engine.runtime import DTYPE_NAMES

log = logging.getLogger(__name__)

# The authors' CosXL scheduler (khawar-islam/DiffCoRe-Mix generation code), see REFERENCE.md.
COSXL_SCHEDULER = dict(
    sigma_min=0.002, sigma_max=120.0, sigma_data=1.0, prediction_type="v_prediction", sigma_schedule="exponential"
)


@dataclass(frozen=True)
class GenerateConfig:
    model: str = "stabilityai/cosxl"  # diffusers folder / cached hub id, or a CosXL-style single .safetensors file
    config_dir: str | None = None  # for a single file: local diffusers SDXL folder giving the component configs
    vae: str | None = None  # optional VAE folder, e.g. madebyollin/sdxl-vae-fp16-fix (fp16 SDXL VAE overflows)
    scheduler: str = "auto"  # "auto": the model's own; "edm-euler-vpred": the authors' CosXL setting
    steps: int = 50  # authors' code: 50
    guidance_scale: float = 12.0  # w = 1 + gamma of Eq. (4); authors' code: 12
    size: int = 512  # height = width in pixels; authors' code: 512
    batch_size: int = 16  # images per pipeline call; 16 measured 7x faster than 1 on an H100 (REFERENCE)
    compile: bool = True  # on CUDA: fastgen.FastGenerator (prompts encoded once, channels_last,
    # torch.compile); 0.346 vs 0.437 s/img stock at batch 32 on an H100, benchmarks/
    fp8: bool = False  # opt-in, CUDA/Hopper: float8 matmuls in the UNet's attention blocks (changes images)
    compile_scope: str = "full"  # on CUDA: "full" (measured, ~2.5 min per batch shape) or "regional" (transformer
    # blocks only: less to compile; speed unmeasured), see fastgen.compile_unet
    step_cache: int = 1  # opt-in DeepCache (stepcache.py): full UNet every n-th step, its shallow blocks
    # in between on cached deep features; 1 = off, the exact images (changes images)
    dtype: str = "auto"  # "auto": bf16 on CUDA, fp32 on CPU
    run_seed: int = 0  # image seed = derive_seed(run_seed, image id, attempt)

    def __post_init__(self):
        check_fields(self)  # types, finite numbers (engine.checks)
        if self.steps < 1:
            raise ValueError(f"steps={self.steps}: expected >= 1 denoising steps")
        if self.guidance_scale < 0:
            raise ValueError(f"guidance_scale={self.guidance_scale}: expected w = 1 + gamma >= 0")
        if self.size < 8 or self.size % 8:
            raise ValueError(f"size={self.size}: expected a multiple of 8 (the VAE downsamples by 8 for SD/SDXL)")
        if self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size}: expected >= 1")
        check_fast_path(self.step_cache, self.compile_scope)
        if self.scheduler not in ("auto", "edm-euler-vpred"):
            raise ValueError(f"scheduler={self.scheduler!r}: expected 'auto' or 'edm-euler-vpred'")
        if self.dtype != "auto" and self.dtype not in DTYPE_NAMES:
            raise ValueError(f"dtype={self.dtype!r}: expected 'auto' or one of {sorted(DTYPE_NAMES)}")
        if Path(self.model).suffix == ".ckpt":
            raise ValueError(
                f"model={self.model}: a pickle checkpoint (.ckpt) is never loaded (it can carry code); "
                f"convert it to .safetensors on a trusted machine and pass that file"
            )

    @property
    def gamma(self) -> float:
        return self.guidance_scale - 1.0


def _is_single_file(model: str) -> bool:
    return Path(model).suffix == ".safetensors"  # .ckpt (pickle) is refused by GenerateConfig


def check_guidance(negative_prompt: str, cfg: GenerateConfig) -> None:
    """Eq. (4) needs w = 1 + gamma > 1 for a negative prompt to act: refuse before any model is loaded."""
    if negative_prompt and cfg.guidance_scale <= 1.0:
        raise ValueError(
            f"guidance_scale={cfg.guidance_scale} <= 1 turns guidance off, so the negative prompt would "
            f"be ignored (Eq. 4 needs w = 1 + gamma > 1; or pass --negative-prompt '')"
        )


def check_model_path(cfg: GenerateConfig) -> None:
    """Fail before loading anything heavy: a local path must exist; a hub id must already be in the cache."""
    looks_local = _is_single_file(cfg.model) or cfg.model.startswith((".", "/", "~")) or Path(cfg.model).exists()
    if looks_local and not Path(cfg.model).expanduser().exists():
        raise FileNotFoundError(
            f"model={cfg.model}: no such file or folder. Put the weights there (a diffusers "
            f"folder, or e.g. cosxl.safetensors with --config-dir) or pass another --model"
        )
    if _is_single_file(cfg.model) and cfg.config_dir is None:
        raise ValueError(
            f"model={cfg.model} is a single file: pass config_dir=<local diffusers SDXL folder> "
            f"(without it diffusers tries to download the SDXL config)"
        )
    if cfg.config_dir is not None and not Path(cfg.config_dir).is_dir():
        raise FileNotFoundError(f"config_dir={cfg.config_dir}: no such folder (a diffusers SDXL pipeline folder)")
    if cfg.vae is not None and not Path(cfg.vae).exists():
        raise FileNotFoundError(f"vae={cfg.vae}: no such folder (e.g. a local copy of madebyollin/sdxl-vae-fp16-fix)")


def load_pipeline(cfg: GenerateConfig, device: torch.device, dtype: torch.dtype):
    """A diffusers text-to-image pipeline from local files only (never the network)."""
    from diffusers import AutoencoderKL, DiffusionPipeline, EDMEulerScheduler, StableDiffusionXLPipeline

    check_model_path(cfg)
    # Weights from safetensors only (a pickle can carry code); never code shipped inside a model folder.
    kw = dict(dtype=dtype, local_files_only=True, use_safetensors=True)
    try:
        if _is_single_file(cfg.model):  # CosXL ships as one file (REFERENCE: always pass a local config)
            pipe = StableDiffusionXLPipeline.from_single_file(cfg.model, config=cfg.config_dir, **kw)
        else:
            pipe = DiffusionPipeline.from_pretrained(cfg.model, trust_remote_code=False, **kw)
    except OSError as e:
        raise FileNotFoundError(
            f"model={cfg.model}: could not load it from local files ({str(e).splitlines()[0]}). "
            f"Download it on a connected machine and pass the local folder"
        ) from None
    except ValueError as e:  # e.g. a folder whose model_index.json names code to run: refused, never executed
        raise ValueError(f"model={cfg.model}: refused by diffusers ({' '.join(str(e).split())})") from None
    if cfg.vae is not None:
        pipe.vae = AutoencoderKL.from_pretrained(cfg.vae, **kw)
    if cfg.scheduler == "edm-euler-vpred" or (cfg.scheduler == "auto" and _is_single_file(cfg.model)):
        pipe.scheduler = EDMEulerScheduler(**COSXL_SCHEDULER)
    if getattr(pipe, "safety_checker", None) is not None:
        pipe.safety_checker = None  # would blank images silently; the filter decides what is kept
    pipe.set_progress_bar_config(disable=True)  # diffcore shows one bar over images instead
    pipe = pipe.to(device)
    if (device.type == "cuda" and (cfg.compile or cfg.fp8)) or cfg.step_cache > 1:
        return FastGenerator(
            pipe,
            cfg,
            FastConfig(compile=cfg.compile, fp8=cfg.fp8, step_cache=cfg.step_cache, compile_scope=cfg.compile_scope),
        )
    return pipe


# An image whose pixels all round to one value is a failed decode (the fp16 SDXL VAE overflow gives NaN -> black),
# never a usable counterpart: max - min < 1 level of 255.
CONSTANT_SPREAD = 1.0 / 255


def invalid_images(images: torch.Tensor) -> torch.Tensor:
    """(N,) bool: True where a (N, C, H, W) decoded image holds NaN/inf or is constant (all black included)."""
    flat = images.flatten(1).float()  # (N, C*H*W)
    finite = torch.isfinite(flat).all(1)
    clean = flat.nan_to_num(0.0, posinf=0.0, neginf=0.0)
    return ~finite | (clean.amax(1) - clean.amin(1) < CONSTANT_SPREAD)


def draw_images(
    pipe, prompts: Sequence[str], negative_prompts: Sequence[str] | None, seeds: Sequence[int], cfg: GenerateConfig
) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W, 3) uint8 images and an (N,) bool array marking invalid ones (NaN, black or constant).

    One torch.Generator per image. Generators live on the CPU so that a seed gives the same initial noise on any
    device and at any batch size; the pipeline then moves the noise to its device.
    """
    with torch.no_grad():  # a block, not a decorator: mutmut (make mutants) leaves decorated functions alone
        if not (len(prompts) == len(seeds)) or (negative_prompts is not None and len(negative_prompts) != len(prompts)):
            raise ValueError(
                f"{len(prompts)} prompts, {len(seeds)} seeds and "
                f"{None if negative_prompts is None else len(negative_prompts)} negative prompts differ"
            )
        neg = None if negative_prompts is None or all(n == "" for n in negative_prompts) else list(negative_prompts)
        check_guidance("" if neg is None else "x", cfg)
        out, bad = [], []
        for s in range(0, len(prompts), cfg.batch_size):
            sl = slice(s, s + cfg.batch_size)
            gens = [torch.Generator("cpu").manual_seed(int(x)) for x in seeds[sl]]
            if hasattr(pipe, "call_pipeline"):  # fastgen.FastGenerator: the same call with cached prompt embeddings
                images = pipe.call_pipeline(list(prompts[sl]), [None] * len(gens) if neg is None else neg[sl], gens)
            else:
                images = pipe(
                    prompt=list(prompts[sl]),
                    negative_prompt=None if neg is None else neg[sl],
                    num_inference_steps=cfg.steps,
                    guidance_scale=cfg.guidance_scale,
                    height=cfg.size,
                    width=cfg.size,
                    generator=gens,
                    output_type="pt",
                ).images  # (b, 3, H, W)
            bad.append(invalid_images(images).cpu().numpy())
            images = images.float().nan_to_num(0.0).clamp(0, 1)
            out.append((images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())  # (b, H, W, 3)
        if not out:
            return np.zeros((0, cfg.size, cfg.size, 3), np.uint8), np.zeros(0, bool)
        return np.concatenate(out), np.concatenate(bad)


def generate_images(
    pipe, prompts: Sequence[str], negative_prompts: Sequence[str] | None, seeds: Sequence[int], cfg: GenerateConfig
) -> np.ndarray:
    """(N, H, W, 3) uint8 images, one torch.Generator per image (see draw_images)."""
    return draw_images(pipe, prompts, negative_prompts, seeds, cfg)[0]
