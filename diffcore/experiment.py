"""One experiment: the frozen config of every step, made from a profile plus overrides, and one function per step
that runs it and returns what it made. The command line, the notebooks, the book and `reproduce` all go through
here, so an experiment is described once.

    from diffcore import experiment as X

    exp = X.experiment("embedded", few_shot=10, epochs=30)   # every step's config, checked (a bad value fails here)
    info = X.generate(exp, "runs/x/generated")                # counterparts: Eq. (4) + the tau_k filter (Eq. 5)
    run = X.train(exp.replace(method="diffcore", fraction=0.5), "runs/x/diffcore-50.json", generated="runs/x/generated")
    run.model, run.metrics                                    # the trained classifier and its top-1 / top-5
    table = X.main_job(exp, "runs/x")                         # vanilla, DiffCoRe-Mix-50 and -100 over the seeds

Overrides use one flat name per setting, the name of the config field it sets (`steps`, `z_pairs`, `epochs`,
`lam_alpha`, ...): `NAMES` maps each to its (step, field). Where two steps have a field of the same name, one of
them goes by another name (`RENAMED`: `gen_batch_size`, `clip_batch_size`, `arch`, `mix_mode`), or one name
sets both (`SHARED`: `seed`, `fraction`, `selection_seed`). A whole step can also be given as a dict of its raw
fields: `experiment("paper", edit={"model": "/w/instruct-pix2pix"})`. The command-line flags are these names
(`--gen-batch-size` is `gen_batch_size`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import data as D
from . import train as T
from .counterparts import CounterpartConfig, check_out_dir, finish_counterparts, make_counterparts
from .edit import EditConfig, finish_edits, load_editor, make_edits
from .engine.checks import check_fields, json_text
from .engine.distributed import World, backend_for, device_for, from_main, init_process_group, world_from_env
from .engine.runtime import resolve_device, resolve_dtype
from .filter import FilterConfig, check_clip_files, load_clip
from .generate import GenerateConfig, check_guidance, check_model_path, load_pipeline
from .mix import MixConfig
from .preview import save_preview
from .profiles import profile as preset
from .prompts import DATASET_TYPE_WORDS, PromptConfig, final_negative, log_dropped, negative_key_for, negative_prompt
from .results import load_results, markdown, results_table

log = logging.getLogger("diffcore")

# The steps an experiment is made of, in the order they run, and their config classes.
STEPS: dict[str, type] = {
    "prompt": PromptConfig,
    "generate": GenerateConfig,
    "filter": FilterConfig,
    "counterparts": CounterpartConfig,
    "train": T.TrainConfig,
    "mix": MixConfig,
    "edit": EditConfig,
}
FLAT_STEPS = ("prompt", "generate", "filter", "counterparts", "train", "mix")  # edit's fields: only as edit={...}
# A field whose name another step also uses, and the name it goes by instead.
RENAMED = {
    ("generate", "batch_size"): "gen_batch_size",
    ("filter", "batch_size"): "clip_batch_size",
    ("train", "model"): "arch",
    ("mix", "mode"): "mix_mode",
    ("generate", "run_seed"): "seed",
}
# Names that set the same value in several steps (one run seed; one fraction of images with counterparts).
SHARED = ("seed", "fraction", "selection_seed")
NESTED = {("train", "mix")}  # a step inside another step's config: set through its own fields


def _names() -> dict[str, list[tuple[str, str]]]:
    """flat name -> [(step, field)]: every field of the flat steps, renamed where RENAMED says."""
    out: dict[str, list[tuple[str, str]]] = {}
    for step in FLAT_STEPS:
        for f in dataclasses.fields(STEPS[step]):
            if (step, f.name) not in NESTED:
                out.setdefault(RENAMED.get((step, f.name), f.name), []).append((step, f.name))
    ambiguous = {n: t for n, t in out.items() if len(t) > 1 and n not in SHARED}
    if ambiguous:  # a new field clashing with another step's: give it a name in RENAMED
        raise RuntimeError(f"setting names used by several steps: {ambiguous}")
    return out


NAMES = _names()


@dataclass(frozen=True)
class Experiment:
    """What one run of the method is: the data, and every step's frozen config. Build it with `experiment()`."""

    profile: str  # "embedded" or "paper": the presets the overrides start from (profiles.py)
    dataset: str  # digits | folder | a paper dataset (data.PAPER_DATASETS)
    data_root: str | None  # local dataset root (nothing is downloaded)
    few_shot: int | None  # k training images per class (Table 2: 10); None: all
    test_split: str | None  # evaluation split; None: test, or val where there is no test
    extra_splits: tuple[str, ...]  # evaluated too, each beside the test split (Table 2: the validation split)
    io_threads: int  # threads decoding sources and writing PNGs while the GPU generates (0: in line)
    seeds: tuple[int, ...]  # training seeds of the main job
    fractions: tuple[float, ...]  # the DiffCoRe-Mix variants of the main job: 0.5 (-50), 1.0 (-100)
    prompt: PromptConfig  # P_c and P_n, Eq. (4)
    generate: GenerateConfig  # the text-to-image model and its sampling, Eq. (4)
    filter: FilterConfig  # CLIP, tau_k (Eq. 5) and the retry cap
    counterparts: CounterpartConfig  # which images get a counterpart, chunking
    train: T.TrainConfig  # the classifier, its recipe, the method and its mixing (train.mix: Eq. 6-8)
    edit: EditConfig  # DiffuseMix's edited set (the comparison method's own generation)
    overrides: dict = field(default_factory=dict, compare=False)  # what was given to experiment(), for replace()

    def __post_init__(self):
        check_fields(self)  # the step configs checked themselves; here the experiment's own fields
        bad = [f for f in self.fractions if not 0 < f <= 1]  # else main_job would fail after the generation
        if bad:
            raise ValueError(f"fractions={self.fractions}: expected values in (0, 1], e.g. 0.5 for DiffCoRe-Mix-50")

    def replace(self, **overrides) -> Experiment:
        """The same experiment with more overrides (same names as experiment()); profile-derived defaults follow,
        e.g. a new dataset gets its own prompt words unless they were given."""
        return experiment(overrides.pop("profile", self.profile), **{**self.overrides, **overrides})

    @property
    def device(self) -> str:
        return self.train.device

    def settings(self) -> dict:
        """Every step's settings as plain JSON values (what `diffcore info` prints)."""
        return json.loads(
            json.dumps(
                {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "overrides"},
                default=_plain,
            )
        )


def _plain(obj):
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else str(obj)


TOP = ("dataset", "data_root", "few_shot", "test_split", "extra_splits", "io_threads", "seeds", "fractions")


def experiment(profile: str = "embedded", **overrides) -> Experiment:
    """The experiment of a profile with `overrides` (flat names, see NAMES; or a step as a dict of its fields).

    Each config checks its values as it is built, so a bad override fails here, before any data is read.
    A value of None means "not given" (the profile's value stays)."""
    p = preset(profile)
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(given) - set(NAMES) - set(TOP) - set(STEPS))
    if unknown:
        raise ValueError(
            f"unknown setting(s) {unknown}; expected a name of experiment.NAMES (e.g. steps, epochs, "
            f"arch), one of {list(TOP)}, or a step as a dict: {list(STEPS)}"
        )
    by_step: dict[str, dict] = {step: dict(given.get(step, {})) for step in STEPS}
    for name, value in given.items():
        for step, name_in_step in NAMES.get(name, []):
            by_step[step][name_in_step] = value
    dataset = given.get("dataset", p["dataset"])
    if dataset == "digits" and given.get("data_root") is not None:  # it would be ignored: digits read no root
        raise ValueError(
            f"data_root={given['data_root']}: the digits ship with scikit-learn and read no data root; for the "
            f"images under it pass dataset='folder' (--dataset folder --data-root {given['data_root']})"
        )
    by_dataset = {
        "dataset_type": DATASET_TYPE_WORDS.get(dataset, "natural"),  # what the paper's template says
        "negative_key": negative_key_for(dataset),
    }
    mix = MixConfig(**by_step["mix"])
    return Experiment(
        profile=profile,
        dataset=dataset,
        data_root=given.get("data_root"),
        few_shot=given.get("few_shot", p["few_shot"]),
        test_split=given.get("test_split"),
        extra_splits=tuple(given.get("extra_splits", ())),
        io_threads=given.get("io_threads", 4),
        seeds=tuple(given.get("seeds", p["seeds"])),
        fractions=tuple(given.get("fractions", p["fractions"])),
        prompt=PromptConfig(**{**p["prompt"], **by_dataset, **by_step["prompt"]}),
        generate=GenerateConfig(**{**p["generate"], **by_step["generate"]}),
        filter=FilterConfig(**{**p["filter"], **by_step["filter"]}),
        counterparts=CounterpartConfig(**{**p["counterparts"], **by_step["counterparts"]}),
        train=T.TrainConfig(**{**p["train"], **by_step["train"], "mix": mix}),
        edit=EditConfig(**{**p["edit"], **by_step["edit"]}),
        overrides=dict(overrides),
    )


# ---------------------------------------------------------------- data
def datasets(exp: Experiment) -> tuple[D.ImageSet, D.ImageSet]:
    """(training set, evaluation set), checked file by file and to name the same classes."""
    return D.open_train_test(exp.dataset, exp.data_root, exp.few_shot, exp.test_split)


def extra_test_sets(exp: Experiment, classes: list[str]) -> dict[str, D.ImageSet]:
    """{split: set} of exp.extra_splits, checked to name the training set's classes."""
    out = {split: D.open_dataset(exp.dataset, exp.data_root, split) for split in exp.extra_splits}
    for split, ds in out.items():
        if ds.classes != classes:
            raise ValueError(f"dataset={exp.dataset}: the {split} split's classes differ from train's")
    return out


def train_set(exp: Experiment) -> D.ImageSet:
    return D.open_dataset(exp.dataset, exp.data_root, "train", exp.few_shot)


# ---------------------------------------------------------------- generation: Eq. (4), (5)
def check_generation(exp: Experiment) -> None:
    """Every cheap check of the generation settings, before any dataset is read or model loaded."""
    check_guidance(negative_prompt(exp.prompt), exp.generate)
    if exp.io_threads < 0:
        raise ValueError(f"io_threads={exp.io_threads}: expected >= 0 (0: PNG writing and source decoding in line)")
    check_clip_files(exp.filter)
    check_model_path(exp.generate)
    resolve_dtype(exp.generate.dtype, resolve_device(exp.device))


def generate(
    exp: Experiment, out: str | Path, ds: D.ImageSet | None = None, world: World | None = None, progress: bool = True
) -> dict | None:
    """The counterparts of `exp.counterparts.fraction` of the training set, generated and filtered into `out`
    (resumed if it holds a killed run of the same settings), with a preview.png. Returns run.json's content;
    None on a task of a Slurm array (`merge` finishes the set once every task is done).

    ds: the training set if the caller has it open; world: this process's shard (default: from torchrun /
    Slurm variables, engine.distributed)."""
    check_generation(exp)
    ds = ds if ds is not None else train_set(exp)
    steps = (exp.prompt, exp.generate, exp.filter, exp.counterparts)
    log_dropped(final_negative(exp.prompt, ds.classes)[1])  # P_n never names a class: checked before any model loads
    check_out_dir(ds, out, *steps)  # a resume with other settings fails before any model is loaded
    world = world or world_from_env()
    if world.size > 1:
        log.info("shard %s: chunks c with c %% %d == %d of %s", world.tag, world.size, world.rank, out)
    device = device_for(world, exp.device)
    clip = load_clip(exp.filter, device)
    pipe = load_pipeline(exp.generate, device, resolve_dtype(exp.generate.dtype, device))
    init_process_group(world, "gloo")  # generation only needs barriers; main_job may have made the group already
    info = make_counterparts(ds, pipe, clip, out, *steps, world=world, io_threads=exp.io_threads, progress=progress)
    _preview(info, ds, out, world)
    return info


def merge(exp: Experiment, out: str | Path, ds: D.ImageSet | None = None) -> dict:
    """After a Slurm array of `generate` tasks: the shards -> manifest.csv, run.json and preview.png."""
    ds = ds if ds is not None else train_set(exp)
    info = finish_counterparts(ds, out, exp.prompt, exp.generate, exp.filter, exp.counterparts)
    _preview(info, ds, out)
    return info


def _preview(info: dict | None, ds: D.ImageSet, out: str | Path, world: World | None = None) -> None:
    if info is not None and info["summary"]["kept"] and (world is None or world.is_main):
        save_preview(ds, out)


def edit(
    exp: Experiment, out: str | Path, ds: D.ImageSet | None = None, world: World | None = None, progress: bool = True
) -> dict | None:
    """DiffuseMix's edited set of the training set (exp.edit) into `out`; resumable. Returns run.json's content."""
    ds = ds if ds is not None else train_set(exp)
    world = world or world_from_env()
    device = device_for(world, exp.device)
    pipe = load_editor(exp.edit, device, resolve_dtype(exp.edit.dtype, device))
    init_process_group(world, "gloo")
    return make_edits(ds, pipe, out, exp.edit, world=world, io_threads=exp.io_threads, progress=progress)


def merge_edits(exp: Experiment, out: str | Path, ds: D.ImageSet | None = None) -> dict:
    """After a Slurm array of `edit` tasks: the shards -> manifest.csv and run.json (what `merge` does for the
    counterparts)."""
    ds = ds if ds is not None else train_set(exp)
    return finish_edits(ds, out, exp.edit)


# ---------------------------------------------------------------- training: Eq. (6)-(8)
def train(
    exp: Experiment,
    out: str | Path | None = None,
    generated: str | Path | None = None,
    data: tuple[D.ImageSet, D.ImageSet] | None = None,
    world: World | None = None,
    progress: bool = True,
) -> T.Trained:
    """Train exp.train's classifier with its method, evaluate it, and write the result file `out` (a killed run
    resumes from the checkpoint beside it). Returns the trained model with its result (metrics, history, counts).

    generated: the set of `generate` (or `edit`, for DiffuseMix) for methods that use one; data: (train, test)
    if the caller has them open; world: under torchrun, DDP over its processes (rank 0 writes)."""
    T.check_train_out(out)
    T.check_generated(exp.train, generated)
    world = world or world_from_env(array=False)  # an array's tasks would be separate runs, not one DDP job
    device = device_for(world, exp.device)  # cuda asked for on a machine without: fail now, not after the data
    train_ds, test_ds = data if data is not None else datasets(exp)
    extra = extra_test_sets(exp, train_ds.classes) if exp.extra_splits else None
    init_process_group(world, backend_for(device))
    return T.train(
        exp.train,
        train_ds,
        test_ds,
        generated=generated,
        out=out,
        world=world,
        progress=progress,
        extra_tests=extra,
        test_split=D.eval_split(exp.dataset, exp.data_root, exp.test_split),
    )


def run_name(method: str, fraction: float | None) -> str:
    """The result file stem of a run: 'vanilla', 'diffcore-50'; the seed is added by the caller."""
    return method if fraction is None else f"{method}-{round(100 * fraction)}"


def main_job(exp: Experiment, out: str | Path, force: bool = False, echo: Callable[[str], None] = print) -> dict:
    """The paper's main comparison on one dataset: the counterparts once (100%), then vanilla and DiffCoRe-Mix at
    each of exp.fractions, for each of exp.seeds; a result file already in <out>/results is kept (force: redo).
    Writes <out>/table.md and table.csv; returns {"table", "markdown", "generation_s", "total_s"} (rank 0)."""
    out = Path(out)
    check_generation(exp)
    world = world_from_env(array=False)  # a Slurm array of main jobs is a sweep of separate runs
    device = device_for(world, exp.device)
    data = datasets(exp)  # opened once; a bad evaluation split fails now, not after generation
    init_process_group(world, backend_for(device))  # one group for generation and training
    gen_dir = out / "generated"
    t0 = time.perf_counter()
    generate(exp.replace(fraction=1.0), gen_dir, data[0], world)
    t_gen = time.perf_counter() - t0
    runs = [("vanilla", 1.0)] + [("diffcore", f) for f in exp.fractions]
    for seed in exp.seeds:
        for method, fraction in runs:
            res = out / "results" / f"{run_name(method, None if method == 'vanilla' else fraction)}-seed{seed}.json"
            if from_main(res.is_file() and not force, world):  # rank 0 decides for all (one DDP job)
                if world.is_main:
                    echo(f"{res} exists, skipped (--force to redo)")
                continue
            r = train(exp.replace(method=method, fraction=fraction, seed=seed), res, gen_dir, data, world)
            if world.is_main:
                echo(json_text({"method": method, "fraction": fraction, **r.metrics}))
    if not world.is_main:
        return {}
    table = results_table(load_results(out / "results"))
    md = markdown(table)
    table.to_csv(out / "table.csv", index=False)
    (out / "table.md").write_text(md + "\n")
    return {"table": table, "markdown": md, "generation_s": t_gen, "total_s": time.perf_counter() - t0}


# ---------------------------------------------------------------- the command that makes the same run
def command_line(exp: Experiment, command: str, **extra) -> str:
    """The `python -m diffcore <command>` line that builds this experiment and runs `command` on it: the profile
    and every override as its flag (the flag of a setting is its name), then `extra` (e.g. out=..., generated=...).
    Shown beside every number the book prints, so that each can be made again from a shell. `diffcore edit` reads
    the data, the device and the editor's settings only (EDIT_FLAGS); every other command all but the editor's."""
    import shlex

    flags: list[str] = ["--profile", exp.profile]
    given = {k: v for k, v in {**exp.overrides, **extra}.items() if v is not None}
    steps = {step: given.pop(step, {}) for step in STEPS}  # a step given as a dict of its fields
    if command == "edit":  # the editor's fields, by their own names; the other steps' settings change no edit
        given = {k: v for k, v in given.items() if k in EDIT_FLAGS or k in extra}
        given.update({_flat_name("edit", k, command): v for k, v in steps["edit"].items()})
    for step, fields in steps.items():  # the other steps' dicts: their fields by their flat names
        for name_in_step, value in fields.items() if step != "edit" and command != "edit" else ():
            given.setdefault(_flat_name(step, name_in_step, command), value)
    for name, value in given.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + name.replace("_", "-"))
        elif isinstance(value, dict):
            for k, v in value.items():
                flags += [flag.rstrip("s"), f"{k}={json_text(v)}"]
        elif isinstance(value, (list, tuple)):
            flags += [flag, *map(str, value)] if name in ("seeds",) else [flag, ",".join(map(str, value))]
        else:
            flags += [flag, str(value)]
    return f"python -m diffcore {command} " + shlex.join(flags)


# What `diffcore edit` reads beside the editor's own settings: the data and the device.
EDIT_FLAGS = ("dataset", "data_root", "few_shot", "extra_splits", "io_threads", "device")


def _flat_name(step: str, name_in_step: str, command: str) -> str:
    if step == "edit":
        if command != "edit":
            raise ValueError("edit settings are flags of `diffcore edit` only")
        return "seed" if name_in_step == "run_seed" else name_in_step
    return RENAMED.get((step, name_in_step), name_in_step)
