"""The resident loader: the decode-once caches held on the device, batches gathered there. It draws what the device
loader draws (batches, crops, flips, mixing), so on one device it trains to the same weights (torch.equal), and a
SIGKILLed run resumes to them; a cache too big for the device is refused before anything is decoded."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from test_reliability import _fork, _wait
from test_train import _fake_generated
from torch.utils.data import DataLoader

from diffcore.data import digits
from diffcore.engine import checkpoint as CK
from diffcore.engine import distributed as D
from diffcore.engine import loader as L
from diffcore.train import PairedTrainingSet, TrainConfig, load_counterparts, train, transforms_for

KW = dict(
    method="diffcore",
    fraction=1.0,
    model="digits-cnn",
    epochs=3,
    batch_size=8,
    lr=0.05,
    image_size=32,
    augment="digits",
    device="cpu",
)  # pairs + mixing draws + device crops: every generator in play


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    ds = digits("train")
    labels = np.asarray(ds.labels)
    small = ds.subset(np.concatenate([np.flatnonzero(labels == k)[:4] for k in range(10)]))  # 40 images
    gen = tmp_path_factory.mktemp("gen")
    _fake_generated(gen, small)  # 20 counterparts
    return small, digits("test").subset(range(40)), gen


def _run(data, out: Path, cache: Path, **over):
    small, test, gen = data
    return train(
        TrainConfig(**{**KW, "cache_dir": str(cache), **over}), small, test, generated=gen, out=out, progress=False
    ).result


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(CK.checkpoint_path(out), weights_only=True)["state_dict"]


def _same_run(a: dict, b: dict, out_a: Path, out_b: Path) -> None:
    wa, wb = _weights(out_a), _weights(out_b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)  # BatchNorm statistics included
    assert a["metrics"] == b["metrics"]
    assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]


def test_resident_batches_are_the_device_loaders_batches(data, tmp_path):
    small, _, gen = data
    cfg = TrainConfig(**KW)
    pairs = PairedTrainingSet(small, load_counterparts(small, gen, cfg), transforms_for(cfg, True)).pairs
    cached = L.cached_pairs(small, pairs, tmp_path, 32, threads=2)
    resident = L.ResidentPairs(cached, "cpu")
    assert len(resident) == len(cached) == 60 and resident.nbytes == 60 * 3 * 32 * 32
    g_host, g_res = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    # DataLoader workers seed from the order generator too: one draw per epoch, as the resident loader's
    host = DataLoader(
        cached, batch_sampler=D.train_batches(cached, 8, g_host, D.SINGLE), generator=g_host, num_workers=2
    )
    res = L.ResidentBatches(resident, D.train_batches(resident, 8, g_res, D.SINGLE), g_res)
    assert len(res) == len(host) == 8
    for _epoch in range(2):
        got, want = list(res), list(host)
        assert len(got) == len(want) == 8 and len(got[-1][0]) == 60 % 8
        for a, b in zip(got, want):
            assert all(torch.equal(x, y) and x.dtype == y.dtype for x, y in zip(a, b))  # (real, gen, y, is_pair)
        assert torch.equal(g_res.get_state(), g_host.get_state())  # what a checkpoint saves


def test_resident_loader_trains_to_the_device_loaders_weights(data, tmp_path):
    for augment in ("digits", "imagenet"):  # pad-crop; random-resized crop with roi_align and flips
        runs = {ld: (tmp_path / augment / ld / "r.json") for ld in ("device", "resident")}
        got = {
            ld: _run(data, out, tmp_path / augment / "cache", loader=ld, augment=augment) for ld, out in runs.items()
        }
        _same_run(got["device"], got["resident"], runs["device"], runs["resident"])
        assert got["resident"]["counts"] == {"real": 40, "pairs": 20, "test": 40}


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory):
    root = tmp_path_factory.mktemp("whole")
    out = root / "r.json"
    return _run(data, out, root / "cache", loader="resident", epochs=4), out


def _killed_after_saving(data, out: Path, cache: Path, epoch: int):
    """train() that SIGKILLs its own process right after writing the checkpoint of `epoch`."""

    def run():
        save = CK.save

        def save_then_die(path, identity, done, *args):
            save(path, identity, done, *args)
            if done == epoch:
                os.kill(os.getpid(), signal.SIGKILL)

        CK.save = save_then_die  # in the child only
        _run(data, out, cache, loader="resident", epochs=4)

    return run


def test_a_sigkilled_resident_run_resumes_to_the_same_weights(data, uninterrupted, tmp_path):
    ref, ref_out = uninterrupted
    out = tmp_path / "r.json"
    assert _wait(_fork(_killed_after_saving(data, out, tmp_path / "cache", 2)), 300) == -signal.SIGKILL
    assert torch.load(CK.checkpoint_path(out), weights_only=True)["epoch"] == 2
    resumed = _run(data, out, tmp_path / "cache", loader="resident", epochs=4)
    assert resumed["resumed_at_epoch"] == 2 and ref["resumed_at_epoch"] is None
    _same_run(ref, resumed, ref_out, out)
    assert json.loads(out.read_text())["metrics"] == ref["metrics"]


def test_a_cache_too_big_for_the_device_is_refused_before_decoding(data, tmp_path, monkeypatch):
    monkeypatch.setattr(L, "free_bytes", lambda device: 100_000)  # 60 images of 32x32x3 need 184,320 bytes
    with pytest.raises(ValueError) as e:
        _run(data, tmp_path / "r.json", tmp_path / "cache", loader="resident")
    msg = str(e.value)
    assert "\n" not in msg and "60 images of 32x32x3 uint8" in msg and "0.00 GiB free on cpu" in msg
    assert msg.endswith("use --loader device (the same batches, read from the host cache by workers)")
    assert not (tmp_path / "cache").exists()  # nothing decoded
    with pytest.raises(ValueError, match="loader='resident'"):
        L.ResidentPairs(L.cached_pairs(data[0], [], tmp_path / "c2", 32, threads=2), "cpu")
    monkeypatch.setattr(L, "free_bytes", lambda device: None)  # unknown free memory (e.g. mps): not checked
    assert L.check_resident_fits(60, 32, "mps") == 60 * 3 * 32 * 32


def test_free_bytes_on_the_host_and_the_cli_choice():
    assert L.free_bytes("cpu") is None or L.free_bytes("cpu") > 0
    from diffcore.cli import parser

    args = parser().parse_args(["train", "--loader", "resident", "--out", "y.json"])
    assert args.loader == "resident"
    with pytest.raises(ValueError, match="expected 'pil', 'device' or 'resident'"):
        TrainConfig(loader="fast")
