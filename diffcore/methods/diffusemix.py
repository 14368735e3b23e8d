"""DiffuseMix (Islam et al., CVPR 2024), the closest prior generative mixing method (Tables 2-5)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from ..engine.runtime import derive_seed
from . import common as U
from .base import Batch, Method, register
from .fractals import fractal


def seam_mask(height: int, width: int, vertical: bool, blend_width: int) -> np.ndarray:
    """(H, W, 3) float64 weight of the edited image (augment/utils.py combine_images): 0 on the first half, a
    linspace(0, 1, blend_width) ramp across the middle, 1 on the second. vertical: top / bottom halves (their
    'vertical'), else left / right. Theirs for even sides and widths (the only ones their code runs with); the ramp
    is cut to the side when the image is narrower than it."""
    n = height if vertical else width
    bw = min(blend_width, n)
    profile = np.concatenate([np.zeros(n // 2 - bw // 2), np.linspace(0, 1, bw), np.ones(n - (n // 2 - bw // 2) - bw)])
    m = np.tile(profile.reshape(-1, 1), (1, width)) if vertical else np.tile(profile.reshape(1, -1), (height, 1))
    return np.tile(m[:, :, np.newaxis], (1, 1, 3))  # (H, W, 3)


def concat_and_blend(
    real: Image.Image, edit: Image.Image, frac: Image.Image, vertical: bool, blend_width: int, alpha: float
) -> Image.Image:
    """DiffuseMix's training image of one (image, edit) pair, aligned at the edit's size: the real image resized
    to it, the halves concatenated across a ramp (combine_images), then (1 - alpha) * that + alpha * the fractal
    (blend_images_with_resize), in their dtypes and order, so that the same inputs give their bytes."""
    size = edit.size
    orig = real.convert("RGB").resize(size)  # PIL's default resampling, as their Image.resize((256, 256))
    mask = seam_mask(size[1], size[0], vertical, blend_width)
    a = np.array(orig, dtype=np.float32) / 255.0
    e = np.array(edit.convert("RGB"), dtype=np.float32) / 255.0
    combined = np.clip(((1 - mask) * a + mask * e) * 255, 0, 255).astype(np.uint8)
    base = np.array(combined, dtype=np.float32)
    overlay = np.array(frac.convert("RGB").resize(size), dtype=np.float32)
    return Image.fromarray(np.clip((1 - alpha) * base + alpha * overlay, 0, 255).astype(np.uint8))


@register
@dataclass
class DiffuseMix(Method):
    """DiffuseMix (Islam et al., CVPR 2024): each real image I and each of its InstructPix2Pix edits E (one per style
    prompt, diffcore.edit) make one training image: I resized to E's size, one half of each concatenated (top/bottom
    or left/right, a linear ramp of blend_width px across the seam), then blended with a fractal: 0.8 * concat + 0.2 *
    fractal. The label is I's. The real images are trained on too, unmixed.

    As the authors' code (khawar-islam/diffuseMix augment/diffuseMix.py, utils.py): the composite is made from the
    aligned pair before any augmentation (`pair_image`, called by the data loader), in their arithmetic (uint8
    bytes equal to theirs for the same inputs, benchmarks/fidelity.md), and it is fixed per pair, as their blended
    files are: orientation and fractal are drawn once per pair from derive_seed(fractal_seed, its file name). The
    training augmentation then applies to the composite. Defaults: blend_width 20 px and fractal alpha 0.20
    (utils.py). Fractals: `fractals` procedural ones (diffcore.methods.fractals, rendered at fractal_size px and
    resized to the edit as theirs are), not their downloaded folder.
    """

    name = "diffusemix"
    cite = "Islam et al., DiffuseMix: Label-preserving data augmentation with diffusion models, CVPR 2024"
    uses = "edits"
    composes_pairs = True
    fractal_alpha: float = 0.2  # augment/utils.py blend_images_with_resize(alpha=0.20)
    blend_width: int = 20  # px at the edit's size, augment/utils.py combine_images(blend_width=20)
    fractals: int = 100  # size of the procedural fractal set (theirs: a downloaded folder)
    fractal_seed: int = 0
    fractal_size: int = 256  # px the fractals are rendered at, then resized to the edit (theirs: loaded, resized)
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self):
        U.check("diffusemix fractal_alpha", self.fractal_alpha, 0 <= self.fractal_alpha <= 1, "a weight in [0, 1]")
        U.check("diffusemix blend_width", self.blend_width, self.blend_width >= 0, "a seam width in pixels >= 0")
        U.check("diffusemix fractals", self.fractals, self.fractals >= 1, "at least 1 fractal")
        U.check("diffusemix fractal_size", self.fractal_size, self.fractal_size >= 4, "a side >= 4 pixels")

    def fractal_image(self, k: int) -> Image.Image:
        """Fractal k of the set as an 8-bit image, rendered once per process."""
        if k not in self._cache:
            f = fractal(k, self.fractal_size, self.fractal_seed)  # (3, S, S) in [0, 1]
            self._cache[k] = Image.fromarray((f.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
        return self._cache[k]

    def draws(self, key: str) -> tuple[bool, int]:
        """(top/bottom?, fractal index) of the pair named `key`: their random.choice calls, fixed per pair."""
        rng = np.random.default_rng(derive_seed(self.fractal_seed, "diffusemix", key))
        return bool(rng.random() < 0.5), int(rng.integers(self.fractals))

    def pair_image(self, real: Image.Image, gen: Image.Image, key: str) -> Image.Image:
        vertical, k = self.draws(key)
        return concat_and_blend(real, gen, self.fractal_image(k), vertical, self.blend_width, self.fractal_alpha)

    def mix(self, batch: Batch, generator, model=None):
        """The composites (made before augmentation, in the generated slot) for pair rows; real rows as they are."""
        if batch.gen is None:
            raise ValueError(
                "method 'diffusemix' needs the edited images: train with --generated <dir of `diffcore edit`>"
            )
        if batch.is_pair is None:
            return batch.gen, batch.y
        pair = batch.is_pair.to(batch.x.device).view(-1, 1, 1, 1)
        return torch.where(pair, batch.gen, batch.x), batch.y
