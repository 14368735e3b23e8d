"""Training survives SIGKILL: resumed from its last epoch checkpoint, it ends with the weights (torch.equal) and
metrics of an uninterrupted run on CPU. Checkpoints are read with weights_only=True: one carrying code is refused."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hostile import RunsAShellCommand
from test_reliability import _fork, _kill, _wait
from test_train import _fake_generated

from diffcore.data import digits
from diffcore.engine import checkpoint as CK
from diffcore.train import TrainConfig, train

EPOCHS = 5
KW = dict(model="digits-cnn", epochs=EPOCHS, batch_size=16, lr=0.05, image_size=32, augment="digits", device="cpu")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    ds = digits("train")
    labels = np.asarray(ds.labels)
    small = ds.subset(np.concatenate([np.flatnonzero(labels == k)[:6] for k in range(10)]))
    gen = tmp_path_factory.mktemp("gen")
    _fake_generated(gen, small)
    return small, digits("test").subset(range(60)), gen


def _train(data, out: Path, **over):
    small, test, gen = data
    cfg = TrainConfig(method="diffcore", fraction=1.0, **{**KW, **over})  # pairs + mixing draws: every RNG in play
    return lambda: train(cfg, small, test, generated=gen, out=out, progress=False).result


def _epoch_on_disk(out: Path) -> int:
    try:
        return int(torch.load(CK.checkpoint_path(out), weights_only=True)["epoch"])
    except Exception:  # not there yet, or being replaced right now
        return 0


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "result.json"
    t0 = time.perf_counter()
    assert _wait(_fork(_train(data, out)), 300) == 0
    return out, (time.perf_counter() - t0) / EPOCHS


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(CK.checkpoint_path(out), weights_only=True)["state_dict"]


def test_sigkilled_training_resumes_to_the_same_weights_and_metrics(data, reference, tmp_path):
    ref, t_epoch = reference
    out, rng, kills, resumed = tmp_path / "killed.json", random.Random(3), 0, []
    targets = sorted(rng.randrange(0, EPOCHS - 1) for _ in range(3))  # kill in epoch target+1, at a random moment
    while kills < len(targets):
        pid = _fork(_train(data, out))
        while _epoch_on_disk(out) < targets[kills] and _wait(pid, 0.005) is None:
            pass
        if _wait(pid, rng.uniform(0, t_epoch)) is None:
            _kill(pid)
            kills += 1
            resumed.append(_epoch_on_disk(out))
    assert _wait(_fork(_train(data, out)), 300) == 0
    print(f"{kills} kills; checkpoint epoch at each: {resumed} of {EPOCHS}")
    assert resumed[-1] >= targets[-1] >= 1  # the final run really resumed, from a checkpoint made before a kill
    a, b = _weights(ref), _weights(out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # BN running stats included
    ra, rb = (json.loads(p.read_text()) for p in (ref, out))
    assert ra["metrics"] == rb["metrics"]
    assert [h["train_loss"] for h in ra["history"]] == [h["train_loss"] for h in rb["history"]]
    assert rb["resumed_at_epoch"] == (resumed[-1] or None) and ra["resumed_at_epoch"] is None
    assert not CK.checkpoint_path(out).with_name(CK.checkpoint_path(out).name + ".tmp").exists()


def test_resume_after_the_last_epoch_only_evaluates(data, reference, tmp_path):
    ref, _ = reference
    out = tmp_path / "r.json"
    out.parent.mkdir(exist_ok=True)
    CK.checkpoint_path(out).write_bytes(CK.checkpoint_path(ref).read_bytes())
    r = _train(data, out)()
    assert r["resumed_at_epoch"] == EPOCHS and r["metrics"] == json.loads(ref.read_text())["metrics"]


def test_checkpoint_of_other_settings_is_refused_in_one_line(data, reference, tmp_path):
    ref, _ = reference
    out = tmp_path / "r.json"
    CK.checkpoint_path(out).write_bytes(CK.checkpoint_path(ref).read_bytes())
    with pytest.raises(ValueError, match=r"written by a run with other settings \(config differ\); delete it"):
        _train(data, out, lr=0.1)()


def test_a_pickled_checkpoint_carrying_code_is_refused_and_never_run(data, tmp_path):
    marker, out = tmp_path / "code-ran", tmp_path / "r.json"
    torch.save({"format": CK.FORMAT, "epoch": RunsAShellCommand(marker)}, CK.checkpoint_path(out))
    with pytest.raises(ValueError, match=r"checkpoint=.*refused, not a plain tensor file"):
        _train(data, out)()
    assert not marker.exists()
