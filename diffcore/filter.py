"""Hard-cosine filtration in CLIP space (paper Sec. 3): per-class threshold tau_k (Eq. 5), accept S > tau_k.

Choices the paper leaves open (documented in the README and recorded in every run.json):
- z: pairs per class for Eq. (5). Default 1000; when C(N_k, 2) <= z every pair is used (exact Eq. 5).
- A class with exactly one real image has no pair: its tau is the mean tau of the classes that have pairs.
  A class with no real image at all is an error (raised before any generation).
- The retry cap: `max_attempts` generations per source image; when all are rejected the source gets no
  counterpart (counted per class in run.json) rather than a sample the filter refused.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .engine.checks import check_fields


@dataclass(frozen=True)
class FilterConfig:
    clip_model: str = "ViT-B-32-quickgelu"  # open_clip name. The authors' code uses OpenAI's CLIP ViT-B/32, trained
    # with QuickGELU (open_clip pretrained.py: ViT-B-32 openai quick_gelu=True); from a local file open_clip builds
    # exactly the named config, and "ViT-B-32" (GELU) would silently run those weights with the wrong activation
    clip_pretrained: str | None = None  # local weights file (.safetensors/.bin) or an open_clip tag found in the cache
    clip_config: str | None = None  # JSON model config to register first (custom models such as the tiny CLIP)
    z_pairs: int = 1000  # z in Eq. (5): random distinct real pairs per class (paper leaves z open)
    tau_seed: int = 0  # seed of the pair sampling
    max_attempts: int = 5  # generations per source image before giving up (paper: "generate again")
    batch_size: int = 64  # images per CLIP forward pass

    def __post_init__(self):
        check_fields(self)  # types, finite numbers (engine.checks)
        if self.z_pairs < 1:
            raise ValueError(f"z_pairs={self.z_pairs}: expected >= 1 pairs per class for Eq. (5)")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts={self.max_attempts}: expected >= 1")
        if self.batch_size < 1:
            raise ValueError(f"filter batch_size={self.batch_size}: expected >= 1 images per CLIP pass")
        if self.tau_seed < 0:
            raise ValueError(f"tau_seed={self.tau_seed}: expected an integer >= 0")


class ClipEncoder:
    """An open_clip image tower plus its preprocessing; returns L2-normalised embeddings."""

    def __init__(self, model: torch.nn.Module, preprocess: Callable, device: torch.device, batch_size: int = 64):
        self.model = model.eval().to(device)
        self.preprocess = preprocess
        self.device = device
        self.batch_size = batch_size

    @torch.no_grad()
    def embed(self, images: Sequence[Image.Image], pool: Executor | None = None) -> torch.Tensor:
        """(N, D) float32 unit vectors, on CPU. `pool`: threads for the PIL preprocessing (PIL resizes outside
        the GIL); the embeddings are the same with or without it."""
        out = []
        for s in range(0, len(images), self.batch_size):
            chunk = images[s : s + self.batch_size]
            x = torch.stack(
                list(pool.map(self.preprocess, chunk)) if pool is not None else [self.preprocess(im) for im in chunk]
            )  # (b, 3, h, w)
            out.append(self.encode(x))
        dim = out[0].shape[1] if out else 0
        return torch.cat(out) if out else torch.zeros(0, dim)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(b, 3, h, w) preprocessed images -> (b, D) float32 unit vectors on CPU (embed = preprocess + encode)."""
        dtype = next(self.model.parameters(), x).dtype  # a bf16 CLIP (the bench's) takes bf16 pixels
        e = self.model.encode_image(x.to(self.device, dtype)).float()  # (b, D)
        return torch.nn.functional.normalize(e, dim=-1).cpu()


def check_clip_files(cfg: FilterConfig) -> None:
    """Cheap checks of the CLIP settings, run before anything heavy is loaded."""
    if cfg.clip_config is not None and not Path(cfg.clip_config).is_file():
        raise FileNotFoundError(f"clip_config={cfg.clip_config}: no such model-config JSON")
    pre = cfg.clip_pretrained
    if pre is None:
        raise ValueError(
            "clip_pretrained is not set: a CLIP with random weights would make the filter meaningless; "
            "pass a local weights file (--clip-pretrained path/to/open_clip_model.safetensors)"
        )
    if ("/" in pre or Path(pre).suffix) and not Path(pre).is_file():
        raise FileNotFoundError(
            f"clip_pretrained={pre}: no such file. Put the CLIP weights (e.g. "
            f"open_clip_model.safetensors of ViT-B-32/openai) there or pass another path"
        )
    import open_clip  # the name check needs the registry: cheap, no weights are read

    if cfg.clip_config is not None:
        open_clip.add_model_config(cfg.clip_config)
    if cfg.clip_model not in open_clip.list_models():
        raise ValueError(
            f"clip_model={cfg.clip_model!r}: not an open_clip model name (see open_clip.list_models(); "
            f"a custom one needs --clip-config <model-config.json>)"
        )


def load_clip(cfg: FilterConfig, device: torch.device) -> ClipEncoder:
    """Load an open_clip model from local files only (no hub access)."""
    import open_clip

    check_clip_files(cfg)  # registers clip_config and checks the name
    # require_pretrained: open_clip only warns when weights fail to load; a random CLIP must never filter silently.
    # weights_only: a .bin/.pt CLIP file is unpickled without running code (safetensors needs no unpickling).
    model, _, preprocess = open_clip.create_model_and_transforms(
        cfg.clip_model, pretrained=cfg.clip_pretrained, device=device, require_pretrained=True, weights_only=True
    )
    return ClipEncoder(model, preprocess, device, cfg.batch_size)


# ---------------------------------------------------------------- Eq. (5)
def sample_pairs(n: int, z: int, rng: np.random.Generator) -> np.ndarray:
    """(m, 2) distinct unordered pairs (i < j) of range(n): all C(n, 2) of them if C(n, 2) <= z, else z at random."""
    total = n * (n - 1) // 2
    if total <= z:
        i, j = np.triu_indices(n, k=1)
        return np.stack([i, j], axis=1)
    flat = np.sort(rng.choice(total, size=z, replace=False))
    # invert the row-major enumeration of the strict upper triangle: row i starts at i*n - i*(i+1)/2
    i = (n - 2 - np.floor(np.sqrt(-8 * flat + 4 * n * (n - 1) - 7) / 2.0 - 0.5)).astype(np.int64)
    j = (flat + i + 1 - n * (n - 1) // 2 + (n - i) * ((n - i) - 1) // 2).astype(np.int64)
    return np.stack([i, j], axis=1)


def class_pairs(labels: Sequence[int], num_classes: int, z: int, seed: int) -> dict[int, np.ndarray]:
    """Per class k, (m, 2) pairs of dataset indices for Eq. (5). Classes with < 2 images map to an empty array."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    out = {}
    for k in range(num_classes):
        members = np.flatnonzero(labels == k)
        local = sample_pairs(len(members), z, rng) if len(members) >= 2 else np.zeros((0, 2), dtype=np.int64)
        out[k] = members[local] if len(local) else local
    return out


def class_thresholds(pairs: dict[int, np.ndarray], embed_of: Callable[[np.ndarray], torch.Tensor]) -> dict[int, float]:
    """tau_k = mean cosine over the given real pairs of class k (Eq. 5).

    `embed_of(indices)` returns the unit embeddings (len(indices), D) of those dataset images.
    Classes without a pair get the mean tau of the others (see module docstring).
    """
    taus = {}
    for k, p in pairs.items():
        if len(p) == 0:
            continue
        e = embed_of(p.reshape(-1)).view(len(p), 2, -1)  # (m, 2, D)
        taus[k] = float((e[:, 0] * e[:, 1]).sum(-1).mean())
    if not taus:
        raise ValueError("no class has two or more real images: tau (Eq. 5) cannot be estimated")
    fallback = float(np.mean(list(taus.values())))
    return {k: taus.get(k, fallback) for k in pairs}


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise S(I_i, G_i) of unit vectors: (N, D), (N, D) -> (N,)."""
    return (torch.nn.functional.normalize(a, dim=-1) * torch.nn.functional.normalize(b, dim=-1)).sum(-1)


def accept(similarity: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """R(G_i) = 1 iff S(I_i, G_i) > tau (strict, as in the paper)."""
    return similarity > tau


def pairs_needed(pairs: dict[int, np.ndarray]) -> np.ndarray:
    """Dataset indices that appear in any pair: only these need an embedding for the thresholds."""
    used = [p.reshape(-1) for p in pairs.values() if len(p)]
    return np.unique(np.concatenate(used)) if used else np.zeros(0, dtype=np.int64)


def expected_pairs(n: int, z: int) -> int:
    return min(math.comb(n, 2), z) if n >= 2 else 0
