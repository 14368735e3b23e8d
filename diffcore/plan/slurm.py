"""The plan as Slurm job arrays: `diffcore plan ... --slurm DIR` writes one sbatch script per array and a submit.sh
that submits them in order, each held (`--dependency=afterok`) until the sets it reads are made.

    DIR/01-generate-generated-digits-10shot.sbatch   a set's shards: one array task per shard (engine.distributed)
    DIR/03-merge-generated-digits-10shot.sbatch      `diffcore merge` of that set, after all its shards (afterok)
    DIR/05-train.sbatch                              the training runs that read no set: one array task each
    DIR/07-train-after-generated-digits-10shot.sbatch  those that read it, after its merge (afterok)
    DIR/submit.sh                                    sbatch --parsable of each in order; prints and keeps the job ids
    DIR/plan.json, DIR/logs/                         what was planned; every task's output

Every task runs one job of the plan by its name, `diffcore plan <the same plan flags> --run --job NAME`, and a job
whose output is there is skipped: after a failure or a scancel, `bash DIR/submit.sh` again finishes the rest. Writing
the submission again leaves the finished jobs out, so that then only what is unfinished is queued.
Plain sbatch arrays rather than submitit or heterogeneous jobs: book/scale-out.md says why.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..engine.checks import json_text
from ..engine.safety import atomic_write_text
from ..filter import check_clip_files
from ..generate import check_model_path
from . import jobs as J

PHASES = ("generate", "edit", "merge", "train")  # the kinds of script, in the order submit.sh submits them
KIND = "diffcore-slurm"  # plan.json's "kind": a folder this module wrote


@dataclass(frozen=True)
class SlurmOptions:
    """What goes into every script's #SBATCH lines (None: the cluster's default)."""

    set_tasks: int = 4  # array tasks (shards) per generated or edited set; at most its chunks where its size is known
    partition: str | None = None  # --partition of every job
    account: str | None = None  # --account of every job
    gpus_per_job: int | None = None  # --gres=gpu:N of each generation, edit and training task (merges use none)
    cpus_per_task: int | None = None  # --cpus-per-task of every job; OMP_NUM_THREADS follows it (1 without it)
    mem: str | None = None  # --mem of every job, e.g. 64G
    time: dict = field(default_factory=dict)  # {phase: limit}, e.g. {"generate": "4:00:00"}; a phase not given: none
    extra: tuple[str, ...] = ()  # more options for every job, each written as `#SBATCH <option>`

    def __post_init__(self):
        if self.set_tasks < 1:
            raise ValueError(f"set_tasks={self.set_tasks}: expected >= 1 array tasks per set")
        for name in ("gpus_per_job", "cpus_per_task"):
            if (n := getattr(self, name)) is not None and n < 1:
                raise ValueError(f"{name}={n}: expected >= 1")
        unknown = sorted(set(self.time) - set(PHASES))
        if unknown:
            raise ValueError(f"time phases {unknown}: expected {', '.join(PHASES)} (e.g. --time train=12:00:00)")


@dataclass(frozen=True)
class Script:
    """One sbatch script: a set's shards, a set's merge, or the training runs that read one set (or none)."""

    name: str  # file stem and Slurm job name, e.g. "01-generate-generated-digits-10shot"
    phase: str  # generate | edit | merge | train
    jobs: tuple[str, ...]  # the plan's job names it runs (a set array: one job in `tasks` shards)
    tasks: int | None  # array tasks (--array=0-<tasks-1>); None: a plain job (a merge)
    after: tuple[str, ...] = ()  # names of the scripts it waits for (--dependency=afterok)
    what: str = ""  # one line: which table cells it serves


def time_limits(values: list[str] | None) -> dict:
    """--time values ('4:00:00' for every phase, 'train=12:00:00' for one) -> {phase: limit}."""
    out: dict = {}
    for v in values or []:
        phase, sep, limit = v.rpartition("=")
        if not limit:
            raise ValueError(f"time={v!r}: expected [PHASE=]LIMIT, e.g. 4:00:00 or train=1-00:00:00")
        out.update({phase: limit} if sep else dict.fromkeys(PHASES, limit))
    return out


def set_chunks(job: J.Job) -> int | None:
    """Chunks of a set job (the most shards that get work), where the dataset's size is known without reading it."""
    n = J.train_images(job.exp)
    if n is None:
        return None
    if job.kind == "generate":
        cfg = job.exp.counterparts
        chunk = cfg.chunk_size or job.exp.generate.batch_size
        return math.ceil(round(n * cfg.fraction) / chunk)
    cfg = job.exp.edit
    return math.ceil(round(n * cfg.fraction) * len(cfg.prompts) / (cfg.chunk_size or cfg.batch_size))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text.removesuffix(".json")).strip("-")[:60]


def scripts(plan: list[J.Job], out_dir: str | Path, opts: SlurmOptions) -> tuple[list[Script], dict[str, J.Job]]:
    """The scripts of the plan's jobs still to do (not refused, output not there yet), in submission order: every
    set's shards, every set's merge, then the training runs grouped by the set of this submission they read (the
    control reads the generated set's run.json too); and {name: job} of the jobs they run."""
    named = {k: j for k, j in J.unique_jobs(plan, out_dir).items() if not j.refused and not J.finished(j)}
    sets = {k: j for k, j in named.items() if j.kind != "train"}
    made_by = {j.out: k for k, j in sets.items()}
    out: list[Script] = []
    for k, job in sets.items():  # the sets first: every shard of every set is queued before any merge
        chunks = set_chunks(job)
        tasks = min(opts.set_tasks, chunks) if chunks else opts.set_tasks
        what = " | ".join(job.feeds)
        out.append(Script(f"{len(out) + 1:02d}-{job.kind}-{_slug(k)}", job.kind, (k,), tasks, what=what))
    merge_of: dict[str, str] = {}
    for made in list(out):
        k = made.jobs[0]
        merge_of[k] = f"{len(out) + 1:02d}-merge-{_slug(k)}"
        out.append(Script(merge_of[k], "merge", (k,), None, (made.name,), made.what))
    groups: dict[str | None, list[str]] = {}
    for k, job in named.items():
        if job.kind == "train":
            groups.setdefault(made_by.get(job.needs), []).append(k)
    for reads, names in groups.items():
        runs = f"{len(names)} training run{'s' * (len(names) > 1)}"
        name, after = f"{len(out) + 1:02d}-train", (merge_of[reads],) if reads else ()
        what = f"{runs} reading {reads}, after its merge" if reads else f"{runs} that wait for no set"
        out.append(
            Script(name + (f"-after-{_slug(reads)}" if reads else ""), "train", tuple(names), len(names), after, what)
        )
    return out, named


def check_inputs(jobs: dict[str, J.Job]) -> None:
    """The cheap checks a task would fail on, now, before anything is queued: weights and data folders."""
    for job in jobs.values():
        if job.kind == "generate":
            check_model_path(job.exp.generate)
            check_clip_files(job.exp.filter)
        root = job.exp.data_root
        if root is not None and not Path(root).is_dir():
            raise FileNotFoundError(f"data root {root} of {job.table} / {job.column}: no such folder")


# ---------------------------------------------------------------- the files
def sbatch_lines(s: Script, folder: Path, opts: SlurmOptions) -> list[str]:
    """The #SBATCH lines of one script: its name, array, log file, and the options of its phase."""
    logs = folder.absolute() / "logs"
    lines = [f"--job-name={s.name}"]
    if s.tasks is None:
        lines.append(f"--output={logs}/%x-%j.out")
    else:
        lines += [f"--array=0-{s.tasks - 1}", f"--output={logs}/%x-%A_%a.out"]
    for flag, value in (("partition", opts.partition), ("account", opts.account), ("mem", opts.mem)):
        if value:
            lines.append(f"--{flag}={value}")
    if opts.cpus_per_task:
        lines.append(f"--cpus-per-task={opts.cpus_per_task}")
    if opts.gpus_per_job and s.phase != "merge":
        lines.append(f"--gres=gpu:{opts.gpus_per_job}")
    if s.phase in opts.time:
        lines.append(f"--time={opts.time[s.phase]}")
    return ["#SBATCH " + x for x in [*lines, *opts.extra]]


def script_text(s: Script, folder: Path, opts: SlurmOptions, task: list[str], cwd: Path) -> str:
    """An sbatch script: every task runs one job of the plan by its name (`task` = the plan command, a list)."""
    head = ["#!/bin/bash", f"# {s.phase}: {s.what}" if s.what else f"# {s.phase}"]
    head += sbatch_lines(s, folder, opts)
    head += [f"#SBATCH --chdir={cwd}", "set -euo pipefail", "export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}"]
    run = shlex.join(task)
    if s.phase == "merge":
        body = [f"exec {run} --merge --job {shlex.quote(s.jobs[0])}"]
    elif s.phase == "train":  # one job per task, by its index in JOBS
        body = ["JOBS=(", *(f"  {shlex.quote(k)}" for k in s.jobs), ")"]
        body.append(f'exec {run} --run --job "${{JOBS[$SLURM_ARRAY_TASK_ID]}}"')
    else:
        body = [
            f"# every task the same set: task i makes its chunks c with c % {s.tasks} == i (engine.distributed)",
            f"exec {run} --run --job {shlex.quote(s.jobs[0])}",
        ]
    return "\n".join(head + body) + "\n"


def submit_text(ss: list[Script], command: str) -> str:
    """submit.sh: refuses while a job of its last submission is queued; then each script in order, its id kept in
    job-ids and printed, each held on the ids of what it waits for."""
    var = {s.name: "j" + s.name[:2] for s in ss}
    lines = [
        "#!/bin/bash",
        f"# Written by: {command}",
        "# Submits every script of this folder in order, each held (afterok) until what it reads is made, and prints",
        "# the job ids (kept in job-ids). Run it again after a failure or a scancel: finished jobs are skipped.",
        "set -euo pipefail",
        'cd "$(dirname "$0")"',
        "if [ -s job-ids ]; then",
        "  queued=$(squeue -h -o %i -j \"$(cut -d' ' -f2 job-ids | paste -sd,)\" 2>/dev/null | paste -sd, || true)",
        '  if [ -n "$queued" ]; then',
        '    echo "submit.sh: jobs of the last submission are still queued or running ($queued); wait for them or'
        ' scancel them first" >&2',
        "    exit 1",
        "  fi",
        "fi",
        ": > job-ids",
    ]
    for s in ss:
        dep = ":".join(f"${var[a]}" for a in s.after)
        hold = f" --dependency=afterok:{dep} --kill-on-invalid-dep=yes" if dep else ""
        lines += [
            f"{var[s.name]}=$(sbatch --parsable{hold} {s.name}.sbatch)",
            f"{var[s.name]}=${{{var[s.name]}%%;*}}",  # --parsable prints id;cluster on a federation
            f'echo "{s.name} ${var[s.name]}" | tee -a job-ids',
        ]
    return "\n".join(lines) + "\n"


def write(
    plan: list[J.Job],
    out_dir: str | Path,
    folder: str | Path,
    opts: SlurmOptions,
    task: list[str],
    cwd: Path,
    written_by: str = "",
) -> list[Script]:
    """Write the submission of `plan` into `folder`; `task` is the plan command every task runs (a list), `cwd` the
    folder the tasks start in, `written_by` the command that wrote it (for submit.sh's header). A folder holding
    anything but a submission of the same plan command is refused in one line."""
    folder = Path(folder)
    command = shlex.join(task)
    ss, named = scripts(plan, out_dir, opts)
    if not ss:
        raise ValueError(
            f"nothing to submit: every job of the plan is done under {out_dir} or refused (`diffcore plan` says why)"
        )
    check_inputs(named)
    _check_folder(folder, command)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "logs").mkdir(exist_ok=True)
    for old in set(folder.glob("[0-9][0-9]-*.sbatch")) - {folder / f"{s.name}.sbatch" for s in ss}:
        old.unlink()  # of an earlier writing of this plan: its jobs are done now, or numbered otherwise
    for s in ss:
        atomic_write_text(folder / f"{s.name}.sbatch", script_text(s, folder, opts, task, cwd))
    atomic_write_text(folder / "submit.sh", submit_text(ss, written_by or command))
    (folder / "submit.sh").chmod(0o755)
    record = {
        "kind": KIND,
        "command": command,
        "written_by": written_by,
        "options": asdict(opts),
        "scripts": [asdict(s) for s in ss],
        "jobs": {k: {"kind": j.kind, "out": j.out, "needs": j.needs, "command": j.command()} for k, j in named.items()},
        "refused": {J.job_id(j, out_dir): j.refused for j in plan if j.refused},
        "done": sorted({J.job_id(j, out_dir) for j in plan if not j.refused and J.finished(j)}),
    }
    atomic_write_text(folder / "plan.json", json_text(record, indent=1))
    return ss


def _check_folder(folder: Path, command: str) -> None:
    """New, empty, or a submission of the same plan command (rewritten: other sbatch options are fine)."""
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"slurm={folder}: is a file; expected a folder for the submission")
    if not folder.is_dir() or not any(folder.iterdir()):
        return
    try:
        old = json.loads((folder / "plan.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        old = {}
    if old.get("kind") != KIND:
        raise ValueError(f"slurm={folder}: holds other files and no submission of diffcore; pass a new or empty folder")
    if old.get("command") != command:
        raise ValueError(
            f"slurm={folder}: holds the submission of another plan ({old.get('command')}); pass a new or empty folder"
        )
