"""`python -m diffcore {generate,merge,train,run,edit,plan,table,estimate,info,bench,rehearse}`: the method's steps
from the command line, as argparse over the experiment API (diffcore.experiment).

The flags are the experiment's setting names (`--gen-batch-size` sets `gen_batch_size`, i.e. GenerateConfig's
batch_size); their types and help come from the config dataclasses' fields and the comments beside them. Every
setting starts from a profile (`--profile embedded|paper`) and is overridden by the flags given. All configs are
built and checked (paths, names, ranges) before any model is loaded, so bad input fails in a second.

Under torchrun (and, for `generate`, as a Slurm array) a command shares its work out over the processes; see
diffcore.engine.distributed and book/scale-out.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import io
import json
import logging
import re
import shlex
import sys
import tokenize
import types
import typing
from functools import cache
from pathlib import Path

from . import experiment as X
from .engine.checks import json_text
from .engine.distributed import world_from_env
from .methods import REGISTRY
from .mix import MIX_MODES
from .profiles import PROFILES
from .train import AUGMENTS, LOADERS

log = logging.getLogger("diffcore")

# Where argparse can list the allowed values in --help (the configs check them again, in one line).
CHOICES = {"method": sorted(REGISTRY), "mix_mode": list(MIX_MODES), "loader": list(LOADERS), "augment": list(AUGMENTS)}
# The flags of the experiment's own fields (not in a step's config).
TOP_FLAGS = {
    "dataset": (
        str,
        "digits | folder | cifar100 | tiny-imagenet-200 | imagenet-1k | flowers102 | "
        "cub-200-2011 | stanford-cars | caltech101",
    ),
    "data_root": (str, "local dataset root (nothing is downloaded)"),
    "few_shot": (int, "k training images per class (Table 2 uses 10)"),
    "extra_splits": (
        lambda text: tuple(x.strip() for x in text.split(",")),
        "splits evaluated too, comma-separated (Table 2: val)",
    ),
    "io_threads": (int, "threads that decode sources and write PNGs while the GPU generates (default 4; 0: in line)"),
}


# ---------------------------------------------------------------- flags from the config dataclasses
@cache
def field_comments(cls: type) -> dict[str, str]:
    """{field: its comment} from a dataclass's source: the comment beside the field and the comment lines indented
    under it, or else the comment block right above it."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    names = {f.name for f in dataclasses.fields(cls)}
    out: dict[str, list[str]] = {}
    current, last_line, above = None, -1, []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.NAME and tok.start[1] == 4:  # a statement of the class body
            current = tok.string if tok.string in names else None
            last_line, out[current], above = tok.start[0], [], (above if current else [])
            if current and above:
                out[current] = above
            above = []
        elif tok.type == tokenize.COMMENT:
            own_line = tok.line.strip().startswith("#")
            text = tok.string.lstrip("#").strip()
            if current and (
                tok.start[0] == last_line or (own_line and tok.start[1] > 4 and tok.start[0] == last_line + 1)
            ):
                out[current] = (out[current] if tok.start[0] != last_line or not above else []) + [text]
                last_line = tok.start[0]
            elif own_line and tok.start[1] == 4:
                above, current = above + [text], None
    return {k: " ".join(" ".join(v).split()) for k, v in out.items() if k and v}


def _kind(step: str, name_in_step: str):
    """(argparse type or action, metavar) of one config field, from its annotation."""
    hint = typing.get_type_hints(X.STEPS[step])[name_in_step]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = args[0] if typing.get_origin(hint) in (typing.Union, types.UnionType) else hint
    if base is bool:
        return "bool", None
    if typing.get_origin(base) is tuple:
        item = typing.get_args(base)[0]
        return (lambda text: tuple(item(x.strip()) for x in text.split(","))), "A,B,..."
    if base is dict or typing.get_origin(base) is dict:
        return "dict", "KEY=VALUE"
    return base, None


def add_setting(parser, name: str, step: str, name_in_step: str) -> None:
    """One flag for one setting name: --name for a value, --name/--no-name for a bool, repeatable KEY=VALUE for
    a dict (its flag in the singular: --method-arg)."""
    kind, metavar = _kind(step, name_in_step)
    default = next(f.default for f in dataclasses.fields(X.STEPS[step]) if f.name == name_in_step)
    help_ = field_comments(X.STEPS[step]).get(name_in_step, "")
    if default is not dataclasses.MISSING and kind != "dict":  # the value and where profiles change it
        by_profile = "".join(
            f"; {p}: {v[step][name_in_step]!r}"
            for p, v in PROFILES.items()
            if name_in_step in v.get(step, {}) and v[step][name_in_step] != default
        )
        help_ += f" [{step}.{name_in_step}: {default!r}{by_profile}]"
    flag, help_ = "--" + name.replace("_", "-"), help_.replace("%", "%%")  # argparse formats help with %
    if kind == "bool":
        parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_)
    elif kind == "dict":
        parser.add_argument(
            flag.rstrip("s"),
            dest=name,
            action="append",
            metavar=metavar,
            type=_key_value,
            help=help_ + " (repeatable), e.g. alpha=0.2 for mixup",
        )
    else:
        parser.add_argument(flag, dest=name, type=kind, metavar=metavar, choices=CHOICES.get(name), help=help_)


def _key_value(item: str) -> tuple[str, object]:
    """'alpha=0.2' -> ('alpha', 0.2); the value parsed as JSON, else as a number ('nan', 'inf': refused by the
    config, in one line), else kept as a string."""
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{item!r}: expected KEY=VALUE, e.g. alpha=0.2")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        pass
    try:
        return key, float(value)
    except ValueError:
        return key, value


def add_experiment_flags(parser) -> None:
    """--profile, the data flags, and one flag per setting name of every step (experiment.NAMES)."""
    parser.add_argument("--profile", default="embedded", help="embedded (default, offline CPU) or paper")
    for name, (kind, help_) in TOP_FLAGS.items():
        parser.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, help=help_)
    groups = {step: parser.add_argument_group(f"{step} ({X.STEPS[step].__name__})") for step in X.FLAT_STEPS}
    for name, targets in X.NAMES.items():
        step, name_in_step = targets[-1]  # a shared name (seed, fraction): listed with the training settings
        add_setting(groups[step], name, step, name_in_step)


def overrides_of(args: argparse.Namespace, names) -> dict:
    """{setting: value} of the flags given on the command line."""
    out = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    if isinstance(out.get("method_args"), list):
        out["method_args"] = dict(out["method_args"])
    return out


def experiment_of(args: argparse.Namespace) -> X.Experiment:
    """The experiment of a command: the profile with the flags given."""
    over = overrides_of(args, [*X.NAMES, *TOP_FLAGS, "test_split", "seeds"])
    if getattr(args, "command", None) == "edit":
        edit_names = [f.name for f in dataclasses.fields(X.EditConfig)]
        over = {k: v for k, v in over.items() if k in X.EDIT_FLAGS}
        over["edit"] = {
            ("run_seed" if n == "seed" else n): getattr(args, n)
            for n in [*edit_names, "seed"]
            if n != "run_seed" and getattr(args, n, None) is not None
        }
    return X.experiment(args.profile, **over)


# ---------------------------------------------------------------- commands
def cmd_generate(args) -> int:
    world = world_from_env()  # torchrun / Slurm array: this process's shard (engine.distributed)
    info = X.generate(experiment_of(args), args.out, world=world)
    if info is None:
        print(
            f"shard {world.tag} done -> {args.out}; once every task of the array is done, run `diffcore merge` "
            f"with the same flags"
        )
    elif world.is_main:
        report(info, args.out)
    return 0


def cmd_merge(args) -> int:
    report(X.merge(experiment_of(args), args.out), args.out)
    return 0


def cmd_edit(args) -> int:
    info = X.edit(experiment_of(args), args.out)
    if info is not None:
        s = info["summary"]
        print(
            f"kept {s['kept']} edits of {s['attempts']} attempts -> {args.out}; train with "
            f"`diffcore train --method diffusemix --generated {args.out}`"
        )
    return 0


def report(info: dict, out: str) -> None:
    """Discard rates of a finished generated set, and where its preview is."""
    s = info["summary"]
    per_class = sorted(s["per_class"].items(), key=lambda kv: -kv[1]["discard_rate"])
    print(
        "discarded per class (highest first): "
        + ", ".join(f"{name} {100 * v['discard_rate']:.0f}%" for name, v in per_class[:10])
        + (" ..." if len(per_class) > 10 else "")
    )
    print(
        f"kept {s['kept']} of {s['attempts']} generated images ({100 * s['discard_rate']:.1f}% discarded, "
        f"{s['invalid']} invalid), {s['no_counterpart']} sources without counterpart"
        f"{f' ({n} unreadable)' if (n := s['unreadable']) else ''} -> {out}"
    )
    if s["kept"]:
        print(f"preview (real | kept | rejected, per class): {out}/preview.png")


def cmd_train(args) -> int:
    """A killed training resumes from the checkpoint beside --out (see diffcore.engine.checkpoint)."""
    exp = experiment_of(args)
    world = world_from_env(array=False)  # under torchrun: DDP, rank 0 writes; an array's tasks: separate runs
    run = X.train(exp, args.out, args.generated, world=world)
    if world.is_main:
        print(json_text({"method": exp.train.method, "fraction": exp.train.fraction, **run.metrics}))
    return 0


def cmd_run(args) -> int:
    """The main job: generate counterparts once (100%), train vanilla and DiffCoRe-Mix-50/-100 over seeds, table."""
    done = X.main_job(experiment_of(args), args.out, force=args.force)
    if done:
        print(
            f"\n{done['markdown']}\n\ngeneration {done['generation_s']:.0f} s; total {done['total_s']:.0f} s; "
            f"written to {args.out}/table.md"
        )
    return 0


def cmd_plan(args) -> int:
    """Every job of the profile's tables: settings, table cells, GPU-hours; --run runs them in order (--job: one of
    them); --slurm writes them as Slurm job arrays (diffcore.plan.slurm)."""
    from .plan import jobs as J

    tables = [f"Table {t.removeprefix('Table').strip()}" for t in args.table or []] or None
    unknown = sorted(set(tables or []) - set(J.TABLES))
    if unknown:
        raise ValueError(f"table={unknown}: expected one of {[t.removeprefix('Table ') for t in J.TABLES]}")
    check_plan_flags(args)
    where = {"out": args.out or f"runs/{args.profile}", "weights": args.weights, "data": args.data}
    if args.slurm:  # every task must find the same files from wherever Slurm starts it
        where = {k: str(Path(v).absolute()) if v else v for k, v in where.items()}
    paths = J.paper_paths(where["weights"], where["data"])
    settings = {"device": args.device, "pretrained": paths.get("pretrained")}
    settings |= {"epochs": args.epochs, "few_shot": args.few_shot}
    plan = J.jobs(
        args.profile,
        tables,
        where["out"],
        args.seeds,
        paths.get("data_roots"),
        paths.get("overrides"),
        paths.get("edit"),
        **settings,
    )
    if args.costs:
        plan = J.with_costs(plan, J.read_costs(args.costs))
    if args.slurm:
        return write_slurm(args, plan, tables, where)
    if args.job:
        plan = [J.find_job(plan, args.job, where["out"])]
        if args.merge:
            J.merge_job(plan[0])
            print(f"merged: {plan[0].out}", flush=True)
            return 0
    if not args.run:
        print(J.as_json(plan) if args.json else J.as_text(plan))
        return 0
    for k, job in enumerate(plan, 1):
        where = f"[{k}/{len(plan)}] {job.kind} {job.table} / {job.column} / {job.row}" + (
            "" if job.seed is None else f" seed {job.seed}"
        )
        if not job.refused and J.finished(job):  # a re-run task of a Slurm array says so, and does nothing
            print(f"{where}: finished, skipped ({job.out} is there)", flush=True)
            continue
        print(f"{where}: {job.command()}", flush=True)
        J.run_job(job, progress=True)
        if job.kind != "train" and not J.finished(job):  # a task of a Slurm array made its shard only
            print(f"{where}: shard {world_from_env().tag} done; `--merge --job` finishes the set", flush=True)
    return 0


def check_plan_flags(args) -> None:
    """The plan flags that go together, checked before anything is planned."""
    if args.slurm and (args.run or args.job or args.merge):
        raise ValueError("--slurm writes the jobs as Slurm arrays, whose tasks run --run --job: pass it alone")
    if args.merge and (args.job is None or args.run):
        raise ValueError("--merge needs --job NAME (the set whose array shards it merges) and no --run")
    if args.job is not None and not (args.run or args.merge):
        raise ValueError(f"--job {args.job}: pass --run (run it) or --merge (merge its shards) with it")
    if args.slurm and args.profile == "paper" and not (args.weights and args.data):
        raise ValueError(
            "--slurm on the paper profile needs --weights and --data: every task reads the models and datasets "
            "from them (`diffcore plan --help` names each file)"
        )


def write_slurm(args, plan: list, tables: list[str] | None, where: dict) -> int:
    """`plan --slurm DIR`: the submission, and what it holds. where: the absolute out, weights and data folders."""
    from .plan import slurm as S

    opts = S.SlurmOptions(
        set_tasks=args.set_tasks,
        partition=args.partition,
        account=args.account,
        gpus_per_job=args.gpus_per_job,
        cpus_per_task=args.cpus_per_task,
        mem=args.mem,
        time=S.time_limits(args.time),
        extra=tuple(args.sbatch or ()),
    )
    task = [sys.executable, "-m", "diffcore", "plan", "--profile", args.profile]
    task += [x for t in tables or [] for x in ("--table", t.removeprefix("Table "))]
    task += ["--out", where["out"]] + (["--seeds", *map(str, args.seeds)] if args.seeds else [])
    for flag, value in (("--weights", where["weights"]), ("--data", where["data"]), ("--device", args.device)):
        task += [flag, value] if value else []
    for flag, value in (("--epochs", args.epochs), ("--few-shot", args.few_shot)):
        task += [flag, str(value)] if value is not None else []
    written_by = shlex.join(["python", "-m", "diffcore", *args.argv])
    scripts = S.write(plan, where["out"], args.slurm, opts, task, Path.cwd(), written_by)
    folder = Path(args.slurm)
    for s in scripts:
        size = "one job" if s.tasks is None else f"array of {s.tasks}"
        after = f", after {', '.join(a[:2] for a in s.after)}" if s.after else ""
        print(f"{folder / s.name}.sbatch: {size}{after} ({s.what})")
    record = json.loads((folder / "plan.json").read_text())
    for what in ("done", "refused"):  # left out: finished already, or cannot run here (plan.json says why)
        if record[what]:
            print(f"left out, {what}: {len(record[what])} jobs ({', '.join(list(record[what])[:3])}, ...)")
    print(f"submit: bash {folder / 'submit.sh'}   (logs in {folder / 'logs'}/, job ids in {folder / 'job-ids'})")
    return 0


def cmd_table(args) -> int:
    from .results import load_results, markdown, results_table

    print(markdown(results_table(load_results(args.folder))))
    return 0


def cmd_estimate(args) -> int:
    from .estimate import H100_S_PER_IMG, PAPER_CHUNK, PAPER_DISCARD, table

    print(
        table(
            args.gpus,
            args.fraction,
            args.s_per_img or H100_S_PER_IMG,
            PAPER_DISCARD if args.discard is None else args.discard,
            args.chunk_size or PAPER_CHUNK,
        )
    )
    return 0


def cmd_info(args) -> int:
    from .engine.runtime import provenance
    from .profiles import profile

    print(
        json_text(
            {
                "profile": args.profile,
                "settings": profile(args.profile),
                "experiment": X.experiment(args.profile).settings(),
                "provenance": provenance(),
            },
            indent=2,
            default=str,
        )
    )
    return 0


# ---------------------------------------------------------------- parser
class Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line (`diffcore: error: argument --steps: invalid int value: 'x'`), not
    the usage block: the same shape as every other refusal. A value that starts with a minus sign and reads as a
    number (`--lr -inf`, `--guidance-scale -1e3`) is a value, not a flag: the config then refuses it by name."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        # argparse's own pattern (private; used by 3.10-3.14) knows only -1 and -1.5: -1e3 and -inf were "expected one
        # argument", naming neither the value nor what is wrong with it
        self._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-(inf|infinity|nan)$", re.I)

    def error(self, message: str):
        print(f"diffcore: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def add_edit_flags(parser) -> None:
    """`diffcore edit`: the data flags, the device and DiffuseMix's EditConfig fields (--seed sets its run_seed)."""
    parser.add_argument("--profile", default="embedded", help="embedded (default, offline CPU) or paper")
    for name, (kind, help_) in TOP_FLAGS.items():
        parser.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, help=help_)
    add_setting(parser, "device", "train", "device")
    for f in dataclasses.fields(X.EditConfig):
        add_setting(parser, "seed" if f.name == "run_seed" else f.name, "edit", f.name)


def add_slurm_flags(parser) -> None:
    """`diffcore plan --slurm DIR` and the sbatch options of its scripts (diffcore.plan.slurm)."""
    g = parser.add_argument_group("Slurm (with --slurm DIR; book/scale-out.md)")
    g.add_argument("--slurm", metavar="DIR", help="write the jobs as Slurm job arrays and a submit.sh into DIR")
    g.add_argument("--set-tasks", type=int, default=4, metavar="N", help="array tasks (shards) per set (default 4)")
    g.add_argument("--partition", help="sbatch --partition of every job")
    g.add_argument("--account", help="sbatch --account of every job")
    g.add_argument("--gpus-per-job", type=int, metavar="N", help="GPUs of each generation, edit and training task")
    g.add_argument("--cpus-per-task", type=int, metavar="N", help="sbatch --cpus-per-task (and OMP_NUM_THREADS)")
    g.add_argument("--mem", help="sbatch --mem of every job, e.g. 64G")
    g.add_argument(
        "--time",
        action="append",
        metavar="[PHASE=]LIMIT",
        help="sbatch --time, per phase (generate, edit, merge, train) or for all; repeatable",
    )
    g.add_argument(
        "--sbatch",
        action="append",
        metavar="OPTION",
        help="one more #SBATCH option for every job, e.g. --sbatch=--qos=high",
    )


def parser() -> argparse.ArgumentParser:
    ap = Parser(prog="diffcore", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True, parser_class=Parser)
    g = sub.add_parser("generate", help="generate + filter counterparts into --out")
    add_experiment_flags(g)
    g.add_argument("--out", required=True)
    t = sub.add_parser("train", help="train one classifier, write a result JSON")
    add_experiment_flags(t)
    t.add_argument("--generated", help="folder written by `diffcore generate` (or `diffcore edit`)")
    t.add_argument("--test-split", help="evaluation split (default: test, or val where there is no test)")
    t.add_argument("--out", required=True, help="result JSON path")
    r = sub.add_parser("run", help="the main job: generate, train vanilla and DiffCoRe-Mix-50/-100, print a table")
    add_experiment_flags(r)
    r.add_argument("--out", default="runs/embedded")
    r.add_argument("--seeds", type=int, nargs="+")
    r.add_argument("--test-split", help="evaluation split (default: test, or val where there is no test)")
    r.add_argument("--force", action="store_true", help="retrain even where a result file exists")
    m = sub.add_parser("merge", help="after a Slurm array of `generate` tasks: merge the shards (same flags)")
    add_experiment_flags(m)
    m.add_argument("--out", required=True)
    d = sub.add_parser("edit", help="DiffuseMix's image-edited set (InstructPix2Pix; embedded: a tiny stand-in)")
    add_edit_flags(d)
    d.add_argument("--out", required=True, help="folder for images/, manifest.csv, run.json")
    e = sub.add_parser("estimate", help="GPU-hours to generate the paper datasets' counterparts")
    e.add_argument("--gpus", type=int, default=8)
    e.add_argument("--fraction", type=float, default=1.0, help="0.5 (-50) or 1.0 (-100)")
    e.add_argument("--s-per-img", type=float, help="seconds per image (default: measured, stock SDXL, H100)")
    e.add_argument("--discard", type=float, help="share of generated images discarded (default: the paper's)")
    e.add_argument("--chunk-size", type=int, help="sources per chunk (default: the paper profile's, one batch of 32)")
    pl = sub.add_parser("plan", help="every job of the paper's tables: settings, cells, GPU-hours (--run: run them)")
    pl.add_argument("--profile", default="embedded", help="embedded (default) or paper")
    pl.add_argument("--table", action="append", metavar="N", help="2, 3, 4, 5 or 7 (repeatable; default: all)")
    pl.add_argument("--json", action="store_true", help="every job with its fully resolved settings, as JSON")
    pl.add_argument("--out", help="build folder the jobs write to (default runs/<profile>)")
    pl.add_argument("--seeds", type=int, nargs="+", help="training seeds (default: the profile's first)")
    pl.add_argument(
        "--weights",
        help="paper profile: folder with cosxl.safetensors, sdxl-base-1.0/, sdxl-vae-fp16-fix/, "
        "clip-vit-b-32/open_clip_model.safetensors, wide_resnet101_2.pth (Table 5), instruct-pix2pix/ (DiffuseMix)",
    )
    pl.add_argument("--data", help="paper profile: folder with one sub-folder per dataset (cub-200-2011/, ...)")
    pl.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    pl.add_argument("--run", action="store_true", help="run every job in order (a finished one is skipped)")
    pl.add_argument(
        "--job",
        metavar="NAME",
        help="with --run: only this job, named by its output path relative to --out (e.g. generated-digits-10shot)",
    )
    pl.add_argument(
        "--merge", action="store_true", help="with --job: merge a set's Slurm array shards (diffcore merge)"
    )
    pl.add_argument(
        "--epochs", type=int, metavar="N", help="training epochs of every run (default: each table's schedule)"
    )
    pl.add_argument("--few-shot", type=int, metavar="K", help="K training images per class (default: each table's)")
    pl.add_argument(
        "--costs",
        metavar="FILE",
        help="GPU-hours from a rehearsal's measurements (`diffcore rehearse --size full` writes <out>/costs.json) "
        "in place of the estimates, where it measured the job",
    )
    add_slurm_flags(pl)
    tb = sub.add_parser("table", help="print the results table of a folder")
    tb.add_argument("folder")
    i = sub.add_parser("info", help="print a profile's settings and this machine's provenance")
    i.add_argument("--profile", default="embedded")
    # its own parser: everything after the word goes to `python -m diffcore.bench`
    sub.add_parser(
        "bench", help="time stock vs diffcore generation and training (see `diffcore bench --help`)", add_help=False
    )
    sub.add_parser(
        "rehearse",
        help="every paper job on stand-ins in the real formats, then the paper book (see `diffcore rehearse --help`)",
        add_help=False,
    )
    return ap


COMMANDS = {
    "plan": cmd_plan,
    "generate": cmd_generate,
    "merge": cmd_merge,
    "edit": cmd_edit,
    "estimate": cmd_estimate,
    "train": cmd_train,
    "run": cmd_run,
    "table": cmd_table,
    "info": cmd_info,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:
        from .bench.command import main as bench_main

        return bench_main(argv[1:])
    if argv[:1] == ["rehearse"]:
        from .rehearse.driver import main as rehearse_main

        return rehearse_main(argv[1:])
    try:
        args = parser().parse_args(argv)
    except SystemExit as e:  # a bad flag (one line, printed by Parser) or --help
        return e.code if isinstance(e.code, int) else 2
    args.argv = argv  # the command as given (`plan --slurm` writes it into submit.sh)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError) as e:  # bad input: one line, no traceback
        one_line = str(e).replace("\r", "\\r").replace("\n", "\\n")  # a value with a newline (a path) stays on it
        print(f"diffcore: error: {one_line}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
