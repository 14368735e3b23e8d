"""A look at a generated set without a notebook: per class, real source | kept counterpart | a rejected attempt,
each titled with its CLIP similarity S and the class threshold tau (the paper's Fig. 3, from the manifest)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from .counterparts import read_manifest
from .data import ImageSet
from .engine.safety import atomic_open, inside


def preview_rows(ds: ImageSet, out_dir: str | Path, per_class: int = 3, max_classes: int = 10) -> list[list[dict]]:
    """Per shown class, up to `per_class` sources that have a kept counterpart, preferring ones with a rejected
    attempt too: [{source_id, label, kept: row, rejected: row | None}]. Classes in label order."""
    rows = read_manifest(Path(out_dir) / "manifest.csv")
    by_source: dict[str, dict] = defaultdict(lambda: {"kept": None, "rejected": None})
    for r in rows:
        slot = "kept" if r["status"] == "kept" else "rejected"
        if r["status"].startswith("invalid"):  # a failed decode (black / NaN), not a filter decision
            continue
        if by_source[r["source_id"]][slot] is None and r["file"]:
            by_source[r["source_id"]][slot] = r
    per_label: dict[int, list[dict]] = defaultdict(list)
    for sid, s in by_source.items():
        if s["kept"] is not None:
            per_label[int(s["kept"]["label"])].append({"source_id": sid, **s})
    shown = []
    for label in sorted(per_label)[:max_classes]:
        items = sorted(per_label[label], key=lambda s: (s["rejected"] is None, s["source_id"]))
        shown.append(items[:per_class])
    return shown


def save_preview(
    ds: ImageSet, out_dir: str | Path, per_class: int = 3, max_classes: int = 10, path: str | Path | None = None
) -> Path:
    """Write the grid to `path` (default <out_dir>/preview.png) and return it. Titled with the dataset's name, never
    the folder's: a set generated into two folders holds the same files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    out_dir = Path(out_dir)
    grid = preview_rows(ds, out_dir, per_class, max_classes)
    if not grid:
        raise ValueError(f"{out_dir}: no kept counterpart to preview")
    index = {sid: i for i, sid in enumerate(ds.ids)}
    n_rows, n_cols = len(grid), 3 * per_class
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.3 * n_cols, 1.45 * n_rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for r, items in enumerate(grid):
        for j, item in enumerate(items):
            src = np.asarray(ds.load(index[item["source_id"]])) if item["source_id"] in index else None
            cells = [(src, f"{ds.classes[int(item['kept']['label'])][:14]}\nreal")]
            for key, mark in (("kept", ">"), ("rejected", "<=")):
                row = item[key]
                img = None if row is None else np.asarray(Image.open(inside(out_dir, row["file"])).convert("RGB"))
                title = "" if row is None else f"{key}\nS={float(row['similarity']):.2f}{mark}τ={float(row['tau']):.2f}"
                cells.append((img, title))
            for k, (img, title) in enumerate(cells):
                ax = axes[r, 3 * j + k]
                if img is not None:
                    ax.imshow(img)
                ax.set_title(title, fontsize=6, color="firebrick" if title.startswith("rejected") else "black")
    fig.suptitle(
        f"{ds.name}: real source | kept counterpart | a rejected attempt (cosine S in CLIP space, class threshold τ)",
        fontsize=7,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))  # room for the suptitle
    path = Path(path) if path is not None else out_dir / "preview.png"
    with atomic_open(path, "wb") as f:  # a kill mid-write never leaves a half PNG
        fig.savefig(f, dpi=120, format="png")
    plt.close(fig)
    return path
