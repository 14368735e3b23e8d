"""Mixing each real image with its own generated counterpart: Eq. (6)-(8) of the paper.

Batched tensor ops on whatever device the batch lives on, so that mixing runs inside the training step. Both
images share the class, so the label stays one-hot and is never touched here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from .engine.checks import check_fields

MIX_MODES = ("both", "pixel", "patch", "none")
# Beta(a, b) is drawn as ga / (ga + gb) of float32 gamma draws (`beta`): a parameter below float32's smallest normal
# number underflows to 0; above 1e38 the sum overflows (lam = 0), above 3.4e38 it cannot even be converted
# ("value cannot be converted to type float without overflow", at the first training step).
BETA_RANGE = (torch.finfo(torch.float32).tiny, 1e38)


@dataclass(frozen=True)
class MixConfig:
    mode: str = "both"  # "both": Eq. (8); "pixel": Eq. (6) only; "patch": Eq. (7) only; "none": G as is (GenAug)
    p_pixel: float = 0.5  # pi = P(eta = 1) in Eq. (8); paper: 0.5 "due to two choices"
    lam_alpha: float = 1.0  # lambda ~ Beta(lam_alpha, lam_beta) in Eq. (6); the paper only gives lambda in [0, 1],
    lam_beta: float = 1.0  # so the default is U(0, 1) = Beta(1, 1); recorded with every result
    box_alpha: float = 1.0  # area of the box taken from I ~ Beta(a, a); side = sqrt(area) * size, CutMix convention

    def __post_init__(self):
        check_fields(self)  # types, finite numbers (engine.checks)
        if self.mode not in MIX_MODES:
            raise ValueError(f"mix mode={self.mode!r}: expected one of {MIX_MODES}")
        if not 0.0 <= self.p_pixel <= 1.0:
            raise ValueError(f"mix p_pixel={self.p_pixel}: expected a probability in [0, 1]")
        for name in ("lam_alpha", "lam_beta", "box_alpha"):
            if not BETA_RANGE[0] <= getattr(self, name) <= BETA_RANGE[1]:
                raise ValueError(
                    f"mix {name}={getattr(self, name)}: expected a Beta parameter > 0 that float32 holds "
                    f"({BETA_RANGE[0]:.2g} to {BETA_RANGE[1]:.2g})"
                )


class MixOutput(NamedTuple):
    images: torch.Tensor  # (B, C, H, W) mixed batch
    eta: torch.Tensor  # (B,) bool: True -> pixel blend (Eq. 6), False -> patch (Eq. 7)
    lam: torch.Tensor  # (B,) lambda of the pixel blend (also drawn for patch rows, unused there)
    masks: torch.Tensor  # (B, 1, H, W) bool: True where the pixel comes from the real image I (M_p of Eq. 7)


def beta(a: float, b: float, n: int, generator: torch.Generator | None, device) -> torch.Tensor:
    """Beta(a, b) samples drawn from `generator` (torch's Beta distribution takes no generator)."""
    if a == 1.0 and b == 1.0:
        return torch.rand(n, generator=generator, device=device)
    ga = torch._standard_gamma(torch.full((n,), float(a), device=device), generator=generator)
    gb = torch._standard_gamma(torch.full((n,), float(b), device=device), generator=generator)
    return ga / (ga + gb)


def box_masks(
    n: int,
    height: int,
    width: int,
    area: torch.Tensor,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """(n, 1, H, W) bool masks, True inside a box of area fraction ~`area`, uniform centre, clipped to the image.

    The CutMix/timm `rand_bbox` convention: side = sqrt(area) * size, centre uniform over the image.
    """
    gdev = generator.device if generator is not None else device
    cy = torch.randint(0, height, (n,), generator=generator, device=gdev).to(device)
    cx = torch.randint(0, width, (n,), generator=generator, device=gdev).to(device)
    side = area.to(device).clamp(0, 1).sqrt()
    half_h = (side * height).long() // 2
    half_w = (side * width).long() // 2
    y1, y2 = (cy - half_h).clamp(0, height), (cy + half_h).clamp(0, height)  # (n,), (n,)
    x1, x2 = (cx - half_w).clamp(0, width), (cx + half_w).clamp(0, width)
    ys = torch.arange(height, device=device)  # (H,)
    xs = torch.arange(width, device=device)  # (W,)
    in_y = (ys[None] >= y1[:, None]) & (ys[None] < y2[:, None])  # (n, H)
    in_x = (xs[None] >= x1[:, None]) & (xs[None] < x2[:, None])  # (n, W)
    return (in_y[:, :, None] & in_x[:, None, :])[:, None]  # (n, 1, H, W)


def diffcore_mix(
    real: torch.Tensor,
    gen: torch.Tensor,
    cfg: MixConfig = MixConfig(),
    generator: torch.Generator | None = None,
    is_pair: torch.Tensor | None = None,
) -> MixOutput:
    """Mix each real image I_i with its own counterpart G_i, Eq. (8).

    real, gen: (B, C, H, W) on the same device. is_pair: (B,) bool, False rows (no counterpart) pass through.
    All random draws come from `generator` (on the batch's device, or CPU; small vectors are moved).
    """
    if real.shape != gen.shape:
        raise ValueError(f"real {tuple(real.shape)} and generated {tuple(gen.shape)} batches differ in shape")
    b, _, h, w = real.shape
    dev = real.device
    gdev = generator.device if generator is not None else dev
    lam = beta(cfg.lam_alpha, cfg.lam_beta, b, generator, gdev).to(dev, real.dtype)  # (B,)
    area = beta(cfg.box_alpha, cfg.box_alpha, b, generator, gdev)  # (B,)
    eta_draw = torch.rand(b, generator=generator, device=gdev).to(dev) < cfg.p_pixel  # (B,) Bernoulli(pi)
    eta = {
        "both": eta_draw,
        "pixel": torch.ones_like(eta_draw),
        "patch": torch.zeros_like(eta_draw),
        "none": torch.zeros_like(eta_draw),
    }[cfg.mode]
    masks = box_masks(b, h, w, area, generator, dev)  # (B, 1, H, W)
    if cfg.mode == "none":  # GenAug (Table 7): the generated image is used as it is
        masks = torch.zeros_like(masks)
    lam4 = lam.view(b, 1, 1, 1)
    pixel = lam4 * real + (1 - lam4) * gen  # Eq. (6)
    patch = torch.where(masks, real, gen)  # Eq. (7)
    out = torch.where(eta.view(b, 1, 1, 1), pixel, patch)  # Eq. (8)
    if is_pair is not None:
        out = torch.where(is_pair.to(dev).view(b, 1, 1, 1), out, real)
    return MixOutput(out, eta, lam, masks)
