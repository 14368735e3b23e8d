"""The plan: every job a profile runs for each table and figure — generated sets, DiffuseMix's edited sets, training
runs — with its fully resolved experiment, the table cells it feeds and its estimated GPU-hours.

    python -m diffcore plan --profile paper [--table 3] [--json]     # seconds; no weights, data or GPU needed

The notebooks (through diffcore.book), `reproduce` and `diffcore plan --run` run these very jobs, so what is
planned is what runs; tests/test_plan.py checks the paper profile's plan against the paper's setup (plan/spec.py).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from .. import experiment as X
from ..data import PAPER_DATASETS
from ..engine.checks import json_text
from ..estimate import H100_S_PER_IMG, PAPER_DISCARD, TRAIN_IMAGES
from ..profiles import profile as preset
from . import paper as P

CONTROL = P.CONTROL  # our row the paper lacks: vanilla for as many steps as DiffCoRe-Mix-100
CONTROL_TABLES = ("Table 2", "Table 3", "Table 4")

# Per table and profile: our columns, {label: experiment overrides}; "tag" names the results folder apart.
# embedded: the bundled digits stand in for every dataset, the digits CNN for every network, short schedules.
# paper: the paper's datasets and networks (plan/spec.py cites each value); everything else is the paper profile's.
SETUPS: dict[str, dict[str, dict[str, dict]]] = {
    "Table 2": {
        "embedded": {"digits, 10 per class": dict(dataset="digits", few_shot=10, epochs=30)},
        "paper": {
            "Flowers-102, 10 per class": dict(
                dataset="flowers102", few_shot=10, arch="preactresnet34", augment="resize-crop", extra_splits=("val",)
            )
        },
    },
    "Table 3": {
        "embedded": {"digits, 40 per class": dict(dataset="digits", few_shot=40, epochs=6)},
        "paper": {
            "ImageNet-1K": dict(dataset="imagenet-1k", arch="resnet50", augment="imagenet"),
            "Tiny ImageNet-200": dict(
                dataset="tiny-imagenet-200", arch="preactresnet18", image_size=64, augment="small"
            ),
            "CIFAR-100": dict(dataset="cifar100", arch="preactresnet18", image_size=32, augment="small"),
        },
    },
    "Table 4": {
        "embedded": {"digits, 40 per class": dict(dataset="digits", few_shot=40, epochs=6)},
        "paper": {
            "CUB": dict(dataset="cub-200-2011", arch="densenet121", augment="resize-crop"),
            "Cars": dict(dataset="stanford-cars", arch="densenet121", augment="resize-crop"),
            "Caltech": dict(dataset="caltech101", arch="densenet121", augment="resize-crop"),
        },
    },
    "Table 5": {
        "embedded": {
            "digits, 10 per class, CNN pre-trained on digits 0-4": dict(
                dataset="digits", few_shot=10, epochs=20, lr=0.01, pretrained_lr_scale=0.1, tag="finetune"
            )
        },
        "paper": {
            "CUB-Birds": dict(
                dataset="cub-200-2011",
                arch="wide_resnet101_2",
                augment="resize-crop",
                pretrained_lr_scale=0.1,
                tag="finetune",
            ),
            "Flowers-102": dict(
                dataset="flowers102",
                arch="wide_resnet101_2",
                augment="resize-crop",
                pretrained_lr_scale=0.1,
                tag="finetune",
            ),
        },
    },
    "Table 7": {
        "embedded": {"digits, 40 per class": dict(dataset="digits", few_shot=40, epochs=6)},
        "paper": {"Stanford Cars": dict(dataset="stanford-cars", arch="resnet50", augment="resize-crop")},
    },
}
TABLES = tuple(SETUPS)
FINE_TUNES = "pretrained_lr_scale"  # a setup with it fine-tunes a pretrained network (Table 5)
TRAINING_KEYS = ("arch", "epochs", "batch_size", "lr", "image_size", "augment")  # a setting that makes new runs
# Table 5 on the paper profile fine-tunes torchvision's ImageNet-1K Wide-ResNet-101-2 (IMAGENET1K_V1).
WRN_WEIGHTS = "wide_resnet101_2.pth"
WRN_HINT = (
    f"Table 5 needs the ImageNet-pretrained wide_resnet101_2 weights as a local torchvision file: put "
    f"torchvision's Wide_ResNet101_2_Weights.IMAGENET1K_V1 (wide_resnet101_2-32ee1156.pth) at "
    f"<weights>/{WRN_WEIGHTS} (reproduce --weights <weights>) or pass pretrained=<file>"
)


EDITOR = "instruct-pix2pix"  # <weights>/instruct-pix2pix/: DiffuseMix's editor, a local diffusers folder


def paper_paths(weights: str | None, data: str | None) -> dict:
    """--weights / --data -> {"overrides", "pretrained", "edit", "data_roots"}, with the file names README's "Running
    the paper profile" uses; Table 5's weights and DiffuseMix's editor where the folder holds them."""
    out: dict = {}
    if weights:
        w = Path(weights)
        out["overrides"] = {
            "model": str(w / "cosxl.safetensors"),
            "config_dir": str(w / "sdxl-base-1.0"),
            "vae": str(w / "sdxl-vae-fp16-fix"),
            "clip_pretrained": str(w / "clip-vit-b-32" / "open_clip_model.safetensors"),
        }
        if (w / WRN_WEIGHTS).is_file():
            out["pretrained"] = str(w / WRN_WEIGHTS)
        if (w / EDITOR).is_dir():
            out["edit"] = {"model": str(w / EDITOR)}
    if data:
        out["data_roots"] = {name: str(Path(data) / name) for name in PAPER_DATASETS}
    return out


# ---------------------------------------------------------------- columns: one experiment per column of a table
@dataclass
class Column:
    """One of our columns of a table: its experiment (settings shared by every run of the table) and its folders.

    generated: the counterparts (`diffcore generate`), for methods that use them. edits: DiffuseMix's edited set,
    for methods whose `uses == "edits"`; made when `make_edits`, else its rows stay "not run". requires: a file
    the column's runs need that is not there (Table 5's pretrained weights): its training jobs are refused.
    """

    label: str
    exp: X.Experiment
    results: str
    generated: str | None = None
    edits: str | None = None
    seeds: list[int] = field(default_factory=lambda: [0])
    make_edits: bool = False
    table: str | None = None
    requires: str | None = None

    def command(self, command: str = "train", **extra) -> str:
        return X.command_line(self.exp, command, **extra)


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
    preset(profile_name)  # an unknown profile: one line naming it, before anything else
    chosen = setups or SETUPS[table][profile_name]
    out = {}
    for label, s in chosen.items():
        # pretrained: the weights Table 5 fine-tunes (`diffcore plan --weights` finds them), for the columns that
        # fine-tune only (a pretrained_lr_scale), never a network trained from scratch in another table
        given = {k: v for k, v in settings.items() if v is not None and (k != "pretrained" or FINE_TUNES in s)}
        s = {**s, **given}
        gen, res = column_dirs(out_dir, profile_name, s)
        over = {k: v for k, v in s.items() if k not in ("tag", "edits")}
        requires = None
        if (
            table == "Table 5"
            and profile_name == "paper"
            and not (over.get("pretrained") and Path(over["pretrained"]).is_file())
        ):
            over.pop("pretrained", None)  # planned without; its runs are refused until the file is there
            requires = WRN_HINT
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
            table=table,
            requires=requires,
        )
    return out


# ---------------------------------------------------------------- jobs
@dataclass(frozen=True)
class Job:
    """One unit of work: make a generated set (`generate`, `edit`) or train one row's classifier at one seed."""

    kind: str  # "generate" | "edit" | "train"
    table: str | None  # "Table 3"; None for a column made outside a table (the method page, Fig. 7)
    column: str  # our column label ("CIFAR-100")
    row: str  # the paper's row label ("Mixup"), or "counterparts" / "edits"
    seed: int | None  # training seed (None for a set)
    exp: X.Experiment  # every step's resolved config
    out: str  # the set's folder, or the result file
    needs: str | None = None  # the set a training run reads (a generate/edit job's `out`)
    feeds: tuple[str, ...] = ()  # the table cells its numbers go to ("Table 3 / CIFAR-100 / Mixup / top-1")
    gpu_hours: float | None = None  # on one GPU: estimated for an H100 (train_hours, generation_hours) or from a
    # rehearsal's measured costs (with_costs); None: neither
    hours_from: str = "estimated"  # "estimated", or "measured on <device>" (diffcore plan --costs)
    note: str = ""  # how it stands to the paper: "as the paper", "approximated: ...", "not run: ..."
    refused: str | None = None  # why it cannot run here (a missing input), said in one line when it is run

    def command(self) -> str:
        if self.kind == "train":
            return X.command_line(self.exp, "train", generated=self.needs, out=self.out)
        return X.command_line(self.exp, self.kind, out=self.out)


def result_path(col: Column, method: str, fraction: float | None, seed: int, control: bool = False) -> Path:
    name = X.run_name(method, fraction) + ("-equal-steps" if control else "")
    return Path(col.results) / f"{name}-seed{seed}.json"


def metrics_of(table: str | None) -> list[str]:
    if table is None:
        return []
    return [P.METRIC_NAMES.get(m, m) for m in dict.fromkeys(P.paper_numbers(table).metric)]


def train_job(col: Column, label: str, seed: int) -> Job | None:
    """The training job of one paper row in one column at one seed; None when no registered method is the row."""
    control = label == CONTROL
    method, fraction, hp = P.resolve(label)
    if method is None:
        return None
    uses = P.uses_set(method)
    fraction = fraction if uses else None
    src = {"counterparts": col.generated, "edits": col.edits}.get(uses) if uses else None
    if control:
        src = col.generated  # its length is DiffCoRe-Mix-100's, read from the generated set
    hp = {**method_args(col.table, col.exp.dataset, method), **hp}
    exp = col.exp.replace(method=method, fraction=fraction, seed=seed, method_args=hp or None)
    note, refused = fidelity(col, method, uses, control, label)
    cells = tuple(f"{col.table} / {col.label} / {label} / {m}" for m in metrics_of(col.table))
    return Job(
        "train",
        col.table,
        col.label,
        label,
        seed,
        exp,
        str(result_path(col, method, fraction, seed, control)),
        needs=src,
        feeds=cells,
        gpu_hours=train_hours(exp, (fraction or 1.0) if uses else 0.0, control),
        note=note,
        refused=refused,
    )


def set_jobs(col: Column, methods: set[str]) -> list[Job]:
    """The column's generated set (for DiffCoRe-Mix's rows, the control and Table 7's) and DiffuseMix's edited
    set, when a row needs them."""
    out = []
    uses = {P.uses_set(m) for m in methods}
    if "counterparts" in uses:
        out.append(
            Job(
                "generate",
                col.table,
                col.label,
                "counterparts",
                None,
                col.exp.replace(fraction=1.0),
                col.generated,
                feeds=(f"{col.table} / {col.label} / rows with counterparts",),
                gpu_hours=generation_hours(col.exp),
                note=set_note(col.exp),
            )
        )
    if "edits" in uses:
        refused = None if col.make_edits else "no editor given: pass edit={'model': '<local InstructPix2Pix folder>'}"
        out.append(
            Job(
                "edit",
                col.table,
                col.label,
                "edits",
                None,
                col.exp,
                str(col.edits),
                feeds=(f"{col.table} / {col.label} / DiffuseMix",),
                note=set_note(col.exp, edit=True),
                refused=refused,
            )
        )
    return out


def jobs(
    profile_name: str = "paper",
    tables: list[str] | None = None,
    out_dir: str | Path | None = None,
    seeds: list[int] | None = None,
    data_roots: dict | None = None,
    overrides: dict | None = None,
    edit: dict | None = None,
    **settings,
) -> list[Job]:
    """Every job of `tables` (default: all) on a profile: per column its sets first, then each row at each seed."""
    out_dir = out_dir or f"runs/{profile_name}"
    seeds = seeds or preset(profile_name)["seeds"][:1]
    out: list[Job] = []
    for table in tables or TABLES:
        cols = columns(
            table, profile_name, out_dir, seeds, data_roots=data_roots, overrides=overrides, edit=edit, **settings
        )
        labels = row_labels(table)
        for col in cols.values():
            trains = [j for label in labels for seed in col.seeds if (j := train_job(col, label, seed))]
            out += set_jobs(col, {"diffcore" if j.row == CONTROL else j.exp.train.method for j in trains}) + trains
    return out


def row_labels(table: str, methods="paper") -> list[str]:
    """'paper': every row of the paper's table, plus Vanilla where it has no un-augmented row and, in Tables 2-4,
    the equal-steps control."""
    labels = P.row_labels(table, methods)
    return labels + ([CONTROL] if methods == "paper" and table in CONTROL_TABLES else [])


# ---------------------------------------------------------------- per-table method hyperparameters
# Where a comparison method's published setting for a table's dataset differs from the method's own default (its
# docstring cites that one): {table: {dataset: {method: {hyperparameter: value}}}}. plan/spec.py cites each.
# GuidedMixup's FGVC code: its PuzzleMix keeps neighbourhood 4 at 224 px (the kit's auto rule gives 2 there, as
# PuzzleMix's own ImageNet script), clean_lam 1; its Co-Mixup reads alpha 1
_FGVC = {"mixup": {"alpha": 0.2}, "puzzlemix": {"clean_lam": 1.0, "neigh_size": 4}, "comixup": {"alpha": 1.0}}
_SNAPMIX = {"mixup": {"prob": 0.5}, "cutmix": {"alpha": 3.0}}  # SnapMix's fine-tuning runs
METHOD_ARGS: dict[str, dict[str, dict[str, dict]]] = {
    "Table 2": {"flowers102": _FGVC},
    "Table 3": {
        "cifar100": {"puzzlemix": {"t_size": 4, "neigh_size": 4}},
        "tiny-imagenet-200": {
            "mixup": {"alpha": 0.2},
            "manifold-mixup": {"alpha": 0.2},
            "cutmix": {"alpha": 0.2},
            "puzzlemix": {"clean_lam": 1.0},
            "guided-ap": {"clean_lam": 1.0},
        },
        "imagenet-1k": {
            "mixup": {"alpha": 0.2},
            "augmix": {"severity": 1.0},
            "pixmix": {"beta": 4.0, "severity": 1.0},
            "puzzlemix": {"beta": 1.5, "neigh_size": 2, "clean_lam": 1.0},
            "comixup": {"part": 16, "niter": 3},
        },
    },
    "Table 4": {"cub-200-2011": _FGVC, "stanford-cars": _FGVC, "caltech101": _FGVC},
    "Table 5": {"cub-200-2011": _SNAPMIX, "flowers102": _SNAPMIX},
}


def method_args(table: str | None, dataset: str, method: str) -> dict:
    """The hyperparameters a method runs with in a table on a dataset (empty: the method's defaults)."""
    return dict(METHOD_ARGS.get(table, {}).get(dataset, {}).get(method, {}))


# ---------------------------------------------------------------- how each job stands to the paper
APPROXIMATED = {  # method -> how diffcore's run departs from its authors' (docstrings and the fidelity page say more)
    "saliencymix": "OpenCV's saliency of the 8-bit image; the authors' code passed it the normalised float tensor "
    "(saliency=opencv-float reproduces that)",
    "pixmix": "100 procedural fractals instead of the ~14,000 downloaded mixing images",
}


def fidelity(col: Column, method: str, uses: str | None, control: bool, label: str = "") -> tuple[str, str | None]:
    """(how a run stands to the paper, why it cannot run here or None)."""
    if col.requires:
        return "not run: " + col.requires, col.requires
    if uses == "edits" and not col.make_edits:
        return "not run: no InstructPix2Pix editor given (edit={'model': ...})", "no editor given"
    if col.exp.profile == "embedded":
        return "approximated: embedded stand-ins (digits, tiny models, a few CPU epochs)", None
    if control:
        return "ours: a control the paper lacks (vanilla for DiffCoRe-Mix-100's number of steps)", None
    if col.table and label not in P.paper_wide(col.table).index:
        return "ours: a reference row the paper's table lacks", None
    if method in APPROXIMATED:
        return "approximated: " + APPROXIMATED[method], None
    return "as the paper", None


def set_note(exp: X.Experiment, edit: bool = False) -> str:
    if exp.profile == "embedded":
        return "approximated: the tiny stand-in " + ("editor" if edit else "text-to-image model and CLIP")
    return "as the paper (the authors' settings)"


# ---------------------------------------------------------------- GPU-hours, estimated
# Measured on one H100 (shared/REFERENCE.md, 2026-11-24): a ResNet-50 training step at 224 px, batch 16, bf16,
# takes 24 ms (launch-bound: about the same down to smaller networks). Other networks scale by their FLOPs.
RESNET50_STEP_S, RESNET50_GFLOP = 0.024, 4.09


def train_images(exp: X.Experiment) -> int | None:
    """Training images of the experiment's dataset (a few-shot set: k per class), or None if unknown here."""
    if exp.dataset not in TRAIN_IMAGES:
        return None
    if exp.few_shot:
        return exp.few_shot * PAPER_DATASETS[exp.dataset]["num_classes"]
    return TRAIN_IMAGES[exp.dataset]


def model_gflops(arch: str, image_size: int, num_classes: int = 1000) -> float:
    """Forward GFLOPs of one image, counted on the meta device (nothing allocated)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ..models import build_model

    with torch.device("meta"):
        net = build_model(arch, num_classes, image_size=image_size).eval()
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            net(torch.empty(1, 3, image_size, image_size))
    return counter.get_total_flops() / 2e9  # multiply-adds -> FLOPs counted once each by torch: /2 for MACs


_GFLOPS: dict = {}


def train_steps(exp: X.Experiment, fraction: float, control: bool = False) -> int | None:
    """Optimizer steps of one paper-scale training run: epochs x batches of every real image plus the pairs of
    `fraction` (the equal-steps control: twice the real images); None where the dataset's size is unknown here."""
    n = train_images(exp)
    if n is None:
        return None
    per_epoch = n * (2 if control else 1 + fraction)
    return exp.train.epochs * math.ceil(per_epoch / exp.train.batch_size)


def train_hours(exp: X.Experiment, fraction: float, control: bool = False) -> float | None:
    """Estimated H100 hours of one training run: steps x the measured ResNet-50 step time, scaled by FLOPs (x3 for
    forward + backward is in the measured step). An epoch is every real image plus the pairs of `fraction`."""
    steps = train_steps(exp, fraction, control)
    if steps is None or exp.profile != "paper":
        return None
    key = (exp.train.model, exp.train.image_size)
    if key not in _GFLOPS:
        _GFLOPS[key] = model_gflops(*key)
    return steps * RESNET50_STEP_S * max(1.0, _GFLOPS[key] / RESNET50_GFLOP) / 3600


def generation_hours(exp: X.Experiment) -> float | None:
    """Estimated H100 hours of a generated set: every image, at the paper's discard rate, at the measured stock
    s/img at the authors' settings (estimate.H100_S_PER_IMG)."""
    n = train_images(exp)
    if n is None or exp.profile != "paper":
        return None
    return n / (1 - PAPER_DISCARD) * H100_S_PER_IMG / 3600


# ---------------------------------------------------------------- GPU-hours, measured by a rehearsal
def read_costs(path: str | Path) -> dict:
    """A rehearsal's costs.json (`diffcore rehearse --size full`), checked: a tiny rehearsal's seconds are those of
    the stand-ins' toy widths, never a paper job's, so they are refused."""
    try:
        costs = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"costs={path}: no such file (`diffcore rehearse` writes <out>/costs.json)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"costs={path}: not JSON ({e}); a rehearsal writes it whole or not at all") from None
    if not isinstance(costs, dict) or costs.get("kind") != "diffcore-rehearsal" or "measured" not in costs:
        raise ValueError(f"costs={path}: not a rehearsal's costs.json (written by `diffcore rehearse`)")
    if costs.get("size") != "full":
        raise ValueError(
            f"costs={path}: measured by a {costs.get('size')!r} rehearsal, whose models are toy-sized; the paper's "
            f"costs come from `diffcore rehearse --size full` on the GPU that will run the plan"
        )
    return costs


def _measured_hours(job: Job, row: dict) -> float | None:
    """A paper job's hours from the measured seconds per unit of the same job at rehearsal scale: per optimizer step
    x the paper run's steps; per generated image x the training images / (1 - the paper's discard rate); per edit x
    the images x DiffuseMix's prompts."""
    per = row.get("s_per_unit")
    n = train_images(job.exp)
    if per is None or n is None:
        return None
    if job.kind == "train":
        method = job.exp.train.method
        uses = P.uses_set(method)
        steps = train_steps(job.exp, (job.exp.train.fraction or 1.0) if uses else 0.0, job.row == CONTROL)
        return None if steps is None else per * steps / 3600
    if job.kind == "generate":
        return per * n / (1 - PAPER_DISCARD) / 3600
    return per * n * len(job.exp.edit.prompts) / 3600


def with_costs(plan: list[Job], costs: dict) -> list[Job]:
    """The plan with each job's hours from the rehearsal's measurement of the same job (kind, table, column, row),
    and where the rehearsal ran out of memory, that said with the largest batch that fits."""
    device = costs.get("provenance", {}).get("device_name") or costs.get("provenance", {}).get("device", "?")
    key = lambda r: (r["kind"], r["table"], r["column"], r["row"])  # noqa: E731 - the seed does not change a cost
    measured = {key(r): r for r in costs["measured"]}
    failed = {key(r): r for r in costs.get("failures", [])}
    out = []
    for job in plan:
        k = key({"kind": job.kind, "table": job.table, "column": job.column, "row": job.row})
        if k in failed:
            f = failed[k]
            fits = f.get("largest_batch_that_fits")
            note = f"failed on {device}: {f['error']}" + (f"; largest batch that fits: {fits}" if fits else "")
            out.append(dataclasses.replace(job, gpu_hours=None, hours_from=note))
        elif k in measured and (hours := _measured_hours(job, measured[k])) is not None:
            out.append(dataclasses.replace(job, gpu_hours=hours, hours_from=f"measured on {device}"))
        else:
            out.append(job)
    return out


# ---------------------------------------------------------------- what `diffcore plan` prints
def as_json(plan: list[Job]) -> str:
    return json_text(
        [
            {
                "kind": j.kind,
                "table": j.table,
                "column": j.column,
                "row": j.row,
                "seed": j.seed,
                "out": j.out,
                "needs": j.needs,
                "feeds": list(j.feeds),
                "gpu_hours": j.gpu_hours,
                "hours_from": j.hours_from,
                "note": j.note,
                "refused": j.refused,
                "command": j.command(),
                "settings": j.exp.settings(),
            }
            for j in plan
        ],
        indent=1,
    )


def _hours_from(jobs: list[Job]) -> str:
    """'H100, estimated', or how many of the jobs' hours a rehearsal measured, and on what."""
    measured = [j.hours_from for j in jobs if j.hours_from.startswith("measured")]
    if not measured:
        return "H100, estimated"
    return f"{len(measured)} of {len(jobs)} {sorted(set(measured))[0]}, the rest estimated for an H100"


def as_text(plan: list[Job]) -> str:
    """A table per paper table: each job, its key settings, its GPU-hours; the totals."""
    lines, total = [], 0.0
    for table in dict.fromkeys(j.table for j in plan):
        rows = [j for j in plan if j.table == table]
        hours = sum(j.gpu_hours or 0.0 for j in rows)
        total += hours
        lines += [
            f"\n## {table}: {len(rows)} jobs, ~{hours:,.1f} GPU-hours ({_hours_from(rows)})",
            "| job | column | row | seed | network, input, epochs, batch, lr | GPU-h | GPU-h from | status |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for j in rows:
            t = j.exp.train
            gen = j.exp.edit if j.kind == "edit" else j.exp.generate
            what = (
                f"{t.model}, {t.image_size} px, {t.epochs} ep, b{t.batch_size}, lr {t.lr:g}"
                if j.kind == "train"
                else f"{gen.steps} steps, w={gen.guidance_scale:g}, {gen.size} px, b{gen.batch_size}"
            )
            gpu = "—" if j.gpu_hours is None else f"{j.gpu_hours:,.2f}"
            seed = "" if j.seed is None else j.seed
            src = "" if j.gpu_hours is None and j.hours_from == "estimated" else j.hours_from
            lines.append(f"| {j.kind} | {j.column} | {j.row} | {seed} | {what} | {gpu} | {src} | {j.note} |")
    lines.append(
        f"\ntotal: {len(plan)} jobs, ~{total:,.1f} GPU-hours on one GPU ({_hours_from(plan)}; estimates: generation "
        f"at the measured H100 {H100_S_PER_IMG} s/img and {100 * PAPER_DISCARD:.1f}% discarded; training at the "
        f"measured H100 ResNet-50 step time scaled by FLOPs; `diffcore plan --json` has every setting)"
    )
    return "\n".join(lines)


# ---------------------------------------------------------------- running a job
def control_epochs(job: Job) -> int:
    """The equal-steps control's epochs: DiffCoRe-Mix-100's epoch is every real image plus every kept pair, so
    vanilla runs epochs x (real + pairs) / real to take as many optimizer steps (same batch size)."""
    info = json.loads((Path(job.needs) / "run.json").read_text())
    real, pairs = info["summary"]["sources"], info["summary"]["kept"]
    return max(1, round(job.exp.train.epochs * (real + pairs) / real))


def finished(job: Job) -> bool:
    """Its output is there: a set's run.json (written last, once every shard is merged), or a training's result
    file (written once the run has ended)."""
    if job.kind == "train":
        return Path(job.out).is_file()
    return (Path(job.out) / "run.json").is_file()


def run_job(job: Job, data=None, progress: bool = False):
    """Run one job unless its output is there (a finished set, a result file); returns the trained model's
    Trained for a training job that ran, else None. A job that cannot run here is refused in one line.

    Under a Slurm array (SLURM_ARRAY_TASK_ID) a set job makes only the task's shard of the set (engine.distributed)
    and `merge_job` finishes it once every task is done; a training job runs whole in any case."""
    if job.refused:
        raise ValueError(f"{job.table} / {job.column} / {job.row}: {job.refused}")
    if finished(job):
        return None
    if job.kind == "generate":
        X.generate(job.exp, job.out, progress=progress)
        return None
    if job.kind == "edit":
        X.edit(job.exp, job.out, progress=progress)
        return None
    exp = job.exp.replace(epochs=control_epochs(job)) if job.row == CONTROL else job.exp
    return X.train(exp, job.out, None if job.row == CONTROL else job.needs, data, progress=progress)


def merge_job(job: Job) -> None:
    """`diffcore merge` for a set job made by a Slurm array: its shards -> manifest.csv and run.json (nothing to do
    where run.json is there). Refused in one line while a shard is unfinished."""
    if job.kind == "train":
        raise ValueError(f"job {job.out}: a training run has no shards to merge; only generate and edit jobs do")
    if job.refused:
        raise ValueError(f"{job.table} / {job.column} / {job.row}: {job.refused}")
    if not finished(job):
        (X.merge if job.kind == "generate" else X.merge_edits)(job.exp, job.out)


# ---------------------------------------------------------------- a job by its name
def job_id(job: Job, out_dir: str | Path) -> str:
    """A job's stable name: its output's path relative to the build folder (`generated-digits-10shot`,
    `results-digits-10shot-30ep/vanilla-seed0.json`), the absolute path where it lies outside. Unlike an index into
    the plan, it names the same job whichever tables are planned and whatever rows a newer diffcore adds, and two
    tables that share a run (same set, same result file) share its name, so it runs once."""
    out, build = Path(job.out).absolute(), Path(out_dir).absolute()
    return out.relative_to(build).as_posix() if out.is_relative_to(build) else out.as_posix()


# What a set's files depend on (the rest of an experiment, e.g. the network a table trains, does not change them)
SET_SETTINGS = {
    "generate": ("dataset", "data_root", "few_shot", "prompt", "generate", "filter", "counterparts"),
    "edit": ("dataset", "data_root", "few_shot", "edit"),
}


def what_it_makes(job: Job) -> dict:
    """The settings a job's output depends on: a set's generation settings; a training run's every setting."""
    settings = job.exp.settings()
    keys = SET_SETTINGS.get(job.kind, tuple(settings))
    return {"kind": job.kind, "needs": job.needs, **{k: settings[k] for k in keys}}


def unique_jobs(plan: list[Job], out_dir: str | Path) -> dict[str, Job]:
    """{job id: job}, each output once: tables share runs and sets (Tables 4 and 5 of the paper profile generate
    CUB's counterparts into one folder). Two jobs that would make one output differently are refused in one line."""
    out: dict[str, Job] = {}
    for job in plan:
        name = job_id(job, out_dir)
        if name in out and (a := what_it_makes(out[name])) != (b := what_it_makes(job)):
            differ = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
            raise ValueError(f"job {name}: planned twice with other settings ({', '.join(differ)} differ)")
        out.setdefault(name, job)
    return out


def find_job(plan: list[Job], name: str, out_dir: str | Path) -> Job:
    """The plan's job of that name (job_id), or a one-line refusal naming a few of the names there are."""
    named = unique_jobs(plan, out_dir)
    if name not in named:
        some = ", ".join(list(named)[:4])
        raise ValueError(
            f"job={name!r}: no such job in this plan; expected an output path relative to --out {out_dir}, "
            f"e.g. {some} ({len(named)} in all)"
        )
    return named[name]
