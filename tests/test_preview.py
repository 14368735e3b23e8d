"""The preview grid reads the manifest: per class, sources with a kept counterpart, those with a rejected attempt
first; classes in label order; a set with nothing kept is an error."""

import numpy as np
import pytest

from diffcore.data import digits
from diffcore.engine.genset import MANIFEST_FIELDS, append_rows, save_png
from diffcore.preview import preview_rows, save_preview


def _row(ds, i, status, attempt, out):
    label = ds.labels[i]
    file = f"{'images' if status == 'kept' else 'rejected'}/{label}/{i}_a{attempt}.png"
    save_png(np.full((8, 8, 3), 40 * attempt, np.uint8), out / file)
    return {
        **dict.fromkeys(MANIFEST_FIELDS, ""),
        "source_id": ds.ids[i],
        "label": label,
        "class_name": ds.classes[label],
        "attempt": attempt,
        "similarity": 0.5 + 0.1 * (status == "kept"),
        "tau": 0.55,
        "status": status,
        "file": file,
    }


def test_preview_prefers_sources_with_a_rejected_attempt(tmp_path):
    ds = digits("train")
    labels = np.asarray(ds.labels)
    a, b, c = np.flatnonzero(labels == 1)[:3]
    z = np.flatnonzero(labels == 0)[0]
    append_rows(
        tmp_path / "manifest.csv",
        [
            _row(ds, a, "kept", 0, tmp_path),  # kept at once
            _row(ds, b, "rejected", 0, tmp_path),
            _row(ds, b, "kept", 1, tmp_path),  # kept after one rejection
            _row(ds, c, "rejected-final", 0, tmp_path),  # never kept: not shown
            _row(ds, z, "kept", 0, tmp_path),
        ],
    )
    grid = preview_rows(ds, tmp_path, per_class=2)
    assert [[it["source_id"] for it in row] for row in grid] == [[ds.ids[z]], [ds.ids[b], ds.ids[a]]]
    assert grid[1][0]["rejected"]["attempt"] == "0" and grid[1][0]["kept"]["attempt"] == "1"
    assert grid[1][1]["rejected"] is None
    assert preview_rows(ds, tmp_path, per_class=1, max_classes=1) == [grid[0][:1]]
    assert save_preview(ds, tmp_path, per_class=2).is_file()


def test_preview_of_a_set_with_nothing_kept_is_an_error(tmp_path):
    ds = digits("train")
    append_rows(tmp_path / "manifest.csv", [_row(ds, 0, "rejected-final", 0, tmp_path)])
    with pytest.raises(ValueError, match="no kept counterpart to preview"):
        save_preview(ds, tmp_path)
