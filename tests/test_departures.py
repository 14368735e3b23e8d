"""Where the paper and the authors' public code differ, the kit behaves as the paper (book/differences.md).

Each test fails if the kit behaves like the authors' generation code instead:
    fixed threshold 0.6                      -> tau_k per class from random real pairs (Eq. 5)
    compared with the class's first file     -> each generated image compared with its own source
    a rejected image deleted                 -> generated again with the next seed, the rejected one kept aside
    written into the training folder         -> its own folder with a manifest, the training folder untouched
    no seeds                                 -> seed = f(run seed, image id, attempt)
    one negative prompt for every dataset    -> the default P_n never names a class of the dataset

The models are stand-ins whose behaviour the test fixes exactly (tests/standins.py): a "CLIP" whose embedding is
the picture's pixels and a "pipeline" that returns, for each seed, the picture the test chose for it. So each
status, similarity and file of the run is known in advance, and a kit that compared other images, used other
seeds or another threshold would write other ones. `python scripts/departures.py` makes each of the authors'
behaviours in a copy of the kit and checks that these tests fail on it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from standins import RUN_SEED, SIDE, PicturesBySeed, attempts, picture, pixels, run, seed_of, to_pil, toy_set

import diffcore.counterparts as C
from diffcore.data import ImageSet, image_folder
from diffcore.engine.runtime import derive_seed
from diffcore.prompts import AUTHORS_NEGATIVE_PROMPT, PromptConfig, class_conflicts
from diffcore.train import PairedTrainingSet, TrainConfig, load_counterparts, transforms_for

AUTHORS_THRESHOLD = 0.6  # the authors' code: keep if cos > 0.6, whatever the class
SEED_0, SEED_1 = 3141088414978345412, 3377832844989662245  # derive_seed(0, "digits/train/0", 0), (7, "toy/a/1.png", 2)


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
