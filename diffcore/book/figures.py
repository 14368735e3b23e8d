"""The book's figures: the paper's figures made from our runs (Fig. 4-7), the method page's pictures, and the
HTML tables a page shows. Every function returns something a notebook cell displays."""

from __future__ import annotations

import io
from html import escape
from pathlib import Path
from textwrap import fill

import numpy as np
import pandas as pd

from .. import experiment as X
from ..engine.genset import source_of
from ..engine.images import load_rgb
from ..engine.safety import inside
from ..plan.jobs import Column
from ..plan.paper import METRIC_NAMES, label_of, paper_numbers, row_label
from .tables import manifest_frame


def show(df: pd.DataFrame, caption: str | None = None, links: bool = False):
    """A table for the book page: plain HTML, no index; links=True keeps the cells' <a> links (our own cells)."""
    from IPython.display import HTML

    html = df.to_html(index=False, na_rep="—", escape=not links, float_format=lambda v: f"{v:.2f}")
    # long unbroken cells (the paper profile's commands carry every weights path) wrap instead of being cut off at
    # the page's edge; a table still too wide scrolls sideways
    html = f'<div style="overflow-x: auto; overflow-wrap: anywhere">{html}</div>'
    return HTML((f"<p><em>{caption}</em></p>" if caption else "") + html)


def png(fig, dpi: int = 110):
    """The figure as a PNG for the page, whatever matplotlib backend is active (generation switches to Agg)."""
    import matplotlib.pyplot as plt
    from IPython.display import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return Image(data=buf.getvalue(), format="png")


def kept_grid(generated: str | Path, ds, per_class: int = 6):
    """Fig.: per class (rows), the first `per_class` kept counterparts."""
    import matplotlib.pyplot as plt
    from PIL import Image

    df = manifest_frame(generated)
    kept = df[df.kept].sort_values(["label", "source_id"])
    labels = sorted(kept.label.unique())
    fig, axes = plt.subplots(len(labels), per_class, figsize=(1.1 * per_class, 1.1 * len(labels)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for r, k in enumerate(labels):
        for j, row in enumerate(kept[kept.label == k].head(per_class).itertuples()):
            axes[r, j].imshow(Image.open(Path(generated) / row.file).convert("RGB"))
        axes[r, 0].set_title(ds.classes[k], fontsize=7, loc="left")
    fig.tight_layout()
    return png(fig)


def similarity_histograms(generated: str | Path, col_wrap: int = 5):
    """Fig.: per class, the CLIP similarity S of every attempt, kept vs rejected, with the class's tau."""
    import seaborn as sns

    df = manifest_frame(generated)
    df["outcome"] = np.where(df.kept, "kept", "rejected")
    g = sns.displot(
        df,
        x="similarity",
        hue="outcome",
        col="class_name",
        col_wrap=col_wrap,
        bins=20,
        height=1.8,
        hue_order=["kept", "rejected"],
        facet_kws={"sharey": False},
    )
    for name, ax in g.axes_dict.items():
        ax.axvline(df[df.class_name == name].tau.iloc[0], color="k", ls="--", lw=1)
    g.set_titles("{col_name}")
    return png(g.figure)


def mixed_examples(generated: str | Path, ds, n: int = 6, seed: int = 0):
    """Fig.: real I, counterpart G, pixel mix (Eq. 6) and patch mix (Eq. 7) for `n` pairs."""
    import matplotlib.pyplot as plt
    import torch

    from ..counterparts import kept_counterparts
    from ..data import load_rgb
    from ..mix import MixConfig, diffcore_mix

    pairs = sorted(kept_counterparts(generated).items())[:n]
    index = {sid: i for i, sid in enumerate(ds.ids)}
    to_t = lambda im: torch.from_numpy(np.asarray(im.resize((32, 32)), dtype=np.float32) / 255).permute(2, 0, 1)
    real = torch.stack([to_t(ds.load(index[s])) for s, _ in pairs])  # (n, 3, 32, 32)
    gen = torch.stack([to_t(load_rgb(p)) for _, p in pairs])  # (n, 3, 32, 32)
    g = lambda: torch.Generator().manual_seed(seed)
    pixel = diffcore_mix(real, gen, MixConfig(mode="pixel"), g())
    patch = diffcore_mix(real, gen, MixConfig(mode="patch"), g())
    cols = [
        ("real I", real, None),
        ("counterpart G", gen, None),
        ("pixel (Eq. 6)", pixel.images, pixel.lam),
        ("patch (Eq. 7)", patch.images, None),
    ]
    fig, axes = plt.subplots(len(pairs), 4, figsize=(5.2, 1.3 * len(pairs)), squeeze=False)
    for j, (title, x, lam) in enumerate(cols):
        for i in range(len(pairs)):
            axes[i, j].imshow(x[i].permute(1, 2, 0).clamp(0, 1).numpy())
            axes[i, j].axis("off")
            axes[i, j].set_title(title + ("" if lam is None else f" λ={float(lam[i]):.2f}"), fontsize=6)
    fig.tight_layout()
    return png(fig)


def paper_vs_ours_plot(
    table: pd.DataFrame, paper_dataset: str, metric: str = "top1", title: str = "", paper_metric: str | None = None
):
    """Fig.: the paper's number and ours (the first of our columns) per method, side by side; ours on their own
    axis, since they come from other data and networks."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    m, pm = METRIC_NAMES.get(metric, metric), METRIC_NAMES.get(paper_metric or metric, paper_metric or metric)
    ours_group = next(c[0] for c in table.columns if c[0].startswith("ours: "))
    num = lambda s: pd.to_numeric(s.astype(str).str.extract(r"^(-?\d+(?:\.\d+)?)")[0], errors="coerce")
    df = pd.DataFrame(
        {
            "method": table[("", "method (paper row)")],
            "paper": num(table[(f"paper: {paper_dataset}", pm)]),
            "ours": num(table[(ours_group, m)]),
        }
    )
    fig, axes = plt.subplots(1, 2, figsize=(9, 0.35 * len(df) + 1.2), sharey=True)
    for ax, col, color, what in (
        (axes[0], "paper", "tab:gray", f"paper: {paper_dataset}, {pm}"),
        (axes[1], "ours", "tab:blue", f"{ours_group}, {m}"),
    ):
        sns.barplot(df, y="method", x=col, ax=ax, color=color, orient="h")
        shown = df[col].dropna()
        if len(shown):
            ax.set_xlim(max(0, shown.min() - 5), min(100, shown.max() + 2))
        ax.set_xlabel(f"{what} (%)", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return png(fig)


# ---------------------------------------------------------------- Fig. 5: Grad-CAM


def saliency_figure(models: dict, col: Column, n_images: int = 8, seed: int = 0):
    """Fig. 5: the same test images, Grad-CAM of each model over them (target: the true class)."""
    import matplotlib.pyplot as plt
    import torch

    from ..models import saliency_layer
    from ..saliency import gradcam
    from ..train import EvalSet, transforms_for

    _, test_ds = X.datasets(col.exp)
    cfg = col.exp.train
    rng = np.random.default_rng(seed)
    idx = sorted(rng.choice(len(test_ds), size=min(n_images, len(test_ds)), replace=False))
    ev = EvalSet(test_ds, transforms_for(cfg, False))
    x = torch.stack([ev[i][0] for i in idx])  # (n, 3, H, W) normalised
    y = torch.tensor([test_ds.labels[i] for i in idx])  # (n,)
    shown = [np.asarray(test_ds.load(i).resize(tuple(x.shape[-2:][::-1]))) for i in idx]
    fig, axes = plt.subplots(
        len(models) + 1, len(idx), figsize=(1.2 * len(idx), 1.25 * (len(models) + 1)), squeeze=False
    )
    for j, im in enumerate(shown):
        axes[0, j].imshow(im)
        axes[0, j].set_title(test_ds.classes[int(y[j])], fontsize=6)
    for r, (label, net) in enumerate(models.items(), start=1):
        cam = gradcam(net, saliency_layer(cfg.model, net), x, y)  # (n, H, W)
        pred = net(x).argmax(1)
        for j in range(len(idx)):
            axes[r, j].imshow(shown[j])
            axes[r, j].imshow(cam[j].numpy(), cmap="jet", alpha=0.5)
            axes[r, j].set_title(f"{'✓' if pred[j] == y[j] else '✗'}", fontsize=6)
        axes[r, 0].set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
    for ax in axes.flat:
        ax.set_xticks([]), ax.set_yticks([])
    axes[0, 0].set_ylabel("image", fontsize=7, rotation=0, ha="right", va="center")
    fig.tight_layout()
    return png(fig)


def cam_concentration(models: dict, col: Column, n_images: int = 64, seed: int = 0) -> pd.DataFrame:
    """A number per model for Fig. 5: the share of Grad-CAM mass on the digit's own pixels (ink > 0.25)."""
    import torch

    from ..models import saliency_layer
    from ..saliency import gradcam
    from ..train import EvalSet, transforms_for

    _, test_ds = X.datasets(col.exp)
    cfg = col.exp.train
    idx = sorted(np.random.default_rng(seed).choice(len(test_ds), size=min(n_images, len(test_ds)), replace=False))
    ev = EvalSet(test_ds, transforms_for(cfg, False))
    x = torch.stack([ev[i][0] for i in idx])  # (n, 3, H, W)
    y = torch.tensor([test_ds.labels[i] for i in idx])
    ink = (
        torch.stack(
            [
                torch.from_numpy(
                    np.asarray(test_ds.load(i).convert("L").resize(tuple(x.shape[-2:][::-1])), dtype=np.float32) / 255
                )
                for i in idx
            ]
        )
        > 0.25
    )  # (n, H, W)
    rows = []
    for label, net in models.items():
        cam = gradcam(net, saliency_layer(cfg.model, net), x, y)  # (n, H, W)
        share = (cam * ink).flatten(1).sum(1) / cam.flatten(1).sum(1).clamp_min(1e-12)
        rows.append(
            {
                "model": label,
                "Grad-CAM mass on ink (%)": float(100 * share.mean()),
                "top-1 on these images (%)": float(100 * (net(x).argmax(1) == y).float().mean()),
            }
        )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- Table 6, Fig. 4, Fig. 6, Fig. 7


def fig4_overhead_vs_accuracy(rows: list[dict], ours: pd.DataFrame, batch_size: int = 16):
    """Fig. 4: Eq. (9) overhead at `batch_size` against top-1 — the paper's (Table 6 b16 vs Table 4 CUB) and ours."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    p6, p4 = paper_numbers("Table 6"), paper_numbers("Table 4")
    p6 = p6[p6.metric == f"overhead_pct_b{batch_size}"].assign(method=lambda d: d.method.str.replace(" (Greedy)", ""))
    p4 = p4[p4.dataset == "CUB"].assign(method=lambda d: d.method.replace({"DiffCoRe-Mix-100": "DiffCoRe-Mix"}))
    paper = p6.merge(p4, on="method", suffixes=("_o", "_a"))[["method", "value_o", "value_a"]]
    b = pd.DataFrame([r for r in rows if r["batch_size"] == batch_size and not r.get("variant")])  # defaults only
    acc = (
        pd.Series(dtype=float)
        if ours.empty
        else ours[ours.fraction.isna() | (ours.fraction == 1.0)].groupby("method").top1.mean()
    )  # DiffCoRe-Mix: the -100 runs, as in the paper's figure
    b = b.assign(top1=b.method.map(acc)).dropna(subset=["top1"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, df, x, y, title in (
        (axes[0], paper, "value_o", "value_a", "paper: Table 6 (b16) vs Table 4 (CUB, DenseNet-121)"),
        (axes[1], b, "overhead_pct", "top1", f"ours: bench b{batch_size} vs top-1 (digits, tiny CNN)"),
    ):
        if df.empty:
            ax.text(
                0.5,
                0.5,
                "no accuracy of ours yet:\nrun the Table 4 notebook first",
                ha="center",
                transform=ax.transAxes,
            )
            continue
        sns.scatterplot(df, x=x, y=y, hue="method", ax=ax, s=60, legend=False)
        for r in df.itertuples():
            ax.annotate(
                label_of(r.method) if "value_o" not in df else r.method,
                (getattr(r, x), getattr(r, y)),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
        ax.set_xlabel("augmentation overhead A_O (%) — Eq. (9)")
        ax.set_ylabel("top-1 (%)")
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return png(fig)


def fig6_batch_time(rows: list[dict]):
    """Fig. 6: time per training batch against batch size, ours per method; the paper's two quoted curves."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    df = pd.DataFrame(rows).assign(method=[row_label(r) for r in rows])
    p = paper_numbers("Fig. 6").assign(batch_size=lambda d: d.metric.str.extract(r"b(\d+)$")[0].astype(int))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    sns.lineplot(p, x="batch_size", y="value", hue="method", marker="o", ax=axes[0])
    axes[0].set(title="paper (the values quoted in Sec. 5's text)", ylabel="s per batch", xticks=[16, 32, 64])
    sns.lineplot(df, x="batch_size", y="ms_per_batch", hue="method", marker="o", ax=axes[1])
    axes[1].set(
        title=f"ours: {df.model.iloc[0]}, {df.image_size.iloc[0]} px, {df.device.iloc[0]}",
        ylabel="ms per batch",
        xticks=sorted(df.batch_size.unique()),
    )
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    return png(fig)


def fig7_plot(cost: pd.DataFrame):
    """Fig. 7: generation time and discarded share against the augmentation fraction, the paper's band shaded."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    band = paper_numbers("Fig. 7").set_index("metric").value
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    sns.lineplot(cost, x="fraction %", y="seconds", marker="o", ax=axes[0])
    axes[0].set(title=f"ours: generation + filtering wall time ({cost.device.iloc[0]})", ylabel="seconds")
    sns.lineplot(cost, x="fraction %", y="discarded %", marker="o", ax=axes[1], label="ours")
    axes[1].axhspan(
        band["discard_pct_min"],
        band["discard_pct_max"],
        color="tab:gray",
        alpha=0.3,
        label="paper: 10.1–11.1% (CosXL, CUB)",
    )
    axes[1].set(title="discarded by the τ_k filter", ylabel="% of attempts", ylim=(0, 100))
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    return png(fig)


# ---------------------------------------------------------------- the filter, attempt by attempt: an explorer
EXPLORE_OUTCOMES = ("all", "kept at once", "rejected, then kept", "never kept")
NOT_STORED = "not stored (save_rejected off)"


def live_frontend() -> bool:
    """Whether a frontend that renders and answers ipywidgets drives this kernel. A kernel started by a Jupyter
    server (JupyterLab, Notebook 7, Binder) gets the session's name in JPY_SESSION_NAME; papermill and nbclient
    start theirs without it, so the book gets a figure instead of a dead control with its state embedded (a
    papermill run started from a cell inside JupyterLab inherits the variable: explore(..., interactive=False)
    there). Colab starts its kernel its own way and renders the core widgets."""
    import os
    import sys

    return bool(os.environ.get("JPY_SESSION_NAME")) or "google.colab" in sys.modules


def source_outcomes(df: pd.DataFrame) -> pd.DataFrame:
    """One row per source of a manifest (manifest_frame): class, attempts, and its outcome (EXPLORE_OUTCOMES[1:]):
    kept at its first attempt, kept after rejected or invalid attempts, or never kept (the retry cap was reached or
    its image does not decode). In manifest order."""
    g = df.groupby("source_id", sort=False)
    out = pd.DataFrame(
        {"label": g.label.first(), "class_name": g.class_name.first(), "attempts": g.size(), "kept": g.kept.any()}
    )
    first_kept = df[df.kept].groupby("source_id").attempt.min().reindex(out.index)
    out["outcome"] = np.where(~out.kept, "never kept", np.where(first_kept == 0, "kept at once", "rejected, then kept"))
    return out.reset_index()


class Explorer:
    """A generated set seen source by source: the real image and every attempt made for it (seed, CLIP similarity
    S, the class's tau_k, kept or rejected), from its manifest (one row per attempt). `ds`: the dataset the set was
    made from (X.train_set(exp)), for the real images; without it they come from the manifest's source paths (an
    ImageFolder's files), where they exist."""

    def __init__(self, generated: str | Path, ds=None):
        self.generated = Path(generated)
        self.df = manifest_frame(self.generated) if (self.generated / "manifest.csv").is_file() else pd.DataFrame()
        if self.df.empty:
            raise FileNotFoundError(f"{self.generated}/manifest.csv: no generated set here; run `diffcore generate`")
        self.sources = source_outcomes(self.df)
        self.ds, self.index = ds, {} if ds is None else {sid: i for i, sid in enumerate(ds.ids)}

    def classes(self) -> list[tuple[str, int]]:
        """(label: name, label) of every class in the set, in label order: a dropdown's options."""
        named = self.sources.drop_duplicates("label").sort_values("label")
        return [(f"{r.label}: {r.class_name}", int(r.label)) for r in named.itertuples()]

    def pick(self, label: int | None = None, outcome: str = "all") -> pd.DataFrame:
        """The sources of class `label` (None: every class) with that outcome, those with the most attempts first."""
        if outcome not in EXPLORE_OUTCOMES:
            raise ValueError(f"outcome {outcome!r}: expected one of {EXPLORE_OUTCOMES}")
        s = self.sources
        s = s if label is None else s[s.label == label]
        s = s if outcome == "all" else s[s.outcome == outcome]
        return s.sort_values("attempts", ascending=False, kind="stable")

    def attempts(self, source: str) -> pd.DataFrame:
        rows = self.df[self.df.source_id == source].sort_values("attempt")
        if rows.empty:
            raise ValueError(f"{self.generated}: no attempt for source {source!r} in its manifest")
        return rows

    def real_image(self, source: str) -> tuple[np.ndarray | None, str]:
        """(the source image, '') or (None, why it cannot be shown)."""
        sid, path = source_of(source), self.attempts(source).source_path.iloc[0]
        try:
            if sid in self.index:
                return np.asarray(self.ds.load(self.index[sid]).convert("RGB")), ""
            if path and Path(path).is_file():
                return np.asarray(load_rgb(path)), ""
        except (OSError, ValueError):  # PIL's UnidentifiedImageError is an OSError
            return None, "does not decode"
        return None, "not in the dataset given" if self.ds is not None else "pass the dataset to see it"

    def missing(self, row) -> str:
        """Why an attempt has no picture to show ('' when it has one)."""
        if row.status == "unreadable":
            return "source unreadable: nothing generated"
        if not row.file:  # only kept images are written when the set was made with save_rejected off
            return NOT_STORED
        return "" if inside(self.generated, row.file).is_file() else "file missing"

    def picture(self, row) -> np.ndarray | None:
        """An attempt's generated image, None when missing(row) says why there is none."""
        return None if self.missing(row) else np.asarray(load_rgb(inside(self.generated, row.file)))

    def figure(self, source: str):
        """Fig.: the real image, then every attempt titled with its S against tau_k and the filter's verdict."""
        import matplotlib.pyplot as plt

        rows = self.attempts(source)
        fig, axes = plt.subplots(1, len(rows) + 1, figsize=(1.7 * (len(rows) + 1), 2.1), squeeze=False)
        real, why = self.real_image(source)
        cells = [(real, why, f"real\n{rows.class_name.iloc[0][:18]}", "black")]
        for r in rows.itertuples():
            img, why = self.picture(r), self.missing(r)
            verdict = "kept" if r.kept else r.status
            mark = ">" if r.kept else "≤"
            s = "S n/a" if np.isnan(r.similarity) else f"S={r.similarity:.3f} {mark} τ={r.tau:.3f}"
            cells.append((img, why, f"attempt {r.attempt}: {verdict}\n{s}", "black" if r.kept else "firebrick"))
        for ax, (img, why, title, color) in zip(axes[0], cells):
            ax.set_xticks([]), ax.set_yticks([])
            if img is not None:
                ax.imshow(img)
            else:
                ax.text(
                    0.5,
                    0.5,
                    fill(why, 16),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="dimgray",
                    transform=ax.transAxes,
                )
            ax.set_title(title, fontsize=7, color=color)
        fig.tight_layout()
        return fig

    def view(self, source: str):
        """HTML for one source: a line on what is shown, its attempts as a table (seed, S, tau_k, S - tau_k,
        status, file) and the figure; the same in JupyterLab's explorer and in the book."""
        import base64

        from IPython.display import HTML

        rows = self.attempts(source)
        table = pd.DataFrame(
            {
                "attempt": rows.attempt,
                "seed": rows.seed.astype(str),  # 64-bit: as text, never rounded through a float
                "S (cosine)": rows.similarity,
                "τ_k": rows.tau,
                "S − τ_k": rows.similarity - rows.tau,
                "outcome": rows.status,
                "image": [self.missing(r) or r.file for r in rows.itertuples()],
            }
        )
        html = table.to_html(index=False, na_rep="—", float_format=lambda v: f"{v:.4f}")
        img = base64.b64encode(png(self.figure(source)).data).decode("ascii")  # inline: one output, one cell
        not_stored = (table.image == NOT_STORED).any()
        note = (
            " This set was made with <code>save_rejected</code> off (the paper profile's setting: only kept images "
            "are written, to save disk), so a rejected attempt is listed without its picture."
            if not_stored
            else ""
        )
        head = (
            f"<p><em>{escape(rows.class_name.iloc[0])}, source <code>{escape(source)}</code>: the real image and its "
            f"{len(rows)} attempt(s); an attempt is kept when S &gt; τ_k (Eq. 5), else generated again with the "
            f"next seed.{note}</em></p>"
        )
        return HTML(f'{head}<div style="overflow-x: auto">{html}</div><img src="data:image/png;base64,{img}"/>')

    def label_of(self, class_name: str | None) -> int | None:
        """The label of a class of the set by its name (None stays None: every class)."""
        if class_name is None:
            return None
        named = dict(zip(self.sources.class_name, self.sources.label))
        if class_name not in named:
            raise ValueError(f"class {class_name!r} is not in {self.generated}; it has {sorted(named)[:10]}...")
        return int(named[class_name])

    def widget(self, source: str, outcome: str = "all"):
        """Dropdowns for the class and the source, toggle buttons for the outcome, the view of the chosen source
        (ipywidgets: interactive only where a kernel answers them, e.g. JupyterLab)."""
        import ipywidgets as W
        from IPython.display import display

        label = int(self.attempts(source).label.iloc[0])
        cls = W.Dropdown(options=self.classes(), value=label, description="class")
        kind = W.ToggleButtons(options=EXPLORE_OUTCOMES, value=outcome, description="outcome")
        src = W.Dropdown(description="source", layout=W.Layout(width="34em"))
        out = W.Output()

        busy = False  # set while the source list is refilled: one redraw per change, not one per option set

        def show(change=None):
            if busy:
                return
            out.clear_output(wait=True)
            with out:
                display(
                    self.view(src.value) if src.value else W.HTML("<em>no source of this class has this outcome</em>")
                )

        def choices(change=None, keep=None):
            nonlocal busy
            picked, busy = self.pick(cls.value, kind.value), True
            src.options = [
                (f"{r.source_id}: {r.attempts} attempt(s), {r.outcome}", r.source_id) for r in picked.itertuples()
            ]
            src.value = keep if keep in set(picked.source_id) else (src.options[0][1] if src.options else None)
            busy = False
            show()

        src.observe(show, "value")
        cls.observe(choices, "value")
        kind.observe(choices, "value")
        choices(keep=source)
        return W.VBox([W.HBox([cls, src]), kind, out])


def explore(
    generated: str | Path,
    ds=None,
    class_name: str | None = None,
    outcome: str = "all",
    source: str | None = None,
    interactive: bool | None = None,
):
    """Every attempt of a generated set's sources: the real image, each attempt's seed, S and tau_k, kept or
    rejected. It opens on `source`, else on the source with the most attempts among those of `class_name` (None:
    every class) with that `outcome` (EXPLORE_OUTCOMES). Where a live frontend runs (`interactive` None:
    live_frontend()) dropdowns then choose the class and the source, and toggle buttons the outcome; elsewhere
    (papermill, the book) it is the view of that one source. Works on any folder `diffcore generate` wrote; `ds`,
    the dataset it was made from, shows the real images."""
    ex = Explorer(generated, ds)
    if source is None:
        picked = ex.pick(ex.label_of(class_name), outcome)
        if picked.empty:
            where = "" if class_name is None else f" of class {class_name!r}"
            raise ValueError(f"{generated}: no source{where} has the outcome {outcome!r}; try outcome='all'")
        source = picked.source_id.iloc[0]
    live = live_frontend() if interactive is None else interactive
    return ex.widget(source, outcome) if live else ex.view(source)
