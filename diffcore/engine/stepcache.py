"""Opt-in step cache for the diffusers UNet: skip the deep part of the UNet on most denoising steps (DeepCache).

DeepCache (Ma, Fang, Wang, CVPR 2024, arXiv 2312.00858) observes that the UNet's high-level features change
slowly from one denoising step to the next. `StepCache` wraps a `UNet2DConditionModel` and takes its place as
`pipe.unet`; the pipeline calls it once per step (on the doubled CFG batch) and:
- on a *full* call (calls 0, interval, 2*interval, ... after `reset()`) runs the wrapped UNet unchanged and keeps
  the output of `up_blocks[-2]`, the deep feature that enters the last up block (a forward hook: the full output
  is the stock UNet's, bit for bit);
- on the `interval - 1` *shallow* calls after it runs only conv_in -> down_blocks[0] (its resnets/attentions; the
  downsampler only feeds the deep part) -> up_blocks[-1] on (cached deep feature, fresh skips of conv_in and
  down_blocks[0]) -> conv_norm_out / conv_act / conv_out. Time, class and SDXL (text_embeds, time_ids) embeddings
  are recomputed every call, as in `UNet2DConditionModel.forward`, which `_shallow` mirrors line by line.
DeepCache also offers partitions inside these blocks (its cache_layer_id / cache_block_id); only this block-level
one is implemented here.

It changes the images, so it is opt-in: interval 1 (the default) is the stock UNet, exactly. Its effect on what
DiffCoRe-Mix keeps is to be measured by the bench against the exact images at the same seeds: CLIP image-image
similarity to the exact images and the CLIP filter's acceptance rate. The speed-up on a real H100 is UNMEASURED
until a GPU run; the only number here is a FLOP-based ESTIMATE: with s = FLOPs(shallow call) / FLOPs(full call)
(`shallow_flop_share`, counted by torch's FlopCounterMode), the UNet time per step drops by
`expected_speedup(interval, s) = interval / (1 + (interval - 1) * s)` if time were proportional to FLOPs. It is
not: the shallow path's high-resolution convolutions and the deep blocks' attention run at different
efficiencies, and per-call overheads do not shrink, so only a GPU run can tell.

FLOPs counted on the meta device (`python -m diffcore.bench flops`, torch 2.14.1), per UNet call on a CFG batch of 2:

| UNet                                        | latent | full GFLOP | shallow GFLOP | share s | ESTIMATE n = 2 / 3 / 5 |
| ------------------------------------------- | ------ | ---------- | ------------- | ------- | ---------------------- |
| SDXL base (bench.SDXL_UNET), 512 px         | 64x64  | 3177.56    | 223.55        | 0.0704  | 1.87 / 2.63 / 3.90     |
| tiny SDXL stand-in (bench.TINY_UNET), 64 px | 32x32  | 1.990      | 0.370         | 0.1861  | 1.69 / 2.19 / 2.87     |
| tiny SD-style (tiny.UNET_CONFIG), 32 px     | 8x8    | 0.114      | 0.048         | 0.4192  | 1.41 / 1.63 / 1.87     |
The tiny rows are stand-ins (they check the code), not the paper's model.

    python -m diffcore.bench flops                     # FLOP share + estimated speed-ups, SDXL and the tiny UNets
"""

from __future__ import annotations

from typing import Any

import torch

# down_blocks[0] types whose forward `_shallow` mirrors (SD 1.x/2.x and SDXL use only these)
MIRRORED_DOWN_BLOCKS = ("DownBlock2D", "CrossAttnDownBlock2D")


def _check_interval(interval) -> int:
    if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
        raise ValueError(f"interval={interval!r}: expected an int >= 1 (1 = no caching, the stock UNet)")
    return interval


class StepCache(torch.nn.Module):
    """A drop-in `pipe.unet` that runs the full UNet every `interval` calls and a shallow pass in between.

    Attributes the pipeline reads (config, dtype, device, add_embedding, ...) are the wrapped UNet's.
    `reset()` before every pipeline call (it clears the cache and restarts the phase). `full_calls` and
    `shallow_calls` count calls since construction (not cleared by reset); `last_full` says what the last call was.
    Do not torch.compile the wrapper (its Python branching would recompile); call `.compile(...)`, which compiles
    the full UNet and the shallow path separately.
    """

    def __init__(self, unet: torch.nn.Module, interval: int = 1):
        super().__init__()
        self.interval = _check_interval(interval)
        ups, down0 = unet.up_blocks, unet.down_blocks[0]
        if len(ups) < 2:
            raise ValueError(f"StepCache needs a UNet with >= 2 up blocks, got {len(ups)}")
        if type(down0).__name__ not in MIRRORED_DOWN_BLOCKS:
            raise ValueError(
                f"StepCache: down_blocks[0] is a {type(down0).__name__}; the shallow path mirrors "
                f"only {MIRRORED_DOWN_BLOCKS} (SD/SDXL UNets)"
            )
        if len(ups[-1].resnets) != 1 + len(down0.resnets):
            raise ValueError(
                f"StepCache: up_blocks[-1] takes {len(ups[-1].resnets)} skips, but conv_in + "
                f"down_blocks[0] give {1 + len(down0.resnets)}; only the standard SD/SDXL layout works"
            )
        self.unet = unet
        # what full and shallow calls run (compiled after .compile()); set past nn.Module's __setattr__ so that the
        # UNet is not registered a second time as a submodule (no duplicate state_dict keys)
        object.__setattr__(self, "_full", unet)
        object.__setattr__(self, "_shallow_fn", self._shallow)
        self._capture = False  # the hook stores only during this wrapper's own full calls
        self._captured: torch.Tensor | None = None
        self._hook = ups[-2].register_forward_hook(self._keep_deep)
        self.reset()
        self.full_calls = 0
        self.shallow_calls = 0
        self.last_full: bool | None = None

    # ------------------------------------------------------------ attribute fall-through to the wrapped UNet
    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)  # parameters, buffers, submodules (self.unet)
        except AttributeError:
            modules = self.__dict__.get("_modules", {})
            if "unet" not in modules:
                raise
            return getattr(modules["unet"], name)  # config, dtype, device, add_embedding, ...

    # ------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget the cached feature and restart the phase: the next call is full."""
        self.calls = 0  # calls since reset; call k is full when k % interval == 0
        self._deep: torch.Tensor | None = None  # (B, C, h, w): up_blocks[-2]'s output at the last full call
        self._deep_key: tuple | None = None  # (sample shape, dtype, device) of that call

    def remove(self) -> torch.nn.Module:
        """Remove the hook and return the wrapped UNet (to put back as pipe.unet)."""
        self._hook.remove()
        self.reset()
        return self.unet

    def compile(self, *args, **kwargs) -> None:
        """torch.compile the full UNet and the shallow path separately (same args as torch.compile)."""
        object.__setattr__(self, "_full", torch.compile(self.unet, *args, **kwargs))
        object.__setattr__(self, "_shallow_fn", torch.compile(self._shallow, *args, **kwargs))

    def _keep_deep(self, module, args, output) -> None:
        if self._capture:
            self._captured = output

    # ------------------------------------------------------------ forward
    def forward(
        self,
        sample: torch.Tensor,
        timestep,
        encoder_hidden_states: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        timestep_cond: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cross_attention_kwargs: dict[str, Any] | None = None,
        added_cond_kwargs: dict[str, torch.Tensor] | None = None,
        down_block_additional_residuals: tuple[torch.Tensor, ...] | None = None,
        mid_block_additional_residual: torch.Tensor | None = None,
        down_intrablock_additional_residuals: tuple[torch.Tensor, ...] | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        return_dict: bool = True,
    ):
        """UNet2DConditionModel.forward's signature and return type.

        ControlNet / T2I-Adapter residuals, a LoRA `scale` or GLIGEN in cross_attention_kwargs, or gradient
        checkpointing under autograd make the call full (the shallow path mirrors the plain text-to-image forward).
        """
        kw = dict(
            class_labels=class_labels,
            timestep_cond=timestep_cond,
            attention_mask=attention_mask,
            cross_attention_kwargs=cross_attention_kwargs,
            added_cond_kwargs=added_cond_kwargs,
            encoder_attention_mask=encoder_attention_mask,
        )
        extra = dict(
            down_block_additional_residuals=down_block_additional_residuals,
            mid_block_additional_residual=mid_block_additional_residual,
            down_intrablock_additional_residuals=down_intrablock_additional_residuals,
        )
        key = (tuple(sample.shape), sample.dtype, sample.device)
        shallow = (
            self.calls % self.interval != 0
            and self._deep is not None
            and self._deep_key == key
            and all(v is None for v in extra.values())
            and self._shallow_supported(cross_attention_kwargs)
        )
        self.calls += 1
        self.last_full = not shallow
        if shallow:
            self.shallow_calls += 1
            out = self._shallow_fn(sample, timestep, encoder_hidden_states, self._deep, **kw)  # (B, C_out, H, W)
            return _unet_output(out) if return_dict else (out,)
        self.full_calls += 1
        self._capture = self.interval > 1  # interval 1: nothing kept, the stock UNet alone
        try:
            out = self._full(sample, timestep, encoder_hidden_states, **kw, **extra, return_dict=return_dict)
        finally:
            self._capture = False
        if self.interval > 1:
            self._deep, self._deep_key = self._captured.detach(), key  # (B, C, H/2, W/2): no autograd graph kept
            self._captured = None
        return out

    def _shallow_supported(self, cross_attention_kwargs) -> bool:
        """Plain text-to-image only: no LoRA scale or GLIGEN in the kwargs, no gradient checkpointing in use."""
        if cross_attention_kwargs and ("scale" in cross_attention_kwargs or "gligen" in cross_attention_kwargs):
            return False
        ckpt = self.unet.down_blocks[0].gradient_checkpointing or self.unet.up_blocks[-1].gradient_checkpointing
        return not (torch.is_grad_enabled() and ckpt)

    def _shallow(
        self,
        sample: torch.Tensor,
        timestep,
        encoder_hidden_states: torch.Tensor,
        deep: torch.Tensor,
        class_labels=None,
        timestep_cond=None,
        attention_mask=None,
        cross_attention_kwargs=None,
        added_cond_kwargs=None,
        encoder_attention_mask=None,
    ) -> torch.Tensor:
        """UNet2DConditionModel.forward restricted to conv_in, down_blocks[0], up_blocks[-1] and the output head."""
        u = self.unet
        forward_upsample_size = any(d % 2**u.num_upsamplers != 0 for d in sample.shape[-2:])
        if attention_mask is not None:  # (B, L) keep/discard -> (B, 1, L) additive bias
            attention_mask = ((1 - attention_mask.to(sample.dtype)) * -10000.0).unsqueeze(1)
        if encoder_attention_mask is not None:
            encoder_attention_mask = ((1 - encoder_attention_mask.to(sample.dtype)) * -10000.0).unsqueeze(1)
        if u.config.center_input_sample:
            sample = 2 * sample - 1.0
        emb, sample = self._embedding(
            sample, timestep, encoder_hidden_states, class_labels, timestep_cond, added_cond_kwargs
        )  # (B, E), (B, C_in, H, W)
        encoder_hidden_states = u.process_encoder_hidden_states(encoder_hidden_states, added_cond_kwargs)
        attn_kw = dict(
            encoder_hidden_states=encoder_hidden_states,
            attention_mask=attention_mask,
            cross_attention_kwargs=cross_attention_kwargs,
            encoder_attention_mask=encoder_attention_mask,
        )
        h = u.conv_in(sample)  # (B, C0, H, W)
        skips = (h,)
        down0 = u.down_blocks[0]
        cross = getattr(down0, "has_cross_attention", False)
        for i, resnet in enumerate(down0.resnets):  # down_blocks[0] without its downsampler
            h = resnet(h, emb)  # (B, C0, H, W)
            if cross:
                h = down0.attentions[i](h, return_dict=False, **attn_kw)[0]
            skips += (h,)
        upsample_size = skips[-1].shape[2:] if forward_upsample_size else None  # the value forward leaves it at
        up = u.up_blocks[-1]
        if getattr(up, "has_cross_attention", False):
            h = up(
                hidden_states=deep, temb=emb, res_hidden_states_tuple=skips, upsample_size=upsample_size, **attn_kw
            )  # (B, C0, H, W)
        else:
            h = up(hidden_states=deep, temb=emb, res_hidden_states_tuple=skips, upsample_size=upsample_size)
        if u.conv_norm_out:
            h = u.conv_act(u.conv_norm_out(h))
        return u.conv_out(h)  # (B, C_out, H, W)

    def _embedding(self, sample, timestep, encoder_hidden_states, class_labels, timestep_cond, added_cond_kwargs):
        """Step 1 of UNet2DConditionModel.forward: time (+ class, + SDXL text/time) embedding, (B, E)."""
        u = self.unet
        emb = u.time_embedding(u.get_time_embed(sample=sample, timestep=timestep), timestep_cond)
        class_emb = u.get_class_embed(sample=sample, class_labels=class_labels)
        if class_emb is not None:
            emb = torch.cat([emb, class_emb], dim=-1) if u.config.class_embeddings_concat else emb + class_emb
        aug_emb = u.get_aug_embed(
            emb=emb, encoder_hidden_states=encoder_hidden_states, added_cond_kwargs=added_cond_kwargs
        )
        if u.config.addition_embed_type == "image_hint":
            aug_emb, hint = aug_emb
            sample = torch.cat([sample, hint], dim=1)
        emb = emb + aug_emb if aug_emb is not None else emb
        if u.time_embed_act is not None:
            emb = u.time_embed_act(emb)
        return emb, sample


def _unet_output(sample: torch.Tensor):
    """The wrapped UNet's return type (diffusers imported on first use, not at import)."""
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

    return UNet2DConditionOutput(sample=sample)


def install(pipe, interval: int) -> StepCache:
    """Put a StepCache around pipe.unet (replacing an earlier one) and return it."""
    _check_interval(interval)
    unet = pipe.unet.remove() if isinstance(pipe.unet, StepCache) else pipe.unet
    pipe.unet = StepCache(unet, interval)
    return pipe.unet


def uninstall(pipe) -> None:
    """Put the stock UNet back as pipe.unet."""
    if isinstance(pipe.unet, StepCache):
        pipe.unet = pipe.unet.remove()


# ---------------------------------------------------------------- FLOPs
def _dummy_inputs(unet, sample_shape: tuple[int, ...], text_len: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Zero (sample, timestep, kwargs) of an SD or SDXL UNet call, on the UNet's device and dtype."""
    dev, dt, cfg = unet.device, unet.dtype, unet.config
    b = sample_shape[0]
    kw: dict = {"encoder_hidden_states": torch.zeros(b, text_len, cfg.cross_attention_dim, device=dev, dtype=dt)}
    if cfg.addition_embed_type == "text_time":  # SDXL: pooled text embedding + 6 size/crop ids
        n_ids = 6  # original size (2), crop top-left (2), target size (2): SDXL's micro-conditioning
        pooled = unet.add_embedding.linear_1.in_features - n_ids * cfg.addition_time_embed_dim
        kw["added_cond_kwargs"] = {
            "text_embeds": torch.zeros(b, pooled, device=dev, dtype=dt),
            "time_ids": torch.zeros(b, n_ids, device=dev, dtype=dt),
        }
    elif cfg.addition_embed_type is not None:
        raise ValueError(f"addition_embed_type={cfg.addition_embed_type!r}: FLOP count supports SD and SDXL UNets")
    return torch.zeros(sample_shape, device=dev, dtype=dt), torch.tensor(500.0, device=dev), kw


@torch.no_grad()
def call_flops(unet, sample_shape: tuple[int, int, int, int] = (2, 4, 64, 64), text_len: int = 77) -> tuple[int, int]:
    """(FLOPs of a full call, FLOPs of a shallow call) of a StepCache around `unet`, by torch's FlopCounterMode.

    Count on the meta device (`meta_unet`: no memory, no compute, shapes only) or on CUDA: there, attention runs
    as countable matmuls / SDPA kernels; torch's counter has no formula for the CPU flash-attention kernel, so on
    a CPU UNet attention is left out (the tiny SDXL stand-in at 16x16: share 0.194 on meta, 0.210 on CPU;
    measured). sample_shape is (B, C, h, w) of the latent batch as the pipeline passes it (B = 2 x images with
    CFG); text_len = prompt tokens (77).
    """
    from torch.utils.flop_counter import FlopCounterMode

    cache = StepCache(unet, interval=2)
    try:
        sample, t, kw = _dummy_inputs(unet, tuple(sample_shape), text_len)
        flops = []
        for _ in range(2):  # call 0 full (fills the cache), call 1 shallow
            with FlopCounterMode(display=False) as fc:
                cache(sample, t, **kw)
            flops.append(fc.get_total_flops())
        if cache.full_calls != 1 or cache.shallow_calls != 1:
            raise RuntimeError(
                f"expected one full and one shallow call, got {cache.full_calls} and {cache.shallow_calls}"
            )
    finally:
        cache.remove()
    return flops[0], flops[1]


def shallow_flop_share(unet, sample_shape: tuple[int, int, int, int] = (2, 4, 64, 64), text_len: int = 77) -> float:
    """FLOPs of a shallow call / FLOPs of a full call (see call_flops: count on the meta device)."""
    full, shallow = call_flops(unet, sample_shape, text_len)
    return shallow / full


def expected_speedup(interval: int, share: float) -> float:
    """UNet time ratio stock / cached if time were proportional to FLOPs: one full + (interval-1) shallow calls."""
    _check_interval(interval)
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share={share!r}: expected a FLOP fraction in [0, 1]")
    return interval / (1 + (interval - 1) * share)


def meta_unet(config: dict):
    """A UNet2DConditionModel of the given config on the meta device: shapes only, nothing allocated."""
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        return UNet2DConditionModel(**config).eval()
