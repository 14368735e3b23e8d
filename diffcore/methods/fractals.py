"""Procedural fractal images: PixMix's mixing set and DiffuseMix's blending images, made here (no download).

PixMix mixes with a folder of fractal images (Hendrycks et al. 2022 use 14,230 fractals and feature visualisations);
DiffuseMix blends every concatenated image with a random fractal image (the authors pass a folder of them). Both
folders are downloads; here each fractal is a random iterated function system (IFS) rendered with the chaos game,
flame-style (Draves & Reckase, "The fractal flame algorithm"): every map is a contractive affine map followed by
a non-linear variation and carries a colour; a point's colour is the running average of the colours of the maps
it went through, and brightness is the log of the hit density. Black background, like most of those sets.

Fractal i of a seed is a pure function of (seed, i, size): it is the same whatever the bank size, and regenerated
(next attempt) when it degenerates to a few pixels. Banks are cached in memory; `save_fractals` writes PNGs.

What this set is not: the authors' folders. PixMix's holds fractals and feature visualisations of trained networks,
DiffuseMix's its own fractal images; both are downloads this kit does not make. These are a stand-in of one kind
(IFS flames), whose statistics are measured, not matched, in benchmarks/fidelity.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from ..engine.checks import check_fields
from ..engine.runtime import derive_seed

VARIATIONS = ("linear", "sinusoidal", "spherical", "swirl")  # flam3 variations 0, 1, 2, 3


@dataclass(frozen=True)
class FractalConfig:
    maps_min: int = 2  # IFS maps per fractal, drawn in [maps_min, maps_max] (FractalDB: 2-8; fewer = bolder)
    maps_max: int = 4
    scale_min: float = 0.25  # singular values of each affine map: contractive, so the chaos game converges
    scale_max: float = 0.85
    walkers: int = 2048  # parallel chaos-game points (more for large images: see walkers_for)
    steps: int = 48  # recorded steps per walker
    burn_in: int = 24  # steps discarded before recording (the attractor is reached geometrically fast)
    gamma: float = 2.2  # display gamma of the log-density brightness (flam3's default)
    min_coverage: float = 0.03  # share of lit pixels below which a fractal counts as degenerate and is redrawn
    max_attempts: int = 8

    def __post_init__(self):
        check_fields(self)  # types, finite numbers (engine.checks)
        if not 1 <= self.maps_min <= self.maps_max:
            raise ValueError(f"maps_min={self.maps_min}, maps_max={self.maps_max}: expected 1 <= maps_min <= maps_max")
        if not 0 < self.scale_min <= self.scale_max < 1:
            raise ValueError(f"scale_min={self.scale_min}, scale_max={self.scale_max}: expected 0 < min <= max < 1")
        if self.walkers < 1 or self.steps < 1 or self.burn_in < 0:
            raise ValueError(f"walkers={self.walkers}, steps={self.steps}, burn_in={self.burn_in}: expected >= 1, 1, 0")

    def walkers_for(self, size: int) -> int:
        """About two hits per pixel per recorded step at any size."""
        return max(self.walkers, size * size // 16)


def _ifs(g: torch.Generator, cfg: FractalConfig) -> dict[str, torch.Tensor]:
    """Random IFS parameters: M maps of A = R(a) diag(s1, s2) R(b), translation, variation, colour, probability."""
    m = int(torch.randint(cfg.maps_min, cfg.maps_max + 1, (1,), generator=g))
    ang = torch.rand(m, 2, generator=g) * 2 * math.pi  # (M, 2)
    s = cfg.scale_min + (cfg.scale_max - cfg.scale_min) * torch.rand(m, 2, generator=g)  # (M, 2)
    flip = torch.where(torch.rand(m, generator=g) < 0.5, -1.0, 1.0)  # reflections too

    def rot(a):  # (M,) -> (M, 2, 2)
        c, sn = torch.cos(a), torch.sin(a)
        return torch.stack([torch.stack([c, -sn], -1), torch.stack([sn, c], -1)], -2)

    diag = torch.diag_embed(torch.stack([s[:, 0] * flip, s[:, 1]], -1))  # (M, 2, 2)
    a = rot(ang[:, 0]) @ diag @ rot(ang[:, 1])  # (M, 2, 2)
    t = torch.rand(m, 2, generator=g) * 2 - 1  # (M, 2)
    var = torch.randint(0, len(VARIATIONS), (m,), generator=g)  # (M,)
    det = torch.linalg.det(a).abs()
    return {
        "A": a,
        "t": t,
        "var": var,
        "colour": torch.rand(m, generator=g),
        "prob": (det + 0.05 * det.mean()) / (det + 0.05 * det.mean()).sum(),  # Barnsley: p ~ |det|
        "palette": torch.rand(4, 3, generator=g),
    }


def _variation(p: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """flam3 variations of (P, 2) points, the one chosen per point by var (P,)."""
    x, y = p[:, 0], p[:, 1]
    r2 = (x * x + y * y).clamp_min(1e-6)
    sph = p / r2[:, None]
    sw = torch.stack([x * torch.sin(r2) - y * torch.cos(r2), x * torch.cos(r2) + y * torch.sin(r2)], -1)
    out = torch.stack([p, torch.sin(p), sph, sw])  # (4, P, 2)
    return out.gather(0, var.view(1, -1, 1).expand(1, -1, 2))[0].clamp(-1e3, 1e3)  # (P, 2)


def _chaos_game(ifs: dict, g: torch.Generator, n: int, steps: int, burn_in: int):
    """Yield (points (n, 2), colour (n,)) after each recorded step."""
    p = torch.rand(n, 2, generator=g) * 2 - 1
    c = torch.rand(n, generator=g)
    choice = torch.multinomial(ifs["prob"], n * (steps + burn_in), replacement=True, generator=g)
    for k, j in enumerate(choice.view(steps + burn_in, n)):  # j: (n,) map per walker
        p = torch.einsum("nij,nj->ni", ifs["A"][j], p) + ifs["t"][j]  # (n, 2)
        p = torch.nan_to_num(_variation(p, ifs["var"][j]))
        c = (c + ifs["colour"][j]) / 2  # flame colour blend
        if k >= burn_in:
            yield p, c


def _render(ifs: dict, g: torch.Generator, size: int, cfg: FractalConfig) -> torch.Tensor:
    """(3, size, size) in [0, 1]: log-density brightness times the palette colour of the mean colour index."""
    n = cfg.walkers_for(size)
    frames = _chaos_game(ifs, g, n, cfg.steps, cfg.burn_in)
    first = [next(frames) for _ in range(min(4, cfg.steps))]
    pts = torch.cat([f[0] for f in first])  # (4n, 2) to frame the view
    lo = torch.quantile(pts[: 1 << 16], 0.01, dim=0)
    hi = torch.quantile(pts[: 1 << 16], 0.99, dim=0)
    centre, half = (lo + hi) / 2, ((hi - lo).max() / 2 * 1.1).clamp_min(1e-6)  # square view, 5% margin
    dens = torch.zeros(size * size)
    col = torch.zeros(size * size)
    for p, c in [*first, *frames]:
        q = ((p - centre) / half + 1) / 2 * size  # (n, 2) in pixels
        ok = (q >= 0).all(1) & (q < size).all(1)
        idx = q[ok, 1].long() * size + q[ok, 0].long()  # (n_ok,) row-major
        dens.index_add_(0, idx, torch.ones_like(idx, dtype=dens.dtype))
        col.index_add_(0, idx, c[ok])
    mean_c = (col / dens.clamp_min(1)).view(size, size)  # (S, S) colour index
    bright = (torch.log1p(dens) / math.log1p(float(dens.max().clamp_min(1)))).pow(1 / cfg.gamma).view(size, size)
    a, b, f, d = ifs["palette"]  # cosine palette, (3,) each
    rgb = (
        0.5
        + 0.5 * a[:, None, None]
        + 0.5 * b[:, None, None] * torch.cos(2 * math.pi * ((0.5 + f[:, None, None]) * mean_c[None] + d[:, None, None]))
    )  # (3, S, S)
    return (rgb.clamp(0, 1) * bright[None]).clamp(0, 1)


def fractal(index: int, size: int, seed: int = 0, cfg: FractalConfig = FractalConfig()) -> torch.Tensor:
    """(3, size, size) float32 in [0, 1]: fractal `index` of `seed`, redrawn (next attempt) while degenerate."""
    if size < 4:
        raise ValueError(f"size={size}: expected an image side >= 4 pixels")
    for attempt in range(cfg.max_attempts):
        g = torch.Generator().manual_seed(derive_seed(seed, "fractal", index, attempt))
        img = _render(_ifs(g, cfg), g, size, cfg)
        if float((img.amax(0) > 0.05).float().mean()) >= cfg.min_coverage:
            return img
    return img  # the last attempt, degenerate or not: never fails a training run over one sparse fractal


@lru_cache(maxsize=8)
def fractal_bank(n: int, size: int, seed: int = 0, cfg: FractalConfig = FractalConfig()) -> torch.Tensor:
    """(n, 3, size, size) float32 CPU tensor in [0, 1], cached: fractals 0..n-1 of `seed`."""
    if n < 1:
        raise ValueError(f"n={n}: expected at least one fractal")
    with torch.inference_mode(False), torch.no_grad():
        return torch.stack([fractal(i, size, seed, cfg) for i in range(n)])


def save_fractals(out_dir: str | Path, n: int, size: int, seed: int = 0) -> list[Path]:
    """Write fractals 0..n-1 as PNGs (fractal_00000.png, ...) for tools that read a folder, e.g. the authors' code."""
    from PIL import Image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(fractal_bank(n, size, seed)):
        paths.append(out / f"fractal_{i:05d}.png")
        Image.fromarray((img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(paths[-1])
    return paths


def bank_on_device(cache: dict, n: int, seed: int, height: int, width: int, device, dtype) -> torch.Tensor:
    """(n, 3, H, W) fractals resized to the batch and moved to its device, made once per (size, device, dtype)."""
    key = (n, seed, height, width, str(device), dtype)
    if key not in cache:
        f = fractal_bank(n, max(height, width), seed)  # (n, 3, S, S)
        cache[key] = torch.nn.functional.interpolate(f, size=(height, width), mode="bilinear", antialias=True).to(
            device, dtype
        )
    return cache[key]
