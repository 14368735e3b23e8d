"""Writes that survive a kill, paths that cannot leave the output folder.

Generation and training run for hours to days and will be killed (preemption, out of memory, Ctrl-C, power).
Every file diffcore writes goes through `atomic_open`: the bytes go to `<name>.tmp`, are fsynced, and the
temporary file is renamed over the final name (a rename is atomic on one file system), so a reader sees the old
file or the new one, never half of one. Appends (the manifest) are fsynced per batch by `append_durable`; a
tail torn by a kill is cut off at the next start (genset.GeneratedSet.recover).

Every path built from data (class names, image ids, manifest entries) goes through `inside`, which refuses
anything that would resolve outside its root: `..`, absolute paths, symlinks pointing elsewhere.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

TMP_SUFFIX = ".tmp"  # `<name>.tmp`: what a kill can leave behind; never referenced, removed on resume


def fsync_dir(folder: str | Path) -> None:
    """Make the folder's entries (a rename, a new file) durable, not only the files' bytes (POSIX; no-op on Windows)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def tmp_path(path: Path) -> Path:
    return path.with_name(path.name + TMP_SUFFIX)


@contextmanager
def atomic_open(path: str | Path, mode: str = "wb", sync_dir: bool = True, **kw) -> Iterator[IO]:
    """Write `path` all or nothing: to `<path>.tmp`, fsync, rename. sync_dir=False leaves the folder fsync to the
    caller (one per batch of images instead of one per file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path)
    try:
        with open(tmp, mode, **kw) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sync_dir:
        fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)


def append_durable(path: str | Path, text: str) -> None:
    """Append and fsync: once this returns, the text survives a kill or a power cut."""
    with open(path, "a", encoding="utf-8", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def inside(root: str | Path, relative: str | Path) -> Path:
    """root/relative, refused when it would resolve outside root (`..`, an absolute path, a symlink elsewhere)."""
    base = Path(root).resolve()
    target = (base / relative).resolve()
    if target != base and base not in target.parents:
        raise ValueError(f"path {str(relative)!r} resolves outside {root}; only paths inside it are written or read")
    return target
