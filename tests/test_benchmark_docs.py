"""The tables in benchmarks/README.md are what the bench printed: rendered from the stored JSON, not typed."""

import json
from pathlib import Path

import pytest

from diffcore.bench import report
from diffcore.bench.command import main

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
# the files whose tables the page shows, and which of their sections (a later run replaced b.json's host table)
RENDERED = {
    "cpu-2026-11-25-b.json": ("generation", "loader"),
    "cpu-2026-11-25-host.json": ("host",),
    "cpu-2026-11-25-optin.json": ("optin",),
}


@pytest.mark.parametrize("name", sorted(RENDERED))
def test_every_table_of_a_bench_file_stands_verbatim_in_the_benchmarks_page(name):
    page = (BENCH / "README.md").read_text(encoding="utf-8")
    run = json.loads((BENCH / name).read_text())
    tables = report({k: run[k] for k in RENDERED[name]}).split("\n\n")
    assert tables and all(t.startswith("| ") for t in tables)
    missing = [t.splitlines()[0] for t in tables if t not in page]
    assert not missing, f"{name}: tables not on the page (re-render with python -m diffcore.bench --report): {missing}"


def test_the_step_cache_flop_table_is_the_stored_count():
    flops = json.loads((BENCH / "stepcache-flops-2026-11-25.json").read_text())
    page = (BENCH / "README.md").read_text(encoding="utf-8")
    sdxl = flops["sdxl"]
    speedups = " / ".join(f"{sdxl['estimated_unet_speedup'][n]:.2f}" for n in ("2", "3", "5"))
    row = (
        f"| SDXL, 512 px (64x64 latent) | {sdxl['full_gflop']:,.1f} | {sdxl['shallow_gflop']:.1f} | "
        f"{sdxl['shallow_flop_share']:.3f} | {speedups} |"
    )
    assert row in page


def test_report_command_prints_the_tables(capsys):
    assert main(["--report", str(BENCH / "cpu-2026-11-25-optin.json")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| mode | ms/img (speed-up) |") and "| exact |" in out


def _numbers(text: str) -> set[str]:
    import re

    return set(re.findall(r"[+−]?\d+\.\d+%?", text))


@pytest.mark.parametrize("name", sorted(p.name for p in BENCH.glob("h100-*.json")))
def test_the_h100_numbers_on_the_page_are_those_of_the_stored_runs(name):
    """The first session's H100 tables were typed by hand: every s/img, ratio, peak memory and Eq. 9 figure of
    the runs they cite must be in the stored JSON (the vanilla/DiffCoRe-Mix rows; other methods are not shown)."""
    from diffcore.bench.report import md_generation, md_loader, md_training

    run = json.loads((BENCH / name).read_text())
    page = (BENCH / "README.md").read_text(encoding="utf-8")
    shown = []
    if "generation" in run:
        shown.append(md_generation(run["generation"]))
    if "training" in run:
        shown.append(md_training([r for r in run["training"] if r["method"] in ("vanilla", "diffcore")]))
    if "loader" in run and "12 workers, JPEG" not in run["loader"][0]["loader"]:  # the earlier loader run: not shown
        shown.append(md_loader(run["loader"]))
    numbers = _numbers("\n".join(shown)) - {"+0.0%"}
    assert numbers and not sorted(n for n in numbers if n not in page)


def _fidelity_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("fidelity", BENCH / "fidelity.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("name", sorted(p.name for p in BENCH.glob("fidelity-*.json")))
def test_the_fidelity_tables_are_those_of_the_stored_run(name):
    """benchmarks/fidelity.md shows, verbatim, every table benchmarks/fidelity.py renders from the stored run, with
    the official repositories' commits it names."""
    run = json.loads((BENCH / name).read_text())
    page = (BENCH / "fidelity.md").read_text(encoding="utf-8")
    tables = _fidelity_script().report(run).split("\n\n")
    assert len(tables) == len(run["results"]) + ("pixmix" in run["results"])  # PixMix: two tables
    missing = [t.splitlines()[0] for t in tables if t not in page]
    assert not missing, f"{name}: tables not on the page (python benchmarks/fidelity.py --report {name}): {missing}"
    for official in run["official"].values():
        assert official["commit"] in page and official["repo"] in page
    assert name in page and run["provenance"]["git_revision"] in page
