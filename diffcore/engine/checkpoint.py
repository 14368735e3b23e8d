"""Training checkpoints: what an epoch boundary needs so that a killed run, resumed, ends bit for bit where an
uninterrupted one ends (same machine, same device; tests/test_checkpoint.py kills one with SIGKILL).

Written at every epoch end, atomically (safety.atomic_open: a kill mid-write leaves the previous checkpoint), as a
torch file of tensors and plain containers that is read back with `torch.load(weights_only=True)`, which runs no
pickled code. It holds the model (under "state_dict", so models.load_weights reads the trained classifier), the
optimizer (momentum buffers; not after the last epoch, when nothing trains any more), the scheduler, the epoch, the
history, and every random state the loop draws from: torch's global CPU generator (the transforms, in-process
loading), the data-order generator (shuffling and worker seeds), the mixing generator, and CUDA's generators when
there are any.
"""

from __future__ import annotations

import json
import pickle
from collections import Counter
from pathlib import Path

import torch

from .checks import json_text
from .safety import atomic_open, tmp_path

FORMAT = "diffcore-train-checkpoint/1"


def checkpoint_path(out: str | Path) -> Path:
    """Beside the result file: results/vanilla-seed0.json -> results/vanilla-seed0.ckpt.pt."""
    return Path(out).with_suffix(".ckpt.pt")


def save(
    path: Path,
    identity: dict,
    epoch: int,
    history: list[dict],
    model: torch.nn.Module,
    opt: torch.optim.Optimizer | None,
    sched,
    generators: dict[str, torch.Generator],
) -> None:
    """opt None: the schedule is done, and a resume only evaluates, so the momentum buffers (as large as the model)
    are left out; the final checkpoint holds the trained weights for the pages that read them (Grad-CAM)."""
    sched_state = sched.state_dict()
    sched_state["milestones"] = dict(sched_state.get("milestones", {}))  # a Counter is no plain container
    rng = {"torch": torch.get_rng_state(), **{f"gen/{k}": g.get_state() for k, g in generators.items()}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    state = {
        "format": FORMAT,
        "identity": json_text(identity, sort_keys=True),
        "epoch": epoch,
        "history": history,
        "state_dict": model.state_dict(),
        "optimizer": None if opt is None else opt.state_dict(),
        "scheduler": sched_state,
        "rng": rng,
    }
    with atomic_open(path, "wb") as f:
        torch.save(state, f)


def load(path: Path, identity: dict) -> dict:
    """The checkpoint at `path`, refused (one line) if it carries code, is no diffcore checkpoint, or belongs to a
    run with other settings."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as e:
        raise ValueError(
            f"checkpoint={path}: refused, not a plain tensor file ({str(e).splitlines()[0][:120]}); "
            f"delete it to start over"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"checkpoint={path}: not a {FORMAT} file; delete it or pass another --out")
    old = json.loads(state["identity"])
    if old != identity:
        diff = sorted(k for k in set(old) | set(identity) if old.get(k) != identity.get(k))
        raise ValueError(
            f"checkpoint={path}: written by a run with other settings ({', '.join(diff)} differ); "
            f"delete it to start over or pass another --out"
        )
    return state


def restore(
    state: dict, model: torch.nn.Module, opt: torch.optim.Optimizer, sched, generators: dict[str, torch.Generator]
) -> tuple[int, list[dict]]:
    """Load `state` into the loop's objects; returns (epochs done, history so far)."""
    model.load_state_dict(state["state_dict"])
    if state["optimizer"] is not None:  # None: saved after the last epoch (see save)
        opt.load_state_dict(state["optimizer"])
    sched_state = dict(state["scheduler"])
    sched_state["milestones"] = Counter(sched_state["milestones"])
    sched.load_state_dict(sched_state)
    torch.set_rng_state(state["rng"]["torch"])
    for k, g in generators.items():
        g.set_state(state["rng"][f"gen/{k}"])
    if "cuda" in state["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return int(state["epoch"]), list(state["history"])


def remove_partial(path: Path) -> None:
    """A temporary file left by a kill during `save` (the previous checkpoint is intact)."""
    tmp_path(path).unlink(missing_ok=True)
