"""Device, dtype, seeds and provenance: resolved in one place so that every step agrees.

Nothing here touches global torch state at import time.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import torch

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}
DTYPE_NAMES = frozenset(_DTYPES)  # what a `dtype` setting may name, besides "auto"


def check_device_name(name: str) -> None:
    """Refuse a device string torch cannot parse ('gpu', 'cuda:x'), without touching any device."""
    if name == "auto":
        return
    try:
        torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(f"device={name!r}: expected 'auto', 'cpu', 'cuda' or 'cuda:N'") from None


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda if present else cpu; anything else is checked, not silently replaced."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    check_device_name(name)
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} was asked for but CUDA is not available here; use device='cpu' or 'auto'")
    return dev


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """'auto' -> bf16 on CUDA (SDXL's fp16 VAE overflows, see REFERENCE), fp32 on CPU."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in _DTYPES:
        raise ValueError(f"dtype={name!r} is not one of {sorted(_DTYPES)} or 'auto'")
    return _DTYPES[name]


def derive_seed(*parts: object) -> int:
    """A 63-bit seed that is a pure function of its parts (e.g. run seed, image id, attempt).

    Hash-based rather than arithmetic so that nearby ids/attempts give unrelated streams, and so that the
    seed never depends on rank, world size, batch position or order of processing.
    """
    key = "/".join(str(p) for p in parts).encode("utf-8")
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") & (2**63 - 1)


def generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(int(seed))


def git_revision(path: Path | None = None) -> str | None:
    here = path or Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if rev.returncode != 0:
        return None
    return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def provenance(device: torch.device | None = None) -> dict:
    """What produced an artifact: versions, git revision, host, device, time."""
    dev = device or torch.device("cpu")
    info = {
        "time_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git_revision": git_revision(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "argv": sys.argv,
        "packages": {
            p: _version(p)
            for p in (
                "diffcore",
                "torch",
                "torchvision",
                "diffusers",
                "transformers",
                "open_clip_torch",
                "numpy",
                "scikit-learn",
            )
        },
        "device": str(dev),
    }
    if dev.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(dev)
    return info
