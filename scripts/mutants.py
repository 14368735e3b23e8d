"""Mutation testing of the method's core: run mutmut on the functions listed in pyproject.toml and score them.

    python scripts/mutants.py run [--max-children 2]   # a fresh mutants/ folder, every core mutant run, the report
    python scripts/mutants.py report [--markdown]      # the report of the last run (mutants/ as it is)

[tool.mutmut] in pyproject.toml says which files mutmut mutates and which tests it runs; [tool.diffcore.mutants]
lists the core's functions, module by module: only their mutants are run and scored. The report gives per module
the mutants killed (a test failed, or ran past mutmut's time limit), survived and untested, and the score
(detected / all). Every survivor must be listed as equivalent in tests/MUTANTS.md, as a table row
`| <mutant id> | <the diff in one line> | <why it is equivalent> |`, with the diff as this script prints it:
a listed diff that no longer matches (the function changed, and mutmut's numbering with it) counts as
unexplained. Exit code 1 when a mutant survives unexplained or has no test.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parent.parent
EQUIVALENTS = REPO / "tests" / "MUTANTS.md"
SEP = "ǁ"  # mutmut's separator of class and method in a mutant's name
DETECTED = ("killed", "timeout")  # a timeout: the mutant made the tests hang or loop, which the suite notices


def core() -> dict[str, list[str]]:
    """module -> its core functions ("name" or "Class.method"), from pyproject.toml."""
    with open(REPO / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["diffcore"]["mutants"]


def pattern(module: str, function: str) -> str:
    """The mutmut name glob of a function's mutants: diffcore.mix.x_beta__mutmut_*, ...xǁClassǁmethod__mutmut_*."""
    cls, _, name = function.rpartition(".")
    return f"{module}.{f'x{SEP}{cls}{SEP}{name}' if cls else f'x_{name}'}__mutmut_*"


def function_of(mutant: str) -> str:
    """'diffcore.mix.x_beta__mutmut_3' -> 'beta'; 'diffcore.train.xǁEvalSetǁ__len____mutmut_1' -> 'EvalSet.__len__'."""
    mangled = mutant.rpartition(".")[2].partition("__mutmut_")[0]
    return mangled[2:] if mangled.startswith("x_") else mangled[2:].replace(SEP, ".")  # "xǁ" + Class + "ǁ" + name


def results() -> dict[str, dict[str, str]]:
    """module -> {mutant name: status} for the core's mutants, from mutmut's files in mutants/."""
    from mutmut.stats import status_by_exit_code

    out = {}
    for module, functions in core().items():
        meta = REPO / "mutants" / (module.replace(".", "/") + ".py.meta")
        codes = json.loads(meta.read_text())["exit_code_by_key"] if meta.is_file() else {}
        wanted = set(functions)
        out[module] = {k: status_by_exit_code[v] for k, v in sorted(codes.items()) if function_of(k) in wanted}
    return out


def one_line_diff(mutant: str) -> str:
    """The mutant's change as 'old -> new', each side its changed lines stripped and joined by ' / '."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    module = mutant[: mutant.index(".x")]
    diff = get_diff_for_mutant(mutant, path=Path(module.replace(".", "/") + ".py")).splitlines()[2:]
    old = " / ".join(line[1:].strip() for line in diff if line.startswith("-"))
    new = " / ".join(line[1:].strip() for line in diff if line.startswith("+"))
    return f"{old} -> {new}"


def listed_equivalents() -> dict[str, str]:
    """mutant name -> its diff as listed in tests/MUTANTS.md (table rows whose first cell is a mutant name)."""
    text = EQUIVALENTS.read_text(encoding="utf-8") if EQUIVALENTS.is_file() else ""
    rows = re.findall(r"^\| `(diffcore\.[^`]+__mutmut_\d+)` \| `(.*?)` \|", text, re.M)
    return dict(rows)


HEAD = ("module", "mutants", "killed", "timeout", "survived", "of them equivalent", "no test", "score")


def report(markdown: bool = False) -> int:
    if Path.cwd() != REPO:
        raise SystemExit(f"run from the repository root ({REPO}), where mutants/ is")
    listed, found = listed_equivalents(), results()
    rows, problems, total = [], [], Counter()
    for module, statuses in found.items():
        missing = set(core()[module]) - {function_of(m) for m in statuses}
        problems += [f"no mutant of {module}.{f} (renamed, decorated or without a mutable line?)" for f in missing]
        c = Counter(statuses.values())
        for m, s in statuses.items():
            if s in DETECTED:
                continue
            diff = one_line_diff(m)
            if s == "survived" and listed.get(m) == diff:
                c["equivalent"] += 1
            else:
                problems.append(f"{s}: {m}  {diff}" + ("  (listed with another diff)" if m in listed else ""))
        c["mutants"], c["detected"] = len(statuses), c["killed"] + c["timeout"]
        total.update(c)
        rows.append((module, c))
    rows.append(("all", total))
    table = [HEAD] + [
        (
            name,
            c["mutants"],
            c["killed"],
            c["timeout"],
            c["survived"],
            c["equivalent"],
            c["no tests"],
            f"{c['detected'] / c['mutants']:.1%}" if c["mutants"] else "-",
        )
        for name, c in rows
    ]
    if markdown:
        print("\n".join("| " + " | ".join(map(str, r)) + " |" for r in table[:1] + [("---",) * len(HEAD)] + table[1:]))
    else:
        widths = [max(len(str(r[i])) for r in table) for i in range(len(HEAD))]
        print("\n".join("  ".join(str(v).ljust(w) for v, w in zip(r, widths)) for r in table))
    n, d, eq = total["mutants"], total["detected"], total["equivalent"]
    if n:
        print(
            f"\ndetected {d} of {n} core mutants ({d / n:.1%}); {d} of the {n - eq} not equivalent "
            f"({d / max(n - eq, 1):.1%})"
        )
    names = {m for statuses in found.values() for m in statuses}
    problems += [f"listed in {EQUIVALENTS.name} but no core mutant: {m}" for m in listed if m not in names]
    print("\n".join(problems))
    return 1 if problems or not n else 0


def run(max_children: int) -> int:
    """A fresh mutants/ folder (no result carried over from an older run), every core mutant run."""
    shutil.rmtree(REPO / "mutants", ignore_errors=True)
    patterns = [pattern(m, f) for m, fs in core().items() for f in fs]
    mutmut = Path(sys.executable).with_name("mutmut")
    t0 = time.perf_counter()
    code = subprocess.call([str(mutmut), "run", "--max-children", str(max_children), *patterns], cwd=REPO)
    print(f"\nmutmut run: exit code {code}, {time.perf_counter() - t0:.0f} s wall")
    return code or report()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="a fresh mutmut run over the core, then the report")
    r.add_argument("--max-children", type=int, default=2, help="mutants tested at once (default 2)")
    rep = sub.add_parser("report", help="the report of the last run")
    rep.add_argument("--markdown", action="store_true", help="the per-module table as markdown")
    args = ap.parse_args(argv)
    return run(args.max_children) if args.command == "run" else report(args.markdown)


if __name__ == "__main__":
    sys.exit(main())
