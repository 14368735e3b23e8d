"""Where the paper and the authors' public code differ, the kit behaves as the paper (book/differences.md).

Each test fails if the kit behaves like the authors' generation code instead:
    fixed threshold 0.6                      -> tau_k per class from random real pairs (Eq. 5)
    compared with the class's first file     -> each generated image compared with its own source
    a rejected image deleted                 -> generated again with the next seed, the rejected one kept aside
    written into the training folder         -> its own folder with a manifest, the training folder untouched
    no seeds                                 -> seed = f(run seed, image id, attempt)
    one negative prompt for every dataset    -> the default P_n never names a class of the dataset

The models are stand-ins whose behaviour the test fixes exactly: a "CLIP" whose embedding is the image's pixels
(the cosine of two binary pictures is |A n B| / sqrt(|A| |B|)), and a text-to-image "pipeline" that returns, for
each seed, the picture the test chose for it (an unknown seed is an error). So each status, similarity and file
of the run is known in advance, and a kit that compared other images, used other seeds or another threshold
would write other ones.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import diffcore.counterparts as C
from diffcore.data import ImageSet, image_folder
from diffcore.engine.runtime import derive_seed
from diffcore.filter import ClipEncoder, FilterConfig
from diffcore.generate import GenerateConfig
from diffcore.prompts import AUTHORS_NEGATIVE_PROMPT, PromptConfig, class_conflicts
from diffcore.train import PairedTrainingSet, TrainConfig, load_counterparts, transforms_for

SIDE = 16  # pictures are SIDE x SIDE, binary, grey (the same in R, G and B)
RUN_SEED = 11
AUTHORS_THRESHOLD = 0.6  # the authors' code: keep if cos > 0.6, whatever the class
SEED_0, SEED_1 = (
    3141088414978345412,
    3377832844989662245,
)  # derive_seed(0, "digits/train/0", 0), derive_seed(7, "toy/a/1.png", 2)


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


def run(ds, pipe, out, prompt=None, max_attempts=3, batch_size=4, fraction=1.0):
    gen = GenerateConfig(model="stand-in", steps=1, guidance_scale=3.0, size=SIDE, batch_size=batch_size,
                         dtype="float32", run_seed=RUN_SEED)  # fmt: skip
    filt = FilterConfig(z_pairs=1000, max_attempts=max_attempts)
    prompt = prompt or PromptConfig(dataset_type="toy", negative_prompt="")
    cp = C.CounterpartConfig(fraction=fraction)
    info = C.make_counterparts(ds, pipe, pixel_clip(), out, prompt, gen, filt, cp, progress=False, io_threads=0)
    return info, C.read_manifest(Path(out) / "manifest.csv")


def attempts_of(rows, source_id) -> list[dict]:
    return [r for r in rows if r["source_id"] == source_id]


def attempts(rows: list[dict], ds: ImageSet, i: int) -> list[tuple[int, str]]:
    """(attempt, status) of source i's rows, in order."""
    return [(int(r["attempt"]), r["status"]) for r in rows if r["source_id"] == ds.ids[i]]


def pixels(path: Path) -> np.ndarray:
    """A written grey picture back as (SIDE, SIDE) 0/1 floats."""
    return np.asarray(Image.open(path).convert("L"), np.float32) / 255


def tree(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# ---------------------------------------------------------------- tau_k per class, not a fixed 0.6
def test_the_threshold_is_each_classs_mean_real_pair_cosine_not_a_fixed_one(tmp_path):
    """Class 'close': three pictures sharing 8 of their 9 pixels (every pair: cos 8/9). Class 'apart': three
    disjoint pictures (cos 0). Every generated picture is its source plus 27 pixels no source has: cos
    9 / sqrt(9 * 36) = 0.5 with its source. Eq. (5) gives tau = 8/9 and 0: 'close' rejects every attempt, 'apart'
    keeps every first one. A fixed 0.6 would treat both classes alike (and reject all)."""
    close = [picture([*range(8), 8 + i]) for i in range(3)]
    apart = [picture(range(20 + 9 * i, 29 + 9 * i)) for i in range(3)]
    sources = close + apart
    ds = toy_set(["close", "apart"], sources, [0, 0, 0, 1, 1, 1])
    noise = picture(range(100, 127))
    by_seed = {seed_of(ds, i, a): np.maximum(sources[i], noise) for i in range(len(ds)) for a in range(3)}
    info, rows = run(ds, PicturesBySeed(by_seed), tmp_path)
    assert info["tau"] == {"close": pytest.approx(8 / 9, abs=1e-6), "apart": pytest.approx(0.0, abs=1e-6)}
    assert [float(r["tau"]) for r in rows] == [pytest.approx(8 / 9 if r["label"] == "0" else 0, abs=1e-6) for r in rows]
    assert all(float(r["similarity"]) == pytest.approx(0.5, abs=1e-6) for r in rows)
    assert 0.5 <= AUTHORS_THRESHOLD  # the authors' rule would keep none of them
    for i in range(3):
        assert attempts(rows, ds, i) == [(0, "rejected"), (1, "rejected"), (2, "rejected-final")]
        assert attempts(rows, ds, 3 + i) == [(0, "kept")]
    assert sorted(C.kept_counterparts(tmp_path)) == sorted(ds.ids[3:])
    summary = info["summary"]["per_class"]
    assert (summary["close"]["kept"], summary["close"]["no_counterpart"], summary["apart"]["kept"]) == (0, 3, 3)


# ---------------------------------------------------------------- its own source; regenerated; seeds; own folder
# Class 'a': three disjoint pictures (tau 0). Source 0's first attempt is its own picture. Sources 1 and 2 first get
# the class's FIRST picture (cos 0 with their own source: rejected; cos 1 with the class's first file: the authors'
# code would keep it), then, with their next seed, their own picture (cos 1: kept; cos 0 with the first file: the
# authors' code would delete it). Class 'b': two disjoint pictures, each kept at once.
A = [picture(range(9 * i, 9 * i + 9)) for i in range(3)]
B = [picture(range(40 + 9 * i, 49 + 9 * i)) for i in range(2)]


def first_file_case() -> tuple[ImageSet, dict[int, np.ndarray]]:
    ds = toy_set(["a", "b"], A + B, [0, 0, 0, 1, 1])
    by_seed = {seed_of(ds, 0, 0): A[0], seed_of(ds, 3, 0): B[0], seed_of(ds, 4, 0): B[1]}
    for i in (1, 2):
        by_seed[seed_of(ds, i, 0)] = A[0]  # the class's first file
        by_seed[seed_of(ds, i, 1)] = A[i]  # its own source
    return ds, by_seed


def test_each_generated_image_is_compared_with_its_own_source_not_the_classs_first_file(tmp_path):
    ds, by_seed = first_file_case()
    _, rows = run(ds, PicturesBySeed(by_seed), tmp_path)
    assert attempts(rows, ds, 0) == [(0, "kept")]
    for i in (1, 2):
        assert attempts(rows, ds, i) == [(0, "rejected"), (1, "kept")]
        first, own = (r for r in rows if r["source_id"] == ds.ids[i])
        assert (float(first["similarity"]), float(own["similarity"])) == (0.0, 1.0)  # S(I_i, G): its own source
    assert attempts(rows, ds, 3) == attempts(rows, ds, 4) == [(0, "kept")]
    kept = C.kept_counterparts(tmp_path)
    assert sorted(kept) == sorted(ds.ids)  # every source has a counterpart ...
    for i, sid in enumerate(ds.ids):
        assert np.array_equal(pixels(kept[sid]), (A + B)[i])  # ... and it is a picture of that very source


def test_a_rejected_image_is_generated_again_with_the_next_seed_and_set_aside_not_deleted(tmp_path):
    ds, by_seed = first_file_case()
    pipe = PicturesBySeed(by_seed)
    info, rows = run(ds, pipe, tmp_path)
    for i in (1, 2):
        rejected, kept = (r for r in rows if r["source_id"] == ds.ids[i])
        assert (int(rejected["seed"]), int(kept["seed"])) == (seed_of(ds, i, 0), seed_of(ds, i, 1))
        assert rejected["file"].startswith("rejected/") and kept["file"].startswith("images/")
        assert np.array_equal(pixels(tmp_path / rejected["file"]), A[0])  # the rejected picture, kept aside
        assert np.array_equal(pixels(tmp_path / kept["file"]), A[i])
    assert info["summary"]["attempts"] == len(rows) == 7 and info["summary"]["kept"] == 5
    drawn = [s for call in pipe.calls for s in call["prompt"]]
    assert len(drawn) == 7  # one pipeline image per attempt: nothing generated twice, nothing skipped


def test_generated_images_get_their_own_folder_and_manifest_and_never_touch_the_training_folder(tmp_path):
    ds0, by_seed0 = first_file_case()
    train = tmp_path / "train"
    for i in range(len(ds0)):
        path = train / ds0.classes[ds0.labels[i]] / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        to_pil((A + B)[i]).save(path)
    ds = image_folder(train)
    by_seed = {derive_seed(RUN_SEED, ds.ids[i], a): by_seed0[seed_of(ds0, i, a)]
               for i in range(len(ds)) for a in range(2) if seed_of(ds0, i, a) in by_seed0}  # fmt: skip
    before = tree(train)
    with pytest.raises(ValueError, match="holds other files .* and no generated set"):
        run(ds, PicturesBySeed(by_seed), train)  # never into the training folder itself
    info, rows = run(ds, PicturesBySeed(by_seed), tmp_path / "generated")
    assert tree(train) == before and image_folder(train).ids == ds.ids  # the training set is what it was
    out = tree(tmp_path / "generated")
    assert {"manifest.csv", "run.json"} <= set(out)
    written = {k for k in out if k.endswith(".png")}
    assert written == {r["file"] for r in rows}  # every picture has its manifest row, and every row its picture
    assert len(rows) == 7 and all(r["seed"] and r["similarity"] and r["tau"] for r in rows)
    assert [r["source_path"] for r in rows if r["attempt"] == "0"] == ds.paths


def test_each_images_seed_depends_only_on_the_run_seed_its_id_and_the_attempt(tmp_path):
    """The same rows whatever the batch size, the fraction chosen and the order of the dataset; another run seed
    gives other seeds for every image (the stand-in pipeline refuses any seed it was not given)."""
    ds, by_seed = first_file_case()
    key = lambda rows: sorted((r["source_id"], r["attempt"], r["seed"], r["status"], r["similarity"]) for r in rows)
    _, whole = run(ds, PicturesBySeed(by_seed), tmp_path / "b4")
    assert key(run(ds, PicturesBySeed(by_seed), tmp_path / "b1", batch_size=1)[1]) == key(whole)
    assert key(run(ds, PicturesBySeed(by_seed), tmp_path / "b3", batch_size=3)[1]) == key(whole)
    backwards = ds.subset(range(len(ds) - 1, -1, -1))
    assert key(run(backwards, PicturesBySeed(by_seed), tmp_path / "reversed")[1]) == key(whole)
    _, half = run(ds, PicturesBySeed(by_seed), tmp_path / "half", fraction=0.5)  # -50: the same seeds
    assert 0 < len(half) < len(whole) and set(key(half)) <= set(key(whole))
    for r in whole:
        assert int(r["seed"]) == derive_seed(RUN_SEED, r["source_id"], int(r["attempt"]))
    other = {derive_seed(RUN_SEED + 1, ds.ids[i], a) for i in range(len(ds)) for a in range(3)}
    assert not other & set(by_seed)


def test_derive_seed_is_a_fixed_pure_function_of_its_parts():
    """Pinned: a run resumed by a later diffcore must draw the very seeds the killed run drew."""
    assert derive_seed(0, "digits/train/0", 0) == SEED_0
    assert derive_seed(7, "toy/a/1.png", 2) == SEED_1
    seeds = {derive_seed(r, i, a) for r in (0, 1) for i in ("x", "y", "x/0") for a in (0, 1, 2)}
    assert len(seeds) == 18 and all(0 <= s < 2**63 for s in seeds)  # distinct, and a valid torch seed
    assert derive_seed(1, "2", 3) != derive_seed(1, "23") != derive_seed(12, "3")  # parts stay apart


# ---------------------------------------------------------------- the negative prompt
def test_the_default_negative_prompt_that_reaches_the_pipeline_names_no_class_of_the_dataset(tmp_path):
    """The authors' list (written for aircraft) names cars and trees; on a dataset with a class 'car' and a class
    'Tree_Sparrow' those phrases are dropped before the pipeline sees P_n, and the manifest and run.json record the
    P_n actually used."""
    ds, by_seed = first_file_case()
    ds = ImageSet("toy", ["car", "130.Tree_Sparrow"], ds.ids, ds.labels, loader=ds.loader)
    pipe = PicturesBySeed(by_seed)
    prompt = PromptConfig(dataset_type="vehicle", negative_key="aircraft")
    info, rows = run(ds, pipe, tmp_path, prompt=prompt)
    used = {n for call in pipe.calls for n in call["negative_prompt"]}
    assert len(used) == 1
    (neg,) = used
    phrases = [p.strip() for p in AUTHORS_NEGATIVE_PROMPT.split(",")]
    assert neg.split(", ") == [p for p in phrases if p not in ("car", "tree")]
    assert class_conflicts(AUTHORS_NEGATIVE_PROMPT, ds.classes) and not class_conflicts(neg, ds.classes, "vehicle")
    assert {r["negative_prompt"] for r in rows} == {neg} and info["negative_prompt"] == neg
    assert {p for call in pipe.calls for p in call["prompt"]} == {
        "Generate heavy snow to the car, a vehicle object",
        "Generate heavy snow to the Tree Sparrow, a vehicle object",
    }
    assert all(call["guidance_scale"] == 3.0 for call in pipe.calls)  # w = 1 + gamma > 1: P_n acts (Eq. 4)


# ---------------------------------------------------------------- training pairs each image with its own
def test_training_pairs_each_real_image_with_its_own_counterpart(tmp_path):
    ds, by_seed = first_file_case()
    run(ds, PicturesBySeed(by_seed), tmp_path)
    cfg = TrainConfig(method="diffcore", model="digits-cnn", augment="digits", image_size=SIDE, fraction=1.0)
    found = load_counterparts(ds, tmp_path, cfg)
    assert sorted(found) == sorted(ds.ids) and all(len(v) == 1 for v in found.values())
    tr = PairedTrainingSet(ds, found, transforms_for(cfg, False))
    assert len(tr) == 2 * len(ds)
    for n in range(len(ds), len(tr)):
        real, gen, y, is_pair = tr[n]
        i = n - len(ds)
        assert is_pair and y == ds.labels[i] and torch.equal(real, tr[i][0])
        assert torch.equal(gen, real)  # the stand-in's kept counterpart of image i is image i itself
