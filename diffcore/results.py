"""Result files -> tables: mean ± std over seeds, with what produced them."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

METHOD_LABELS = {
    "vanilla": "Vanilla",
    "genaug": "GenAug",
    "pixel": "Pixel-wise",
    "patch": "Patch-wise",
    "diffcore": "DiffCoRe-Mix",
}


def method_label(result: dict) -> str:
    """'DiffCoRe-Mix-50' for the diffcore method at fraction 0.5, and so on."""
    label = METHOD_LABELS.get(result["method"], result["method"])
    if result["method"] != "vanilla":
        label += f"-{round(100 * result['config'].get('fraction', 1.0))}"
    return label


def load_results(folder: str | Path) -> list[dict]:
    files = sorted(Path(folder).rglob("*.json"))
    out = [json.loads(f.read_text()) for f in files]
    return [r for r in out if r.get("kind") == "diffcore-train-result"]


def results_table(results: list[dict]) -> pd.DataFrame:
    """One row per method label (vanilla first): top-1/top-5 mean and population std over seeds, seeds, pairs."""
    if not results:
        raise ValueError("no diffcore result files found")
    order = list(METHOD_LABELS)  # vanilla first, DiffCoRe-Mix last; within a method by fraction
    results = sorted(
        results,
        key=lambda r: (
            order.index(r["method"]) if r["method"] in order else len(order),
            r["method"],
            r["config"].get("fraction", 1.0),
            r["config"]["seed"],
        ),
    )
    rows = [
        {
            "method": method_label(r),
            "seed": r["config"]["seed"],
            "top1": r["metrics"]["top1"],
            "top5": r["metrics"]["top5"],
            "pairs": r["counts"]["pairs"],
            "wall_s": r["wall_time_s"],
        }
        for r in results
    ]
    df = pd.DataFrame(rows)
    g = df.groupby("method", sort=False)
    table = pd.DataFrame(
        {
            "top1_mean": g.top1.mean(),
            "top1_std": g.top1.std(ddof=0),
            "top5_mean": g.top5.mean(),
            "top5_std": g.top5.std(ddof=0),
            "seeds": g.seed.count(),
            "pairs": g.pairs.first(),
            "train_s_mean": g.wall_s.mean(),
        }
    )
    return table.reset_index()


def markdown(table: pd.DataFrame) -> str:
    lines = ["| method | top-1 (%) | top-5 (%) | seeds | pairs | train time (s) |", "|---|---|---|---|---|---|"]
    for r in table.itertuples():
        lines.append(
            f"| {r.method} | {r.top1_mean:.2f} ± {r.top1_std:.2f} | {r.top5_mean:.2f} ± {r.top5_std:.2f} "
            f"| {r.seeds} | {r.pairs} | {r.train_s_mean:.1f} |"
        )
    return "\n".join(lines)
