"""The tables in benchmarks/README.md are what the bench printed: rendered from the stored JSON, not typed."""
import json
from pathlib import Path

import pytest

from diffcore.bench import main, report

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
RENDERED = ["cpu-2026-11-25-b.json", "cpu-2026-11-25-optin.json"]  # the files whose tables the page shows


@pytest.mark.parametrize("name", RENDERED)
def test_every_table_of_a_bench_file_stands_verbatim_in_the_benchmarks_page(name):
    page = (BENCH / "README.md").read_text(encoding="utf-8")
    tables = report(json.loads((BENCH / name).read_text())).split("\n\n")
    assert tables and all(t.startswith("| ") for t in tables)
    missing = [t.splitlines()[0] for t in tables if t not in page]
    assert not missing, f"{name}: tables not on the page (re-render with python -m diffcore.bench --report): {missing}"


def test_the_step_cache_flop_table_is_the_stored_count():
    flops = json.loads((BENCH / "stepcache-flops-2026-11-25.json").read_text())
    page = (BENCH / "README.md").read_text(encoding="utf-8")
    sdxl = flops["sdxl"]
    speedups = " / ".join(f"{sdxl['estimated_unet_speedup'][n]:.2f}" for n in ("2", "3", "5"))
    row = (f"| SDXL, 512 px (64x64 latent) | {sdxl['full_gflop']:,.1f} | {sdxl['shallow_gflop']:.1f} | "
           f"{sdxl['shallow_flop_share']:.3f} | {speedups} |")
    assert row in page


def test_report_command_prints_the_tables(capsys):
    assert main(["--report", str(BENCH / "cpu-2026-11-25-optin.json")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| mode | ms/img (speed-up) |") and "| exact |" in out
