"""Generation at the hardware's pace: the stock diffusers pipeline call with its hot parts made fast.

`FastGenerator` has the contract of `generate.generate_images` (prompts, negative prompts, one seed per image ->
uint8 images) and calls the same pipeline, so the images are the stock ones up to kernel rounding:
- each distinct (prompt, negative prompt) is encoded once and its embeddings reused: every image of a class
  shares its prompt, so the text encoders run once per class, not once per batch;
- the UNet and the VAE decoder run in channels_last (cuDNN's fast layout for convolutions on tensor cores) and
  compiled with torch.compile (fused norms/activations; compiled once per batch shape, ~1-2 min on an H100);
- images stay on the device for CLIP (`clip_embed_on_device`), so the filter costs no host round trip.
Opt-in, changes the images (measured side by side by `diffcore bench`):
- `fp8=True`: the UNet's transformer linears run as float8 e4m3 matmuls with rowwise scales (Hopper).
- `step_cache=n > 1`: DeepCache (stepcache.py): the full UNet every n-th step, only its outermost blocks in
  between, on the deep features cached at the last full step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

E4M3_MAX = 448.0  # largest finite float8_e4m3fn
COMPILE_SCOPES = ("full", "regional")  # compile_unet


def check_fast_path(step_cache, compile_scope: str) -> None:
    """The fast-path settings generate.GenerateConfig and FastConfig share, checked alike in both."""
    if isinstance(step_cache, bool) or not isinstance(step_cache, int) or step_cache < 1:
        raise ValueError(f"step_cache={step_cache!r}: expected an int >= 1 (full UNet every n-th step; 1 = off)")
    if compile_scope not in COMPILE_SCOPES:
        raise ValueError(f"compile_scope={compile_scope!r}: expected one of {COMPILE_SCOPES}")


class Sampling(Protocol):
    """What FastGenerator reads of a generation config (generate.GenerateConfig has these fields)."""

    steps: int
    guidance_scale: float
    size: int
    batch_size: int


@dataclass(frozen=True)
class FastConfig:
    compile: bool = True  # torch.compile UNet + VAE decoder; ignored on CPU (compile time > savings there)
    compile_mode: str = "default"  # torch.compile mode; "max-autotune" searches GEMM tilings (much longer compile)
    compile_scope: str = "full"  # "full": the whole UNet (+ shallow pass) and VAE decoder, 145-152 s per batch shape
    # on an H100 (measured); "regional": only the UNet's transformer blocks (diffusers'
    # compile_repeated_blocks: one graph per block shape, VAE eager), less to compile
    channels_last: bool = True  # NHWC for the convolutions
    fp8: bool = False  # opt-in float8 matmuls in the UNet's transformer blocks (changes the images)
    step_cache: int = 1  # opt-in DeepCache interval (stepcache.StepCache); 1 = the stock UNet every step

    def __post_init__(self):
        if self.compile_mode not in ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"):
            raise ValueError(f"compile_mode={self.compile_mode!r}: expected a torch.compile mode")
        check_fast_path(self.step_cache, self.compile_scope)


class Float8Linear(torch.nn.Module):
    """y = x W^T + b with x and W quantised to float8 e4m3 with rowwise scales; bf16 out (torch._scaled_mm).

    Weight scales are per output channel (fixed), activation scales per row (computed each call), so one
    outlier token does not flatten the precision of the others.
    """

    def __init__(self, lin: torch.nn.Linear):
        super().__init__()
        w = lin.weight.detach().float()  # (N, K)
        sw = w.abs().amax(1, keepdim=True).clamp(min=1e-12) / E4M3_MAX  # (N, 1)
        self.register_buffer("w8", (w / sw).to(torch.float8_e4m3fn))  # (N, K) row-major
        self.register_buffer("sw", sw.t().contiguous())  # (1, N)
        self.bias = lin.bias
        self.in_features, self.out_features = lin.in_features, lin.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])  # (M, K)
        sx = x2.abs().amax(1, keepdim=True).float().clamp(min=1e-12) / E4M3_MAX  # (M, 1)
        x8 = (x2.float() / sx).to(torch.float8_e4m3fn)  # (M, K)
        y = torch._scaled_mm(x8, self.w8.t(), scale_a=sx, scale_b=self.sw, out_dtype=torch.bfloat16)  # (M, N)
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.reshape(*shape[:-1], self.out_features)


def to_fp8_linears(unet: torch.nn.Module) -> int:
    """Swap the nn.Linear layers inside the UNet's attention blocks for Float8Linear; returns how many."""
    targets = [
        (name, m)
        for name, m in unet.named_modules()
        if isinstance(m, torch.nn.Linear)
        and ".attentions." in f".{name}"
        and m.in_features % 16 == 0
        and m.out_features % 16 == 0
    ]  # _scaled_mm needs multiples of 16
    for name, lin in targets:
        parent_name, _, child = name.rpartition(".")
        setattr(unet.get_submodule(parent_name), child, Float8Linear(lin))
    return len(targets)


class FastGenerator:
    """Drop-in for `generate.generate_images(pipe, prompts, negs, seeds, cfg)` on an SD or SDXL pipeline."""

    def __init__(self, pipe, cfg: Sampling, fast: FastConfig = FastConfig()):
        self.pipe, self.cfg, self.fast = pipe, cfg, fast
        self.device = pipe.unet.device
        self.xl = getattr(pipe, "text_encoder_2", None) is not None
        self._cache: dict[tuple[str, str | None], tuple[torch.Tensor, ...]] = {}
        if fast.fp8:
            if self.device.type != "cuda":
                raise ValueError("fp8=True: float8 matmuls need a CUDA GPU with FP8 tensor cores (Hopper or newer)")
            self.fp8_layers = to_fp8_linears(pipe.unet)
        if fast.channels_last:
            pipe.unet.to(memory_format=torch.channels_last)
            pipe.vae.to(memory_format=torch.channels_last)
        self.step_cache = None
        if fast.step_cache > 1:  # installed before compiling: the full UNet and the shallow pass compile apart
            from .stepcache import install

            self.step_cache = install(pipe, fast.step_cache)
        if fast.compile and self.device.type == "cuda":
            compile_unet(pipe, fast.compile_scope, mode=fast.compile_mode)

    @torch.no_grad()
    def _encode(self, prompt: str, negative: str | None) -> tuple[torch.Tensor, ...]:
        """The pipeline's own encode_prompt for one (prompt, negative) pair, memoised."""
        key = (prompt, negative)
        if key not in self._cache:
            cfg_on = self.cfg.guidance_scale > 1.0
            out = self.pipe.encode_prompt(
                prompt=prompt,
                device=self.device,
                num_images_per_prompt=1,
                do_classifier_free_guidance=cfg_on,
                negative_prompt=negative,
            )
            self._cache[key] = tuple(out)
        return self._cache[key]

    def _embeds(self, prompts: Sequence[str], negatives: Sequence[str | None]) -> dict:
        rows = [self._encode(p, n) for p, n in zip(prompts, negatives)]
        cat = [torch.cat(parts) for parts in zip(*rows)]  # each (b, ...)
        names = (
            ["prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds"]
            if self.xl
            else ["prompt_embeds", "negative_prompt_embeds"]
        )
        return dict(zip(names, cat))

    @torch.no_grad()
    def images(
        self, prompts: Sequence[str], negative_prompts: Sequence[str] | None, seeds: Sequence[int]
    ) -> torch.Tensor:
        """(N, 3, H, W) float in [0, 1] on the device, batch by batch as in generate_images."""
        cfg = self.cfg
        if len(prompts) != len(seeds) or (negative_prompts is not None and len(negative_prompts) != len(prompts)):
            raise ValueError(
                f"{len(prompts)} prompts, {len(seeds)} seeds and "
                f"{None if negative_prompts is None else len(negative_prompts)} negative prompts differ"
            )
        neg = (
            [None] * len(prompts)
            if negative_prompts is None or all(n == "" for n in negative_prompts)
            else list(negative_prompts)
        )
        if neg[0] is not None and cfg.guidance_scale <= 1.0:
            raise ValueError(
                f"guidance_scale={cfg.guidance_scale} <= 1 turns guidance off, so the negative prompt "
                f"would be ignored (Eq. 4 needs w = 1 + gamma > 1)"
            )
        out = []
        for s in range(0, len(prompts), cfg.batch_size):
            sl = slice(s, s + cfg.batch_size)
            gens = [torch.Generator("cpu").manual_seed(int(x)) for x in seeds[sl]]  # same noise as generate_images
            out.append(self.call_pipeline(prompts[sl], neg[sl], gens).float())
        return torch.cat(out) if out else torch.zeros(0, 3, cfg.size, cfg.size, device=self.device)

    @torch.no_grad()
    def call_pipeline(self, prompts: Sequence[str], negatives: Sequence[str | None], generators) -> torch.Tensor:
        """One pipeline call on one batch, prompt embeddings from the cache: (b, 3, H, W) in [0, 1]."""
        cfg = self.cfg
        if self.step_cache is not None:
            self.step_cache.reset()  # each batch starts with a full UNet step; nothing carries over between batches
        return self.pipe(
            **self._embeds(prompts, negatives),
            num_inference_steps=cfg.steps,
            guidance_scale=cfg.guidance_scale,
            height=cfg.size,
            width=cfg.size,
            generator=generators,
            output_type="pt",
        ).images

    def __getattr__(self, name):  # anything else (components, config) is the wrapped pipeline's
        if name == "pipe":
            raise AttributeError(name)
        return getattr(self.pipe, name)

    def __call__(self, prompts, negative_prompts, seeds) -> np.ndarray:
        """(N, H, W, 3) uint8, like generate.generate_images."""
        x = self.images(prompts, negative_prompts, seeds)
        return to_uint8(x).permute(0, 2, 3, 1).cpu().numpy()


def compile_unet(pipe, scope: str = "full", **compile_kw) -> None:
    """torch.compile the pipeline's hot parts in place (`compile_kw` go to torch.compile).

    full: the UNet as one graph (a StepCache: its full and shallow passes apart) and the VAE decoder.
    regional: each of the UNet's transformer blocks (SD/SDXL: BasicTransformerBlock), which share their graphs
    across blocks of one shape; resnets and the VAE stay eager. Far less to trace and compile.
    """
    from .stepcache import StepCache

    cache = pipe.unet if isinstance(pipe.unet, StepCache) else None
    unet = cache.unet if cache is not None else pipe.unet
    if scope == "regional":
        unet.compile_repeated_blocks(**compile_kw)
        return
    if cache is not None:
        cache.compile(**compile_kw)
    else:
        pipe.unet = torch.compile(unet, **compile_kw)
    pipe.vae.decoder = torch.compile(pipe.vae.decoder, **compile_kw)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] float -> uint8 with the rounding generate_images uses."""
    return (images.float().clamp(0, 1) * 255).round().to(torch.uint8)


@torch.no_grad()
def clip_embed_on_device(clip, images: torch.Tensor, size: int | None = None) -> torch.Tensor:
    """(N, D) unit CLIP embeddings of (N, 3, H, W) [0, 1] images already on the device.

    open_clip's eval preprocessing (bicubic resize of the short side, centre crop, normalise) done with tensor
    ops, so generated images never leave the GPU. `clip` is a filter.ClipEncoder.
    """
    import torch.nn.functional as F

    visual = clip.model.visual
    if size is None:
        size = visual.image_size[0] if isinstance(visual.image_size, (tuple, list)) else visual.image_size
    mean = torch.tensor(
        getattr(visual, "image_mean", None) or (0.48145466, 0.4578275, 0.40821073), device=images.device
    ).view(1, 3, 1, 1)
    std = torch.tensor(
        getattr(visual, "image_std", None) or (0.26862954, 0.26130258, 0.27577711), device=images.device
    ).view(1, 3, 1, 1)
    x = F.interpolate(images.float(), size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    x = ((x.clamp(0, 1) - mean) / std).to(next(clip.model.parameters()).dtype)  # (N, 3, size, size)
    return F.normalize(clip.model.encode_image(x).float(), dim=-1)
