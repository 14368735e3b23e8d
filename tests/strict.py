"""JSON read as a strict parser reads it (RFC 8259 has no NaN, Infinity or -Infinity; Python's json writes them
by default, and most other languages' parsers refuse the file): what the tests read every file diffcore writes with.
Not a test module itself."""

from __future__ import annotations

import json
from pathlib import Path


def _refuse(constant: str):
    raise ValueError(f"{constant} is not JSON (RFC 8259)")


def loads(text: str):
    return json.loads(text, parse_constant=_refuse)


def check_tree(root: str | Path) -> list[str]:
    """Every .json file and every line of every .jsonl file under `root`, read strictly; returns the files read."""
    read = []
    for p in sorted(Path(root).rglob("*")):
        if p.suffix == ".json":
            loads(p.read_text(encoding="utf-8"))
        elif p.suffix == ".jsonl":
            for line in p.read_text(encoding="utf-8").splitlines():
                loads(line)
        else:
            continue
        read.append(p.relative_to(root).as_posix())
    return read


def check_lines(text: str) -> int:
    """The JSON lines of a command's output (those that start with '{'), read strictly; returns how many."""
    lines = [line for line in text.splitlines() if line.startswith("{")]
    for line in lines:
        loads(line)
    return len(lines)
