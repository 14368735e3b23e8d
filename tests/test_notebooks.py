"""The notebooks run through papermill on a minimal parameter set, a parameter override changes what they do,
and the driver stops with the failing cell."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parent.parent
TABLE2 = REPO / "notebooks" / "01_table2_data_scarcity.ipynb"
MINIMAL = {"few_shot": 2, "epochs": 1, "seeds": [0], "keep_models": False}


def _run(out: Path, name: str, **params) -> nbformat.NotebookNode:
    import papermill as pm

    dst = out / name
    pm.execute_notebook(
        str(TABLE2),
        str(dst),
        parameters={"out_dir": str(out), **MINIMAL, **params},
        kernel_name="python3",
        cwd=str(REPO),
        progress_bar=False,
    )
    return nbformat.read(dst, as_version=4)


def _html(nb) -> str:
    """The paper-vs-ours table the notebook shows."""
    return next(
        h
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        for h in [o.get("data", {}).get("text/html", "")]
        if "paper: Flowers-102" in h
    )


@pytest.mark.slow
def test_table_notebook_runs_and_a_parameter_override_changes_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    results = tmp_path / "results-digits-2shot-1ep"
    a = _run(tmp_path, "a.ipynb", methods=["Vanilla"])
    assert sorted(p.name for p in results.glob("*.json")) == ["vanilla-seed0.json"]
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in a.cells)
    b = _run(tmp_path, "b.ipynb", methods=["Vanilla", "DiffCoRe-Mix-100"])
    assert sorted(p.name for p in results.glob("*.json")) == ["diffcore-100-seed0.json", "vanilla-seed0.json"]
    row = lambda html: html.split("<td>DiffCoRe-Mix-100</td>")[1].split("</tr>")[0]
    assert "not run" in row(_html(a)) and "(n = " not in row(_html(a))
    assert "(n = 1, test set only)" in row(_html(b))  # the override trained it: our number, one seed, its interval
    assert "69.84" in row(_html(b))  # beside the paper's Table 2 number


def test_driver_stops_on_a_failing_cell_and_shows_it(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "diffcore.reproduce",
            "--only",
            "01_table2",
            "--out",
            str(tmp_path),
            "--no-book",
            "--param",
            "profile=nope",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode != 0
    assert "FAILED: 01_table2_data_scarcity.ipynb" in done.stderr
    assert "--- cell source ---" in done.stderr and "jobs.columns(" in done.stderr
    assert "profile='nope'" in done.stderr or "nope" in done.stderr.split("--- error ---")[1]
    assert "[1/1] 01_table2_data_scarcity.ipynb ..." in done.stdout


def test_unknown_notebook_name_is_refused(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "diffcore.reproduce", "--only", "99_nothing", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0 and "no notebook named ['99_nothing']" in done.stderr


def test_strip_clears_outputs(tmp_path, monkeypatch):
    from diffcore import reproduce

    nb = nbformat.read(TABLE2, as_version=4)
    code = next(c for c in nb.cells if c.cell_type == "code")
    code.outputs = [nbformat.v4.new_output("stream", text="x")]
    code.execution_count = 3
    p = tmp_path / "n.ipynb"
    nbformat.write(nb, p)
    reproduce.strip_outputs([p])
    again = nbformat.read(p, as_version=4)
    assert all(not c.outputs and c.execution_count is None for c in again.cells if c.cell_type == "code")


@pytest.mark.slow
def test_a_notebook_runs_in_jupyterlabs_kernel_with_only_its_parameters_cell_edited(tmp_path):
    """As a reader in JupyterLab would: the kernel's working directory is notebooks/, the parameters cell is
    edited by hand (no papermill injection), every cell runs top to bottom."""
    from nbclient import NotebookClient

    nb = nbformat.read(TABLE2, as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    edited = {"out_dir": repr(str(tmp_path)), "few_shot": "2", "epochs": "1", "methods": '["Vanilla"]'}
    for name, value in edited.items():
        params.source, n = re.subn(rf"^{name} = [^#\n]*", f"{name} = {value}  ", params.source, flags=re.M)
        assert n == 1, name
    NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(TABLE2.parent)}},
        env={**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"},
    ).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    assert (tmp_path / "results-digits-2shot-1ep" / "vanilla-seed0.json").is_file()
    assert "paper: Flowers-102" in _html(nb)
