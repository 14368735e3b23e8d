"""The filter's explorer (figures.explore): every attempt of a source, on a set made by the real loop with stand-ins
whose every outcome is known in advance (standins.every_outcome_set)."""

from __future__ import annotations

import re

import pytest
from standins import every_outcome_set

from diffcore.book import figures as F
from diffcore.counterparts import read_manifest


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("explore")
    return root, every_outcome_set(root)


def _cells(html: str) -> list[list[str]]:
    """The table's rows as lists of cell texts."""
    body = html.split("<tbody>")[1].split("</tbody>")[0]
    return [re.findall(r"<td>(.*?)</td>", row, re.S) for row in body.split("</tr>")[:-1]]


def test_each_source_gets_its_outcome_and_the_filters_select_by_class_and_outcome(made):
    root, ds = made
    ex = F.Explorer(root / "generated", ds)
    outcome = dict(zip(ex.sources.source_id, ex.sources.outcome))
    assert outcome == {
        "train/a/0.png": "kept at once",
        "train/a/1.png": "rejected, then kept",
        "train/a/2.png": "never kept",
        "train/b/3.png": "kept at once",
        "train/b/4.png": "kept at once",
    }
    assert ex.classes() == [("0: a", 0), ("1: b", 1)]
    assert list(ex.pick(0).source_id) == ["train/a/2.png", "train/a/1.png", "train/a/0.png"]  # most attempts first
    assert list(ex.pick(None, "kept at once").source_id) == ["train/a/0.png", "train/b/3.png", "train/b/4.png"]
    assert ex.pick(1, "never kept").empty


def test_the_view_lists_every_attempt_with_its_exact_seed_similarity_tau_and_outcome(made):
    root, ds = made
    html = F.explore(root / "generated", ds, source="train/a/2.png", interactive=False).data
    rows = [r for r in read_manifest(root / "generated" / "manifest.csv") if r["source_id"] == "train/a/2.png"]
    cells = _cells(html)
    assert [c[0] for c in cells] == ["0", "1", "2"]
    assert [c[1] for c in cells] == [r["seed"] for r in rows]  # 64-bit seeds, digit for digit
    assert [c[5] for c in cells] == ["rejected", "rejected", "rejected-final"]
    assert all(float(c[2]) == 0.0 and float(c[3]) == 0.0 for c in cells)  # S = tau_k = 0: not kept (S > tau_k)
    assert [c[6] for c in cells] == [r["file"] for r in rows]  # every rejected picture is on disk here
    assert html.count('<img src="data:image/png;base64,') == 1 and "save_rejected" not in html
    assert "source <code>train/a/2.png</code>" in html


def test_without_stored_rejected_images_their_rows_say_why_and_the_kept_picture_is_shown(tmp_path):
    ds = every_outcome_set(tmp_path, save_rejected=False)  # the paper profile's setting
    ex = F.Explorer(tmp_path / "generated", ds)
    rows = ex.attempts("train/a/1.png")
    assert [ex.missing(r) for r in rows.itertuples()] == [F.NOT_STORED, ""]
    assert [ex.picture(r) is None for r in rows.itertuples()] == [True, False]
    html = F.explore(tmp_path / "generated", ds, source="train/a/1.png", interactive=False).data
    assert [c[6] for c in _cells(html)] == [F.NOT_STORED, rows.file.iloc[1]]
    assert "made with <code>save_rejected</code> off" in html
    (tmp_path / "generated" / rows.file.iloc[1]).unlink()
    assert ex.missing(next(rows.iloc[1:].itertuples())) == "file missing"


def test_the_real_image_comes_from_the_dataset_else_from_the_manifests_source_path(made):
    root, ds = made
    with_ds, without = F.Explorer(root / "generated", ds), F.Explorer(root / "generated")
    a, why_a = with_ds.real_image("train/b/3.png")
    b, why_b = without.real_image("train/b/3.png")  # an ImageFolder's set: the manifest holds the file's path
    assert (why_a, why_b) == ("", "") and (a == b).all() and a.shape == (16, 16, 3)
    no_path = F.Explorer(root / "generated")
    no_path.df["source_path"] = ""  # a set of a dataset without files (digits, CIFAR's pickles)
    assert no_path.real_image("train/b/3.png") == (None, "pass the dataset to see it")


def test_it_opens_as_widgets_where_a_frontend_answers_and_as_a_view_elsewhere(made, monkeypatch, capsys):
    root, ds = made
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)  # papermill, nbclient: no Jupyter server session
    assert type(F.explore(root / "generated", ds)).__name__ == "HTML"
    monkeypatch.setenv("JPY_SESSION_NAME", "/lab/00_method.ipynb")  # a kernel JupyterLab started
    box = F.explore(root / "generated", ds, class_name="a")
    (cls, src), kind = box.children[0].children, box.children[1]
    assert (cls.value, src.value, kind.value) == (0, "train/a/2.png", "all")  # the most attempts first
    kind.value = "kept at once"
    assert [v for _, v in src.options] == ["train/a/0.png"] and src.value == "train/a/0.png"
    cls.value = 1
    assert [v for _, v in src.options] == ["train/b/3.png", "train/b/4.png"]
    kind.value = "never kept"
    assert src.options == () and src.value is None
    shown = capsys.readouterr().out  # outside a kernel the Output widget prints what it would show
    assert shown.count("<IPython.core.display.HTML object>") == 3  # one view per change, not one per option set
    assert shown.rstrip().endswith("no source of this class has this outcome</em>')")


def test_bad_input_fails_in_one_line(made, tmp_path):
    root, ds = made
    with pytest.raises(FileNotFoundError, match="no generated set here; run `diffcore generate`"):
        F.explore(tmp_path, ds)
    with pytest.raises(ValueError, match=r"class 'zebra' is not in .*; it has \['a', 'b'\]"):
        F.explore(root / "generated", ds, class_name="zebra")
    with pytest.raises(ValueError, match="outcome 'lost': expected one of"):
        F.explore(root / "generated", ds, outcome="lost")
    with pytest.raises(ValueError, match="no source of class 'b' has the outcome 'never kept'"):
        F.explore(root / "generated", ds, class_name="b", outcome="never kept", interactive=False)
    with pytest.raises(ValueError, match="no attempt for source 'nope'"):
        F.explore(root / "generated", ds, source="nope", interactive=False)
