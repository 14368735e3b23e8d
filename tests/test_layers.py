"""The package's shape: import-linter's layer and cycle contracts hold (and would catch a breach), no private name
crosses a module boundary, and `ls diffcore/` reads like the method."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "diffcore"
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT), "--config", str(cwd / "pyproject.toml"), "--no-cache"],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin"},
    )


def test_layer_and_cycle_contracts_hold_and_catch_a_breach(tmp_path):
    done = _lint(REPO)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "Contracts: 3 kept, 0 broken." in done.stdout
    # the same contracts on a copy where the data step imports the CLI (inside a function, as cycles hide)
    shutil.copytree(PACKAGE, tmp_path / "diffcore", ignore=shutil.ignore_patterns("assets", "__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    with open(tmp_path / "diffcore" / "data.py", "a") as f:
        f.write("\n\ndef _sneaky():\n    from .cli import main\n\n    return main\n")
    broken = _lint(tmp_path)
    assert broken.returncode != 0
    assert "diffcore.data is not allowed to import diffcore.cli" in broken.stdout.replace("\n", " ")


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_private_name_is_imported_from_another_module():
    found = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module != "__future__":
                parts = (node.module or "").split(".")
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                private += [p for p in parts if p.startswith("_") and not p.startswith("__")]
                if private and (node.level or (node.module or "").startswith("diffcore")):
                    found.append(f"{path.relative_to(REPO)}:{node.lineno} {private}")
    assert not found, found


def test_the_top_level_reads_like_the_method():
    steps = {
        "data",
        "prompts",
        "generate",
        "filter",
        "counterparts",
        "mix",
        "train",
        "saliency",
        "models",
        "results",
        "experiment",
    }
    top = {p.stem for p in PACKAGE.glob("*.py")}
    assert steps <= top
    tools = {"bench", "book", "tiny", "engine"}
    assert tools <= {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert not top & tools  # tooling lives in its own package, not beside filter.py and mix.py
