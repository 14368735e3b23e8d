"""Each table's runs and the tables of a page: the plan's jobs of a table run (made once and reused), and the
paper's numbers beside ours with the command behind each of ours and how each row stands to the paper.

A column of ours (`plan.jobs.Column`) is an experiment (diffcore.experiment) and where its generated set and result
files go; its jobs are the plan's (`diffcore plan`), so a page runs exactly what the plan lists.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .. import experiment as X
from ..counterparts import make_counterparts, read_manifest
from ..engine.checks import json_text
from ..engine.runtime import resolve_device, resolve_dtype
from ..filter import load_clip
from ..generate import load_pipeline
from ..plan import jobs as J
from ..plan.jobs import CONTROL, Column
from ..plan.paper import METRIC_NAMES, NOT_YET_RUN, method_cell, paper_wide, resolve, uses_set
from ..results import Difference, Interval, correct, interval, paired_difference, unpaired_difference


def quiet():
    """No progress bars in the pages: train/generate draw them on stderr (tqdm), which is dropped here."""
    return contextlib.redirect_stderr(io.StringIO())


# ---------------------------------------------------------------- generated sets
def ensure_generated(col: Column) -> dict:
    """The column's counterparts (the plan's generate job), unless a finished set is there already; its run.json."""
    with quiet():
        J.run_job(J.set_jobs(col, {"diffcore"})[0])
    return json.loads((Path(col.generated) / "run.json").read_text())


def ensure_edits(col: Column) -> dict:
    """DiffuseMix's edited set for the column's training images (the plan's edit job), made once. On the embedded
    profile the editor is diffcore.edit's untrained stand-in (see its docstring)."""
    with quiet():
        J.run_job(J.set_jobs(col, {"diffusemix"})[0])
    return json.loads((Path(col.edits) / "run.json").read_text())


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
def relative(text: str, build: str | Path) -> str:
    """Paths under the build folder written relative to it (a page never shows the build machine's folders)."""
    root = str(Path(build).resolve())
    return str(text).replace(root + "/", "").replace(root, ".")


def run_table(col: Column, labels: list[str], data=None, keep_models: bool = False) -> pd.DataFrame:
    """Run the plan's training job of every row of `labels` for every seed of `col` that has no result file yet
    (the generated sets it needs first).

    Returns one row per (label, seed): status 'done' / 'skipped (exists)' / 'not yet run' (not registered) /
    'not run: <why>' (an input this column lacks), how the run stands to the paper, its training time and device
    (from its result file), and the exact command that makes it, run from the build folder.
    """
    rows, build = [], Path(col.results).parent
    for label in labels:
        for seed in col.seeds:
            job = J.train_job(col, label, seed)
            if job is None:
                rows.append({"method": label, "seed": seed, "status": NOT_YET_RUN, "paper": "", "command": ""})
                break
            if job.refused:
                status = "not run: " + job.refused
            elif Path(job.out).is_file():
                check_same_settings(Path(job.out), col)
                status = "skipped (exists)"
            else:
                for need in J.set_jobs(col, {job.exp.train.method if label != CONTROL else "diffcore"}):
                    with quiet():
                        J.run_job(need)
                data = data or X.datasets(col.exp)
                with quiet():
                    run = J.run_job(job, data)
                if keep_models and run is not None:
                    save_weights(run.model, Path(job.out).with_suffix(".safetensors"))
                status = "done"
            done = json.loads(Path(job.out).read_text()) if Path(job.out).is_file() else None
            prov = (done or {}).get("provenance", {})
            rows.append(
                {
                    "method": label,
                    "seed": seed,
                    "status": status,
                    "paper": job.note,
                    "train s": None if done is None else round(done["wall_time_s"], 1),
                    "hardware": prov.get("device_name") or prov.get("device") or "",
                    "command": relative(job.command(), build),
                }
            )
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
    control = path.stem.rsplit("-seed", 1)[0].endswith("-equal-steps")  # its schedule is longer on purpose
    diff = {
        k: (have.get(k), v) for k, v in match_of(col).items() if have.get(k) != v and not (control and k == "epochs")
    }
    if diff:
        raise ValueError(
            f"{path} was made with other settings ({', '.join(f'{k} {a} vs {b}' for k, (a, b) in diff.items())}); "
            f"use another out_dir or delete it"
        )


def our_results(folder: str | Path, match: dict | None = None) -> pd.DataFrame:
    """One row per result file in `folder` whose config matches `match` (e.g. {"epochs": 15}); an equal-steps
    control (`*-equal-steps-seed*.json`) is matched on everything but its longer schedule."""
    rows = []
    for path in sorted(Path(folder).glob("*.json")) if Path(folder).is_dir() else []:
        r = json.loads(path.read_text())
        if r.get("kind") != "diffcore-train-result":
            continue
        run = path.stem.rsplit("-seed", 1)[0]
        control = run.endswith("-equal-steps")
        if any(r["config"].get(k) != v for k, v in (match or {}).items() if not (control and k == "epochs")):
            continue
        uses = r["counts"]["pairs"] > 0 or r["method"] in ("diffcore", "genaug", "pixel", "patch")
        by_split = r.get("metrics_by_split", {})
        preds = r.get("predictions") or {}  # none in files written before 2026-12-08: intervals say so
        test_split = next(iter(preds), None)  # the evaluation split comes first (train.train)
        rows.append(
            {
                "method": r["method"],
                "run": run,
                "control": control,
                "fraction": r["config"].get("fraction") if uses else None,
                "seed": r["config"]["seed"],
                "top1": r["metrics"]["top1"],
                "top5": r["metrics"]["top5"],
                "test_top1": r["metrics"]["top1"],
                "valid_top1": by_split.get("val", {}).get("top1", np.nan),
                "n_test": r["metrics"].get("n") or r["counts"]["test"],
                "n_valid": by_split.get("val", {}).get("n"),
                "pred_test": preds.get(test_split),  # results.encode_predictions: top-5 and label per image
                "pred_valid": preds.get("val"),
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


def runs_of(ours: pd.DataFrame, label: str) -> pd.DataFrame:
    """The result rows of one paper row label (its method, fraction, control or not), one per seed."""
    method, fraction, _ = resolve(label)
    if method is None or ours.empty:
        return ours.iloc[0:0] if not ours.empty else pd.DataFrame()
    sel = ours[(ours.method == method) & (ours.control == (label == CONTROL))]
    if fraction is not None and uses_set(method):
        sel = sel[np.isclose(sel.fraction.astype(float), fraction)]
    return sel.sort_values("seed")


# metric -> (the result rows' column of test-image counts, of per-example predictions, top-k)
OUTCOMES = {
    "top1": ("n_test", "pred_test", 1),
    "test_top1": ("n_test", "pred_test", 1),
    "top5": ("n_test", "pred_test", 5),
    "valid_top1": ("n_valid", "pred_valid", 1),
}


def outcomes(sel: pd.DataFrame, metric: str) -> list[np.ndarray] | None:
    """Per seed of `sel`, the (N,) bool per-example outcomes of `metric`; None unless every run stored them on the
    same images (result files written before 2026-12-08 did not)."""
    _, pred, k = OUTCOMES[metric]
    stored = list(sel[pred]) if pred in sel else []
    if not stored or any(not isinstance(x, dict) for x in stored):
        return None
    if len({x["ids_sha256"] for x in stored}) != 1:
        return None
    return [correct(x, k) for x in stored]


def interval_of(sel: pd.DataFrame, metric: str) -> Interval | None:
    """Mean of `metric` over the seeds of `sel` with its 95% interval (results.interval); None: not measured."""
    v = sel[metric].to_numpy(float)
    if not len(v) or np.isnan(v).any():
        return None
    n_col = OUTCOMES[metric][0]
    ns = sel[n_col].to_numpy(float) if n_col in sel else np.full(len(v), np.nan)
    if np.isnan(ns).any():
        return None
    return interval(v, ns.astype(int), outcomes(sel, metric))


def compare(ours: pd.DataFrame, a: str, b: str, metric: str = "top1") -> Difference | None:
    """Row `a` minus row `b` on `metric`, over the seeds both ran: paired over the same images where both stored
    per-example predictions (results.paired_difference), else unpaired; None where either is missing."""
    ra, rb = runs_of(ours, a), runs_of(ours, b)
    if ra.empty or rb.empty:
        return None
    seeds = sorted(set(ra.seed) & set(rb.seed))
    if seeds:
        ra, rb = ra[ra.seed.isin(seeds)], rb[rb.seed.isin(seeds)]
    oa, ob = outcomes(ra, metric), outcomes(rb, metric)
    if seeds and oa is not None and ob is not None and len(oa[0]) == len(ob[0]):
        same = ra[OUTCOMES[metric][1]].iloc[0]["ids_sha256"] == rb[OUTCOMES[metric][1]].iloc[0]["ids_sha256"]
        if same:
            return paired_difference(oa, ob)
    runs = lambda r: (r[metric].to_numpy(float), r[OUTCOMES[metric][0]].to_numpy(int))  # noqa: E731
    if any(np.isnan(runs(r)[0]).any() for r in (ra, rb)):
        return None
    return unpaired_difference(runs(ra), runs(rb))


def _ours_for(ours: pd.DataFrame, label: str, metric: str) -> tuple[str, int]:
    """A cell of ours: mean [95% interval] (n = seeds), or why there is none."""
    if resolve(label)[0] is None:
        return NOT_YET_RUN, 0
    sel = runs_of(ours, label)
    if sel.empty:
        return "not run", 0
    iv = interval_of(sel, metric)
    if iv is None:
        return "not measured on this profile", len(sel)
    return iv.text(), len(sel)


def schedule_overhead(ours: pd.DataFrame) -> pd.DataFrame:
    """Eq. (9) as the paper defines it: (T_aug - T_van) / T_van of the whole training run (every epoch, the
    counterparts' extra steps and the reading of every image included), from the result files' wall times."""
    if ours.empty or not (ours.method == "vanilla").any():
        return pd.DataFrame()
    runs = ours[~ours.control]
    t_van = runs[runs.method == "vanilla"].train_s.mean()
    rows = []
    for (method, fraction), g in runs.groupby(["method", runs.fraction.fillna(-1)], sort=False):
        name = method if fraction < 0 else f"{method} ({fraction:g})"
        rows.append(
            {
                "method": name,
                "runs": len(g),
                "training s (mean)": g.train_s.mean(),
                "Eq. (9) overhead % (whole run)": 100 * (g.train_s.mean() - t_van) / t_van,
            }
        )
    return pd.DataFrame(rows)


def side_by_side(
    table: str,
    ours_by_column: dict[str, pd.DataFrame],
    metrics: list[str],
    extra_labels: tuple[str, ...] | None = None,
) -> pd.DataFrame:
    """The paper's rows and numbers, then ours per column and metric: mean [95% interval] (n = seeds), the interval
    over the seeds and the test images (one seed: the test set's only, said in the cell; diffcore.results).

    Columns are two-level: ("paper: <dataset>", metric) and ("ours: <column>", metric | "seeds").
    A row whose method is not registered reads "not yet run"; registered but without a result, "not run".
    `extra_labels`: our rows the paper's table lacks, marked '—' on the paper side; default: Vanilla (for
    reference) and, in the tables the plan runs it in, the equal-steps control (plan.jobs.CONTROL).
    """
    if extra_labels is None:
        extra_labels = ("Vanilla",) + ((CONTROL,) if table in J.CONTROL_TABLES else ())
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
    """Under each table: per column of ours, the data, model, schedule, device, the training time of its runs and
    the command that made its generated set (each run's own command is in the table of training runs)."""
    rows = []
    for label, col in cols.items():
        ours, build = results[label], Path(col.results).parent
        rows.append(
            {
                "ours": label,
                "produced by": provenance_line(ours),
                "training time (s, all runs)": round(float(ours.train_s.sum()), 1) if not ours.empty else None,
                "generated set made by": relative(col.command("generate", out=col.generated), build),
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
    """bench.time_training rows -> Table 6 layout: method x batch size, Eq. (9) overhead and ms per batch; the
    opt-in fast paths (rows with a variant) as rows of their own, '[opt-in solver=icm]' after the paper's label."""
    from ..plan.paper import row_label

    df = pd.DataFrame(rows)
    df["method (paper row)"] = [row_label(r) for r in rows]
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


def row_status(cols: dict[str, Column], labels: list[str]) -> pd.DataFrame:
    """Per paper row and column of ours: how its run stands to the paper (as the paper / approximated, how / not
    run, why / ours), as the plan has it."""
    rows = []
    for label in labels:
        row = {"method (paper row)": label}
        for name, col in cols.items():
            job = J.train_job(col, label, col.seeds[0])
            row[f"ours: {name}"] = NOT_YET_RUN if job is None else job.note
        rows.append(row)
    return pd.DataFrame(rows)


def overhead_both(step_rows: list[dict], ours: pd.DataFrame, batch_size: int = 16) -> pd.DataFrame:
    """Eq. (9) two ways, side by side: per training step on tensors already on the device (bench.time_training,
    `step_rows`), and over the whole training run as the paper defines it (result files' wall times, `ours`)."""
    from ..plan.paper import label_of

    step = pd.DataFrame([r for r in step_rows if r["batch_size"] == batch_size])
    whole = schedule_overhead(ours)
    out = pd.DataFrame({"method": list(dict.fromkeys(step.method))}) if not step.empty else pd.DataFrame()
    if out.empty:
        return out
    out["method (paper row)"] = out.method.map(label_of)
    out[f"per step, b{batch_size}, tensors on the device (%)"] = out.method.map(
        dict(zip(step.method, step.overhead_pct))
    )
    by_name = (
        {} if whole.empty else dict(zip(whole.method.str.split(" ").str[0], whole["Eq. (9) overhead % (whole run)"]))
    )
    if not whole.empty and "diffcore (1)" in set(whole.method):  # DiffCoRe-Mix-100, as the paper's figure
        by_name["diffcore"] = whole.set_index("method").loc["diffcore (1)", "Eq. (9) overhead % (whole run)"]
    out["whole run, as Eq. (9) defines it (%)"] = out.method.map(by_name)
    return out


def rank_agreement(table: pd.DataFrame) -> pd.DataFrame:
    """Kendall's tau between the paper's ordering of the methods and ours, for every (paper dataset, column of
    ours) pair of a side_by_side table and the metric both have, over the rows with a number on both sides."""
    from scipy.stats import kendalltau

    first = lambda s: pd.to_numeric(s.astype(str).str.extract(r"^(-?\d+(?:\.\d+)?)")[0], errors="coerce")
    papers = [c for c in table.columns if c[0].startswith("paper: ")]
    rows = []
    for ours in (c for c in table.columns if c[0].startswith("ours: ") and c[1] != "seeds"):
        for paper_col in (c for c in papers if c[1] == ours[1]):
            both = pd.DataFrame({"paper": first(table[paper_col]), "ours": first(table[ours])}).dropna()
            tau, p = kendalltau(both.paper, both.ours) if len(both) >= 3 else (float("nan"), float("nan"))
            rows.append(
                {
                    "paper": paper_col[0].removeprefix("paper: "),
                    "ours": ours[0].removeprefix("ours: "),
                    "metric": ours[1],
                    "methods with both numbers": len(both),
                    "Kendall τ": "—" if np.isnan(tau) else f"{tau:+.2f}",
                    "p": "—" if np.isnan(p) else f"{p:.2f}",
                }
            )
    return pd.DataFrame(rows)
