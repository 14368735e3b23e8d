"""One mixing interface for every method the paper compares (Tables 2-7).

A method takes a batch that already lives on the training device and returns the inputs the model sees and
the targets it is scored against. The training loop only ever calls `Method.forward`, so it does not know
which method runs. Methods that need the model (saliency-guided ones, Manifold Mixup's hidden layers) get it
through `forward(model, batch, generator)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from PIL import Image

from ..engine.checks import check_finite


@dataclass
class Batch:
    """One training batch on the device. Targets are built from `y`; methods never see file paths."""

    x: torch.Tensor  # (B, C, H, W) real images, normalised with mean/std
    y: torch.Tensor  # (B,) int64 class indices
    num_classes: int
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)  # the normalisation of x, for methods working on [0, 1] pixels
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    gen: torch.Tensor | None = None  # (B, C, H, W) each row's generated counterpart (== x where no pair)
    is_pair: torch.Tensor | None = None  # (B,) bool: True where gen holds a real counterpart

    def to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Undo the normalisation: (B, C, H, W) in [0, 1]."""
        m = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        s = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        return x * s + m

    def from_pixels(self, p: torch.Tensor) -> torch.Tensor:
        """Normalise (B, C, H, W) [0, 1] pixels the way x is."""
        m = torch.tensor(self.mean, device=p.device, dtype=p.dtype).view(1, -1, 1, 1)
        s = torch.tensor(self.std, device=p.device, dtype=p.dtype).view(1, -1, 1, 1)
        return (p - m) / s

    def one_hot(self) -> torch.Tensor:
        return F.one_hot(self.y, self.num_classes).to(self.x.dtype)  # (B, K)


class Method:
    """Base class: subclasses set `name`, `cite`, and implement `mix` (or `forward` when they need the model).

    `uses` says which generated set the method trains with: None (real images only), "counterparts"
    (DiffCoRe-Mix's filtered text-to-image set) or "edits" (DiffuseMix's image-edited set). Hyperparameters are
    dataclass fields with their paper defaults.
    """

    name: ClassVar[str] = ""
    cite: ClassVar[str] = ""
    uses: ClassVar[str | None] = None
    needs_model: ClassVar[bool] = False
    composes_pairs: ClassVar[bool] = False  # True: the loader builds each pair's image with `pair_image`

    def mix(
        self, batch: Batch, generator: torch.Generator | None, model: torch.nn.Module | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs (B, C, H, W), targets): targets are (B,) int64 hard labels or (B, K) soft label weights."""
        raise NotImplementedError

    def forward(
        self, model: torch.nn.Module, batch: Batch, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (B, K), targets) for one training step."""
        x, target = self.mix(batch, generator, model if self.needs_model else None)
        return model(x), target

    def pair_image(self, real: Image.Image, gen: Image.Image, key: str) -> Image.Image:
        """The image a pair's generated slot holds, made from the aligned pair before any augmentation, when
        `composes_pairs` (DiffuseMix's concatenation and fractal blend); key names the pair (its file name), for
        draws fixed per pair. The generated image itself otherwise."""
        return gen

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The training loss of `forward`'s output; cross-entropy with hard or soft targets unless a method adds a
        term of its own (AugMix's Jensen-Shannon consistency)."""
        return mixed_loss(logits, target)


def mixed_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with hard (B,) or soft (B, K) targets; hard targets take F.cross_entropy's exact path."""
    if target.dtype == torch.long:
        return F.cross_entropy(logits, target)
    return -(target * F.log_softmax(logits, dim=1)).sum(1).mean()  # soft targets: rows may not sum to 1 (SnapMix)


REGISTRY: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make a method trainable by name (`diffcore train --method NAME`)."""
    if not cls.name or cls.name in REGISTRY:
        raise ValueError(f"method {cls.__name__}: name {cls.name!r} is empty or already registered")
    REGISTRY[cls.name] = cls
    return cls


def build_method(name: str, **hparams) -> Method:
    if name not in REGISTRY:
        raise ValueError(f"method={name!r}: expected one of {sorted(REGISTRY)}")
    cls = REGISTRY[name]
    check_finite("method_args", hparams)  # NaN and inf pass the methods' range checks
    try:
        return cls(**hparams)
    except TypeError as e:
        raise ValueError(f"method {name!r}: bad hyperparameters {hparams}: {e}") from None
