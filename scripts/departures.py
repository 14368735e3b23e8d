"""Turn the kit into the authors' public code, one departure at a time, and see which tests notice.

    python scripts/departures.py [pytest arguments]    # default: the mutation-testing selection of pyproject.toml

book/differences.md lists where the paper and the authors' generation code differ and says the kit follows the
paper. Each entry of DEPARTURES below is a small edit that makes a copy of diffcore behave like the authors' code
on one point; the tests are run against that copy (in a temporary folder, the working tree is not touched). Every
edit must fail at least one test: exit code 1 otherwise. tests/MUTANTS.md gives the result before and after
tests/test_departures.py was written.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parent.parent

# name -> (file, the kit's code, the authors' behaviour in its place)
DEPARTURES = {
    "a fixed threshold of 0.6 instead of tau_k (Eq. 5)": (
        "diffcore/counterparts.py",
        '        taus = dict(enumerate(agreed["tau"]))\n        return _run_batch(',
        '        taus = {k: 0.6 for k in range(len(agreed["tau"]))}\n        return _run_batch(',
    ),
    "compared with the first file of the class, not its own source": (
        "diffcore/counterparts.py",
        "    src = [src_cache[i] for i, _ in batch]\n",
        "    first = {k: ds.labels.index(k) for k in set(labels)}\n"
        "    for i, _ in batch:\n"
        "        f = first[ds.labels[i]]\n"
        "        if src_cache.get(f) is None:\n"
        "            src_cache[f] = clip.encode(_preprocessed_source(ds, f, clip)[None])[0]\n"
        "    src = [src_cache[first[ds.labels[i]]] for i, _ in batch]\n",
    ),
    "a rejected image deleted, not generated again": (
        "diffcore/counterparts.py",
        "            retry.append((i, a + 1))",
        "            pass",
    ),
    "written into the training folder": (
        "diffcore/counterparts.py",
        "        Path(out_dir),\n        settings,",
        "        Path(ds.path(0)).parent.parent if ds.path(0) else Path(out_dir),\n        settings,",
    ),
    "seeds that depend on the position in the batch": (
        "diffcore/counterparts.py",
        "seeds = [derive_seed(gen_cfg.run_seed, ds.ids[i], a) for i, a in batch]",
        "seeds = [derive_seed(gen_cfg.run_seed, j, a) for j, (i, a) in enumerate(batch)]",
    ),
    "the aircraft negative prompt for every dataset": (
        "diffcore/counterparts.py",
        "neg = P.final_negative(prompt_cfg, ds.classes)[0]",
        "neg = P.negative_prompt(prompt_cfg)",
    ),
    "training pairs an image with its class's first counterpart": (
        "diffcore/train.py",
        "as_paths(counterparts.get(ds.ids[i]))]",
        "as_paths(counterparts.get(ds.ids[ds.labels.index(ds.labels[i])]))]",
    ),
}


def selection() -> list[str]:
    with open(REPO / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["mutmut"]["pytest_add_cli_args_test_selection"]


def failing(copy: Path, tests: list[str]) -> list[str]:
    """The tests that fail against the copy (their names)."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rf", *tests]
    out = subprocess.run(cmd, cwd=copy, capture_output=True, text=True).stdout
    return [line.split("::")[-1].split(" ")[0] for line in out.splitlines() if line.startswith("FAILED")]


def main(argv: list[str]) -> int:
    tests, unnoticed = argv or selection(), []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (file, kit, authors) in DEPARTURES.items():
            copy = Path(tmp) / "copy"
            shutil.rmtree(copy, ignore_errors=True)
            for part in ("diffcore", "tests"):
                shutil.copytree(REPO / part, copy / part, ignore=shutil.ignore_patterns("__pycache__"))
            shutil.copy(REPO / "pyproject.toml", copy)
            text = (copy / file).read_text(encoding="utf-8")
            if text.count(kit) != 1:
                raise SystemExit(f"{name}: the kit's code {kit!r} is not (once) in {file}; update DEPARTURES")
            (copy / file).write_text(text.replace(kit, authors), encoding="utf-8")
            failed = failing(copy, tests)
            print(
                f"{name}: "
                + (f"failed {len(failed)}: {', '.join(failed)}" if failed else "UNNOTICED, every test passed")
            )
            unnoticed += [] if failed else [name]
    return 1 if unnoticed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
