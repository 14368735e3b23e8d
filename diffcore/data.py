"""Datasets: the bundled digits, ImageFolder trees, and the paper's datasets read from local roots.

Every dataset is exposed as an `ImageSet`: class names, a stable id per image (the seed of its generated
counterpart derives from it), integer labels, and a loader returning an RGB PIL image. Nothing downloads.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
DIGITS_SPLIT_SEED = 0        # fixed: the shipped tiny models were trained on this train split only
DIGITS_TRAIN_FRACTION = 0.5  # 1797 images -> 898 train / 899 test, stratified by class
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


@dataclass
class ImageSet:
    """A labelled image collection. `ids[i]` is unique and stable across runs and machines."""

    name: str
    classes: list[str]
    ids: list[str]
    labels: list[int]
    loader: Callable[[int], Image.Image] = field(repr=False)
    paths: list[str | None] | None = field(default=None, repr=False)
    dataset_type: str = "natural"  # selects the negative prompt, see prompts.NEGATIVE_PROMPTS

    def __post_init__(self):
        if not (len(self.ids) == len(self.labels)):
            raise ValueError(f"{self.name}: {len(self.ids)} ids but {len(self.labels)} labels")
        if len(set(self.ids)) != len(self.ids):
            raise ValueError(f"{self.name}: image ids are not unique")

    def __len__(self) -> int:
        return len(self.ids)

    def load(self, i: int) -> Image.Image:
        return self.loader(i)

    def path(self, i: int) -> str | None:
        return None if self.paths is None else self.paths[i]

    def subset(self, indices: Sequence[int], name: str | None = None) -> "ImageSet":
        idx = [int(i) for i in indices]
        return ImageSet(name or self.name, self.classes, [self.ids[i] for i in idx], [self.labels[i] for i in idx],
                        loader=lambda j, _l=self.loader, _idx=idx: _l(_idx[j]),
                        paths=None if self.paths is None else [self.paths[i] for i in idx],
                        dataset_type=self.dataset_type)

    def class_counts(self) -> np.ndarray:
        return np.bincount(np.asarray(self.labels, dtype=np.int64), minlength=len(self.classes))


# ---------------------------------------------------------------- the bundled digits (scikit-learn)
def _digits_arrays(size: int) -> tuple[np.ndarray, np.ndarray]:
    """All 1797 digits as (N, size, size, 3) uint8, bright ink on black, and (N,) labels."""
    from sklearn.datasets import load_digits  # ships with scikit-learn: no download

    d = load_digits()
    gray = np.clip(d.images * 16.0, 0, 255).astype(np.uint8)  # (N, 8, 8), 0..16 -> 0..255
    up = np.stack([np.asarray(Image.fromarray(g).resize((size, size), Image.BICUBIC)) for g in gray])  # (N, s, s)
    rgb = np.repeat(up[..., None], 3, axis=-1)  # (N, s, s, 3)
    return rgb, d.target.astype(np.int64)


def digits_split_indices() -> tuple[np.ndarray, np.ndarray]:
    """Fixed stratified train/test split of the 1797 digits (seed DIGITS_SPLIT_SEED)."""
    from sklearn.model_selection import train_test_split
    from sklearn.datasets import load_digits

    y = load_digits().target
    idx = np.arange(len(y))
    train, test = train_test_split(idx, train_size=DIGITS_TRAIN_FRACTION, stratify=y, random_state=DIGITS_SPLIT_SEED)
    return np.sort(train), np.sort(test)


def digits(split: str = "train", size: int = 32) -> ImageSet:
    """scikit-learn's handwritten digits (real 8x8 scans), upsampled to `size` and made RGB."""
    if split not in ("train", "test", "all"):
        raise ValueError(f"digits split={split!r}: expected 'train', 'test' or 'all'")
    rgb, y = _digits_arrays(size)
    train, test = digits_split_indices()
    idx = {"train": train, "test": test, "all": np.arange(len(y))}[split]
    images = rgb[idx]
    return ImageSet(f"digits-{split}", list(DIGIT_NAMES), [f"digits/{int(i):04d}" for i in idx],
                    [int(v) for v in y[idx]], loader=lambda j: Image.fromarray(images[j]),
                    dataset_type="digits")


# ---------------------------------------------------------------- subsets
def few_shot(ds: ImageSet, k: int, seed: int) -> ImageSet:
    """k images per class, chosen with `seed` (Table 2: 10 images per class). Fails if a class has < k."""
    if k < 1:
        raise ValueError(f"few-shot k={k}: expected an integer >= 1")
    counts = ds.class_counts()
    short = [ds.classes[c] for c in range(len(ds.classes)) if counts[c] < k]
    if short:
        raise ValueError(f"few-shot k={k}: classes {short[:5]} have fewer than {k} images in {ds.name}")
    rng = np.random.default_rng(seed)
    labels = np.asarray(ds.labels)
    chosen = [rng.choice(np.flatnonzero(labels == c), size=k, replace=False) for c in range(len(ds.classes))]
    return ds.subset(np.sort(np.concatenate(chosen)), name=f"{ds.name}-{k}shot")


def choose_fraction(ds: ImageSet, fraction: float, seed: int) -> np.ndarray:
    """Indices of the images that get a generative counterpart: `fraction` of each class (at least one).

    DiffCoRe-Mix-50 / -100 = fraction 0.5 / 1.0. Per class, so that no class is left without counterparts.
    """
    if not (0.0 < fraction <= 1.0):
        raise ValueError(f"fraction={fraction}: expected a value in (0, 1], e.g. 0.5 for DiffCoRe-Mix-50")
    rng = np.random.default_rng(seed)
    labels = np.asarray(ds.labels)
    chosen = []
    for c in range(len(ds.classes)):
        members = np.flatnonzero(labels == c)
        if len(members) == 0:
            continue
        n = max(1, int(round(fraction * len(members))))
        chosen.append(rng.choice(members, size=n, replace=False))
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)
