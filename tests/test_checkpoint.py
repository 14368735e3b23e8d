"""Training survives SIGKILL: resumed from its last epoch checkpoint, it ends with the weights (torch.equal) and
metrics of an uninterrupted run on CPU. Checkpoints are read with weights_only=True: one carrying code is refused."""

from __future__ import annotations

import json
import pickle
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
    assert torch.load(CK.checkpoint_path(ref), weights_only=True)["optimizer"] is None  # done: weights, no momentum


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


def test_a_run_stopped_in_line_after_an_epoch_resumes_to_the_uninterrupted_weights(data, tmp_path, monkeypatch):
    """The same resume in this process (so that every line of save/load/restore runs here): stopped right after
    epoch 2's checkpoint, before the lr steps down at epochs 2 and 3 of 4, and started again, it ends with the
    uninterrupted run's weights, metrics and per-epoch losses and learning rates."""
    whole = _train(data, tmp_path / "whole.json", epochs=4)()
    real_save, out = CK.save, tmp_path / "stopped.json"

    def save_then_stop(path, identity, epoch, *rest):
        real_save(path, identity, epoch, *rest)
        if epoch == 2:
            raise KeyboardInterrupt("stopped after epoch 2")

    monkeypatch.setattr(CK, "save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        _train(data, out, epochs=4)()
    monkeypatch.setattr(CK, "save", real_save)
    resumed = _train(data, out, epochs=4)()
    assert resumed["resumed_at_epoch"] == 2
    a, b = _weights(tmp_path / "whole.json"), _weights(out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["metrics"] == whole["metrics"]
    assert [(h["train_loss"], h["lr"]) for h in resumed["history"]] == [
        (h["train_loss"], h["lr"]) for h in whole["history"]
    ]
    assert [h["lr"] for h in whole["history"]] == [pytest.approx(v) for v in (0.05, 0.005, 0.0005, 0.0005)]


def _loop_objects(seed: int):
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[2, 3], gamma=0.1)
    return model, opt, sched, {"mix": torch.Generator().manual_seed(seed), "order": torch.Generator().manual_seed(seed)}


def test_save_load_restore_bring_back_every_state_the_loop_draws_from(tmp_path):
    model, opt, sched, gens = _loop_objects(0)
    for _ in range(2):  # momentum buffers, a scheduler past its first milestone, generators that have drawn
        model(torch.randn(4, 3)).sum().backward()
        opt.step()
        sched.step()
        torch.rand(3, generator=gens["mix"])
    identity, path = {"config": {"lr": 0.1}, "real": 60}, tmp_path / "r.ckpt.pt"
    CK.save(path, identity, 2, [{"epoch": 1}, {"epoch": 2}], model, opt, sched, gens)
    expected = (torch.get_rng_state(), torch.rand(5), {k: torch.rand(5, generator=g) for k, g in gens.items()})
    fresh_model, fresh_opt, fresh_sched, fresh_gens = _loop_objects(1)
    state = CK.load(path, identity)
    assert CK.restore(state, fresh_model, fresh_opt, fresh_sched, fresh_gens) == (2, [{"epoch": 1}, {"epoch": 2}])
    assert torch.equal(torch.get_rng_state(), expected[0]) and torch.equal(torch.rand(5), expected[1])
    assert all(torch.equal(torch.rand(5, generator=fresh_gens[k]), v) for k, v in expected[2].items())
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), fresh_model.parameters()))
    buffers = [opt.state[p]["momentum_buffer"] for p in model.parameters()]
    assert all(torch.equal(b, fresh_opt.state[q]["momentum_buffer"]) for b, q in zip(buffers, fresh_model.parameters()))
    assert fresh_sched.last_epoch == 2 and fresh_sched.milestones == sched.milestones
    assert isinstance(fresh_sched.milestones, type(sched.milestones))  # a Counter again, as MultiStepLR keeps it
    fresh_sched.step()
    assert fresh_opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.1 * 0.1)  # the milestone at 3 still acts
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == CK.FORMAT and raw["epoch"] == 2 and json.loads(raw["identity"]) == identity
    assert raw["scheduler"]["milestones"] == {2: 1, 3: 1} and type(raw["scheduler"]["milestones"]) is dict
    assert "cuda" not in raw["rng"]  # no CUDA generator in use here


def test_a_checkpoint_of_other_settings_names_every_setting_that_differs(tmp_path):
    model, opt, sched, gens = _loop_objects(0)
    path = tmp_path / "r.ckpt.pt"
    CK.save(path, {"same": 1, "config": {"lr": 0.1}, "gone": 2}, 1, [], model, opt, sched, gens)
    with pytest.raises(ValueError) as e:
        CK.load(path, {"same": 1, "config": {"lr": 0.2}, "new": 3})
    assert str(e.value) == (
        f"checkpoint={path}: written by a run with other settings (config, gone, new differ); "
        f"delete it to start over or pass another --out"
    )
    for bad in ([1, 2], {"format": "diffcore-train-checkpoint/0"}, {"epoch": 1}):
        torch.save(bad, path)
        with pytest.raises(ValueError) as e:
            CK.load(path, {})
        assert str(e.value) == (
            f"checkpoint={path}: not a diffcore-train-checkpoint/1 file; delete it or pass another --out"
        )
    path.write_bytes(b"not a torch file at all")
    with pytest.raises(pickle.UnpicklingError) as torch_says:
        torch.load(path, map_location="cpu", weights_only=True)
    first = str(torch_says.value).splitlines()[0]
    assert len(first) > 120 and "\n" in str(torch_says.value)  # the message is cut to its first 120 characters
    with pytest.raises(ValueError) as e:
        CK.load(path, {})
    assert (
        str(e.value) == f"checkpoint={path}: refused, not a plain tensor file ({first[:120]}); delete it to start over"
    )


def test_the_cuda_generators_go_into_the_checkpoint_and_come_back_when_cuda_is_in_use(tmp_path, monkeypatch):
    """CUDA's generators are saved once CUDA is initialised and restored where CUDA is available (checked here
    with torch.cuda's state functions stood in for: no GPU is needed to test that they are called)."""
    states, restored = [torch.tensor([7, 8, 9], dtype=torch.uint8)], []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: states)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.append)
    model, opt, sched, gens = _loop_objects(0)
    CK.save(tmp_path / "idle.pt", {}, 1, [], model, opt, sched, gens)  # available but never initialised
    assert "cuda" not in torch.load(tmp_path / "idle.pt", weights_only=True)["rng"]
    CK.restore(CK.load(tmp_path / "idle.pt", {}), *_loop_objects(1))
    assert restored == []
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    CK.save(tmp_path / "used.pt", {}, 1, [], model, opt, sched, gens)
    CK.restore(CK.load(tmp_path / "used.pt", {}), *_loop_objects(1))
    assert len(restored) == 1 and torch.equal(restored[0][0], states[0])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # resumed where there is no GPU: left alone
    CK.restore(CK.load(tmp_path / "used.pt", {}), *_loop_objects(1))
    assert len(restored) == 1
