"""The paper's numbers (`assets/paper_tables.csv`, transcribed from its tables and text) and how each of its row
labels maps onto a method diffcore can train."""

from __future__ import annotations

import pandas as pd

from ..methods import REGISTRY
from ..profiles import ASSETS

PAPER_TABLES = ASSETS / "paper_tables.csv"
NOT_YET_RUN = "not yet run"
CONTROL = "Vanilla (equal steps)"  # our row the paper lacks: vanilla for as many steps as DiffCoRe-Mix-100
METRIC_NAMES = {"top1": "top-1", "top5": "top-5", "valid_top1": "valid top-1", "test_top1": "test top-1"}

# paper row label -> (names the method may be registered under, fraction of images with counterparts,
# hyperparameters). Names are compared lower-case without '-', '_' or spaces, so "co_mixup" matches "comixup".
ALIASES: dict[str, tuple[tuple[str, ...], float | None, dict]] = {
    "Vanilla": (("vanilla",), None, {}),
    CONTROL: (("vanilla",), None, {}),  # trained for DiffCoRe-Mix-100's number of steps (plan.jobs.control_epochs)
    "ResNet-50": (("vanilla",), None, {}),  # Tables 5 and 7: the network without mixing
    "Mixup": (("mixup",), None, {}),
    "AugMix": (("augmix",), None, {}),
    "Manifold Mixup": (("manifoldmixup", "manifold"), None, {}),
    "CutMix": (("cutmix",), None, {}),
    "PixMix": (("pixmix",), None, {}),
    "SaliencyMix": (("saliencymix",), None, {}),
    "SnapMix": (("snapmix",), None, {}),
    "ResizeMix": (("resizemix",), None, {}),
    "PuzzleMix": (("puzzlemix",), None, {}),
    "Co-Mixup": (("comixup",), None, {}),
    "GuidedMixup": (("guidedmixup", "guidedap"), None, {}),
    "Guided-AP": (("guidedap", "guidedmixup"), None, {}),
    "Guided-AP (Greedy)": (("guidedap", "guidedmixup"), None, {}),
    "Guided-AP (Random)": (("guidedaprandom", "guidedmixuprandom"), None, {}),
    "DiffuseMix": (("diffusemix",), None, {}),
    "DiffCoRe-Mix": (("diffcore",), 1.0, {}),
    "DiffCoRe-Mix-50": (("diffcore",), 0.5, {}),
    "DiffCoRe-Mix-100": (("diffcore",), 1.0, {}),
    # Table 7, as diffcore reads each row (the paper does not define them; see TABLE7_READING)
    "R50 + GenAug": (("genaug",), 1.0, {}),
    "R50 + Pixel-wise": (("mixup",), None, {}),
    "R50 + Patch-wise": (("cutmix",), None, {}),
    "R50 + GenAug + Pixel-wise": (("pixel",), 1.0, {}),
    "R50 + GenAug + Patch-wise": (("patch",), 1.0, {}),
}

TABLE7_READING = {
    "ResNet-50": "the classifier with traditional augmentation only (`vanilla`)",
    "R50 + GenAug": "every real image plus its filtered counterpart as an extra, unmixed sample (`genaug`)",
    "R50 + Pixel-wise": "pixel-wise mixing without generated images: two real images blended, labels mixed, "
    "i.e. Mixup (`mixup`); our reading, the paper gives no definition",
    "R50 + Patch-wise": "patch-wise mixing without generated images: a box of one real image pasted on another, "
    "i.e. CutMix (`cutmix`); our reading",
    "R50 + GenAug + Pixel-wise": "each real image blended with its own counterpart, Eq. (6) only (`pixel`)",
    "R50 + GenAug + Patch-wise": "a box of each real image pasted on its own counterpart, Eq. (7) only (`patch`)",
    "DiffCoRe-Mix-50": "Eq. (8) on counterparts of 50% of the images, with all real images (`diffcore`, 0.5)",
    "DiffCoRe-Mix-100": "Eq. (8) on counterparts of 100% of the images, with all real images (`diffcore`, 1.0)",
}


def norm(name: str) -> str:
    return "".join(c for c in name.lower() if c.isalnum())


def registered() -> dict:
    """The trainable methods right now (`diffcore.methods.REGISTRY`): rows fill in as methods land."""
    return dict(REGISTRY)


def resolve(label: str) -> tuple[str | None, float | None, dict]:
    """Paper row label -> (registered method name or None, fraction, hyperparameters)."""
    names, fraction, hp = ALIASES.get(label, ((label,), None, {}))
    by_norm = {norm(k): k for k in registered()}
    for n in names:
        if norm(n) in by_norm:
            return by_norm[norm(n)], fraction, hp
    return None, fraction, hp


def uses_set(method: str) -> str | None:
    """'counterparts', 'edits' or None: the generated set a registered method trains with."""
    return registered()[method].uses


def paper_numbers(table: str) -> pd.DataFrame:
    """Rows of `assets/paper_tables.csv` for one table ("Table 3", "Fig. 6", ...), in the paper's row order."""
    df = pd.read_csv(PAPER_TABLES)
    out = df[df.table == table]
    if out.empty:
        raise ValueError(f"{table!r}: not in {PAPER_TABLES.name}; expected one of {sorted(df.table.unique())}")
    return out.reset_index(drop=True)


def paper_wide(table: str) -> pd.DataFrame:
    """One row per method, columns (dataset, metric): the table as printed in the paper."""
    df = paper_numbers(table)
    order = list(dict.fromkeys(df.method))
    wide = df.pivot_table(index="method", columns=["dataset", "metric"], values="value", sort=False, dropna=False)
    return wide.reindex(order)


def row_labels(table: str, methods="paper") -> list[str]:
    """'paper': every row of the paper's table, plus Vanilla where the paper has no un-augmented row."""
    if methods != "paper":
        return list(methods)
    labels = list(paper_wide(table).index)
    return labels + ([] if any(resolve(x)[0] == "vanilla" for x in labels) else ["Vanilla"])


def method_names(methods) -> list[str]:
    """Registered names for a list of registry names or paper row labels (unregistered ones dropped)."""
    reg = registered()
    return list(dict.fromkeys(m if m in reg else resolve(m)[0] for m in methods if m in reg or resolve(m)[0]))


def label_of(method: str, table: str = "Table 6") -> str:
    """Registered method name -> the paper's row label for it, preferring the rows of `table`."""
    rows = list(dict.fromkeys(paper_numbers(table).method)) if table else []
    for label in rows + list(ALIASES):
        if not label.startswith("R50") and resolve(label)[0] == method:
            return label
    return method


def row_label(row: dict) -> str:
    """A bench.time_training row's label: the paper's row label, plus the opt-in settings it ran with, if any."""
    variant = row.get("variant") or ""
    return label_of(row["method"]) + (f" [opt-in {variant}]" if variant else "")


def method_cell(label: str) -> str:
    """What diffcore trains for a paper row: 'mixup', 'diffcore (0.5)', or 'not yet run'."""
    method, fraction, _ = resolve(label)
    if method is None:
        return NOT_YET_RUN
    if label == CONTROL:
        return "vanilla, for DiffCoRe-Mix-100's steps"
    return method if fraction is None or not uses_set(method) else f"{method} ({fraction:g})"
