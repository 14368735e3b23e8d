"""DiffuseMix (Islam et al., CVPR 2024), the closest prior generative mixing method (Tables 2-5)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from . import common as U
from .base import Batch, Method, register
from .fractals import bank_on_device


def concat_masks(orient_rows: torch.Tensor, height: int, width: int, ramp: float) -> torch.Tensor:
    """(B, 1, H, W) weight of the edited image: 0 on the first half, 1 on the second, a linear ramp across the seam.

    orient_rows (B,) bool: True -> top / bottom halves (the authors' 'vertical'), False -> left / right. ramp: seam
    width as a fraction of the side (the authors' blend_width = 20 px at 512 px).
    """
    dev = orient_rows.device

    def profile(n: int) -> torch.Tensor:
        bw = max(1.0, ramp * n)
        t = torch.arange(n, device=dev, dtype=torch.float32) + 0.5  # pixel centres
        return ((t - (n / 2 - bw / 2)) / bw).clamp(0, 1)  # (n,)

    rows = profile(height)[:, None].expand(height, width)  # (H, W) top -> bottom
    cols = profile(width)[None, :].expand(height, width)  # (H, W) left -> right
    return torch.where(orient_rows.view(-1, 1, 1, 1), rows, cols)  # (B, 1, H, W)


@register
@dataclass
class DiffuseMix(Method):
    """DiffuseMix (Islam et al., CVPR 2024): a real image I and its InstructPix2Pix edit E (diffcore.edit) are
    concatenated, one half of each (top/bottom or left/right at random, a linear ramp across the seam), and the result
    is blended with a random fractal: (1 - 0.2) * concat + 0.2 * fractal. The label is I's, unchanged.

    Defaults (khawar-islam/diffuseMix augment/utils.py): blend_width 20 px at 512 px (ramp = 20/512 of the side),
    fractal alpha 0.20, orientation uniform. Fractals: `fractals` procedural ones from diffcore.fractals (the
    authors pass a downloaded folder). The authors write one blended image per (image, prompt) to disk before
    training; here the edits are written once (`diffcore edit`) and each visit of an (I, E) pair draws
    orientation and fractal afresh, on the device. Rows without an edit (the real-image half of the epoch) pass through.
    """

    name = "diffusemix"
    cite = "Islam et al., DiffuseMix: Label-preserving data augmentation with diffusion models, CVPR 2024"
    uses = "edits"
    fractal_alpha: float = 0.2  # augment/utils.py blend_images_with_resize(alpha=0.20)
    ramp: float = 20 / 512  # augment/utils.py combine_images(blend_width=20) at 512 px
    fractals: int = 100  # size of the procedural fractal set
    fractal_seed: int = 0
    _banks: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self):
        U.check("diffusemix fractal_alpha", self.fractal_alpha, 0 <= self.fractal_alpha <= 1, "a weight in [0, 1]")
        U.check("diffusemix ramp", self.ramp, 0 <= self.ramp <= 1, "a fraction of the side in [0, 1]")
        U.check("diffusemix fractals", self.fractals, self.fractals >= 1, "at least 1 fractal")

    def bank(self, h: int, w: int, device, dtype) -> torch.Tensor:
        """(N, 3, H, W) fractals on the device, made once per image size."""
        return bank_on_device(self._banks, self.fractals, self.fractal_seed, h, w, device, dtype)

    def mix(self, batch: Batch, generator, model=None):
        if batch.gen is None:
            raise ValueError(
                "method 'diffusemix' needs the edited images: train with --generated <dir of `diffcore edit`>"
            )
        x = batch.x
        b, c, h, w = x.shape
        dev = x.device
        real, edit = batch.to_pixels(x), batch.to_pixels(batch.gen)  # (B, C, H, W) in [0, 1]
        m = concat_masks(U.uniform(b, generator, dev) < 0.5, h, w, self.ramp).to(x.dtype)
        bank = self.bank(h, w, dev, x.dtype)
        frac = bank[U.randint(0, len(bank), b, generator, dev)][:, :c]  # (B, C, H, W)
        out = (1 - self.fractal_alpha) * ((1 - m) * real + m * edit) + self.fractal_alpha * frac
        out = batch.from_pixels(out.clamp(0, 1))
        if batch.is_pair is not None:
            out = torch.where(batch.is_pair.to(dev).view(b, 1, 1, 1), out, x)
        return out, batch.y
