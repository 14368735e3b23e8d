"""Each table's experiments: which runs make our side of a paper table, made once and reused, and the tables that
put the paper's numbers beside ours with the command behind each of ours.

A `Column` is one of our columns of a table: an experiment (diffcore.experiment) and where its generated set and
result files go. Every run goes through the experiment API, the same code as the command line, and each table
says which command made each of our numbers.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .. import experiment as X
from ..counterparts import make_counterparts, read_manifest
from ..engine.checks import json_text
from ..engine.runtime import resolve_device, resolve_dtype
from ..filter import load_clip
from ..generate import load_pipeline
from ..profiles import profile as preset
from ..results import load_results
from .paper import METRIC_NAMES, NOT_YET_RUN, method_cell, paper_wide, resolve, uses_set


@dataclass
class Column:
    """One of our columns: its experiment (settings shared by every run of the table) and its folders.

    generated: the counterparts (`diffcore generate`), for methods that use them. edits: DiffuseMix's edited set,
    for methods whose `uses == "edits"`; made here when `make_edits`, else its rows stay "not run".
    """

    label: str
    exp: X.Experiment
    results: str
    generated: str | None = None
    edits: str | None = None
    seeds: list[int] = field(default_factory=lambda: [0])
    make_edits: bool = False

    def command(self, command: str = "train", **extra) -> str:
        return X.command_line(self.exp, command, **extra)


# Per table and profile: our columns, {label: settings}. Settings are experiment overrides.
# embedded: the bundled digits stand in for every dataset, the digits CNN for every network, short schedules.
TABLE_SETUPS: dict[str, dict[str, dict[str, dict]]] = {
    "Table 2": {
        "embedded": {"digits, 10 per class": dict(dataset="digits", few_shot=10, epochs=30)},
        "paper": {"Flowers-102, 10 per class": dict(dataset="flowers102", few_shot=10, arch="preactresnet34")},
    },
    "Table 3": {
        "embedded": {"digits, 40 per class": dict(dataset="digits", few_shot=40, epochs=6)},
        "paper": {
            "ImageNet-1K": dict(dataset="imagenet-1k", arch="resnet50"),
            "Tiny ImageNet-200": dict(
                dataset="tiny-imagenet-200", arch="preactresnet18", image_size=64, augment="small"
            ),
            "CIFAR-100": dict(dataset="cifar100", arch="preactresnet18", image_size=32, augment="small"),
        },
    },
    "Table 4": {
        "embedded": {"digits, 40 per class": dict(dataset="digits", few_shot=40, epochs=6)},
        "paper": {
            "CUB": dict(dataset="cub-200-2011", arch="densenet121"),
            "Cars": dict(dataset="stanford-cars", arch="densenet121"),
            "Caltech": dict(dataset="caltech101", arch="densenet121"),
        },
    },
    "Table 5": {
        "embedded": {
            "digits, 10 per class, CNN pre-trained on digits 0-4": dict(
                dataset="digits", few_shot=10, epochs=20, lr=0.01, tag="finetune"
            )
        },
        "paper": {
            "CUB-Birds": dict(dataset="cub-200-2011", arch="wide_resnet101_2", tag="finetune"),
            "Flowers-102": dict(dataset="flowers102", arch="wide_resnet101_2", tag="finetune"),
        },
    },
    "Table 7": {
        "embedded": {"digits, 40 per class": dict(dataset="digits", few_shot=40, epochs=6)},
        "paper": {"Stanford Cars": dict(dataset="stanford-cars", arch="resnet50")},
    },
}
TRAINING_KEYS = ("arch", "epochs", "batch_size", "lr", "image_size", "augment")  # a setting that makes new runs


def default_setup(profile_name: str, few_shot: int | None = None) -> dict[str, dict]:
    """The profile's own dataset as a single column (the method page, Fig. 7)."""
    name = preset(profile_name)["dataset"]
    return {name + (f", {few_shot} per class" if few_shot else ""): dict(dataset=name, few_shot=few_shot)}


def column_dirs(out_dir: str | Path, profile_name: str, s: dict) -> tuple[Path, Path]:
    """(generated set, results folder) of a column. The profile's own setting uses the folders of
    `diffcore run` (generated/, results/), so the book reuses the main job's counterparts and runs."""
    p, out = preset(profile_name), Path(out_dir)
    same_data = s["dataset"] == p["dataset"] and not s.get("few_shot")
    gen = out / "generated" if same_data else out / f"generated-{s['dataset']}{_shot(s)}"
    same_train = same_data and not s.get("tag") and all(s.get(k) is None for k in TRAINING_KEYS)
    res = (
        out / "results"
        if same_train
        else out
        / (
            "results-"
            + "-".join(
                str(x)
                for x in (s["dataset"] + _shot(s), s.get("tag"), s.get("arch"), s.get("epochs") and f"{s['epochs']}ep")
                if x
            )
        )
    )
    return gen, res


def _shot(s: dict) -> str:
    return f"-{s['few_shot']}shot" if s.get("few_shot") else ""


def columns(
    table: str | None,
    profile_name: str,
    out_dir: str | Path,
    seeds: list[int],
    setups: dict | None = None,
    data_roots: dict | None = None,
    overrides: dict | None = None,
    edit: dict | None = None,
    **settings,
) -> dict[str, Column]:
    """Our columns for `table`: the profile's setup (or `setups`), with the non-None `settings` (epochs, few_shot,
    device, pretrained, ...) and `overrides` (the paper profile's weights, e.g. {"model": "/w/cosxl.safetensors"})
    applied to each. edit: DiffuseMix's editor (EditConfig fields, e.g. {"model": "/w/instruct-pix2pix"}); None:
    the embedded stand-in on the embedded profile, none on the paper profile (DiffuseMix rows stay "not run")."""
    chosen = setups or TABLE_SETUPS[table][profile_name]
    out = {}
    for label, s in chosen.items():
        s = {**s, **{k: v for k, v in settings.items() if v is not None}}
        gen, res = column_dirs(out_dir, profile_name, s)
        over = {k: v for k, v in s.items() if k not in ("tag", "edits")}
        root = (data_roots or {}).get(s["dataset"])
        exp = X.experiment(
            profile_name, **{**over, **(overrides or {}), "data_root": str(root) if root else None, "edit": edit}
        )
        edits = s.get("edits") or str(Path(out_dir) / f"edits-{s['dataset']}{_shot(s)}")
        out[label] = Column(
            label,
            exp,
            str(res),
            str(gen),
            edits=edits,
            seeds=list(seeds),
            make_edits=edit is not None or profile_name == "embedded",
        )
    return out


def quiet():
    """No progress bars in the pages: train/generate draw them on stderr (tqdm), which is dropped here."""
    return contextlib.redirect_stderr(io.StringIO())


# ---------------------------------------------------------------- generated sets
def ensure_generated(col: Column) -> dict:
    """The column's counterparts (`diffcore generate`), unless a finished set is there already; its run.json."""
    out = Path(col.generated)
    if not (out / "run.json").is_file():
        with quiet():
            X.generate(col.exp, out)
    return json.loads((out / "run.json").read_text())


def ensure_edits(col: Column) -> dict:
    """DiffuseMix's edited set for the column's training images (`diffcore edit`), made once. On the embedded
    profile the editor is diffcore.edit's untrained stand-in (see its docstring)."""
    out = Path(col.edits)
    if not (out / "run.json").is_file():
        with quiet():
            X.edit(col.exp, out)
    return json.loads((out / "run.json").read_text())


def manifest_frame(generated: str | Path) -> pd.DataFrame:
    """The manifest (one row per generation attempt) with numeric similarity, tau and attempt."""
    df = pd.DataFrame(read_manifest(Path(generated) / "manifest.csv"))
    for col in ("similarity", "tau"):
        df[col] = df[col].astype(float)
    df["attempt"] = df["attempt"].astype(int)
    df["label"] = df["label"].astype(int)
    df["kept"] = df["status"] == "kept"
    return df


def class_summary(run: dict) -> pd.DataFrame:
    """Per class: tau_k (Eq. 5), attempts, kept, discarded share, sources left without counterpart."""
    rows = [
        {
            "class": k,
            "tau": v["tau"],
            "attempts": v["attempts"],
            "kept": v["kept"],
            "discarded %": 100 * v["discard_rate"],
            "no counterpart": v["no_counterpart"],
        }
        for k, v in run["summary"]["per_class"].items()
    ]
    return pd.DataFrame(rows)


def prompt_table(col: Column) -> pd.DataFrame:
    """Per class: the contextual prompt P_c and the negative prompt P_n it is generated with (Eq. 4)."""
    from .. import prompts as P

    return pd.DataFrame(
        [
            {
                "class": name,
                "contextual prompt P_c": P.contextual_prompt(name, col.exp.prompt),
                "negative prompt P_n": P.negative_prompt(col.exp.prompt) or "(none)",
            }
            for name in X.train_set(col.exp).classes
        ]
    )


_LOADED: dict = {}


def generation_cost(col: Column, fractions: list[float], out: str | Path) -> pd.DataFrame:
    """Fig. 7: generate at each fraction into its own folder, timed; models loaded once, outside the timing.

    Seconds are wall time of `counterparts.make_counterparts` (tau, generation, filtering, writing files) at each
    fraction, measured now; a folder that already holds a timed run is read back instead.
    """
    rows = []
    for f in fractions:
        folder = Path(out) / f"fraction-{round(100 * f):03d}"
        if not (folder / "timing.json").is_file():
            _timed_generation(col.exp.replace(fraction=f), folder)
        t = json.loads((folder / "timing.json").read_text())
        s = json.loads((folder / "run.json").read_text())["summary"]
        rows.append(
            {
                "fraction %": round(100 * f),
                "sources": s["sources"],
                "attempts": s["attempts"],
                "kept": s["kept"],
                "discarded %": 100 * s["discard_rate"],
                "no counterpart": s["no_counterpart"],
                "seconds": t["seconds"],
                "device": t["device"],
            }
        )
    return pd.DataFrame(rows)


def _timed_generation(exp: X.Experiment, folder: Path) -> None:
    key = X.command_line(exp.replace(fraction=None), "generate")
    if key not in _LOADED:  # models once per settings, so that only generation is timed
        device = resolve_device(exp.device)
        _LOADED[key] = (
            X.train_set(exp),
            load_clip(exp.filter, device),
            load_pipeline(exp.generate, device, resolve_dtype(exp.generate.dtype, device)),
            device,
        )
    ds, clip, pipe, device = _LOADED[key]
    t0 = time.perf_counter()
    make_counterparts(ds, pipe, clip, folder, exp.prompt, exp.generate, exp.filter, exp.counterparts, progress=False)
    seconds = time.perf_counter() - t0
    (folder / "timing.json").write_text(
        json_text(
            {
                "seconds": seconds,
                "fraction": exp.counterparts.fraction,
                "device": str(device),
                "what": "make_counterparts wall time, models already loaded",
            }
        )
    )


# ---------------------------------------------------------------- training runs
def _run_of(col: Column, method: str, fraction: float | None, hp: dict, seed: int) -> tuple[X.Experiment, str | None]:
    """The experiment of one run and the generated set it trains with; set None when it needs one the column
    lacks (status 'needs ...')."""
    uses = uses_set(method)
    if uses == "edits" and col.edits and col.make_edits:
        ensure_edits(col)
    src = {"counterparts": col.generated, "edits": col.edits}.get(uses) if uses else None
    src = src if src and (uses != "edits" or (Path(src) / "run.json").is_file()) else None
    return col.exp.replace(method=method, fraction=fraction, seed=seed, method_args=hp or None), src


def result_path(col: Column, method: str, fraction: float | None, seed: int) -> Path:
    return Path(col.results) / f"{X.run_name(method, fraction)}-seed{seed}.json"


def run_table(col: Column, labels: list[str], data=None, keep_models: bool = False) -> pd.DataFrame:
    """Train every registered method of `labels` for every seed of `col` that has no result file yet.

    Returns one row per (label, seed): status 'done' / 'skipped (exists)' / 'not yet run' (not registered) /
    'needs <set>' (a generated set this column lacks), and the command that makes the run.
    """
    rows, seen = [], set()
    for label in labels:
        method, fraction, hp = resolve(label)
        if method is None:
            rows.append({"method": label, "seed": None, "status": NOT_YET_RUN, "command": ""})
            continue
        fraction = fraction if uses_set(method) else None
        for seed in col.seeds:
            out = result_path(col, method, fraction, seed)
            exp, src = _run_of(col, method, fraction, hp, seed)
            cmd = "" if uses_set(method) and src is None else X.command_line(exp, "train", generated=src, out=out)
            if not cmd:
                status = f"needs a {uses_set(method)} set"
            elif out.is_file() or (method, fraction, seed) in seen:
                check_same_settings(out, col)
                status = "skipped (exists)"
            else:
                data = data or X.datasets(col.exp)
                with quiet():
                    run = X.train(exp, out, src, data)
                if keep_models:
                    save_weights(run.model, out.with_suffix(".safetensors"))
                status = "done"
            seen.add((method, fraction, seed))
            rows.append({"method": label, "seed": seed, "status": status, "command": cmd})
    return pd.DataFrame(rows)


def save_weights(model, path: Path) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))


def match_of(col: Column) -> dict:
    """The training settings a result file must have to count for this column."""
    cfg = col.exp.train
    return {
        "model": cfg.model,
        "epochs": cfg.epochs,
        "image_size": cfg.image_size,
        "lr": cfg.lr,
        "batch_size": cfg.batch_size,
        "pretrained": cfg.pretrained,
    }


def check_same_settings(path: Path, col: Column) -> None:
    if not path.is_file():
        return
    have = json.loads(path.read_text())["config"]
    diff = {k: (have.get(k), v) for k, v in match_of(col).items() if have.get(k) != v}
    if diff:
        raise ValueError(
            f"{path} was made with other settings ({', '.join(f'{k} {a} vs {b}' for k, (a, b) in diff.items())}); "
            f"use another out_dir or delete it"
        )


# ---------------------------------------------------------------- our numbers beside the paper's
def our_results(folder: str | Path, match: dict | None = None) -> pd.DataFrame:
    """One row per result file in `folder` whose config matches `match` (e.g. {"epochs": 15})."""
    rows = []
    for r in load_results(folder) if Path(folder).is_dir() else []:
        if any(r["config"].get(k) != v for k, v in (match or {}).items()):
            continue
        uses = r["counts"]["pairs"] > 0 or r["method"] in ("diffcore", "genaug", "pixel", "patch")
        rows.append(
            {
                "method": r["method"],
                "fraction": r["config"].get("fraction") if uses else None,
                "seed": r["config"]["seed"],
                "top1": r["metrics"]["top1"],
                "top5": r["metrics"]["top5"],
                "pairs": r["counts"]["pairs"],
                "real": r["counts"]["real"],
                "dataset": r["dataset"],
                "model": r["config"]["model"],
                "epochs": r["config"]["epochs"],
                "device": r["provenance"].get("device"),
                "train_s": r["wall_time_s"],
            }
        )
    return pd.DataFrame(rows)


def _ours_for(ours: pd.DataFrame, label: str, metric: str) -> tuple[str, int]:
    method, fraction, _ = resolve(label)
    if method is None:
        return NOT_YET_RUN, 0
    if ours.empty:
        return "not run", 0
    sel = ours[ours.method == method]
    if fraction is not None and uses_set(method):
        sel = sel[np.isclose(sel.fraction.astype(float), fraction)]
    if sel.empty:
        return "not run", 0
    v = sel[metric].to_numpy(float)
    return f"{v.mean():.2f} ± {v.std():.2f}", len(v)


def side_by_side(
    table: str,
    ours_by_column: dict[str, pd.DataFrame],
    metrics: list[str],
    extra_labels: tuple[str, ...] = ("Vanilla",),
) -> pd.DataFrame:
    """The paper's rows and numbers, then ours (mean ± population std over seeds) per column and metric.

    Columns are two-level: ("paper: <dataset>", metric) and ("ours: <column>", metric | "seeds").
    A row whose method is not registered reads "not yet run"; registered but without a result, "not run".
    `extra_labels`: our rows the paper's table lacks (vanilla, for reference), marked '—' on the paper side.
    """
    paper = paper_wide(table)
    have = {resolve(x)[0] for x in paper.index if resolve(x)[0]}
    labels = list(paper.index) + [x for x in extra_labels if x not in paper.index and resolve(x)[0] not in have]
    cols = {("", "method (paper row)"): labels, ("", "diffcore method"): [method_cell(x) for x in labels]}
    for (dataset, metric), values in paper.reindex(labels).items():
        cols[(f"paper: {dataset}", METRIC_NAMES.get(metric, metric))] = [
            "—" if pd.isna(v) else f"{v:.2f}" for v in values
        ]
    for name, ours in ours_by_column.items():
        for metric in metrics:
            cells = [_ours_for(ours, label, metric) for label in labels]
            cols[(f"ours: {name}", METRIC_NAMES.get(metric, metric))] = [c[0] for c in cells]
        cols[(f"ours: {name}", "seeds")] = [c[1] for c in cells]
    out = pd.DataFrame(cols)
    out.columns = pd.MultiIndex.from_tuples(out.columns)
    return out


def provenance_line(ours: pd.DataFrame) -> str:
    """'digits-train, digits-cnn, 15 epochs, cpu, 5 methods, 11 runs' for the caption under a table."""
    if ours.empty:
        return "no result of ours yet"
    parts = [
        ", ".join(sorted(ours.dataset.unique())),
        ", ".join(sorted(ours.model.unique())),
        ", ".join(f"{e} epochs" for e in sorted(ours.epochs.unique())),
        ", ".join(sorted(map(str, ours.device.unique()))),
    ]
    return "; ".join(parts) + f"; {ours.method.nunique()} methods, {len(ours)} runs"


def what_ran(cols: dict[str, Column], results: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Under each table: per column of ours, the data, model, schedule, device and the commands that made it."""
    rows = []
    for label, col in cols.items():
        rows.append(
            {
                "ours": label,
                "produced by": provenance_line(results[label]),
                "command": f"{col.command('generate', out=col.generated)}; then per row: "
                f"{col.command('train', method='M', seed='S', out=col.results + '/M-S.json')} "
                f"[--fraction F --generated {col.generated}]",
            }
        )
    return pd.DataFrame(rows)


def banner(profile_name: str) -> str:
    """The substitution, stated on every page that shows our numbers (markdown)."""
    if profile_name == "embedded":
        return (
            "**Embedded profile — these are not the paper's experiments.** Every dataset is replaced by the "
            "bundled 8×8 handwritten digits (scikit-learn, upsampled to 32×32), every network by a ~94k-parameter "
            "digits CNN, CosXL and CLIP ViT-B/32 by diffcore's tiny text-to-image model and tiny CLIP, and the "
            "300-epoch schedule by a few epochs on a CPU. Our numbers check that the pipeline works end to end; "
            "they say nothing about the paper's claims. The paper's numbers are shown beside them for orientation, "
            "never mixed with them."
        )
    return (
        "**Paper profile.** Datasets, CosXL, CLIP ViT-B/32 and the classifiers as in the paper, from local "
        "paths; schedules as set in the parameters cell. Check the 'what ran' table below for what produced "
        "each number."
    )


# ---------------------------------------------------------------- Table 5 on the embedded profile
def pretrain_digits_subset(out_dir: str | Path, classes: int = 5, epochs: int = 15, seed: int = 0) -> str:
    """A digits CNN trained (vanilla) on the training digits of the first `classes` classes only, saved as
    safetensors: the embedded stand-in for an ImageNet-pretrained network (Table 5). Fine-tuning on all ten
    classes replaces its head (`models.load_pretrained`)."""
    from .. import data as D
    from ..train import TrainConfig, train

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
    cfg = TrainConfig(
        method="vanilla",
        model="digits-cnn",
        epochs=epochs,
        lr=0.05,
        batch_size=32,
        image_size=32,
        augment="digits",
        seed=seed,
    )
    run = train(cfg, *sets, out=path.with_suffix(".json"), progress=False)
    save_weights(run.model, path)
    return str(path)


# ---------------------------------------------------------------- Fig. 5: the trained networks
def trained_models(col: Column, labels: list[str], seed: int = 0) -> dict:
    """label -> trained classifier (eval mode) for each registered method of `labels`, at `seed`.

    The weights of a finished run are read from its `<result>.ckpt.pt` (train's checkpoint; the final weights
    under `state_dict`) or from `<result>.safetensors` (`run_table(..., keep_models=True)`); a run with neither
    is trained again into <results>-models/, never over the table's result.
    """
    from ..models import build_model, load_weights

    cfg = col.exp.train
    num_classes = len(X.train_set(col.exp).classes)
    again = Column(col.label, col.exp, col.results + "-models", col.generated, col.edits, [seed], col.make_edits)
    models = {}
    for label in labels:
        method, fraction, _ = resolve(label)
        if method is None:
            continue
        stem = f"{X.run_name(method, fraction if uses_set(method) else None)}-seed{seed}"
        found = _weights(Path(col.results), stem) or _weights(Path(again.results), stem)
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


# ---------------------------------------------------------------- Table 6
def overhead_table(rows: list[dict]) -> pd.DataFrame:
    """bench.time_training rows -> Table 6 layout: method x batch size, Eq. (9) overhead and ms per batch."""
    from .paper import label_of

    df = pd.DataFrame(rows)
    df["method (paper row)"] = df.method.map(label_of)
    wide = df.pivot_table(
        index="method (paper row)", columns="batch_size", values=["overhead_pct", "ms_per_batch"], sort=False
    )
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
