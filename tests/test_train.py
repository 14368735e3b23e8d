"""Training: the paper's recipe as defaults, pairs mixed in the step, seeded results with provenance."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from diffcore.data import ImageSet, digits
from diffcore.engine.genset import MANIFEST_FIELDS, class_dir, safe_name
from diffcore.results import load_results, markdown, results_table
from diffcore.train import (
    PairedTrainingSet,
    TrainConfig,
    as_paths,
    load_counterparts,
    topk_correct,
    train,
    transforms_for,
)


def test_defaults_are_the_papers_recipe():
    c = TrainConfig()
    assert (c.epochs, c.batch_size, c.lr, c.momentum, c.weight_decay, c.lr_decay) == (300, 16, 0.01, 0.9, 5e-4, 0.1)
    assert [round(m * c.epochs) for m in c.milestones] == [150, 225]
    assert c.nesterov is True  # recorded choice (GuidedMixup's recipe); the paper is silent


def test_topk_counts():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.05], [0.2, 0.3, 0.5]])
    assert topk_correct(logits, torch.tensor([1, 1, 0])) == [1, 3]  # top-5 capped at 3 classes


def _fake_generated(tmp_path, ds: ImageSet, every: int = 2) -> list[str]:
    """A generated set on disk (inverted images) with a manifest, for every `every`-th image."""
    import csv

    from PIL import ImageOps

    rows = []
    for i in range(0, len(ds), every):
        rel = f"images/{class_dir(ds.labels[i], ds.classes[ds.labels[i]])}/{safe_name(ds.ids[i])}.png"
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        ImageOps.invert(ds.load(i)).save(tmp_path / rel)
        rows.append(
            {
                **{f: "" for f in MANIFEST_FIELDS},
                "source_id": ds.ids[i],
                "status": "kept",
                "file": rel,
                "attempt": 0,
                "label": ds.labels[i],
            }
        )
    with open(tmp_path / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=MANIFEST_FIELDS)
        w.writeheader()
        w.writerows(rows)
    return [r["source_id"] for r in rows]


def test_paired_set_is_real_images_then_pairs(tmp_path):
    ds = digits("train").subset(range(20))
    ids = _fake_generated(tmp_path, ds)
    cfg = TrainConfig(method="diffcore", augment="digits", image_size=32, fraction=1.0)
    pairs = load_counterparts(ds, tmp_path, cfg)
    assert set(pairs) == set(ids)
    tr = PairedTrainingSet(ds, pairs, transforms_for(TrainConfig(augment="digits", image_size=32), False))
    assert len(tr) == 20 + 10
    real, gen, y, is_pair = tr[0]
    assert torch.equal(real, gen) and not is_pair and y == ds.labels[0]
    real, gen, y, is_pair = tr[20]
    assert is_pair and y == ds.labels[0]
    torch.testing.assert_close(gen, -real, atol=2 / 255 * 2, rtol=0)  # inverted image, normalised to [-1, 1]
    half = load_counterparts(ds, tmp_path, TrainConfig(method="diffcore", fraction=0.5))
    assert set(half) <= set(pairs) and len(half) < len(pairs)
    with pytest.raises(ValueError, match="has no usable counterpart .*none of its 10 sources is among"):
        load_counterparts(digits("test").subset(range(5)), tmp_path, cfg)


def test_a_source_may_have_one_generated_file_or_several(tmp_path):
    """as_paths: one counterpart (a path), several edits (a list) or none; the paired set takes either form."""
    ds = digits("train").subset(range(3))
    _fake_generated(tmp_path, ds, every=1)
    files = sorted(tmp_path.rglob("*.png"))
    assert as_paths(None) == [] and as_paths(files[0]) == [files[0]] and as_paths(str(files[0])) == [str(files[0])]
    assert as_paths(files[:2]) == files[:2] and as_paths(tuple(files[:2])) == files[:2]
    plain = transforms_for(TrainConfig(augment="digits", image_size=32), False)
    one = PairedTrainingSet(ds, {ds.ids[0]: files[0], ds.ids[2]: str(files[2])}, plain)
    several = PairedTrainingSet(ds, {ds.ids[0]: [files[0]], ds.ids[2]: [files[2], files[1]]}, plain)
    assert one.pairs == [(0, files[0]), (2, str(files[2]))] and len(one) == 5
    assert several.pairs == [(0, files[0]), (2, files[2]), (2, files[1])] and len(several) == 6
    items = [several[n] for n in range(6)]
    y = ds.labels
    assert [it[2:] for it in items] == [
        (y[0], False),
        (y[1], False),
        (y[2], False),
        (y[0], True),
        (y[2], True),
        (y[2], True),
    ]
    for n, (i, path) in zip(range(3, 6), several.pairs):  # each pair: its source, and that source's own file
        with Image.open(path) as im:
            assert torch.equal(items[n][0], items[i][0]) and torch.equal(items[n][1], plain(im.convert("RGB")))


def test_a_composing_method_builds_each_pairs_image_before_augmentation(tmp_path):
    """DiffuseMix: the pair's second image is the method's composite of the aligned pair, made before the
    transform (PIL loader) or decoded once into the cache (device loaders), never the raw edit."""
    from PIL import Image

    from diffcore.engine import loader as L
    from diffcore.methods import build_method

    ds = digits("train").subset(range(6))
    _fake_generated(tmp_path, ds)
    m = build_method("diffusemix", fractals=2, fractal_size=16)
    plain = transforms_for(TrainConfig(augment="digits", image_size=32), False)
    tr = PairedTrainingSet(ds, load_counterparts(ds, tmp_path, TrainConfig(method="diffusemix")), plain, m.pair_image)
    assert len(tr.pairs) == 3
    for k, (i, path) in enumerate(tr.pairs):
        with Image.open(path) as im:
            want = m.pair_image(ds.load(i), im.convert("RGB"), path.name)
        assert np.array_equal(np.asarray(tr.generated(k)), np.asarray(want))
        torch.testing.assert_close(tr[len(ds) + k][1], plain(want))
    cached = L.cached_pairs(ds, tr.pairs, tmp_path / "cache", 32, 1, load_generated=tr.generated, tag=repr(m))
    assert np.array_equal(cached.gen.array[1], L.decode_square(tr.generated(1), 32))
    plain_cache = L.cached_pairs(ds, tr.pairs, tmp_path / "cache", 32, 1)  # another cache file: the raw edits
    assert plain_cache.gen.path != cached.gen.path


def test_train_vanilla_and_diffcore_seeded_with_provenance(tmp_path):
    ds = digits("train")
    labels = np.asarray(ds.labels)
    small = ds.subset(np.concatenate([np.flatnonzero(labels == k)[:6] for k in range(10)]))
    test = digits("test").subset(range(60))
    _fake_generated(tmp_path / "gen", small)
    kw = dict(model="digits-cnn", epochs=2, batch_size=16, lr=0.05, image_size=32, augment="digits", device="cpu")
    a = train(TrainConfig(method="vanilla", **kw), small, test, out=tmp_path / "r" / "v.json", progress=False).result
    b = train(TrainConfig(method="vanilla", **kw), small, test, progress=False).result
    assert a["metrics"] == b["metrics"]  # same seed, same result
    d = train(
        TrainConfig(method="diffcore", fraction=0.5, **kw),
        small,
        test,
        generated=tmp_path / "gen",
        out=tmp_path / "r" / "d.json",
        progress=False,
    ).result
    assert d["counts"] == {"real": 60, "pairs": 15, "test": 60}
    assert len(d["history"]) == 2 and 0 <= d["metrics"]["top1"] <= d["metrics"]["top5"] <= 100
    saved = json.loads((tmp_path / "r" / "v.json").read_text())
    assert saved["config"]["lr"] == 0.05 and torch.__version__.startswith(saved["provenance"]["packages"]["torch"])
    assert saved["config"]["mix"]["lam_alpha"] == 1.0  # the lambda distribution is recorded
    table = results_table(load_results(tmp_path / "r"))
    assert list(table.method) == ["Vanilla", "DiffCoRe-Mix-50"]  # vanilla first, whatever the file names
    assert "| DiffCoRe-Mix-50 |" in markdown(table)


def test_device_loader_trains_seeded_and_reuses_its_decode_once_cache(tmp_path):
    ds = digits("train")
    labels = np.asarray(ds.labels)
    small = ds.subset(np.concatenate([np.flatnonzero(labels == k)[:4] for k in range(10)]))
    test = digits("test").subset(range(40))
    _fake_generated(tmp_path / "gen", small)
    kw = dict(
        model="digits-cnn",
        epochs=2,
        batch_size=8,
        lr=0.05,
        image_size=32,
        augment="digits",
        device="cpu",
        loader="device",
        method="diffcore",
    )
    a = train(
        TrainConfig(**kw), small, test, generated=tmp_path / "gen", out=tmp_path / "r" / "a.json", progress=False
    ).result
    caches = sorted(p.name for p in (tmp_path / "r" / "cache").glob("*.npy"))
    assert [c.split("-")[0] for c in caches] == ["generated", "real"]
    stamp = {p: p.stat().st_mtime_ns for p in (tmp_path / "r" / "cache").glob("*.npy")}
    b = train(
        TrainConfig(**kw), small, test, generated=tmp_path / "gen", out=tmp_path / "r" / "b.json", progress=False
    ).result
    assert a["metrics"] == b["metrics"] and a["history"][-1]["train_loss"] == b["history"][-1]["train_loss"]
    assert {p: p.stat().st_mtime_ns for p in stamp} == stamp  # decoded once, reused
    assert a["counts"] == {"real": 40, "pairs": 20, "test": 40}
    with pytest.raises(ValueError, match="loader='fast'"):
        TrainConfig(loader="fast")
