"""Presets as plain dicts of overrides for each step's dataclass.

embedded: the bundled digits and the tiny models shipped in diffcore/assets; runs offline on a laptop CPU.
          Its numbers check the pipeline; they are NOT the paper's claims.
paper:    the paper's settings (CosXL + the authors' scheduler, CLIP ViT-B/32, 300-epoch SGD recipe); needs GPUs,
          local datasets and local weights (see README, "Running the paper profile").
"""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets"
TINY_T2I_DIR = ASSETS / "tiny-t2i"
TINY_CLIP_CONFIG = ASSETS / "tiny-clip" / "diffcore-tiny-clip.json"
TINY_CLIP_WEIGHTS = ASSETS / "tiny-clip" / "open_clip_model.safetensors"
EDIT_STANDIN = "tiny-standin"  # edit model of the embedded profile: tiny-t2i's UNet widened to edit (edit.py)

PROFILES: dict[str, dict] = {
    "embedded": {
        "dataset": "digits",
        "few_shot": None,  # all 898 training digits; the data-scarcity table uses k = 10
        "prompt": {"dataset_type": "handwritten digit", "negative_key": "digits"},
        "generate": {
            "model": str(TINY_T2I_DIR),
            "steps": 20,
            "guidance_scale": 4.0,
            "size": 32,
            "batch_size": 64,
            "dtype": "float32",
        },
        "filter": {
            "clip_model": "diffcore-tiny-clip",
            "clip_pretrained": str(TINY_CLIP_WEIGHTS),
            "clip_config": str(TINY_CLIP_CONFIG),
            "z_pairs": 1000,
            "max_attempts": 5,
            "batch_size": 256,
        },
        "counterparts": {"fraction": 1.0},
        "train": {
            "model": "digits-cnn",
            "epochs": 15,
            "batch_size": 32,
            "lr": 0.05,
            "image_size": 32,
            "augment": "digits",
        },
        "edit": {  # two prompts, the authors' README example (`--prompts "sunset,Autumn"`): each image x 2 on a CPU
            "model": EDIT_STANDIN,
            "prompts": ("sunset", "Autumn"),
            "steps": 20,
            "size": 32,
            "batch_size": 64,
            "dtype": "float32",
        },
        "seeds": [0, 1, 2],
        "fractions": [0.5, 1.0],
    },
    "paper": {
        "dataset": "cub-200-2011",
        "few_shot": None,
        "prompt": {"dataset_type": "bird", "negative_key": "bird"},
        "generate": {
            "model": "cosxl.safetensors",
            "scheduler": "edm-euler-vpred",
            "steps": 50,
            "guidance_scale": 12.0,
            "size": 512,
            "batch_size": 32,
            "dtype": "auto",
        },  # 19 GB, H100
        "filter": {
            "clip_model": "ViT-B-32-quickgelu",  # the OpenAI ViT-B/32 weights: QuickGELU (filter.FilterConfig)
            "clip_pretrained": None,
            "z_pairs": 1000,
            "max_attempts": 5,
            "batch_size": 256,
        },
        "counterparts": {"fraction": 1.0, "save_rejected": False},  # chunks of one batch: ImageNet 40,037
        "train": {
            "model": "densenet121",
            "epochs": 300,
            "batch_size": 16,
            "lr": 0.01,
            "image_size": 224,
            "augment": "resize-crop",  # Table 4's CUB recipe (GuidedMixup FGVC; plan/spec.py cites each value)
        },
        "edit": {},  # EditConfig's defaults are the DiffuseMix authors' settings
        "seeds": [0],
        "fractions": [0.5, 1.0],
    },
}


def profile(name: str) -> dict:
    if name not in PROFILES:
        raise ValueError(f"profile={name!r}: expected one of {sorted(PROFILES)}")
    return PROFILES[name]
