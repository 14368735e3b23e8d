"""The book's helpers: runs made once and reused, the paper's numbers beside ours, and the figures.

Notebooks in `notebooks/` are thin drivers over these functions and the package. Every run goes through the
same code as the command line (`diffcore generate` / `diffcore train`), and each table says which command made
each of our numbers. Paper numbers come from `assets/paper_tables.csv`, transcribed from the paper's tables.
"""
from __future__ import annotations

import contextlib
import io
import json
import shlex
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

with warnings.catch_warnings():  # the kernel has no ipywidgets; tqdm.auto's warning about it says nothing to a reader
    warnings.simplefilter("ignore")
    import tqdm.auto  # noqa: F401

from . import cli  # noqa: E402  (after tqdm.auto: cli imports train, which imports tqdm.auto)
from .profiles import ASSETS

PAPER_TABLES = ASSETS / "paper_tables.csv"
NOT_YET_RUN = "not yet run"

# paper row label -> (names the method may be registered under, fraction of images with counterparts,
# hyperparameters). Names are compared lower-case without '-', '_' or spaces, so "co_mixup" matches "comixup".
ALIASES: dict[str, tuple[tuple[str, ...], float | None, dict]] = {
    "Vanilla": (("vanilla",), None, {}),
    "ResNet-50": (("vanilla",), None, {}),            # Tables 5 and 7: the network without mixing
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


def _norm(name: str) -> str:
    return "".join(c for c in name.lower() if c.isalnum())


def registered() -> dict:
    """The trainable methods right now (`diffcore.methods.REGISTRY`): rows fill in as methods land."""
    from .train import METHODS

    return dict(METHODS)


def resolve(label: str) -> tuple[str | None, float | None, dict]:
    """Paper row label -> (registered method name or None, fraction, hyperparameters)."""
    names, fraction, hp = ALIASES.get(label, ((label,), None, {}))
    by_norm = {_norm(k): k for k in registered()}
    for n in names:
        if _norm(n) in by_norm:
            return by_norm[_norm(n)], fraction, hp
    return None, fraction, hp


# ---------------------------------------------------------------- the paper's numbers
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


METRIC_NAMES = {"top1": "top-1", "top5": "top-5", "valid_top1": "valid top-1", "test_top1": "test top-1"}


# ---------------------------------------------------------------- experiments: our side of a table
@dataclass
class Experiment:
    """One of our columns: `diffcore train` flags shared by every run of a table, and where results go.

    flags: e.g. ["--profile", "embedded", "--dataset", "digits", "--epochs", "15"].
    generated: the counterparts folder (`diffcore generate`), for methods that use counterparts.
    edits: a DiffuseMix-style edited set, for methods whose `uses == "edits"`; None: those are not run.
    """
    label: str
    flags: list[str]
    results: str
    generated: str | None = None
    edits: str | None = None
    seeds: list[int] = field(default_factory=lambda: [0])
    edit_flags: list[str] | None = None  # `python -m diffcore.edit` flags to make `edits`; None: never made here

    def parse(self, extra: list[str]):
        return cli.parser().parse_args(["train", *self.flags, *extra])

    def describe(self) -> str:
        return f"{self.label}: `python -m diffcore train {shlex.join(self.flags)} ...`"


def _tag(method: str, fraction: float | None) -> str:
    return method if fraction is None else f"{method}-{round(100 * fraction)}"


def _run_flags(exp: Experiment, method: str, fraction: float | None, hp: dict, seed: int, out: Path) -> list[str] | None:
    """The `diffcore train` flags of one run, or None when the method needs a set this experiment lacks."""
    uses = registered()[method].uses
    if uses == "edits" and exp.edits and exp.edit_flags is not None:
        ensure_edits(exp)
    src = {"counterparts": exp.generated, "edits": exp.edits}.get(uses) if uses else None
    src = src if src and (uses != "edits" or (Path(src) / "run.json").is_file()) else None
    if uses and src is None:
        return None
    flags = ["--method", method, "--seed", str(seed), "--out", str(out)]
    flags += ["--fraction", str(fraction)] if fraction is not None else []
    flags += ["--generated", str(src)] if src else []
    for k, v in hp.items():
        flags += ["--method-arg", f"{k}={json.dumps(v)}"]
    return flags


def run_table(exp: Experiment, labels: list[str], datasets=None, keep_models: bool = False) -> pd.DataFrame:
    """Train every registered method of `labels` for every seed of `exp` that has no result file yet.

    Returns one row per (label, seed): status 'done' / 'skipped (exists)' / 'not yet run' (not registered) /
    'needs <set>' (a generated set this experiment lacks), and the command.
    """
    rows, seen = [], set()
    for label in labels:
        method, fraction, hp = resolve(label)
        if method is None:
            rows.append({"method": label, "seed": None, "status": NOT_YET_RUN, "command": ""})
            continue
        fraction = fraction if registered()[method].uses else None
        for seed in exp.seeds:
            out = Path(exp.results) / f"{_tag(method, fraction)}-seed{seed}.json"
            flags = _run_flags(exp, method, fraction, hp, seed, out)
            cmd = "" if flags is None else "python -m diffcore train " + shlex.join([*exp.flags, *flags])
            if flags is None:
                status = f"needs a {registered()[method].uses} set"
            elif out.is_file() or (method, fraction, seed) in seen:
                _check_same_settings(out, exp)
                status = "skipped (exists)"
            else:
                datasets = datasets or open_datasets(exp)
                _train_one(exp.parse(flags), datasets, keep_models)
                status = "done"
            seen.add((method, fraction, seed))
            rows.append({"method": label, "seed": seed, "status": status, "command": cmd})
    return pd.DataFrame(rows)


def match_of(exp: Experiment) -> dict:
    """The training settings a result file must have to count for this experiment."""
    cfg = cli.build_configs(exp.parse(["--out", "unused.json"]))["train"]
    return {"model": cfg.model, "epochs": cfg.epochs, "image_size": cfg.image_size, "lr": cfg.lr,
            "batch_size": cfg.batch_size, "pretrained": cfg.pretrained}


def _check_same_settings(path: Path, exp: Experiment) -> None:
    if not path.is_file():
        return
    have = json.loads(path.read_text())["config"]
    diff = {k: (have.get(k), v) for k, v in match_of(exp).items() if have.get(k) != v}
    if diff:
        raise ValueError(f"{path} was made with other settings ({', '.join(f'{k} {a} vs {b}' for k, (a, b) in diff.items())}); "
                         f"use another out_dir or delete it")


def row_labels(table: str, methods="paper") -> list[str]:
    """'paper': every row of the paper's table, plus Vanilla where the paper has no un-augmented row."""
    if methods != "paper":
        return list(methods)
    labels = list(paper_wide(table).index)
    return labels + ([] if any(resolve(x)[0] == "vanilla" for x in labels) else ["Vanilla"])


def open_datasets(exp: Experiment):
    """(train, test) ImageSets of an experiment, opened once and handed to every run."""
    args = exp.parse(["--out", "unused.json"])
    return cli.open_train_test(args, cli.build_configs(args))


@contextlib.contextmanager
def capture_models():
    """Record every classifier `diffcore.train.train` builds, so a notebook can keep the trained network."""
    from . import models

    built, original = [], models.build_model

    def build(*args, **kwargs):
        built.append(original(*args, **kwargs))
        return built[-1]

    models.build_model = build
    try:
        yield built
    finally:
        models.build_model = original


def quiet():
    """No progress bars in the pages: train/generate draw them on stderr (tqdm), which is dropped here."""
    return contextlib.redirect_stderr(io.StringIO())


def _train_one(args, datasets, keep_model: bool) -> None:
    """`diffcore train` with these args; with keep_model the weights go beside the result (.safetensors)."""
    with capture_models() as built, quiet():
        cli.cmd_train(args, datasets)
    if keep_model:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in built[-1].state_dict().items()},
                  str(Path(args.out).with_suffix(".safetensors")))


# ---------------------------------------------------------------- our numbers
def our_results(folder: str | Path, match: dict | None = None) -> pd.DataFrame:
    """One row per result file in `folder` whose config matches `match` (e.g. {"epochs": 15})."""
    from .results import load_results

    rows = []
    for r in load_results(folder) if Path(folder).is_dir() else []:
        if any(r["config"].get(k) != v for k, v in (match or {}).items()):
            continue
        uses = r["counts"]["pairs"] > 0 or r["method"] in ("diffcore", "genaug", "pixel", "patch")
        rows.append({"method": r["method"], "fraction": r["config"].get("fraction") if uses else None,
                     "seed": r["config"]["seed"], "top1": r["metrics"]["top1"], "top5": r["metrics"]["top5"],
                     "pairs": r["counts"]["pairs"], "real": r["counts"]["real"], "dataset": r["dataset"],
                     "model": r["config"]["model"], "epochs": r["config"]["epochs"],
                     "device": r["provenance"].get("device"), "train_s": r["wall_time_s"]})
    return pd.DataFrame(rows)


def _ours_for(ours: pd.DataFrame, label: str, metric: str) -> tuple[str, int]:
    method, fraction, _ = resolve(label)
    if method is None:
        return NOT_YET_RUN, 0
    if ours.empty:
        return "not run", 0
    sel = ours[ours.method == method]
    if fraction is not None and registered()[method].uses:
        sel = sel[np.isclose(sel.fraction.astype(float), fraction)]
    if sel.empty:
        return "not run", 0
    v = sel[metric].to_numpy(float)
    return f"{v.mean():.2f} ± {v.std():.2f}", len(v)


def side_by_side(table: str, experiments: dict[str, pd.DataFrame], metrics: list[str],
                 extra_labels: tuple[str, ...] = ("Vanilla",)) -> pd.DataFrame:
    """The paper's rows and numbers, then ours (mean ± population std over seeds) per experiment and metric.

    Columns are two-level: ("paper: <dataset>", metric) and ("ours: <experiment>", metric | "seeds").
    A row whose method is not registered reads "not yet run"; registered but without a result, "not run".
    `extra_labels`: our rows the paper's table lacks (vanilla, for reference), marked '—' on the paper side.
    """
    paper = paper_wide(table)
    have = {resolve(x)[0] for x in paper.index if resolve(x)[0]}
    labels = list(paper.index) + [x for x in extra_labels if x not in paper.index and resolve(x)[0] not in have]
    cols = {("", "method (paper row)"): labels, ("", "diffcore method"): [_method_cell(x) for x in labels]}
    for (dataset, metric), values in paper.reindex(labels).items():
        cols[(f"paper: {dataset}", METRIC_NAMES.get(metric, metric))] = [
            "—" if pd.isna(v) else f"{v:.2f}" for v in values]
    for name, ours in experiments.items():
        for metric in metrics:
            cells = [_ours_for(ours, label, metric) for label in labels]
            cols[(f"ours: {name}", METRIC_NAMES.get(metric, metric))] = [c[0] for c in cells]
        cols[(f"ours: {name}", "seeds")] = [c[1] for c in cells]
    out = pd.DataFrame(cols)
    out.columns = pd.MultiIndex.from_tuples(out.columns)
    return out


def _method_cell(label: str) -> str:
    method, fraction, _ = resolve(label)
    if method is None:
        return NOT_YET_RUN
    return method if fraction is None or not registered()[method].uses else f"{method} ({fraction:g})"


def provenance_line(ours: pd.DataFrame) -> str:
    """'digits-train, digits-cnn, 15 epochs, cpu, 5 methods, 11 runs' for the caption under a table."""
    if ours.empty:
        return "no result of ours yet"
    parts = [", ".join(sorted(ours.dataset.unique())), ", ".join(sorted(ours.model.unique())),
             ", ".join(f"{e} epochs" for e in sorted(ours.epochs.unique())), ", ".join(sorted(map(str, ours.device.unique())))]
    return "; ".join(parts) + f"; {ours.method.nunique()} methods, {len(ours)} runs"


# ---------------------------------------------------------------- generated sets
def ensure_generated(flags: list[str], out: str | Path) -> dict:
    """`diffcore generate <flags> --out <out>` unless a finished run is there already; returns its run.json."""
    out = Path(out)
    if not (out / "run.json").is_file():
        with quiet():
            cli.cmd_generate(cli.parser().parse_args(["generate", *flags, "--out", str(out)]))
    return json.loads((out / "run.json").read_text())


def ensure_edits(exp: Experiment) -> dict:
    """DiffuseMix's edited set for this experiment's training images (`python -m diffcore.edit`), made once.
    On the embedded profile the editor is diffcore.edit's untrained stand-in (see its docstring)."""
    from . import edit

    out = Path(exp.edits)
    if not (out / "run.json").is_file():
        a = exp.parse(["--out", "unused.json"])
        argv = ["--out", str(out), "--profile", a.profile, "--dataset", a.dataset or cli.profile(a.profile)["dataset"]]
        argv += (["--data-root", a.data_root] if a.data_root else []) + (["--few-shot", str(a.few_shot)] if a.few_shot else [])
        argv += (["--device", a.device] if a.device else []) + list(exp.edit_flags or [])
        with quiet():
            failed = edit.main(argv)
        if failed:
            raise ValueError(f"python -m diffcore.edit {shlex.join(argv)} failed")
    return json.loads((out / "run.json").read_text())


def manifest_frame(generated: str | Path) -> pd.DataFrame:
    """The manifest (one row per generation attempt) with numeric similarity, tau and attempt."""
    from .counterparts import read_manifest

    df = pd.DataFrame(read_manifest(Path(generated) / "manifest.csv"))
    for col in ("similarity", "tau"):
        df[col] = df[col].astype(float)
    df["attempt"] = df["attempt"].astype(int)
    df["label"] = df["label"].astype(int)
    df["kept"] = df["status"] == "kept"
    return df


def class_summary(run: dict) -> pd.DataFrame:
    """Per class: tau_k (Eq. 5), attempts, kept, discarded share, sources left without counterpart."""
    rows = [{"class": k, "tau": v["tau"], "attempts": v["attempts"], "kept": v["kept"],
             "discarded %": 100 * v["discard_rate"], "no counterpart": v["no_counterpart"]}
            for k, v in run["summary"]["per_class"].items()]
    return pd.DataFrame(rows)


def generation_cost(flags: list[str], fractions: list[float], out: str | Path) -> pd.DataFrame:
    """Fig. 7: generate at each fraction into its own folder, timed; models loaded once, outside the timing.

    Seconds are wall time of `counterparts.make_counterparts` (tau, generation, filtering, writing files) at each
    fraction, measured now; a folder that already holds a timed run is read back instead.
    """
    rows = []
    for f in fractions:
        folder = Path(out) / f"fraction-{round(100 * f):03d}"
        if not (folder / "timing.json").is_file():
            _timed_generation(flags, f, folder)
        t = json.loads((folder / "timing.json").read_text())
        s = json.loads((folder / "run.json").read_text())["summary"]
        rows.append({"fraction %": round(100 * f), "sources": s["sources"], "attempts": s["attempts"],
                     "kept": s["kept"], "discarded %": 100 * s["discard_rate"], "no counterpart": s["no_counterpart"],
                     "seconds": t["seconds"], "device": t["device"]})
    return pd.DataFrame(rows)


_LOADED: dict = {}


def _timed_generation(flags: list[str], fraction: float, folder: Path) -> None:
    from dataclasses import replace

    from .counterparts import make_counterparts
    from .filter import load_clip
    from .generate import load_pipeline
    from .runtime import resolve_device, resolve_dtype

    args = cli.parser().parse_args(["generate", *flags, "--out", str(folder)])
    c = cli.build_configs(args)
    key = json.dumps(flags)
    if key not in _LOADED:  # models once per settings, so that only generation is timed
        device = resolve_device(args.device or "auto")
        ds = cli.open_dataset(args.dataset or c["profile"]["dataset"], args.data_root, "train",
                              args.few_shot or c["profile"]["few_shot"])
        _LOADED[key] = (ds, load_clip(c["filter"], device),
                        load_pipeline(c["generate"], device, resolve_dtype(c["generate"].dtype, device)), device)
    ds, clip, pipe, device = _LOADED[key]
    t0 = time.perf_counter()
    make_counterparts(ds, pipe, clip, folder, c["prompt"], c["generate"], c["filter"],
                      replace(c["counterparts"], fraction=fraction), progress=False)
    seconds = time.perf_counter() - t0
    (folder / "timing.json").write_text(json.dumps({"seconds": seconds, "fraction": fraction, "device": str(device),
                                                    "what": "make_counterparts wall time, models already loaded"}))


# ---------------------------------------------------------------- pictures
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
    import matplotlib.pyplot as plt
    import seaborn as sns

    df = manifest_frame(generated)
    df["outcome"] = np.where(df.kept, "kept", "rejected")
    g = sns.displot(df, x="similarity", hue="outcome", col="class_name", col_wrap=col_wrap, bins=20, height=1.8,
                    hue_order=["kept", "rejected"], facet_kws={"sharey": False})
    for name, ax in g.axes_dict.items():
        ax.axvline(df[df.class_name == name].tau.iloc[0], color="k", ls="--", lw=1)
    g.set_titles("{col_name}")
    return png(g.figure)


def mixed_examples(generated: str | Path, ds, n: int = 6, seed: int = 0):
    """Fig.: real I, counterpart G, pixel mix (Eq. 6) and patch mix (Eq. 7) for `n` pairs."""
    import matplotlib.pyplot as plt
    import torch

    from .counterparts import kept_counterparts
    from .data import load_rgb
    from .mix import MixConfig, diffcore_mix

    pairs = sorted(kept_counterparts(generated).items())[:n]
    index = {sid: i for i, sid in enumerate(ds.ids)}
    to_t = lambda im: torch.from_numpy(np.asarray(im.resize((32, 32)), dtype=np.float32) / 255).permute(2, 0, 1)
    real = torch.stack([to_t(ds.load(index[s])) for s, _ in pairs])           # (n, 3, 32, 32)
    gen = torch.stack([to_t(load_rgb(p)) for _, p in pairs])                  # (n, 3, 32, 32)
    g = lambda: torch.Generator().manual_seed(seed)
    pixel = diffcore_mix(real, gen, MixConfig(mode="pixel"), g())
    patch = diffcore_mix(real, gen, MixConfig(mode="patch"), g())
    cols = [("real I", real, None), ("counterpart G", gen, None), ("pixel (Eq. 6)", pixel.images, pixel.lam),
            ("patch (Eq. 7)", patch.images, None)]
    fig, axes = plt.subplots(len(pairs), 4, figsize=(5.2, 1.3 * len(pairs)), squeeze=False)
    for j, (title, x, lam) in enumerate(cols):
        for i in range(len(pairs)):
            axes[i, j].imshow(x[i].permute(1, 2, 0).clamp(0, 1).numpy())
            axes[i, j].axis("off")
            axes[i, j].set_title(title + ("" if lam is None else f" λ={float(lam[i]):.2f}"), fontsize=6)
    fig.tight_layout()
    return png(fig)


def paper_vs_ours_plot(table: pd.DataFrame, paper_dataset: str, metric: str = "top1", title: str = "",
                       paper_metric: str | None = None):
    """Fig.: the paper's number and ours (the first of our columns) per method, side by side; ours on their own
    axis, since they come from other data and networks."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    m, pm = METRIC_NAMES.get(metric, metric), METRIC_NAMES.get(paper_metric or metric, paper_metric or metric)
    ours_group = next(c[0] for c in table.columns if c[0].startswith("ours: "))
    num = lambda s: pd.to_numeric(s.astype(str).str.split(" ± ").str[0], errors="coerce")
    df = pd.DataFrame({"method": table[("", "method (paper row)")], "paper": num(table[(f"paper: {paper_dataset}", pm)]),
                       "ours": num(table[(ours_group, m)])})
    fig, axes = plt.subplots(1, 2, figsize=(9, 0.35 * len(df) + 1.2), sharey=True)
    for ax, col, color, what in ((axes[0], "paper", "tab:gray", f"paper: {paper_dataset}, {pm}"),
                                 (axes[1], "ours", "tab:blue", f"{ours_group}, {m}")):
        sns.barplot(df, y="method", x=col, ax=ax, color=color, orient="h")
        shown = df[col].dropna()
        if len(shown):
            ax.set_xlim(max(0, shown.min() - 5), min(100, shown.max() + 2))
        ax.set_xlabel(f"{what} (%)", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return png(fig)


# ---------------------------------------------------------------- which experiments make our side of each table
# Per table and profile: our columns, {label: settings}. Settings are `diffcore train` flags (None: the profile's).
# embedded: the bundled digits stand in for every dataset, the digits CNN for every network, short schedules.
TABLE_SETUPS: dict[str, dict[str, dict[str, dict]]] = {
    "Table 2": {"embedded": {"digits, 10 per class": dict(dataset="digits", few_shot=10, epochs=30)},
                "paper": {"Flowers-102, 10 per class": dict(dataset="flowers102", few_shot=10, arch="preactresnet34")}},
    "Table 3": {"embedded": {"digits, 40 per class": dict(dataset="digits", few_shot=40, epochs=6)},
                "paper": {"ImageNet-1K": dict(dataset="imagenet-1k", arch="resnet50"),
                          "Tiny ImageNet-200": dict(dataset="tiny-imagenet-200", arch="preactresnet18", image_size=64,
                                                    augment="small"),
                          "CIFAR-100": dict(dataset="cifar100", arch="preactresnet18", image_size=32, augment="small")}},
    "Table 4": {"embedded": {"digits, 40 per class": dict(dataset="digits", few_shot=40, epochs=6)},
                "paper": {"CUB": dict(dataset="cub-200-2011", arch="densenet121"),
                          "Cars": dict(dataset="stanford-cars", arch="densenet121"),
                          "Caltech": dict(dataset="caltech101", arch="densenet121")}},
    "Table 5": {"embedded": {"digits, 10 per class, CNN pre-trained on digits 0-4":
                             dict(dataset="digits", few_shot=10, epochs=20, lr=0.01, tag="finetune")},
                "paper": {"CUB-Birds": dict(dataset="cub-200-2011", arch="wide_resnet101_2", tag="finetune"),
                          "Flowers-102": dict(dataset="flowers102", arch="wide_resnet101_2", tag="finetune")}},
    "Table 7": {"embedded": {"digits, 40 per class": dict(dataset="digits", few_shot=40, epochs=6)},
                "paper": {"Stanford Cars": dict(dataset="stanford-cars", arch="resnet50")}},
}
_FLAG_KEYS = ("few_shot", "arch", "epochs", "batch_size", "lr", "image_size", "augment", "pretrained", "device")


def default_setup(profile_name: str, few_shot: int | None = None) -> dict[str, dict]:
    """The profile's own dataset as a single column (the method page, Fig. 7)."""
    from .profiles import profile

    name = profile(profile_name)["dataset"]
    return {name + (f", {few_shot} per class" if few_shot else ""): dict(dataset=name, few_shot=few_shot)}


def prompt_table(exp: Experiment) -> pd.DataFrame:
    """Per class: the contextual prompt P_c and the negative prompt P_n it is generated with (Eq. 4)."""
    from . import prompts as P

    c = cli.build_configs(exp.parse(["--out", "unused.json"]))
    train_ds, _ = open_datasets(exp)
    return pd.DataFrame([{"class": name, "contextual prompt P_c": P.contextual_prompt(name, c["prompt"]),
                          "negative prompt P_n": P.negative_prompt(c["prompt"]) or "(none)"}
                         for name in train_ds.classes])


def experiment_flags(profile_name: str, settings: dict, data_roots: dict | None, model_flags: list[str]) -> list[str]:
    """`diffcore train`/`generate` flags for one experiment."""
    flags = ["--profile", profile_name, "--dataset", settings["dataset"]]
    root = (data_roots or {}).get(settings["dataset"])
    flags += ["--data-root", str(root)] if root else []
    for key in _FLAG_KEYS:
        if settings.get(key) is not None:
            flags += [f"--{key.replace('_', '-')}", str(settings[key])]
    return flags + [str(f) for f in model_flags]


def experiment_dirs(out_dir: str | Path, profile_name: str, s: dict) -> tuple[Path, Path]:
    """(generated set, results folder) of an experiment. The profile's own setting uses the folders of
    `diffcore run` (generated/, results/), so the book reuses the main job's counterparts and runs."""
    from .profiles import profile

    p, out = profile(profile_name), Path(out_dir)
    same_data = s["dataset"] == p["dataset"] and not s.get("few_shot")
    gen = out / "generated" if same_data else out / f"generated-{s['dataset']}{_shot(s)}"
    same_train = same_data and not s.get("tag") and all(s.get(k) is None for k in _FLAG_KEYS[1:7])
    res = out / "results" if same_train else out / ("results-" + "-".join(
        str(x) for x in (s["dataset"] + _shot(s), s.get("tag"), s.get("arch"), s.get("epochs") and f"{s['epochs']}ep")
        if x))
    return gen, res


def _shot(s: dict) -> str:
    return f"-{s['few_shot']}shot" if s.get("few_shot") else ""


def experiments(table: str, profile_name: str, out_dir: str | Path, seeds: list[int], datasets: dict | None = None,
                data_roots: dict | None = None, model_flags: list[str] = (), edit_flags: list[str] | None = None,
                **overrides) -> dict[str, Experiment]:
    """Our columns for `table`: the profile's setup (or `datasets`), with non-None `overrides` (epochs, few_shot,
    device, pretrained, ...) applied to each. edit_flags: how to make DiffuseMix's edited set (`diffcore.edit`
    flags, e.g. ["--model", "/w/instruct-pix2pix"]); None: the embedded stand-in on the embedded profile, none
    on the paper profile (DiffuseMix rows stay "not run" there until an editor is given)."""
    if edit_flags is None and profile_name == "embedded":
        edit_flags = []
    setups = datasets or TABLE_SETUPS[table][profile_name]
    out = {}
    for label, s in setups.items():
        s = {**s, **{k: v for k, v in overrides.items() if v is not None}}
        gen, res = experiment_dirs(out_dir, profile_name, s)
        edits = s.get("edits") or str(Path(out_dir) / f"edits-{s['dataset']}{_shot(s)}")
        out[label] = Experiment(label, experiment_flags(profile_name, s, data_roots, model_flags), str(res), str(gen),
                                edits=edits, seeds=list(seeds), edit_flags=edit_flags)
    return out


def what_ran(experiments_: dict[str, Experiment], results: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Under each table: per column of ours, the data, model, schedule, device and the command that made it."""
    rows = []
    for label, exp in experiments_.items():
        rows.append({"ours": label, "produced by": provenance_line(results[label]),
                     "command": f"python -m diffcore train {shlex.join(exp.flags)} --method M --seed S "
                                f"[--fraction F --generated {exp.generated}] --out {exp.results}/M-S.json"})
    return pd.DataFrame(rows)


def banner(profile_name: str) -> str:
    """The substitution, stated on every page that shows our numbers (markdown)."""
    if profile_name == "embedded":
        return ("**Embedded profile — these are not the paper's experiments.** Every dataset is replaced by the "
                "bundled 8×8 handwritten digits (scikit-learn, upsampled to 32×32), every network by a ~94k-parameter "
                "digits CNN, CosXL and CLIP ViT-B/32 by diffcore's tiny text-to-image model and tiny CLIP, and the "
                "300-epoch schedule by a few epochs on a CPU. Our numbers check that the pipeline works end to end; "
                "they say nothing about the paper's claims. The paper's numbers are shown beside them for orientation, "
                "never mixed with them.")
    return ("**Paper profile.** Datasets, CosXL, CLIP ViT-B/32 and the classifiers as in the paper, from local "
            "paths; schedules as set in the parameters cell. Check the 'what ran' table below for what produced "
            "each number.")


def show(df: pd.DataFrame, caption: str | None = None):
    """A table for the book page: plain HTML, no index."""
    from IPython.display import HTML

    html = df.to_html(index=False, na_rep="—", escape=True, float_format=lambda v: f"{v:.2f}")
    return HTML((f"<p><em>{caption}</em></p>" if caption else "") + html)


# ---------------------------------------------------------------- Table 5 on the embedded profile
def pretrain_digits_subset(out_dir: str | Path, classes: int = 5, epochs: int = 15, seed: int = 0) -> str:
    """A digits CNN trained (vanilla) on the training digits of the first `classes` classes only, saved as
    safetensors: the embedded stand-in for an ImageNet-pretrained network (Table 5). Fine-tuning on all ten
    classes replaces its head (`models.load_pretrained`)."""
    from safetensors.torch import save_file

    from . import data as D
    from .train import TrainConfig, train

    path = Path(out_dir) / f"pretrained-digits-0-{classes - 1}-{epochs}ep.safetensors"
    if path.is_file():
        return str(path)
    sets = []
    for split in ("train", "test"):
        full = D.digits(split)
        keep = [i for i, y in enumerate(full.labels) if y < classes]
        sub = full.subset(keep, name=f"{full.name}-classes-0-{classes - 1}")
        sub.classes = full.classes[:classes]
        sets.append(sub)
    cfg = TrainConfig(method="vanilla", model="digits-cnn", epochs=epochs, lr=0.05, batch_size=32, image_size=32,
                      augment="digits", seed=seed)
    with capture_models() as built:
        train(cfg, *sets, out=path.with_suffix(".json"), progress=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in built[-1].state_dict().items()}, str(path))
    return str(path)


# ---------------------------------------------------------------- Fig. 5: Grad-CAM
def trained_models(exp: Experiment, labels: list[str], seed: int = 0) -> dict:
    """label -> trained classifier (eval mode) for each registered method of `labels`, at `seed`.

    The weights of a finished run are read from its `<result>.ckpt.pt` (train's checkpoint; the final weights
    under `state_dict`) or from `<result>.safetensors` (`run_table(..., keep_models=True)`); a run with neither
    is trained again into <results>-models/, never over the table's result.
    """
    from .models import build_model, load_weights

    cfg = cli.build_configs(exp.parse(["--out", "unused.json"]))["train"]
    num_classes = len(open_datasets(exp)[0].classes)
    again = Experiment(exp.label, exp.flags, exp.results + "-models", exp.generated, exp.edits, [seed], exp.edit_flags)
    models = {}
    for label in labels:
        method, fraction, _ = resolve(label)
        if method is None:
            continue
        stem = f"{_tag(method, fraction if registered()[method].uses else None)}-seed{seed}"
        found = _weights(Path(exp.results), stem) or _weights(Path(again.results), stem)
        if found is None:
            run_table(again, [label], keep_models=True)
            found = _weights(Path(again.results), stem)
        if found is not None:
            net = build_model(cfg.model, num_classes, image_size=cfg.image_size)
            net.load_state_dict(load_weights(found, cfg.model))
            models[label] = net.eval()
    return models


def _weights(folder: Path, stem: str) -> Path | None:
    """The final weights of a finished run: its checkpoint or kept safetensors, if its result exists."""
    if not (folder / f"{stem}.json").is_file():
        return None
    return next((p for p in (folder / f"{stem}.ckpt.pt", folder / f"{stem}.safetensors") if p.is_file()), None)


def saliency_figure(models: dict, exp: Experiment, n_images: int = 8, seed: int = 0):
    """Fig. 5: the same test images, Grad-CAM of each model over them (target: the true class)."""
    import matplotlib.pyplot as plt
    import torch

    from .models import saliency_layer
    from .saliency import gradcam
    from .train import EvalSet, transforms_for

    _, test_ds = open_datasets(exp)
    cfg = cli.build_configs(exp.parse(["--out", "unused.json"]))["train"]
    rng = np.random.default_rng(seed)
    idx = sorted(rng.choice(len(test_ds), size=min(n_images, len(test_ds)), replace=False))
    ev = EvalSet(test_ds, transforms_for(cfg, False))
    x = torch.stack([ev[i][0] for i in idx])                          # (n, 3, H, W) normalised
    y = torch.tensor([test_ds.labels[i] for i in idx])                 # (n,)
    shown = [np.asarray(test_ds.load(i).resize(tuple(x.shape[-2:][::-1]))) for i in idx]
    fig, axes = plt.subplots(len(models) + 1, len(idx), figsize=(1.2 * len(idx), 1.25 * (len(models) + 1)),
                             squeeze=False)
    for j, im in enumerate(shown):
        axes[0, j].imshow(im)
        axes[0, j].set_title(test_ds.classes[int(y[j])], fontsize=6)
    for r, (label, net) in enumerate(models.items(), start=1):
        cam = gradcam(net, saliency_layer(cfg.model, net), x, y)      # (n, H, W)
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


def cam_concentration(models: dict, exp: Experiment, n_images: int = 64, seed: int = 0) -> pd.DataFrame:
    """A number per model for Fig. 5: the share of Grad-CAM mass on the digit's own pixels (ink > 0.25)."""
    import torch

    from .models import saliency_layer
    from .saliency import gradcam
    from .train import EvalSet, transforms_for

    _, test_ds = open_datasets(exp)
    cfg = cli.build_configs(exp.parse(["--out", "unused.json"]))["train"]
    idx = sorted(np.random.default_rng(seed).choice(len(test_ds), size=min(n_images, len(test_ds)), replace=False))
    ev = EvalSet(test_ds, transforms_for(cfg, False))
    x = torch.stack([ev[i][0] for i in idx])                          # (n, 3, H, W)
    y = torch.tensor([test_ds.labels[i] for i in idx])
    ink = torch.stack([torch.from_numpy(np.asarray(test_ds.load(i).convert("L").resize(tuple(x.shape[-2:][::-1])),
                                                   dtype=np.float32) / 255) for i in idx]) > 0.25  # (n, H, W)
    rows = []
    for label, net in models.items():
        cam = gradcam(net, saliency_layer(cfg.model, net), x, y)      # (n, H, W)
        share = (cam * ink).flatten(1).sum(1) / cam.flatten(1).sum(1).clamp_min(1e-12)
        rows.append({"model": label, "Grad-CAM mass on ink (%)": float(100 * share.mean()),
                     "top-1 on these images (%)": float(100 * (net(x).argmax(1) == y).float().mean())})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- Table 6, Fig. 4, Fig. 6
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


def overhead_table(rows: list[dict]) -> pd.DataFrame:
    """bench.time_training rows -> Table 6 layout: method x batch size, Eq. (9) overhead and ms per batch."""
    df = pd.DataFrame(rows)
    df["method (paper row)"] = df.method.map(label_of)
    wide = df.pivot_table(index="method (paper row)", columns="batch_size", values=["overhead_pct", "ms_per_batch"],
                          sort=False)
    wide.columns = [f"ours {'overhead %' if v == 'overhead_pct' else 'ms/batch'} b{b}" for v, b in wide.columns]
    return wide.reset_index()


def overhead_side_by_side(rows: list[dict]) -> pd.DataFrame:
    """Table 6: the paper's overhead per batch size beside ours; methods not registered: 'not yet run'."""
    paper = paper_wide("Table 6")
    paper.columns = [f"paper overhead % {m.replace('overhead_pct_', '')}" for _, m in paper.columns]
    ours = overhead_table(rows).set_index("method (paper row)")
    labels = list(paper.index) + [m for m in ours.index if m not in paper.index]
    out = paper.reindex(labels).join(ours, how="left")
    ours_cols = [c for c in out.columns if c.startswith("ours")]
    out = out.map(lambda v: v if isinstance(v, str) else ("" if pd.isna(v) else f"{v:.1f}"))
    for label in labels:
        missing = (out.loc[label, ours_cols] == "").all()
        if missing:
            out.loc[label, ours_cols] = NOT_YET_RUN if resolve(label)[0] is None else "not run"
    out.index.name = "method (paper row)"
    return out.reset_index()


def fig4_overhead_vs_accuracy(rows: list[dict], ours: pd.DataFrame, batch_size: int = 16):
    """Fig. 4: Eq. (9) overhead at `batch_size` against top-1 — the paper's (Table 6 b16 vs Table 4 CUB) and ours."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    p6, p4 = paper_numbers("Table 6"), paper_numbers("Table 4")
    p6 = p6[p6.metric == f"overhead_pct_b{batch_size}"].assign(method=lambda d: d.method.str.replace(" (Greedy)", ""))
    p4 = p4[p4.dataset == "CUB"].assign(method=lambda d: d.method.replace({"DiffCoRe-Mix-100": "DiffCoRe-Mix"}))
    paper = p6.merge(p4, on="method", suffixes=("_o", "_a"))[["method", "value_o", "value_a"]]
    b = pd.DataFrame([r for r in rows if r["batch_size"] == batch_size])
    acc = pd.Series(dtype=float) if ours.empty else ours[ours.fraction.isna() | (ours.fraction == 1.0)].groupby(
        "method").top1.mean()                       # DiffCoRe-Mix: the -100 runs, as in the paper's figure
    b = b.assign(top1=b.method.map(acc)).dropna(subset=["top1"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, df, x, y, title in ((axes[0], paper, "value_o", "value_a", "paper: Table 6 (b16) vs Table 4 (CUB, DenseNet-121)"),
                                (axes[1], b, "overhead_pct", "top1", f"ours: bench b{batch_size} vs top-1 (digits, tiny CNN)")):
        if df.empty:
            ax.text(0.5, 0.5, "no accuracy of ours yet:\nrun the Table 4 notebook first", ha="center",
                    transform=ax.transAxes)
            continue
        sns.scatterplot(df, x=x, y=y, hue="method", ax=ax, s=60, legend=False)
        for r in df.itertuples():
            ax.annotate(label_of(r.method) if "value_o" not in df else r.method, (getattr(r, x), getattr(r, y)),
                        fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel("augmentation overhead A_O (%) — Eq. (9)")
        ax.set_ylabel("top-1 (%)")
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return png(fig)


def fig6_batch_time(rows: list[dict]):
    """Fig. 6: time per training batch against batch size, ours per method; the paper's two quoted curves."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    df = pd.DataFrame(rows).assign(method=lambda d: d.method.map(label_of))
    p = paper_numbers("Fig. 6").assign(batch_size=lambda d: d.metric.str.extract(r"b(\d+)$")[0].astype(int))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    sns.lineplot(p, x="batch_size", y="value", hue="method", marker="o", ax=axes[0])
    axes[0].set(title="paper (the values quoted in Sec. 5's text)", ylabel="s per batch", xticks=[16, 32, 64])
    sns.lineplot(df, x="batch_size", y="ms_per_batch", hue="method", marker="o", ax=axes[1])
    axes[1].set(title=f"ours: {df.model.iloc[0]}, {df.image_size.iloc[0]} px, {df.device.iloc[0]}",
                ylabel="ms per batch", xticks=sorted(df.batch_size.unique()))
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
    axes[1].axhspan(band["discard_pct_min"], band["discard_pct_max"], color="tab:gray", alpha=0.3,
                    label="paper: 10.1–11.1% (CosXL, CUB)")
    axes[1].set(title="discarded by the τ_k filter", ylabel="% of attempts", ylim=(0, 100))
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    return png(fig)
