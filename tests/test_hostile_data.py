"""Hostile datasets: every odd file is converted or skipped with one logged line and a count in run.json and the
result file; nothing crashes later, and nothing is written outside the output folder."""

from __future__ import annotations

import io
import json
import logging
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import strict
import torch
from PIL import Image

import diffcore.counterparts as C
import diffcore.engine.genset as G
import diffcore.engine.images as images
from diffcore import cli
from diffcore import data as D
from diffcore.data import ImageSet, digits

RNG = np.random.default_rng(0)


def _png(path: Path, width: int, height: int, depth: int, color_type: int, raw: bytes) -> Path:
    """A PNG written by hand: 16-bit RGB (PIL cannot write it) or a header claiming a huge size."""

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )
    return path


def _image(path: Path, mode: str = "RGB", size: int = 16, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    a = (RNG.random((size, size, 3)) * 255).astype(np.uint8)
    Image.fromarray(a).convert(mode).save(path, **kw)
    return path


def _truncated(path: Path, fmt: str) -> Path:
    buf = io.BytesIO()
    Image.fromarray((RNG.random((64, 64, 3)) * 255).astype(np.uint8)).save(buf, format=fmt)
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) * 6 // 10])
    return path


def hostile_tree(root: Path) -> dict[str, str]:
    """An ImageFolder tree with every kind of trouble; returns {file name: the reason it must be skipped}."""
    a, u, s = root / "a b", root / "ünï 猫", root / "$(touch pwned); a\\b"
    _image(a / "rgb.png")
    _image(a / "gray.png", "L")
    _image(a / "cmyk.jpg", "CMYK")
    _image(a / "rgba.png", "RGBA")
    _image(a / "palette.png", "P")
    _image(a / "sub" / "nested.jpeg")
    Image.fromarray(np.full((16, 16), 40000, np.uint16)).save(a / "gray16.png")  # 16-bit gray
    _png(
        a / "rgb48.png", 16, 16, 16, 2, b"".join(b"\x00" + np.full((16, 3), 40000, ">u2").tobytes() for _ in range(16))
    )  # 16-bit RGB
    _truncated(a / "cut.jpg", "JPEG")
    _truncated(a / "cut.png", "PNG")
    (a / "zero.png").write_bytes(b"")
    (a / "text.jpg").write_text("not an image at all")
    (a / "notes.txt").write_text("not read: not an image suffix, listed as skipped")
    _png(a / "bomb.png", 100_000, 100_000, 8, 0, b"\x00")  # 10 Gpx header
    _image(u / "only.png")  # one image
    _image(s / "x.png")
    _image(s / "y.png")
    (root / "empty").mkdir()  # no image
    (root / "all bad").mkdir()
    (root / "all bad" / "z.png").write_bytes(b"")  # none readable
    return {
        "cut.jpg": "truncated or corrupt",
        "cut.png": "truncated or corrupt",
        "zero.png": "empty file",
        "text.jpg": "not an image",
        "bomb.png": "too large",
        "z.png": "empty file",
        "notes.txt": "not an image file",
    }


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "data" / "train"
    return root, hostile_tree(root)


def test_odd_files_are_converted_or_skipped_with_one_line_each(tree, caplog):
    root, bad = tree
    with caplog.at_level(logging.WARNING):
        ds = D.open_dataset("folder", str(root.parent), "train")
    assert ds.classes == ["$(touch pwned); a\\b", "a b", "ünï 猫"]  # 'empty' and 'all bad' skipped
    assert {Path(p).name: why.split(" (")[0] for p, why in ds.skipped if Path(p).suffix} == bad
    assert {p for p, _ in ds.skipped if not Path(p).suffix} == {str(root / "empty"), "all bad"}
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "skipped" in r.getMessage()]
    for name in [*bad, "'empty'", "'all bad'"]:
        assert sum(name in m for m in warned) == 1, name  # one line each
    assert all("\n" not in m for m in warned)
    images = {Path(ds.path(i)).name: ds.load(i) for i in range(len(ds))}
    assert len(images) == 11 and all(im.mode == "RGB" for im in images.values())
    assert np.asarray(images["gray16.png"]).max() == round(40000 / 257)  # rescaled, not clipped to white
    assert np.asarray(images["rgb48.png"]).max() == round(40000 / 257)
    summary = D.skipped_summary(ds)
    assert summary["count"] == 9 and summary["by_reason"]["empty file"] == 2
    assert [e["path"] for e in summary["entries"]] == [p for p, _ in ds.skipped]  # every entry, not a sample


def test_unreadable_header_only_huge_image_is_never_decoded(tmp_path, monkeypatch):
    big = _image(tmp_path / "big.png", size=64)
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 64 * 64 - 1)
    assert D.check_image_file(big).startswith("too large")
    with pytest.raises(ValueError, match="over MAX_IMAGE_PIXELS"):
        D.load_rgb(big)


def _files_outside(tmp_path: Path, out: Path) -> set[str]:
    return {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if out not in p.parents and p != out}


def test_run_on_a_hostile_tree_finishes_writes_only_inside_out_and_counts_skips(
    tree, tiny_sd_dir, tiny_clip_files, tmp_path, capsys
):
    """generate + train (the `run` job) end to end on the hostile tree as train and test split."""
    root, _ = tree
    hostile_tree(root.parent / "test")
    out = tmp_path / "out"
    before = _files_outside(tmp_path, out)
    argv = [
        "run",
        "--dataset",
        "folder",
        "--data-root",
        str(root.parent),
        "--out",
        str(out),
        "--model",
        str(tiny_sd_dir),
        "--size",
        "16",
        "--steps",
        "2",
        "--clip-model",
        "test-tiny-clip",
        "--clip-config",
        str(tiny_clip_files[0]),
        "--clip-pretrained",
        str(tiny_clip_files[1]),
        "--epochs",
        "1",
        "--seeds",
        "0",
        "--arch",
        "digits-cnn",
        "--image-size",
        "32",
        "--augment",
        "digits",
        "--batch-size",
        "4",
        "--max-attempts",
        "2",
    ]
    assert cli.main(argv) == 0
    assert _files_outside(tmp_path, out) == before  # no file written anywhere else (no `pwned` either)
    gen = json.loads((out / "generated" / "run.json").read_text())
    assert gen["dataset_skipped"]["count"] == 9 and not (out / "generated" / "running.json").exists()
    assert gen["summary"]["sources"] == 11
    assert {p.parent.name for p in (out / "generated" / "images").rglob("*.png")} <= {
        "0000_touch_pwned_a_b",
        "0001_a_b",
        "0002_n",
    }  # sanitised, label-prefixed class folders
    result = json.loads((out / "results" / "vanilla-seed0.json").read_text())
    assert result["skipped"]["count"] == 9 and result["counts"]["test"] == 11
    assert result["test_skipped"]["count"] == 9  # the evaluation split's skips too
    assert {"generated/run.json", "results/vanilla-seed0.json"} <= set(strict.check_tree(out))  # strict JSON


def test_class_names_and_ids_that_are_paths_stay_inside_out(tmp_path):
    """Names from annotation files or user code can be anything: `..`, absolute paths, separators."""
    src = digits("train").subset(range(4))
    evil = ImageSet(
        "evil",
        ["..", "../../escape", "/etc", "a/b\\c"],
        ["../../x.png", "/etc/passwd", "..", "a/../../b"],
        [0, 1, 2, 3],
        loader=src.load,
    )
    rows = []
    for i in range(4):
        rel = f"images/{G.class_dir(evil.labels[i], evil.classes[i])}/{G.safe_name(evil.ids[i])}.png"
        rows.append(rel)
        assert G.inside(tmp_path, rel).is_relative_to(tmp_path.resolve())
    assert rows[0].startswith("images/0000_class/") and "/" not in rows[3].split("/", 2)[2]
    with pytest.raises(ValueError, match="resolves outside"):
        G.inside(tmp_path, "../x.png")
    (tmp_path / "manifest.csv").write_text(
        G.manifest_text(
            [
                {
                    **dict.fromkeys(C.MANIFEST_FIELDS, ""),
                    "source_id": "a",
                    "status": "kept",
                    "attempt": "0",
                    "file": "../../etc/passwd",
                }
            ],
            header=True,
        )
    )
    with pytest.raises(ValueError, match="resolves outside"):  # a hostile manifest is not followed out of the set
        C.kept_counterparts(tmp_path)


def test_source_unreadable_after_opening_gets_a_row_not_a_crash(tmp_path, tiny_sd_dir, tiny_clip_files, caplog):
    from diffcore.filter import FilterConfig, load_clip
    from diffcore.generate import GenerateConfig, load_pipeline
    from diffcore.prompts import PromptConfig

    root = tmp_path / "d"
    for c in ("x", "y"):
        for k in range(3):
            _image(root / c / f"{k}.png")
    ds = D.open_dataset("folder", str(root), "train")
    _truncated(Path(ds.path(5)), "PNG")  # the disk changes under a running job
    gen = GenerateConfig(model=str(tiny_sd_dir), steps=2, size=16, batch_size=4, dtype="float32", guidance_scale=3)
    filt = FilterConfig(
        clip_model="test-tiny-clip",
        clip_config=str(tiny_clip_files[0]),
        clip_pretrained=str(tiny_clip_files[1]),
        z_pairs=2,
        max_attempts=2,
    )
    cpu = torch.device("cpu")
    with caplog.at_level(logging.WARNING):
        info = C.make_counterparts(
            ds,
            load_pipeline(gen, cpu, torch.float32),
            load_clip(filt, cpu),
            tmp_path / "o",
            PromptConfig(),
            gen,
            filt,
            C.CounterpartConfig(),
            progress=False,
        )
    rows = [r for r in C.read_manifest(tmp_path / "o" / "manifest.csv") if r["source_id"] == ds.ids[5]]
    assert [r["status"] for r in rows] == ["unreadable"] and rows[0]["file"] == ""
    assert info["summary"]["unreadable"] == 1
    assert sum("unreadable" in r.getMessage() for r in caplog.records) == 1
