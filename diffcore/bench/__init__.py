"""`python -m diffcore.bench`: generation, filtering and mixed training timed side by side, ratios printed.

Paper-sized architectures are built from their configs with random weights (same cost as real weights), so the
benchmark runs with no weights at hand; `--arch tiny` builds small ones so it also runs on any CPU. Every
number comes from one run, baseline and diffcore's path measured on the same machine one after the other.

- generation: the stock diffusers SDXL pipeline (one image at a time, then batched) vs `fastgen.FastGenerator`,
  at the authors' settings (EDMEuler v-prediction, 50 steps, guidance 12 with a negative prompt, 512 px),
  including CLIP filtering on the device and writing the PNG files; the FLOP floor from a FLOP count of one
  UNet call and the device's measured bf16 matmul rate;
- training: Eq. (9) overhead A_O = (T_aug - T_van) / T_van * 100 of every registered method at equal batch size,
  on tensors already on the device (`time_training`) and end to end with diffcore's loader reading a real JPEG
  and its generated PNG per sample (`time_training_loader`).
"""

from .generation import (
    SimulatedGPU,
    bench_generation,
    image_rows,
    opt_in_effect,
    time_host_loop,
    time_make_counterparts,
)
from .models import (
    ARCHS,
    SDXL_TEXT,
    SDXL_TEXT_2,
    SDXL_UNET,
    SDXL_VAE,
    TINY_TEXT,
    TINY_UNET,
    TINY_VAE,
    matmul_tflops,
    random_clip,
    random_sdxl,
    unet_flops_per_image_step,
)
from .report import report
from .training import FAST_PATHS, synthetic_pairs, time_training, time_training_loader

__all__ = [
    "ARCHS",
    "FAST_PATHS",
    "SDXL_TEXT",
    "SDXL_TEXT_2",
    "SDXL_UNET",
    "SDXL_VAE",
    "TINY_TEXT",
    "TINY_UNET",
    "TINY_VAE",
    "SimulatedGPU",
    "bench_generation",
    "image_rows",
    "matmul_tflops",
    "opt_in_effect",
    "random_clip",
    "random_sdxl",
    "report",
    "synthetic_pairs",
    "time_host_loop",
    "time_make_counterparts",
    "time_training",
    "time_training_loader",
    "unet_flops_per_image_step",
]
