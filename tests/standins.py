"""Stand-in models whose behaviour a test fixes exactly, for the generate -> filter -> keep-or-retry loop.

PixelClip: a "CLIP" whose embedding is the picture's pixels, so the cosine of two binary pictures is
|A n B| / sqrt(|A| |B|). PicturesBySeed: a text-to-image "pipeline" that returns, for each seed, the picture the
test chose for it (an unknown seed is an error). With them every status, similarity and file of a run is known in
advance, and the run takes a fraction of a second.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image

import diffcore.counterparts as C
from diffcore.data import ImageSet
from diffcore.engine.runtime import derive_seed
from diffcore.filter import ClipEncoder, FilterConfig
from diffcore.generate import GenerateConfig
from diffcore.prompts import PromptConfig

SIDE = 16  # pictures are SIDE x SIDE, binary, grey (the same in R, G and B)
RUN_SEED = 11


def picture(pixels) -> np.ndarray:
    """(SIDE, SIDE) float32 picture: 1 at the given flat pixel indices, 0 elsewhere."""
    flat = np.zeros(SIDE * SIDE, np.float32)
    flat[list(pixels)] = 1.0
    return flat.reshape(SIDE, SIDE)


def to_pil(p: np.ndarray) -> Image.Image:
    return Image.fromarray((np.repeat(p[:, :, None], 3, axis=2) * 255).astype(np.uint8))


class PixelClip(torch.nn.Module):
    """A stand-in CLIP: the embedding is the picture's pixels (ClipEncoder normalises it)."""

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))  # ClipEncoder reads the dtype from the parameters

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)  # (b, 3*H*W)


def pixel_clip() -> ClipEncoder:
    def preprocess(im: Image.Image) -> torch.Tensor:
        return torch.from_numpy(np.asarray(im.convert("RGB"), np.float32) / 255).permute(2, 0, 1)  # (3, H, W)

    return ClipEncoder(PixelClip(), preprocess, torch.device("cpu"), batch_size=5)


class PicturesBySeed:
    """A stand-in diffusers pipeline: the picture of each image is the one the test chose for its seed."""

    def __init__(self, by_seed: dict[int, np.ndarray]):
        self.by_seed, self.calls = by_seed, []

    def __call__(self, prompt, negative_prompt, generator, output_type, **settings):
        assert output_type == "pt"
        self.calls.append({"prompt": list(prompt), "negative_prompt": negative_prompt, **settings})
        seeds = [g.initial_seed() for g in generator]
        missing = [s for s in seeds if s not in self.by_seed]
        assert not missing, f"seeds {missing} are none of derive_seed(run seed, image id, attempt)"
        x = torch.stack([torch.from_numpy(self.by_seed[s]) for s in seeds])  # (b, H, W)
        return SimpleNamespace(images=x[:, None].expand(-1, 3, -1, -1).clone())  # (b, 3, H, W) in [0, 1]


def toy_set(classes: list[str], pictures: list[np.ndarray], labels: list[int]) -> ImageSet:
    ids = [f"toy/{classes[k]}/{i}.png" for i, k in enumerate(labels)]
    return ImageSet("toy", classes, ids, labels, loader=lambda i: to_pil(pictures[i]))


def seed_of(ds: ImageSet, i: int, attempt: int) -> int:
    return derive_seed(RUN_SEED, ds.ids[i], attempt)


def run(
    ds,
    pipe,
    out,
    prompt=None,
    max_attempts=3,
    batch_size=4,
    fraction=1.0,
    z_pairs=1000,
    tau_seed=0,
    save_rejected=True,
    io_threads=0,
):
    """make_counterparts with the stand-ins: (run.json's content, the manifest's rows)."""
    gen = GenerateConfig(model="stand-in", steps=1, guidance_scale=3.0, size=SIDE, batch_size=batch_size,
                         dtype="float32", run_seed=RUN_SEED)  # fmt: skip
    filt = FilterConfig(z_pairs=z_pairs, tau_seed=tau_seed, max_attempts=max_attempts)
    prompt = prompt or PromptConfig(dataset_type="toy", negative_prompt="")
    cp = C.CounterpartConfig(fraction=fraction, save_rejected=save_rejected)
    info = C.make_counterparts(
        ds, pipe, pixel_clip(), out, prompt, gen, filt, cp, progress=False, io_threads=io_threads
    )
    return info, C.read_manifest(Path(out) / "manifest.csv")


def attempts(rows: list[dict], ds: ImageSet, i: int) -> list[tuple[int, str]]:
    """(attempt, status) of source i's rows, in order."""
    return [(int(r["attempt"]), r["status"]) for r in rows if r["source_id"] == ds.ids[i]]


def pixels(path: Path) -> np.ndarray:
    """A written grey picture back as (SIDE, SIDE) 0/1 floats."""
    return np.asarray(Image.open(path).convert("L"), np.float32) / 255


# ---------------------------------------------------------------- a set with every outcome (figures.explore)
def every_outcome_set(root: Path, save_rejected: bool = True) -> ImageSet:
    """An ImageFolder tree root/train/{a,b}/<i>.png and its set root/generated, made by the real loop with the
    stand-ins (3 attempts at most). The pictures of a class are disjoint, so tau_k = 0 and an attempt is kept only
    when it shares pixels with its own source: a/0 is kept at once, a/1 rejected then kept, a/2 never kept (its
    three attempts are a/0's picture), b/3 and b/4 kept at once. Returns the dataset (image_folder)."""
    from diffcore.data import image_folder

    own = [picture(range(9 * i, 9 * i + 9)) for i in range(5)]  # disjoint 9-pixel pictures
    for i, name in enumerate(["a"] * 3 + ["b"] * 2):
        (root / "train" / name).mkdir(parents=True, exist_ok=True)
        to_pil(own[i]).save(root / "train" / name / f"{i}.png")
    ds = image_folder(root / "train")
    by_seed = {seed_of(ds, i, 0): own[i] for i in (0, 3, 4)}
    by_seed |= {seed_of(ds, 1, 0): own[0], seed_of(ds, 1, 1): own[1]}
    by_seed |= {seed_of(ds, 2, a): own[0] for a in range(3)}
    run(ds, PicturesBySeed(by_seed), root / "generated", save_rejected=save_rejected)
    return ds
