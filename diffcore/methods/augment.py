"""Label-preserving augmentation chains: AugMix and PixMix (Table 3). Labels stay hard: nothing is mixed across
images of the batch.

Both use the same nine base operations (AugMix's `augmentations` list, copied by PixMix): autocontrast, equalize,
posterize, rotate, solarize, shear_x, shear_y, translate_x, translate_y, with the reference strengths
(`int_parameter` / `float_parameter` of a level ~ U(0.1, severity)). Here they run batched on the device, on
[0, 1] pixels, with a different operation and level per image; the reference runs them on PIL images one by one.
Geometric operations are one bilinear grid_sample per batch with black fill, as PIL's; shears are about the image
centre (PIL shears about the top-left corner, which also shifts the image).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from . import common as U
from .base import Batch, Method, register
from .fractals import bank_on_device


# ---------------------------------------------------------------- the nine base operations, batched
def _u8(p: torch.Tensor) -> torch.Tensor:
    return (p.clamp(0, 1) * 255).round().to(torch.uint8)


def _int_param(level: torch.Tensor, maxval: float) -> torch.Tensor:
    return (level * maxval / 10).floor()  # AugMix int_parameter: int(level * maxval / 10)


def _float_param(level: torch.Tensor, maxval: float) -> torch.Tensor:
    return level * maxval / 10  # AugMix float_parameter


def autocontrast(p, level, sign):
    lo = p.amin((2, 3), keepdim=True)
    hi = p.amax((2, 3), keepdim=True)
    return torch.where(hi > lo, (p - lo) / (hi - lo).clamp_min(1e-8), p)  # per image and channel


def equalize(p, level, sign):
    return TF.equalize(_u8(p)).to(p.dtype) / 255


def posterize(p, level, sign):
    bits = 4 - _int_param(level, 4).long()  # (n,) bits kept, 1..4
    keep = (256 - (1 << (8 - bits))).to(torch.uint8).view(-1, 1, 1, 1)  # high-bit mask
    return (_u8(p) & keep).to(p.dtype) / 255


def solarize(p, level, sign):
    thr = (256 - _int_param(level, 256)).view(-1, 1, 1, 1)  # PIL: invert pixels >= threshold
    q = _u8(p).to(p.dtype)
    return torch.where(q >= thr, 255 - q, q) / 255


def _affine(p: torch.Tensor, m: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Warp (n, C, H, W) with output->input maps x_in = m @ x_out + t in pixels about the centre; black fill."""
    n, _, h, w = p.shape
    d = torch.tensor([2 / w, 2 / h], device=p.device, dtype=p.dtype)
    theta = torch.cat([m * d[None, :, None] / d[None, None, :], (t * d)[:, :, None]], 2)  # (n, 2, 3) normalised
    grid = F.affine_grid(theta, list(p.shape), align_corners=False)
    return F.grid_sample(p, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _eye(p, n):
    return torch.eye(2, device=p.device, dtype=p.dtype).expand(n, 2, 2).clone()


def rotate(p, level, sign):
    deg = _int_param(level, 30) * sign  # PIL rotate: counter-clockwise
    a = torch.deg2rad(deg).to(p.dtype)
    c, s = torch.cos(a), torch.sin(a)
    m = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)  # (n, 2, 2)
    return _affine(p, m, torch.zeros(len(p), 2, device=p.device, dtype=p.dtype))


def _shear(p, level, sign, axis):
    m = _eye(p, len(p))
    m[:, axis, 1 - axis] = (_float_param(level, 0.3) * sign).to(p.dtype)
    return _affine(p, m, torch.zeros(len(p), 2, device=p.device, dtype=p.dtype))


def shear_x(p, level, sign):
    return _shear(p, level, sign, 0)


def shear_y(p, level, sign):
    return _shear(p, level, sign, 1)


def _translate(p, level, sign, axis):
    size = p.shape[-1] if axis == 0 else p.shape[-2]
    t = torch.zeros(len(p), 2, device=p.device, dtype=p.dtype)
    t[:, axis] = (_int_param(level, size / 3) * sign).to(p.dtype)  # AugMix: IMAGE_SIZE / 3
    return _affine(p, _eye(p, len(p)), t)


def translate_x(p, level, sign):
    return _translate(p, level, sign, 0)


def translate_y(p, level, sign):
    return _translate(p, level, sign, 1)


OPS = (autocontrast, equalize, posterize, rotate, solarize, shear_x, shear_y, translate_x, translate_y)


def apply_ops(p: torch.Tensor, op: torch.Tensor, severity: float, generator) -> torch.Tensor:
    """Row i of (B, C, H, W) pixels through OPS[op[i]] (op -1: unchanged), level ~ U(0.1, severity), random sign."""
    b, dev = p.shape[0], p.device
    level = U.uniform(b, generator, dev, 0.1, severity)  # AugMix sample_level
    sign = torch.where(U.uniform(b, generator, dev) < 0.5, -1.0, 1.0).to(dev)
    out = p.clone()
    for k, fn in enumerate(OPS):  # a loop over 9 ops, not pixels
        rows = (op == k).nonzero().flatten()
        if len(rows):
            out[rows] = fn(p[rows], level[rows], sign[rows]).to(p.dtype)
    return out


def random_op(p: torch.Tensor, severity: float, generator) -> torch.Tensor:
    """One uniformly chosen base operation per image (PixMix's `augment_input`)."""
    return apply_ops(p, U.randint(0, len(OPS), p.shape[0], generator, p.device), severity, generator)


# ---------------------------------------------------------------- AugMix
def jensen_shannon(logits_clean, logits_a, logits_b) -> torch.Tensor:
    """AugMix's consistency loss: mean KL of each of the three distributions to their mixture."""
    p = [F.softmax(z, 1) for z in (logits_clean, logits_a, logits_b)]
    log_m = torch.clamp(sum(p) / 3, 1e-7, 1).log()
    return sum(F.kl_div(log_m, q, reduction="batchmean") for q in p) / 3


@register
@dataclass
class AugMix(Method):
    """AugMix (Hendrycks et al., ICLR 2020): width chains of depth 1-3 random operations, mixed with Dirichlet
    weights, then blended with the original image by m ~ Beta(alpha, alpha). Labels are unchanged.

    Defaults (google-research/augmix cifar.py): width 3, depth -1 (random in [1, 3]), severity 3 (their imagenet.py:
    1), alpha (aug_prob_coeff) 1.0. jsd=True adds their Jensen-Shannon consistency loss (weight 12) over (clean,
    augmix, augmix) through `Method.loss` (diffcore.train scores every step with `method.loss`); jsd=False gives
    AugMix without it (an ablation in their paper).
    """

    name = "augmix"
    cite = "Hendrycks et al., AugMix: A simple data processing method to improve robustness and uncertainty, ICLR 2020"
    width: int = 3  # mixture_width
    depth: int = -1  # mixture_depth; -1: random in [1, 3]
    severity: float = 3.0  # aug_severity (CIFAR; ImageNet: 1)
    alpha: float = 1.0  # aug_prob_coeff: Dirichlet and Beta parameter
    jsd: bool = True  # Jensen-Shannon consistency loss over (clean, augmix, augmix), via method.loss
    jsd_weight: float = 12.0  # augmix cifar.py: 12

    def __post_init__(self):
        U.check("augmix width", self.width, self.width >= 1, "an integer >= 1")
        U.check("augmix depth", self.depth, self.depth == -1 or self.depth >= 1, "-1 (random 1-3) or >= 1")
        U.check("augmix severity", self.severity, 0.1 < self.severity <= 10, "a level in (0.1, 10]")
        U.check("augmix alpha", self.alpha, self.alpha > 0, "a Dirichlet / Beta parameter > 0")

    def augmix(self, p: torch.Tensor, generator) -> torch.Tensor:
        """(B, C, H, W) pixels in [0, 1] -> their AugMix images, still in [0, 1]."""
        b, dev = p.shape[0], p.device
        ws = U.dirichlet(self.alpha, b, self.width, generator, dev).to(p.dtype)  # (B, width)
        m = U.beta(self.alpha, self.alpha, b, generator, dev).to(p.dtype).view(b, 1, 1, 1)
        mix = torch.zeros_like(p)
        for i in range(self.width):
            depth = (
                U.randint(1, 4, b, generator, dev) if self.depth < 0 else torch.full((b,), self.depth, device=dev)
            )  # (B,)
            chain = p
            for d in range(int(depth.max())):
                op = U.randint(0, len(OPS), b, generator, dev)
                chain = apply_ops(chain, torch.where(d < depth, op, -1), self.severity, generator)
            mix = mix + ws[:, i].view(b, 1, 1, 1) * chain
        return (1 - m) * p + m * mix

    def mix(self, batch: Batch, generator, model=None):
        return batch.from_pixels(self.augmix(batch.to_pixels(batch.x), generator)), batch.y

    def forward(self, model, batch: Batch, generator):
        if not self.jsd:
            return super().forward(model, batch, generator)
        p = batch.to_pixels(batch.x)
        views = [batch.x, batch.from_pixels(self.augmix(p, generator)), batch.from_pixels(self.augmix(p, generator))]
        return model(torch.cat(views)), batch.y  # (3B, K), (B,)

    def loss(self, logits, target):
        if not self.jsd:
            return super().loss(logits, target)
        clean, a, b = logits.chunk(3)
        return F.cross_entropy(clean, target) + self.jsd_weight * jensen_shannon(clean, a, b)


# ---------------------------------------------------------------- PixMix
def _pixmix_ab(beta: float, n: int, generator, device) -> tuple[torch.Tensor, torch.Tensor]:
    """PixMix get_ab per row: (a, b) = (Beta(b,1), Beta(1,b)) or (1 + Beta(1,b), -Beta(1,b)), each w.p. 1/2."""
    first = U.uniform(n, generator, device) < 0.5
    a1, b1 = U.beta(beta, 1.0, n, generator, device), U.beta(1.0, beta, n, generator, device)
    b2 = U.beta(1.0, beta, n, generator, device)
    return torch.where(first, a1, 1 + b2), torch.where(first, b1, -b2)


def pixmix_add(x, y, a, b):
    return ((2 * x - 1) * a + (2 * y - 1) * b + 1) / 2


def pixmix_multiply(x, y, a, b):
    return (2 * x).pow(a) * (2 * y).clamp_min(1e-37).pow(b) / 2


@register
@dataclass
class PixMix(Method):
    """PixMix (Hendrycks et al., CVPR 2022): the image (augmented w.p. 1/2) mixed k' ~ U{0..k} times, by
    additive or multiplicative mixing with weights from get_ab(beta), with either an augmented copy or a fractal.
    Labels are unchanged.

    Defaults (andyzoujm/pixmix cifar.py): k = 4, beta = 3, aug_severity = 3 (their imagenet.py: beta 4, severity 1).

    The mixing set is NOT the authors'. Theirs is a download (their README's Google Drive link) of about 14,000
    images: fractals and feature visualisations of trained networks. Here it is `fractals` procedural fractals from
    diffcore.methods.fractals: flame-style IFS renders from one generator, black background, no feature
    visualisations; one is drawn per image and resized to the image size. Fractal i is the same whatever the set's
    size, so a larger set adds distinct pictures, not other kinds: their per-picture statistics stay put
    (benchmarks/fidelity.md measures 100 against 1,000). How close either is to the authors' set is not measured:
    their set could not be downloaded where this kit was built. The operations themselves are compared with their
    cifar.py on the same mixing pictures in benchmarks/fidelity.md (as distributions: the random streams differ).
    """

    name = "pixmix"
    cite = "Hendrycks et al., PixMix: Dreamlike pictures comprehensively improve safety measures, CVPR 2022"
    k: int = 4  # mixing iterations (maximum)
    beta: float = 3.0  # mixing severity
    severity: float = 3.0  # aug_severity of the base operations
    fractals: int = 100  # size of the procedural mixing set
    fractal_seed: int = 0
    _banks: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self):
        U.check("pixmix k", self.k, self.k >= 0, "an integer >= 0")
        U.check("pixmix beta", self.beta, self.beta > 0, "a Beta parameter > 0")
        U.check("pixmix severity", self.severity, 0.1 < self.severity <= 10, "a level in (0.1, 10]")
        U.check("pixmix fractals", self.fractals, self.fractals >= 1, "at least 1 fractal")

    def bank(self, h: int, w: int, device, dtype) -> torch.Tensor:
        """(N, 3, H, W) fractals on the device, made once per image size."""
        return bank_on_device(self._banks, self.fractals, self.fractal_seed, h, w, device, dtype)

    def pixmix(self, p: torch.Tensor, generator) -> torch.Tensor:
        b, c, h, w = p.shape
        dev = p.device
        bank = self.bank(h, w, dev, p.dtype)
        pic = bank[U.randint(0, len(bank), b, generator, dev)][:, :c]  # (B, C, H, W) mixing picture
        col = lambda v: v.view(b, 1, 1, 1)  # noqa: E731
        mixed = torch.where(col(U.uniform(b, generator, dev) < 0.5), random_op(p, self.severity, generator), p)
        rounds = U.randint(0, self.k + 1, b, generator, dev)  # (B,) k' ~ U{0..k}
        for r in range(self.k):
            other = torch.where(col(U.uniform(b, generator, dev) < 0.5), random_op(p, self.severity, generator), pic)
            a, bb = (col(v.to(p.dtype)) for v in _pixmix_ab(self.beta, b, generator, dev))
            add = col(U.uniform(b, generator, dev) < 0.5)
            new = torch.where(add, pixmix_add(mixed, other, a, bb), pixmix_multiply(mixed, other, a, bb)).clamp(0, 1)
            mixed = torch.where(col(r < rounds), new, mixed)
        return mixed

    def mix(self, batch: Batch, generator, model=None):
        return batch.from_pixels(self.pixmix(batch.to_pixels(batch.x), generator)), batch.y
