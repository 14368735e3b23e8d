"""The generate -> filter -> keep-or-retry loop and the generated set on disk."""

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from standins import SIDE, PicturesBySeed, attempts, picture, pixel_clip, seed_of, to_pil, toy_set
from standins import run as run_standins

import diffcore.counterparts as C
import diffcore.engine.genset as G
from diffcore.data import ImageSet, digits
from diffcore.engine.runtime import derive_seed
from diffcore.filter import FilterConfig, class_pairs, class_thresholds, load_clip
from diffcore.generate import GenerateConfig, generate_images, load_pipeline
from diffcore.prompts import PromptConfig

CPU = torch.device("cpu")
PROMPT = PromptConfig(dataset_type="handwritten digit", negative_key="digits")


@pytest.fixture(scope="module")
def parts(tiny_sd_dir, tiny_clip_files):
    gen = GenerateConfig(
        model=str(tiny_sd_dir), steps=2, guidance_scale=3.0, size=16, batch_size=4, dtype="float32", run_seed=7
    )
    filt = FilterConfig(
        clip_model="test-tiny-clip",
        clip_config=str(tiny_clip_files[0]),
        clip_pretrained=str(tiny_clip_files[1]),
        z_pairs=20,
        max_attempts=3,
    )
    ds = digits("train", size=16)
    labels = np.asarray(ds.labels)
    idx = np.concatenate([np.flatnonzero(labels == k)[:3] for k in (3, 7)])  # 3 threes, 3 sevens
    small = ImageSet(
        "digits-3-7",
        ["three", "seven"],
        [ds.ids[i] for i in idx],
        [0, 0, 0, 1, 1, 1],
        loader=lambda j: ds.load(int(idx[j])),
        dataset_type="digits",
    )
    return load_pipeline(gen, CPU, torch.float32), load_clip(filt, CPU), small, gen, filt


def _run(parts, out, fraction=1.0, **kw):
    pipe, clip, ds, gen, filt = parts
    return C.make_counterparts(
        ds, pipe, clip, out, PROMPT, gen, filt, C.CounterpartConfig(fraction=fraction), progress=False, **kw
    )


def _by_source(rows):
    out = {}
    for r in rows:
        out.setdefault(r["source_id"], []).append(r)
    return out


def test_every_source_ends_kept_or_capped_with_per_attempt_seeds(parts, tmp_path):
    pipe, clip, ds, gen, filt = parts
    info = _run(parts, tmp_path)
    rows = C.read_manifest(tmp_path / "manifest.csv")
    assert set(C.MANIFEST_FIELDS) == set(rows[0])
    for sid, rs in _by_source(rows).items():
        assert [int(r["attempt"]) for r in rs] == list(range(len(rs)))  # 0, 1, ... no gaps
        assert [r["status"] for r in rs[:-1]] == ["rejected"] * (len(rs) - 1)
        assert rs[-1]["status"] in ("kept", "rejected-final") and len(rs) <= filt.max_attempts
        assert all(int(r["seed"]) == derive_seed(7, sid, int(r["attempt"])) for r in rs)
        assert all((float(r["similarity"]) > float(r["tau"])) == (r["status"] == "kept") for r in rs)
    assert len(_by_source(rows)) == len(ds)
    kept = C.kept_counterparts(tmp_path)
    assert info["summary"]["kept"] == len(kept)
    for sid, path in kept.items():  # any kept image can be regenerated alone from its manifest row
        row = next(r for r in rows if r["source_id"] == sid and r["status"] == "kept")
        again = generate_images(pipe, [row["prompt"]], [row["negative_prompt"]], [int(row["seed"])], gen)[0]
        assert np.abs(np.asarray(Image.open(path)).astype(int) - again.astype(int)).max() <= 1
        assert path.parent.name in ("0000_three", "0001_seven")
    saved = json.loads((tmp_path / "run.json").read_text())
    assert set(saved["tau"]) == set(ds.classes) and saved["summary"]["attempts"] == len(rows)


def test_rejected_image_is_regenerated_with_a_new_seed(parts, tmp_path, monkeypatch):
    calls = []

    def reject_first_batch(sims, tau):
        calls.append(len(sims))
        return torch.full_like(sims, len(calls) > 1, dtype=torch.bool)

    monkeypatch.setattr(C, "accept", reject_first_batch)
    _run(parts, tmp_path)
    rows = C.read_manifest(tmp_path / "manifest.csv")
    first = rows[:4]  # the first batch of 4, all rejected
    assert all(r["status"] == "rejected" and r["attempt"] == "0" for r in first)
    assert [r["attempt"] for r in rows[4:8]] == ["1"] * 4  # retried first, inside the very next batch
    assert [r["status"] for r in rows[8:]] == ["kept", "kept"]
    for r in first:
        retry = next(x for x in rows if x["source_id"] == r["source_id"] and x["attempt"] == "1")
        assert retry["status"] == "kept" and retry["seed"] != r["seed"]
        a = np.asarray(Image.open(tmp_path / r["file"]))
        b = np.asarray(Image.open(tmp_path / retry["file"]))
        assert not np.array_equal(a, b)


def test_retry_cap_holds(parts, tmp_path, monkeypatch):
    monkeypatch.setattr(C, "accept", lambda sims, tau: torch.zeros_like(sims, dtype=torch.bool))
    info = _run(parts, tmp_path)
    rows = C.read_manifest(tmp_path / "manifest.csv")
    assert len(rows) == 6 * 3  # every source tried exactly max_attempts times
    assert sum(r["status"] == "rejected-final" for r in rows) == 6
    assert len({r["seed"] for r in rows}) == 18
    assert info["summary"]["no_counterpart"] == 6 and not (tmp_path / "images").exists()


def test_training_on_a_set_whose_every_attempt_was_rejected_names_that_cause(parts, tmp_path, monkeypatch):
    """Not "generated for another dataset or split?": the manifest says every attempt was rejected, with the tau
    range and the best similarity reached."""
    from diffcore.train import TrainConfig, load_counterparts

    monkeypatch.setattr(C, "accept", lambda sims, tau: torch.zeros_like(sims, dtype=torch.bool))
    _run(parts, tmp_path)
    rows = C.read_manifest(tmp_path / "manifest.csv")
    _, _, ds, _, _ = parts
    cfg = TrainConfig(method="diffcore", augment="digits", image_size=32)
    with pytest.raises(ValueError) as e:
        load_counterparts(ds, tmp_path, cfg)
    msg, taus = str(e.value), [float(r["tau"]) for r in rows]
    best = max(rows, key=lambda r: float(r["similarity"]))
    assert msg.startswith(f"generated set {tmp_path} has no usable counterpart for digits-3-7: no attempt was kept")
    assert "18 attempts for 6 sources; 18 rejected by the filter" in msg and "\n" not in msg
    assert f"tau {min(taus):.3f} to {max(taus):.3f}" in msg
    assert f"best similarity reached {float(best['similarity']):.3f}, {best['source_id']} at attempt" in msg
    other = digits("test", size=16).subset(range(6))  # a set made for other images: said so
    with pytest.raises(ValueError, match=r"none of its 6 sources is among the 6 chosen images .*another dataset"):
        load_counterparts(other, tmp_path, cfg)


def test_interrupted_run_resumes_to_the_same_set(parts, tmp_path, monkeypatch):
    _run(parts, tmp_path / "whole")
    real_draw = C.draw_images
    n = {"calls": 0}

    def dies_on_second_call(*a, **k):
        n["calls"] += 1
        if n["calls"] == 2:
            raise KeyboardInterrupt("simulated stop")
        return real_draw(*a, **k)

    monkeypatch.setattr(C, "draw_images", dies_on_second_call)
    with pytest.raises(KeyboardInterrupt):
        _run(parts, tmp_path / "resumed")
    monkeypatch.setattr(C, "draw_images", real_draw)
    _run(parts, tmp_path / "resumed")
    # the resumed run forms the very batches of the uninterrupted one: same rows in the same order, same bytes
    whole, resumed = (tmp_path / d / "manifest.csv" for d in ("whole", "resumed"))
    assert whole.read_bytes() == resumed.read_bytes()
    assert C.kept_counterparts(tmp_path / "whole").keys() == C.kept_counterparts(tmp_path / "resumed").keys()


def test_other_settings_in_the_same_folder_and_empty_class_are_refused(parts, tmp_path):
    pipe, clip, ds, gen, filt = parts
    _run(parts, tmp_path, fraction=0.5)
    with pytest.raises(ValueError, match="holds a run with other settings"):
        _run(parts, tmp_path, fraction=1.0)
    bad = ImageSet("two-classes", ["a", "b"], ["x", "y"], [0, 0], loader=ds.load)
    with pytest.raises(ValueError, match=r"class\(es\) \['b'\] have no images"):
        C.make_counterparts(bad, pipe, clip, tmp_path / "bad", PROMPT, gen, filt, C.CounterpartConfig())


def test_fraction_selects_that_share_of_each_class(parts, tmp_path):
    _run(parts, tmp_path, fraction=0.5)
    rows = C.read_manifest(tmp_path / "manifest.csv")
    per_class = {}
    for r in rows:
        per_class.setdefault(r["label"], set()).add(r["source_id"])
    assert {k: len(v) for k, v in per_class.items()} == {"0": 2, "1": 2}  # round(0.5 * 3) = 2 per class


def _tree(out):
    import hashlib

    return {
        p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.relative_to(out).parts[0] != "logs"
    }


def test_background_writing_gives_the_files_of_writing_in_line(parts, tmp_path):
    """PNGs encoded and committed on threads while the next batch generates: the same bytes as in line."""
    _run(parts, tmp_path / "inline", io_threads=0)
    _run(parts, tmp_path / "threads", io_threads=3)
    inline, threads = _tree(tmp_path / "inline"), _tree(tmp_path / "threads")
    assert inline == threads
    assert sum(k.endswith(".png") for k in inline) >= 6  # every source wrote at least one image


def test_a_failed_write_stops_the_run_and_its_rows_are_never_committed(parts, tmp_path, monkeypatch):
    """A PNG that cannot be written (disk full) raises in the generating thread; no manifest row names a file
    that was not written, and a resume with writing fixed ends with the uninterrupted set."""
    real_save, calls = G.save_png, []

    def full_disk(array, path):
        calls.append(path)
        if len(calls) > 5:  # the second batch (4 per batch) fails part-way
            raise OSError(28, "No space left on device")
        real_save(array, path)

    monkeypatch.setattr(G, "save_png", full_disk)
    with pytest.raises(OSError, match="No space left"):
        _run(parts, tmp_path / "run", io_threads=2)
    rows = C.read_manifest(tmp_path / "run" / "manifest.csv")
    assert 0 < len(rows) < 6 and all((tmp_path / "run" / r["file"]).is_file() for r in rows if r["file"])
    monkeypatch.setattr(G, "save_png", real_save)
    _run(parts, tmp_path / "run", io_threads=2)
    _run(parts, tmp_path / "whole", io_threads=0)
    assert _tree(tmp_path / "run") == _tree(tmp_path / "whole")


def test_io_threads_must_not_be_negative(parts, tmp_path):
    with pytest.raises(ValueError, match=r"io_threads=-1: expected >= 0"):
        _run(parts, tmp_path, io_threads=-1)


# ---------------------------------------------------------------- with stand-in models (tests/standins.py)
def _unreadable_set():
    """Class 'a': A0 and A1 share 8 of 9 pixels (cos 8/9), A2 shares none; a3 does not decode. Class 'b': B0, and
    b1 that does not decode: 'b' is left without a pair."""
    a = [picture(range(9)), picture([*range(8), 9]), picture(range(20, 29))]
    b0 = picture(range(40, 49))
    pictures = {0: a[0], 1: a[1], 2: a[2], 4: b0}

    def load(i):
        if i not in pictures:
            raise OSError(f"cannot identify image file {i}")
        return to_pil(pictures[i])

    ds = ImageSet("toy", ["a", "b"], [f"toy/{n}.png" for n in range(6)], [0, 0, 0, 0, 1, 1], loader=load)
    by_seed = {seed_of(ds, i, 0): pictures.get(i, picture(range(100, 109))) for i in range(6)}
    return ds, by_seed


@pytest.mark.parametrize("batch_size", [1, 4])
def test_an_unreadable_source_gets_no_counterpart_and_leaves_its_pairs_out_of_tau(tmp_path, caplog, batch_size):
    ds, by_seed = _unreadable_set()
    with caplog.at_level(logging.WARNING, logger=C.__name__):
        info, rows = run_standins(ds, PicturesBySeed(by_seed), tmp_path, batch_size=batch_size)
    tau_a = (8 / 9 + 0 + 0) / 3  # the pairs of A0, A1, A2; none with a3
    assert info["tau"] == {"a": pytest.approx(tau_a, abs=1e-6), "b": pytest.approx(tau_a, abs=1e-6)}  # b: fallback
    by_source = {r["source_id"]: r for r in rows}
    statuses = [by_source[i]["status"] for i in ds.ids]
    assert len(rows) == 6 and statuses == ["kept", "kept", "kept", "unreadable", "kept", "unreadable"]
    for sid in (ds.ids[3], ds.ids[5]):
        r = by_source[sid]
        assert (r["file"], r["similarity"], r["attempt"]) == ("", "nan", "0")
        assert caplog.text.count(f"source {sid!r} unreadable, no counterpart: cannot identify image file") == 1
    assert all(r["source_path"] == "" for r in rows)  # a set built in code has no files
    s = info["summary"]
    assert (s["sources"], s["attempts"], s["kept"], s["unreadable"], s["no_counterpart"]) == (6, 4, 4, 2, 2)
    assert sorted(p.name for p in (tmp_path / "images").rglob("*.png")) == sorted(
        Path(by_source[i]["file"]).name for i in (ds.ids[0], ds.ids[1], ds.ids[2], ds.ids[4])
    )
    assert not (tmp_path / "rejected").exists()


def test_nan_and_constant_images_are_invalid_tried_again_and_set_aside(tmp_path):
    """Source 0: a NaN image, then a constant grey one, then its own picture. Source 1: NaN every time (capped)."""
    own = [picture(range(9)), picture(range(20, 29))]
    ds = toy_set(["a"], own, [0, 0])
    nan, grey = np.full((SIDE, SIDE), np.nan, np.float32), np.full((SIDE, SIDE), 0.5, np.float32)
    by_seed = {seed_of(ds, 0, 0): nan, seed_of(ds, 0, 1): grey, seed_of(ds, 0, 2): own[0]}
    by_seed.update({seed_of(ds, 1, a): nan for a in range(3)})
    info, rows = run_standins(ds, PicturesBySeed(by_seed), tmp_path)
    assert attempts(rows, ds, 0) == [(0, "invalid"), (1, "invalid"), (2, "kept")]
    assert attempts(rows, ds, 1) == [(0, "invalid"), (1, "invalid"), (2, "invalid-final")]
    assert [r["similarity"] for r in rows if r["status"] != "kept"] == ["nan"] * 5
    first = [r for r in rows if r["source_id"] == ds.ids[0]]
    assert [float(np.asarray(Image.open(tmp_path / r["file"]))[0, 0, 0]) for r in first] == [0, 128, 255]
    assert first[0]["file"] != first[1]["file"] and first[0]["file"].startswith("rejected/")
    assert (info["summary"]["invalid"], info["summary"]["no_counterpart"]) == (5, 1)


def test_without_save_rejected_only_kept_images_are_written(tmp_path):
    own = [picture(range(9)), picture(range(20, 29))]
    ds = toy_set(["a"], own, [0, 0])
    by_seed = {seed_of(ds, 0, 0): own[1], seed_of(ds, 0, 1): own[0], seed_of(ds, 1, 0): own[1]}
    _, rows = run_standins(ds, PicturesBySeed(by_seed), tmp_path, save_rejected=False)
    assert [(r["status"], r["file"]) for r in rows] == [
        ("rejected", ""),
        ("kept", rows[1]["file"]),
        ("kept", rows[2]["file"]),
    ]
    assert rows[1]["file"].startswith("images/") and (tmp_path / rows[1]["file"]).is_file()
    assert not (tmp_path / "rejected").exists()


def test_tau_pairs_are_drawn_with_the_tau_seed():
    """z = 2 of the 6 pairs of four pictures: the pairs, hence tau, depend on tau_seed and on nothing else."""
    pics = [picture(range(k, k + 9)) for k in (0, 3, 5, 8)]  # overlaps 6, 4, 1, 7, 4, 6 pixels of 9
    ds = toy_set(["a"], pics, [0] * 4)
    emb = torch.nn.functional.normalize(torch.stack([torch.from_numpy(p).flatten() for p in pics]), dim=-1)
    taus = {}
    for seed in (0, 1, 2):
        got = C.thresholds(ds, pixel_clip(), FilterConfig(z_pairs=2, tau_seed=seed))
        want = class_thresholds(class_pairs(ds.labels, 1, 2, seed), lambda idx: emb[torch.as_tensor(idx)])
        assert got == pytest.approx(want, abs=1e-6) and got == C.thresholds(
            ds, pixel_clip(), FilterConfig(z_pairs=2, tau_seed=seed)
        )
        taus[seed] = got[0]
    assert len(set(round(t, 6) for t in taus.values())) > 1
    one_each = toy_set(["a", "b"], pics[:2], [0, 1])
    with pytest.raises(ValueError, match="no class has two or more real images"):
        C.thresholds(one_each, pixel_clip(), FilterConfig())


# ---------------------------------------------------------------- guarded after mutation testing (make mutants)
def _own_pictures(n: int, classes=("a", "b")):
    """n sources, classes in turn; each seed's picture is its own source's (cos 1 > tau: kept at the first try)."""
    own = [picture(range(10 * i, 10 * i + 9)) for i in range(n)]
    ds = toy_set(list(classes), own, [i % len(classes) for i in range(n)])
    return ds, {seed_of(ds, i, a): own[i] for i in range(n) for a in range(3)}


def test_a_source_that_stops_decoding_after_the_thresholds_is_unreadable_with_one_exact_warning(tmp_path, caplog):
    """A file that changes under a running job: read for tau_k, unreadable for its own S. No counterpart, one line."""
    own = [picture(range(9)), picture([*range(8), 9]), picture(range(20, 29))]
    calls = {0: 0, 1: 0, 2: 0}

    def load(i):
        calls[i] += 1
        if i == 2 and calls[i] > 1:
            raise OSError("cannot identify image file 'a2.png'\nsecond line")
        return to_pil(own[i])

    ids = ["toy/a/0.png", "toy/a/1.png", "toy/a/2.png"]
    ds = ImageSet("toy", ["a"], ids, [0, 0, 0], loader=load, paths=[f"/data/{i}" for i in ids])
    by_seed = {seed_of(ds, i, 0): own[i] for i in range(3)}
    for io_threads in (0, 2):
        calls.update({0: 0, 1: 0, 2: 0})
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger=C.__name__):
            info, rows = run_standins(ds, PicturesBySeed(by_seed), tmp_path / str(io_threads), io_threads=io_threads)
        assert calls[2] == 2  # once for tau_k, once for its own S
        assert [(r["source_id"], r["status"], r["file"] != "", r["similarity"]) for r in rows] == [
            ("toy/a/0.png", "kept", True, "1.000000"),
            ("toy/a/1.png", "kept", True, "1.000000"),
            ("toy/a/2.png", "unreadable", False, "nan"),
        ]
        warnings = [r.getMessage() for r in caplog.records if r.name == C.__name__ and r.levelno == logging.WARNING]
        assert warnings == [
            "source '/data/toy/a/2.png' unreadable, no counterpart: cannot identify image file 'a2.png'"
        ]
        assert (info["summary"]["kept"], info["summary"]["unreadable"]) == (2, 1)


def test_run_json_the_manifest_and_the_log_record_the_settings_model_device_and_skipped_files(tmp_path):
    ds, by_seed = _own_pictures(6)  # two batches of 4 and 2
    pipe = PicturesBySeed(by_seed)
    pipe.device = torch.device("meta")  # the pipeline's device, as the log line names it
    info, rows = run_standins(ds, pipe, tmp_path)
    assert {r["model"] for r in rows} == {"stand-in"}
    s = info["settings"]
    assert list(s) == ["dataset", "num_images", "prompt", "generate", "filter", "counterparts"]
    assert (s["dataset"], s["num_images"], s["generate"]["model"], s["filter"]["max_attempts"]) == (
        "toy",
        6,
        "stand-in",
        3,
    )
    assert (s["prompt"]["dataset_type"], s["counterparts"]["fraction"]) == ("toy", 1.0)
    assert info["dataset_skipped"] == {"count": 0, "by_reason": {}, "entries": []}
    assert json.loads((tmp_path / "run.json").read_text()) == info
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == ["generate.rank-00000-of-00001.jsonl"]
    line = json.loads((tmp_path / "logs" / "generate.rank-00000-of-00001.jsonl").read_text().splitlines()[-1])
    assert (line["provenance"]["device"], line["sources"], line["attempts_this_start"]) == ("meta", 6, 6)


def test_a_negative_prompt_with_guidance_off_is_refused_before_the_folder_is_touched(tmp_path):
    ds, by_seed = _own_pictures(2)
    gen = GenerateConfig(model="stand-in", steps=1, guidance_scale=1.0, size=SIDE, batch_size=4, dtype="float32")
    prompt = PromptConfig(dataset_type="toy", negative_prompt="blurry")
    with pytest.raises(ValueError, match=r"^guidance_scale=1.0 <= 1 turns guidance off"):
        C.make_counterparts(
            ds, PicturesBySeed(by_seed), pixel_clip(), tmp_path / "out", prompt, gen, FilterConfig(),
            C.CounterpartConfig(), progress=False,
        )  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_a_run_of_mostly_invalid_images_stops_with_the_vae_hint(tmp_path):
    ds, _ = _own_pictures(12, classes=("a",))
    black = np.zeros((SIDE, SIDE), np.float32)
    by_seed = {seed_of(ds, i, a): black for i in range(12) for a in range(3)}
    with pytest.raises(ValueError) as e:
        run_standins(ds, PicturesBySeed(by_seed), tmp_path)
    assert str(e.value) == (
        "dtype='float32', vae=None: 32 of 32 generated images are NaN, black or constant; SDXL's VAE overflows in "
        "fp16: pass --vae <sdxl-vae-fp16-fix> or --dtype bfloat16/float32 (and a new --out)"
    )


def test_a_fraction_generates_for_the_sources_its_selection_seed_chooses(tmp_path):
    from diffcore.data import choose_fraction

    ds, by_seed = _own_pictures(20)
    info, rows = run_standins(ds, PicturesBySeed(by_seed), tmp_path, fraction=0.5)
    chosen = choose_fraction(ds, 0.5, C.CounterpartConfig().selection_seed)
    assert sorted(r["source_id"] for r in rows) == sorted(ds.ids[i] for i in chosen)
    assert info["summary"]["sources"] == 10


def test_a_set_recorded_without_todays_default_fields_resumes(tmp_path):
    """An older diffcore did not write a field: it did what today's default does, so its set is resumed as done."""
    ds, by_seed = _own_pictures(4)
    info, rows = run_standins(ds, PicturesBySeed(by_seed), tmp_path)
    defaults = {"prompt": PromptConfig(), "generate": GenerateConfig(), "filter": FilterConfig(),
                "counterparts": C.CounterpartConfig()}  # fmt: skip
    recorded = json.loads((tmp_path / "run.json").read_text())  # a finished set: its settings are in run.json
    dropped = {}
    for section, cfg in defaults.items():
        default = json.loads(json.dumps(vars(cfg)))
        dropped[section] = next(f for f, v in recorded["settings"][section].items() if default[f] == v)
        del recorded["settings"][section][dropped[section]]
    (tmp_path / "run.json").write_text(json.dumps(recorded))
    assert set(dropped) == set(defaults)
    pipe = PicturesBySeed(by_seed)
    again, rows_again = run_standins(ds, pipe, tmp_path)
    assert pipe.calls == [] and rows_again == rows and again["summary"] == info["summary"]


def test_a_process_among_several_removes_its_own_chunks_stray_files_only(tmp_path):
    """A Slurm array task (process 0 of 2) restarting after a kill: images of its chunk that no committed row
    references are deleted (kept and rejected, every attempt), the other chunk's files are left alone."""
    from diffcore.engine.distributed import World

    ds, _ = _own_pictures(8)
    gen = GenerateConfig(model="stand-in", steps=1, guidance_scale=3.0, size=SIDE, batch_size=4, dtype="float32")
    store = C.counterpart_set(ds, tmp_path, PromptConfig(dataset_type="toy"), gen, FilterConfig(max_attempts=3),
                              C.CounterpartConfig())  # fmt: skip
    assert [len(c) for c in store.chunks] == [4, 4]

    def files(i):
        name = (ds.labels[i], ds.classes[ds.labels[i]], ds.ids[i])
        return [tmp_path / G.kept_file(*name)] + [tmp_path / G.rejected_file(*name, a) for a in range(3)]

    for i in range(8):
        for f in files(i):
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(b"stray")
    queues, kept = store.recover([0], World(rank=0, size=2))
    assert kept == [] and [i for i, _ in queues[0]] == list(store.chunks[0])
    mine = [f for i in store.chunks[0] for f in files(i)]
    theirs = [f for i in store.chunks[1] for f in files(i)]
    assert not any(f.exists() for f in mine) and all(f.exists() for f in theirs)


def test_classes_without_images_are_refused_naming_the_first_five():
    ds = toy_set([f"c{k}" for k in range(7)], [picture(range(9))], [6])  # c0..c5 have no image
    with pytest.raises(ValueError) as e:
        C.check_classes(ds)
    assert str(e.value) == "toy: class(es) ['c0', 'c1', 'c2', 'c3', 'c4'] have no images; remove them or add images"
