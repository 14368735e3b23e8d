"""Mixup and its box / resize / hidden-layer relatives: Mixup, CutMix, ResizeMix, Manifold Mixup (Tables 2-5).

Each row i is mixed with row perm[i] of the same batch (a random permutation, so odd batch sizes and a batch of
one work); the labels are mixed in the same proportion, as (B, K) soft targets that sum to 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from ..mix import box_masks
from . import common as U
from .base import Batch, Method, register


@register
@dataclass
class Mixup(Method):
    """Mixup (Zhang et al., ICLR 2018): x = lam * x_i + (1 - lam) * x_perm(i), targets mixed with the same lam.

    Defaults: alpha = 1.0, lam ~ Beta(alpha, alpha) (REFERENCE.md; the FGVC benchmarks use 0.2:
    `--method-arg alpha=0.2`); one lam per batch as in the reference code (facebookresearch/mixup-cifar10
    `mixup_data`), per_sample=True draws one per row.
    """

    name = "mixup"
    cite = "Zhang et al., mixup: Beyond empirical risk minimization, ICLR 2018"
    alpha: float = 1.0  # Beta(alpha, alpha); REFERENCE.md: 1.0 (0.2 on FGVC)
    per_sample: bool = False  # reference code: one lam per batch
    prob: float = 1.0  # share of batches mixed (the rest trained plain): SnapMix's fine-tuning runs use 0.5

    def __post_init__(self):
        U.check("mixup alpha", self.alpha, self.alpha > 0, "a Beta parameter > 0")
        U.check("mixup prob", self.prob, 0 <= self.prob <= 1, "a probability in [0, 1]")

    def mix(self, batch: Batch, generator, model=None):
        if self.prob < 1 and not U.coin(self.prob, generator, batch.x.device):  # prob 1: no draw, the usual stream
            return batch.x, batch.y
        x = batch.x
        b, dev = x.shape[0], x.device
        perm = U.permutation(b, generator, dev)  # (B,)
        lam = U.beta(self.alpha, self.alpha, b if self.per_sample else 1, generator, dev).expand(b)  # (B,)
        l4 = lam.to(x.dtype).view(b, 1, 1, 1)
        return l4 * x + (1 - l4) * x[perm], U.pair_targets(batch.one_hot(), perm, lam)


class BoxPlan(NamedTuple):
    perm: torch.Tensor  # (B,) partner of each row
    mask: torch.Tensor  # (B, 1, H, W) bool: True where the pixel comes from the partner
    lam: torch.Tensor  # (B,) share of the row's own image = its label weight


@register
@dataclass
class CutMix(Method):
    """CutMix (Yun et al., ICCV 2019): a box of x_perm(i) pasted into x_i; lam = the kept area, exactly.

    Defaults: alpha = 1.0 (REFERENCE.md), box side = sqrt(1 - lam) * size with a uniform centre, clipped
    (diffcore.mix.box_masks); prob = 1.0 (the authors' ImageNet command; their CIFAR command uses 0.5); one box per
    batch as in the authors' train.py, per_sample=True draws one per row (timm's 'elem' mode).
    """

    name = "cutmix"
    cite = (
        "Yun et al., CutMix: Regularization strategy to train strong classifiers with localizable features, ICCV 2019"
    )
    alpha: float = 1.0  # REFERENCE.md
    prob: float = 1.0  # clovaai/CutMix-PyTorch README: 1.0 on ImageNet (0.5 on CIFAR)
    per_sample: bool = False  # reference code: one box per batch

    def __post_init__(self):
        U.check("cutmix alpha", self.alpha, self.alpha > 0, "a Beta parameter > 0")
        U.check("cutmix prob", self.prob, 0 <= self.prob <= 1, "a probability in [0, 1]")

    def plan(self, batch: Batch, generator) -> BoxPlan:
        b, _, h, w = batch.x.shape
        dev = batch.x.device
        n = b if self.per_sample else 1
        perm = U.permutation(b, generator, dev)
        lam = U.beta(self.alpha, self.alpha, n, generator, dev)  # (n,)
        mask = box_masks(n, h, w, 1 - lam, generator, dev).expand(b, 1, h, w)  # (B, 1, H, W)
        return BoxPlan(perm, mask, 1 - mask.flatten(1).float().mean(1))  # lam = kept area

    def mix(self, batch: Batch, generator, model=None):
        if not U.coin(self.prob, generator, batch.x.device):
            return batch.x, batch.y
        p = self.plan(batch, generator)
        return torch.where(p.mask, batch.x[p.perm], batch.x), U.pair_targets(batch.one_hot(), p.perm, p.lam)


@register
@dataclass
class ResizeMix(Method):
    """ResizeMix (Qin et al., 2020): the whole partner image, resized by tau, pasted at a random place.

    Defaults: tau ~ U(0.1, 0.8) (REFERENCE.md, the paper's scale range); the patch lies inside the image; lam =
    1 - patch area / image area, exactly. One tau and place per batch (openmixup's `resizemix`), per_sample=True
    draws one per row. The resize is bilinear (one grid_sample over the batch).
    """

    name = "resizemix"
    cite = "Qin et al., ResizeMix: Mixing data with preserved object information and true labels, arXiv 2020"
    scale_low: float = 0.1  # tau ~ U(scale_low, scale_high), REFERENCE.md
    scale_high: float = 0.8
    per_sample: bool = False

    def __post_init__(self):
        U.check(
            "resizemix scale_low, scale_high",
            (self.scale_low, self.scale_high),
            0 < self.scale_low <= self.scale_high <= 1,
            "0 < scale_low <= scale_high <= 1",
        )

    def plan(self, batch: Batch, generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(perm (B,), boxes (B, 4) = y1, x1, y2, x2 of the pasted patch)."""
        b, _, h, w = batch.x.shape
        dev = batch.x.device
        n = b if self.per_sample else 1
        perm = U.permutation(b, generator, dev)
        tau = U.uniform(n, generator, dev, self.scale_low, self.scale_high)  # (n,)
        ph, pw = (tau * h).long(), (tau * w).long()  # (n,), (n,)
        y1 = (U.uniform(n, generator, dev) * (h - ph + 1)).long().clamp(max=h - ph)
        x1 = (U.uniform(n, generator, dev) * (w - pw + 1)).long().clamp(max=w - pw)
        return perm, torch.stack([y1, x1, y1 + ph, x1 + pw], 1).expand(b, 4)

    def mix(self, batch: Batch, generator, model=None):
        perm, boxes = self.plan(batch, generator)
        h, w = batch.x.shape[-2:]
        out = U.paste_resized(batch.x, batch.x[perm], boxes)  # (B, C, H, W)
        lam = 1 - U.box_area(boxes).to(batch.x.dtype) / (h * w)
        return out, U.pair_targets(batch.one_hot(), perm, lam)


# Stages whose outputs Manifold Mixup may mix, per model family (the first tuple whose names all exist is used):
# the reference code mixes at k in {0 (input), 1 (after layer1), 2 (after layer2)} of a PreActResNet.
MANIFOLD_STAGES = (
    ("layer1", "layer2"),  # PreActResNet, torchvision ResNets
    ("features.transition1", "features.transition2"),  # torchvision DenseNet
    ("features.0", "features.1"),
)  # diffcore DigitsCNN


def manifold_stages(model: torch.nn.Module) -> list[torch.nn.Module]:
    model = getattr(model, "module", model)  # under DDP, the wrapped model's stages (hooks fire through DDP)
    names = set(dict(model.named_modules()))
    for stages in MANIFOLD_STAGES:
        if all(s in names for s in stages):
            return [model.get_submodule(s) for s in stages]
    raise ValueError(
        f"method 'manifold-mixup': model {type(model).__name__} has none of the stage sets "
        f"{[list(s) for s in MANIFOLD_STAGES]}; add its stage names to MANIFOLD_STAGES"
    )


@register
@dataclass
class ManifoldMixup(Method):
    """Manifold Mixup (Verma et al., ICML 2019): Mixup of the hidden states at a random layer.

    k ~ U{0, 1, 2}: 0 mixes the input, 1 / 2 the output of the first / second stage (MANIFOLD_STAGES), through a
    forward hook, so the model code is untouched. Defaults: alpha = 2.0, one lam per batch (Verma et al.'s and
    PuzzleMix's CIFAR command `--train mixup_hidden --mixup_alpha 2.0`).
    """

    name = "manifold-mixup"
    cite = "Verma et al., Manifold mixup: Better representations by interpolating hidden states, ICML 2019"
    needs_model = True
    alpha: float = 2.0  # PuzzleMix README / Verma et al. CIFAR command

    def __post_init__(self):
        U.check("manifold-mixup alpha", self.alpha, self.alpha > 0, "a Beta parameter > 0")

    def forward(self, model, batch: Batch, generator):
        x = batch.x
        b, dev = x.shape[0], x.device
        stages = manifold_stages(model)
        k = int(U.randint(0, len(stages) + 1, 1, generator, dev)[0])
        perm = U.permutation(b, generator, dev)
        lam = U.beta(self.alpha, self.alpha, 1, generator, dev).expand(b)  # (B,)
        target = U.pair_targets(batch.one_hot(), perm, lam)
        lam0 = float(lam[0])
        if k == 0:
            return model(lam0 * x + (1 - lam0) * x[perm]), target
        hook = stages[k - 1].register_forward_hook(lambda m, i, out: lam0 * out + (1 - lam0) * out[perm])
        try:
            return model(x), target
        finally:
            hook.remove()
