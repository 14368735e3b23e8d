"""Vanilla and the generative methods of Table 7 that pair each real image with its own counterpart."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..mix import MixConfig, diffcore_mix
from .base import Batch, Method, register


@register
@dataclass
class Vanilla(Method):
    """Traditional augmentation only (random crop / flip in the data pipeline); no mixing."""

    name = "vanilla"
    cite = "He et al., 2016 (training recipe of the paper, Sec. 4)"

    def mix(self, batch, generator, model=None):
        return batch.x, batch.y


@dataclass
class _Paired(Method):
    """Eq. (6)-(8): each real image I_i mixed with its own counterpart G_i; the label stays one-hot.

    Subclasses only pick the mode; the draws (lambda, box, pi) come from `mix_config` (train: TrainConfig.mix).
    """

    uses = "counterparts"
    mode = "both"
    cite = "DiffCoRe-Mix, Eq. (6)-(8)"
    mix_config: MixConfig = field(default_factory=MixConfig)

    def mix(self, batch: Batch, generator, model=None):
        cfg = replace(self.mix_config, mode=self.mode)
        out = diffcore_mix(batch.x, batch.gen, cfg, generator, batch.is_pair)
        return out.images, batch.y  # I_i and G_i share the class: the target is untouched


@register
@dataclass
class GenAug(_Paired):
    """Table 7 'GenAug': the filtered generated image used as it is, in place of its real image."""

    name = "genaug"
    mode = "none"


@register
@dataclass
class PixelWise(_Paired):
    """Table 7 'pixel-wise': Eq. (6) only."""

    name = "pixel"
    mode = "pixel"


@register
@dataclass
class PatchWise(_Paired):
    """Table 7 'patch-wise': Eq. (7) only."""

    name = "patch"
    mode = "patch"


@register
@dataclass
class DiffCoReMix(_Paired):
    """DiffCoRe-Mix, Eq. (8): pixel blend with probability pi, else patch."""

    name = "diffcore"
    mode = "both"
