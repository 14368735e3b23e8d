"""What generating the paper's counterparts costs: GPU-hours and wall time on N GPUs, before anyone books them.

    attempts  = sources / (1 - discard)          every source ends kept; discard = discarded / generated (Fig. 7)
    GPU-hours = attempts * seconds per image / 3600
    wall time = GPU-hours * ceil(chunks / GPUs) / chunks   GPUs take whole chunks (distributed.my_chunks)

With the retry cap m the exact attempts are sources * (1 - d^m) / (1 - d) minus the sources left without a
counterpart; at d ~ 0.1 and m = 5 this is the formula above to 1e-5. CLIP filtering (0.032 ms/img, ViT-B/32) and
the tau pairs are negligible beside the diffusion model and are left out, as are loading the model (about a
minute per process) and tau_k's embeddings of the real images (read once, before generation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .engine.checks import check_finite
from .profiles import PROFILES

PAPER_CHUNK = PROFILES["paper"]["generate"]["batch_size"]  # the paper profile's chunk: one generation batch

# Measured: stock diffusers StableDiffusionXLPipeline at the authors' settings (EDMEuler v-pred, 50 steps,
# guidance 12, 512x512), bf16, batch 16, one H100 80GB, random weights (same cost as CosXL's), 2026-11-24
# (shared/REFERENCE.md). 0.43 s/img at batch 32; 3.32 s/img one at a time.
H100_S_PER_IMG = 0.45
# The paper, Sec. 6 / Fig. 7: "this percentage remains consistent in the range [10.1, 11.1]" (CUB, CosXL);
# the upper end, so that the estimate errs long rather than short.
PAPER_DISCARD = 0.111

# Training images that get a counterpart at 100% augmentation: the official train splits (the paper gives no
# counts; these are the datasets' own). Caltech-101 has no official split: 80% of torchvision's 8,677 images
# (data.caltech101_split, GuidedMixup's rule); Flowers-102 in Table 2 is its 10-per-class train split.
TRAIN_IMAGES = {
    "imagenet-1k": 1_281_167,
    "tiny-imagenet-200": 100_000,
    "cifar100": 50_000,
    "stanford-cars": 8_144,
    "caltech101": 6_941,
    "cub-200-2011": 5_994,
    "flowers102": 1_020,
}


@dataclass(frozen=True)
class Cost:
    sources: int  # images that get a counterpart
    attempts: float  # expected generations, discarded ones included
    gpu_hours: float
    wall_hours: float  # on `gpus` GPUs


def generation_cost(
    images: int,
    fraction: float = 1.0,
    gpus: int = 1,
    s_per_img: float = H100_S_PER_IMG,
    discard: float = PAPER_DISCARD,
    chunk_size: int = PAPER_CHUNK,
) -> Cost:
    """chunk_size: the paper profile's (one generation batch, counterparts.CounterpartConfig)."""
    for name, value in (("fraction", fraction), ("s_per_img", s_per_img), ("discard", discard)):
        check_finite(name, value)
    if not (0 < fraction <= 1 and gpus >= 1 and s_per_img > 0 and 0 <= discard < 1 and images >= 0):
        raise ValueError(
            f"fraction={fraction}, gpus={gpus}, s_per_img={s_per_img}, discard={discard}: expected "
            f"fraction in (0, 1], gpus >= 1, s_per_img > 0, discard in [0, 1)"
        )
    sources = round(fraction * images)
    attempts = sources / (1 - discard)
    gpu_hours = attempts * s_per_img / 3600
    chunks = max(1, math.ceil(sources / chunk_size))
    return Cost(sources, attempts, gpu_hours, gpu_hours * math.ceil(chunks / gpus) / chunks)


def table(
    gpus: int = 8,
    fraction: float = 1.0,
    s_per_img: float = H100_S_PER_IMG,
    discard: float = PAPER_DISCARD,
    chunk_size: int = PAPER_CHUNK,
) -> str:
    """A markdown table of every paper dataset's generation cost."""
    lines = [
        f"| dataset | images with a counterpart | generations (at {100 * discard:.1f}% discarded) | "
        f"GPU-hours | wall time on {gpus} GPUs |",
        "|---|---|---|---|---|",
    ]
    for name, n in TRAIN_IMAGES.items():
        c = generation_cost(n, fraction, gpus, s_per_img, discard, chunk_size)
        lines.append(f"| {name} | {c.sources:,} | {c.attempts:,.0f} | {c.gpu_hours:,.1f} | {_hours(c.wall_hours)} |")
    return "\n".join(lines)


def _hours(h: float) -> str:
    if h < 1 / 60:
        return f"{h * 3600:.0f} s"
    return f"{h * 60:.0f} min" if h < 1 else f"{h:.1f} h"
