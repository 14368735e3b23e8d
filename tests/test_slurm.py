"""`diffcore plan --slurm DIR`: the plan as Slurm job arrays, checked on paper (the scripts, their dependencies, the
refusals) and run under a real one-node Slurm that the `slurm` fixture starts as root (munged, slurmctld, slurmd,
all files in a temporary folder, stopped afterwards). The Debian packages: `.ci/run` installs them on CI
(apt-get install -y slurmctld slurmd slurm-client munge); without them, or without root, that one test is skipped
and says why in one line.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from diffcore import cli
from diffcore.plan import jobs as J
from diffcore.plan import slurm as S

# Table 2 of the embedded profile at 2 epochs: a generated set and an edited set (2 shards each) and 11 training runs
# (one per row, the control among them): the notebook's settings with a shorter schedule, a few minutes on 2 cores.
PLAN = ["plan", "--profile", "embedded", "--table", "2", "--epochs", "2"]
SLURM = ["--set-tasks", "2", "--cpus-per-task", "1", "--time", "15:00"]
GEN, EDITS = "generated-digits-10shot", "edits-digits-10shot"
RESULTS = "results-digits-10shot-2ep"


# ---------------------------------------------------------------- the submission, on paper
def test_the_submission_holds_each_array_until_the_sets_it_reads_are_made(tmp_path, capsys):
    sub, build = tmp_path / "slurm", tmp_path / "build"
    assert cli.main([*PLAN, "--out", str(build), "--slurm", str(sub), *SLURM, "--partition", "cpu"]) == 0
    record = json.loads((sub / "plan.json").read_text())
    scripts = {s["name"]: s for s in record["scripts"]}
    assert [(s["phase"], s["tasks"], s["after"]) for s in scripts.values()] == [
        ("generate", 2, []),
        ("edit", 2, []),
        ("merge", None, ["01-generate-" + GEN]),
        ("merge", None, ["02-edit-" + EDITS]),
        ("train", 7, []),  # the rows that read no set start at once
        ("train", 1, ["04-merge-" + EDITS]),  # DiffuseMix
        ("train", 3, ["03-merge-" + GEN]),  # DiffCoRe-Mix-50, -100 and the control, which reads run.json
    ]
    assert scripts["07-train-after-" + GEN]["jobs"] == [
        f"{RESULTS}/diffcore-50-seed0.json",
        f"{RESULTS}/diffcore-100-seed0.json",
        f"{RESULTS}/vanilla-equal-steps-seed0.json",
    ]
    plan = J.jobs("embedded", ["Table 2"], build, epochs=2)
    assert sorted(record["jobs"]) == sorted(J.job_id(j, build) for j in plan)  # every job once, by its name
    assert sorted(sum((s["jobs"] for s in scripts.values() if s["phase"] != "merge"), [])) == sorted(record["jobs"])

    submit = (sub / "submit.sh").read_text()
    assert subprocess.run(["bash", "-n", sub / "submit.sh"]).returncode == 0
    assert "sbatch --parsable --dependency=afterok:$j03 --kill-on-invalid-dep=yes 07-train-after-" + GEN in submit
    assert submit.index("01-generate") < submit.index("03-merge") < submit.index("07-train")
    gen = (sub / f"01-generate-{GEN}.sbatch").read_text()
    for line in ("#SBATCH --array=0-1", f"#SBATCH --output={sub}/logs/%x-%A_%a.out", "#SBATCH --partition=cpu"):
        assert line in gen.splitlines()
    assert gen.rstrip().endswith(f"--table 2 --out {build} --epochs 2 --run --job {GEN}")
    merge = (sub / f"03-merge-{GEN}.sbatch").read_text()
    assert "--array" not in merge and merge.rstrip().endswith(f"--merge --job {GEN}")
    assert "#SBATCH --time=15:00" in merge and "gres" not in merge
    train = (sub / "05-train.sbatch").read_text()
    assert '--run --job "${JOBS[$SLURM_ARRAY_TASK_ID]}"' in train and f"  {RESULTS}/mixup-seed0.json" in train
    assert "bash " + str(sub / "submit.sh") in capsys.readouterr().out

    # the same plan again, with other sbatch options: rewritten, leaving out what is done (a set, a result file)
    (build / EDITS).mkdir(parents=True)
    (build / EDITS / "run.json").write_text("{}")
    (build / RESULTS).mkdir()
    (build / RESULTS / "mixup-seed0.json").write_text("{}")
    assert cli.main([*PLAN, "--out", str(build), "--slurm", str(sub), *SLURM, "--gpus-per-job", "1"]) == 0
    assert "left out, done: 2 jobs" in capsys.readouterr().out
    for stale in sub.glob("*.sbatch"):
        assert stale.name in {s["name"] + ".sbatch" for s in json.loads((sub / "plan.json").read_text())["scripts"]}
    record = json.loads((sub / "plan.json").read_text())
    assert [(s["name"], s["tasks"], s["after"]) for s in record["scripts"]] == [
        ("01-generate-" + GEN, 2, []),
        ("02-merge-" + GEN, None, ["01-generate-" + GEN]),
        ("03-train", 7, []),  # 6 that read no set and DiffuseMix, whose set is there: none waits
        ("04-train-after-" + GEN, 3, ["02-merge-" + GEN]),
    ]
    assert f"{RESULTS}/mixup-seed0.json" not in record["jobs"] and record["done"] == [
        EDITS,
        f"{RESULTS}/mixup-seed0.json",
    ]
    assert "#SBATCH --gres=gpu:1" in (sub / "03-train.sbatch").read_text()
    assert "gres" not in (sub / f"02-merge-{GEN}.sbatch").read_text()  # merging needs no GPU


def test_paper_sets_get_at_most_one_task_per_chunk():
    plan = J.jobs("paper", ["Table 2"], "runs/paper")
    scripts, named = S.scripts(plan, "runs/paper", S.SlurmOptions(set_tasks=64))
    gen = next(s for s in scripts if s.phase == "generate")
    assert gen.tasks == 32  # Flowers-102 at 10 per class: 1,020 sources in chunks of one batch of 32
    assert [s.phase for s in scripts].count("edit") == 0  # no editor given: DiffuseMix's set and row are left out
    assert all(not j.refused for j in named.values()) and any(j.refused for j in plan)


def test_tables_that_share_a_set_or_a_run_submit_it_once():
    plan = J.jobs("paper", out_dir="runs/paper")
    named = J.unique_jobs(plan, "runs/paper")
    shared = [J.job_id(j, "runs/paper") for j in plan if named[J.job_id(j, "runs/paper")] is not j]
    # CUB's counterparts and edits (Tables 4 and 5), Cars' counterparts (Tables 4 and 7): each submitted once
    assert shared == ["generated", "edits-cub-200-2011", "generated-stanford-cars"]
    cub = named["generated"]
    assert cub.table == "Table 4" and cub.exp.train.model == "densenet121"  # Table 5 trains another network on it
    other = dataclasses.replace(cub, exp=cub.exp.replace(steps=10))
    with pytest.raises(ValueError, match="job generated: planned twice with other settings \\(generate differ\\)"):
        J.unique_jobs([cub, other], "runs/paper")


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--run"], "--slurm writes the jobs as Slurm arrays"),
        (["--time", "gen=1:00:00"], "time phases ['gen']: expected generate, edit, merge, train"),
        (["--set-tasks", "0"], "set_tasks=0: expected >= 1"),
    ],
)
def test_bad_slurm_flags_fail_in_one_line(tmp_path, capsys, extra, message):
    assert cli.main([*PLAN, "--out", str(tmp_path / "b"), "--slurm", str(tmp_path / "s"), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "s").exists()


def test_a_folder_of_another_plan_or_missing_weights_fail_in_one_line(tmp_path, capsys):
    sub = tmp_path / "s"
    sub.mkdir()
    (sub / "notes.txt").write_text("mine")
    cases = [
        ([*PLAN, "--slurm", str(sub)], "holds other files and no submission of diffcore"),
        (["plan", "--profile", "paper", "--slurm", str(tmp_path / "p")], "needs --weights and --data"),
        (
            ["plan", "--profile", "paper", "--table", "2", "--weights", str(tmp_path), "--data", str(tmp_path)]
            + ["--slurm", str(tmp_path / "p")],
            "cosxl.safetensors: no such file or folder",
        ),
        (["plan", "--merge"], "--merge needs --job NAME"),
        (["plan", "--table", "2", "--run", "--job", "nope"], "job='nope': no such job in this plan"),
    ]
    for argv, message in cases:
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    (sub / "notes.txt").unlink()
    assert cli.main([*PLAN, "--out", str(tmp_path / "b"), "--slurm", str(sub)]) == 0
    assert cli.main([*PLAN, "--epochs", "3", "--out", str(tmp_path / "b"), "--slurm", str(sub)]) == 2
    assert "holds the submission of another plan" in capsys.readouterr().err


@pytest.mark.slow
def test_a_set_job_by_name_makes_its_shard_under_an_array_and_merges_to_one_processs_set(tmp_path, monkeypatch, capsys):
    """What an array task and a merge job run (`--run --job`, `--merge --job`), in this process, with the array's
    variables set as Slurm sets them: the generated and the edited set equal one process's (the edited set has no
    `diffcore merge` of its own). Runs where no Slurm is installed."""
    plan, sets = (
        ["plan", "--table", "2", "--few-shot", "2", "--epochs", "1"],
        ["generated-digits-2shot", "edits-digits-2shot"],
    )
    for task in (0, 1):
        array = dict(ID=task, COUNT=2, MIN=0, MAX=1, STEP=1)
        for k, v in array.items():
            monkeypatch.setenv(f"SLURM_ARRAY_TASK_{k}", str(v))
        for name in sets:
            assert cli.main([*plan, "--out", str(tmp_path / "array"), "--run", "--job", name]) == 0
    assert "shard rank-00001-of-00002 done; `--merge --job` finishes the set" in capsys.readouterr().out
    for k in array:
        monkeypatch.delenv(f"SLURM_ARRAY_TASK_{k}")
    for name in sets:
        assert not (tmp_path / "array" / name / "run.json").exists()
        assert cli.main([*plan, "--out", str(tmp_path / "array"), "--merge", "--job", name]) == 0
        assert cli.main([*plan, "--out", str(tmp_path / "one"), "--run", "--job", name]) == 0
        assert _tree(tmp_path / "array" / name) == _tree(tmp_path / "one" / name), name
        assert len(list((tmp_path / "array" / name / "logs").iterdir())) == 2  # one provenance log per task
    capsys.readouterr()
    assert cli.main([*plan, "--out", str(tmp_path / "array"), "--run", "--job", sets[0]]) == 0
    assert "finished, skipped" in capsys.readouterr().out
    assert (
        cli.main(
            [*plan, "--out", str(tmp_path / "array"), "--merge", "--job", "results-digits-2shot-1ep/vanilla-seed0.json"]
        )
        == 2
    )
    assert "a training run has no shards to merge" in capsys.readouterr().err


def test_this_page_shows_the_written_scripts(tmp_path):
    """book/scale-out.md shows the command the Slurm test below runs and the scripts it writes, as written."""
    page = (Path(__file__).parents[1] / "book" / "scale-out.md").read_text()
    section = page[page.index("### What the test submits") :]
    block = section[section.index("```bash\n") + 8 :].split("\nbash ")[0]
    argv = shlex.split(block.replace("\\\n", " "))[3:]  # after `python -m diffcore`
    places = {"/scratch/table2": tmp_path / "build", "/scratch/table2-slurm": tmp_path / "slurm"}
    assert argv == [*PLAN, "--out", "/scratch/table2", "--slurm", "/scratch/table2-slurm", *SLURM]
    assert cli.main([str(places.get(a, a)) for a in argv]) == 0
    shown = dict(re.findall(r"<!-- written: (\S+) -->\n```bash\n(.*?)```", section, re.S))
    assert len(shown) == 3
    for name, text in shown.items():
        written = (tmp_path / "slurm" / name).read_text()
        for here, there in [
            (sys.executable, "/home/me/diffcore/.venv/bin/python"),
            (str(Path.cwd()), "/home/me/diffcore"),
            (str(places["/scratch/table2-slurm"]), "/scratch/table2-slurm"),
            (str(places["/scratch/table2"]), "/scratch/table2"),
        ]:
            written = written.replace(here, there)
        assert written == text, name


# ---------------------------------------------------------------- a one-node Slurm
BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")
PACKAGES = "slurmctld slurmd slurm-client munge"


def _why_no_slurm() -> str | None:
    """Why a one-node Slurm cannot start here (one line), or None."""
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    missing = [b for b in BINARIES if shutil.which(b, path=path) is None]
    ci = os.environ.get("DIFFCORE_SLURM_UNAVAILABLE")  # .ci/run: why apt-get could not install them
    if missing:
        return f"Slurm not installed ({', '.join(missing)} missing): {ci or f'as root: apt-get install -y {PACKAGES}'}"
    if os.geteuid() != 0:
        return "a one-node Slurm needs root (slurmd starts each job as its user)"
    try:
        pwd.getpwnam("munge")
    except KeyError:
        return "no user munge (the munge package makes it)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    """munged, slurmctld and slurmd on this host, every file under `root`; clients find it through SLURM_CONF."""

    def __init__(self, root: Path):
        self.root, self.procs = root, []
        self.env = {**os.environ, "SLURM_CONF": str(root / "slurm.conf")}
        self.env["PATH"] = self.env.get("PATH", "") + ":/usr/sbin:/sbin"

    def run(self, *cmd, check=True) -> subprocess.CompletedProcess:
        done = subprocess.run([str(c) for c in cmd], env=self.env, capture_output=True, text=True, timeout=60)
        if check and done.returncode:
            raise AssertionError(f"{' '.join(map(str, cmd))}: rc {done.returncode}: {done.stderr.strip()}")
        return done

    def start(self) -> None:
        key, run, logs = self.root / "munge", self.root / "munge-run", self.root / "log"
        for d, mode in ((key, 0o700), (run, 0o755), (logs, 0o755), (self.root / "state", 0o755)):
            d.mkdir(mode=mode)
        (key / "munge.key").write_bytes(os.urandom(128))  # a key of its own: /etc/munge is left alone
        (key / "munge.key").chmod(0o600)
        for p in (key, key / "munge.key", run):
            shutil.chown(p, "munge", "munge")  # munged refuses a key or socket folder that another user owns
        socket_path = run / "munge.socket"
        self._spawn(
            ["munged", "-F", f"--key-file={key}/munge.key", f"--socket={socket_path}", f"--pid-file={run}/munged.pid"]
            + [f"--log-file={key}/munged.log", f"--seed-file={key}/munged.seed"],
            "munged",
            user="munge",
        )
        self._wait(socket_path.exists, 10, "munged made no socket")
        (self.root / "slurm.conf").write_text(slurm_conf(self.root, socket_path))
        self._spawn(["slurmctld", "-D", "-f", self.root / "slurm.conf"], "slurmctld")
        self._wait(lambda: self.run("sinfo", check=False).returncode == 0, 30, "slurmctld does not answer")
        self._spawn(["slurmd", "-D", "-f", self.root / "slurm.conf"], "slurmd")
        idle = lambda: self.run("sinfo", "-h", "-o", "%t", check=False).stdout.strip() == "idle"  # noqa: E731
        self._wait(idle, 30, "the node is not idle")

    def _spawn(self, cmd: list, name: str, user: str | None = None) -> None:
        """Start a daemon in the foreground (-D, -F): its pid is ours to stop; its output goes to log/<name>.out."""
        drop = dict(user=user, group=user, extra_groups=[]) if user else {}  # munged: none of root's groups
        with open(self.root / "log" / f"{name}.out", "w") as out:  # the child keeps its own copy of the handle
            self.procs.append(
                (name, subprocess.Popen([str(c) for c in cmd], env=self.env, stdout=out, stderr=out, **drop))
            )

    def _wait(self, ok, seconds: float, what: str) -> None:
        deadline = time.monotonic() + seconds
        while not ok():
            dead = [(n, p.returncode) for n, p in self.procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(
                    f"{what} ({', '.join(f'{n} exited {rc}' for n, rc in dead) or 'timeout'}): {self.tail()}"
                )
            time.sleep(0.2)

    def tail(self) -> str:
        """The last line of each daemon's log, on one line."""
        lines = []
        for log in sorted((self.root / "log").glob("*")):
            text = log.read_text(errors="replace").strip().splitlines()
            lines += [f"{log.name}: {text[-1]}"] if text else []
        return " | ".join(lines)

    def stop(self) -> None:
        """Cancel what is queued, then stop the daemons this node started, by their pids, last started first."""
        if any(n == "slurmd" for n, _ in self.procs):
            self.run("scancel", "--user", "root", check=False)
            self._wait_idle(30)
        for _, p in reversed(self.procs):
            p.terminate()
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def queue(self) -> list[str]:
        """`JOBID STATE` of every job still queued or running."""
        return self.run("squeue", "-h", "-o", "%i %T", check=False).stdout.split("\n")[:-1]

    def _wait_idle(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while self.queue() and time.monotonic() < deadline:
            time.sleep(0.5)


def slurm_conf(root: Path, munge_socket: Path) -> str:
    """A one-node slurm.conf for this host: 2 CPUs (1 on a machine of one: a node configured with more CPUs than it
    has is drained), no cgroups, root runs the daemons, ports of its own."""
    host, cpus = socket.gethostname().split(".")[0], min(2, os.cpu_count() or 1)
    return f"""ClusterName=diffcoretest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


@pytest.fixture(scope="module")
def slurm():
    why = _why_no_slurm()
    if why:
        pytest.skip(why)
    root = Path(tempfile.mkdtemp(prefix="diffcore-slurm-"))  # not pytest's tmp: munged must reach its socket
    root.chmod(0o755)
    node = Node(root)
    try:
        node.start()
    except (RuntimeError, OSError) as e:
        node.stop()
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"a one-node Slurm did not start: {e}")
    yield node
    node.stop()
    shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------- the plan under sbatch
def _tree(root: Path) -> dict:
    """{relative path: sha256} of every file of a set, logs/ (per-process provenance) aside (test_distributed's)."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).parts[0] != "logs"
    }


def _submit(slurm: Node, sub: Path) -> dict[str, str]:
    """bash submit.sh -> {script name: job id}, from the lines it prints."""
    printed = slurm.run("bash", sub / "submit.sh").stdout
    return dict(line.split() for line in printed.splitlines())


def _until(ok, seconds: float, what: str, slurm: Node) -> None:
    deadline = time.monotonic() + seconds
    while not ok():
        assert time.monotonic() < deadline, f"{what}: timeout; queue {slurm.queue()}"
        time.sleep(0.1)


@pytest.mark.slow
def test_the_plan_under_sbatch_makes_what_one_process_makes_and_resumes_after_scancel(slurm, tmp_path):
    t0 = time.monotonic()
    env = {**slurm.env, "OMP_NUM_THREADS": "1"}  # the thread count of the array tasks (--cpus-per-task 1)
    one, build, sub = tmp_path / "one", tmp_path / "build", tmp_path / "slurm"
    with open(tmp_path / "one.log", "w") as log:  # one process, beside the cluster's 2 CPUs
        ref = subprocess.Popen(
            [sys.executable, "-m", "diffcore", *PLAN, "--out", one, "--run"], env=env, stdout=log, stderr=log
        )
    slurm.run(sys.executable, "-m", "diffcore", *PLAN, "--out", build, "--slurm", sub, *SLURM)
    first = _submit(slurm, sub)
    print("first submission:", first)
    again = slurm.run("bash", sub / "submit.sh", check=False)
    assert again.returncode == 1 and "still queued or running" in again.stderr  # never two submissions at once

    # cancel the second shard of the generated set as soon as it runs, and the array of training runs that read no
    # set once its first run is done: the set's merge and the runs that read it are cancelled with it (afterok)
    gen, no_set = first[f"01-generate-{GEN}"], first["05-train"]
    states = lambda: dict(line.split() for line in slurm.queue())  # noqa: E731
    _until(lambda: states().get(f"{gen}_1") == "RUNNING", 120, "the second shard runs", slurm)
    slurm.run("scancel", f"{gen}_1")
    plan = json.loads((sub / "plan.json").read_text())
    no_set_runs = [build / k for k in next(s["jobs"] for s in plan["scripts"] if s["name"] == "05-train")]
    _until(lambda: any(p.is_file() for p in no_set_runs), 300, "a first training run", slurm)
    slurm.run("scancel", no_set)
    _until(lambda: not slurm.queue(), 300, "the queue drains", slurm)
    assert not (build / GEN / "run.json").exists() and (build / EDITS / "run.json").is_file()
    assert not list((sub / "logs").glob(f"03-merge-{GEN}-*.out"))  # never started: its shards did not all succeed
    after_gen = next(s["jobs"] for s in plan["scripts"] if s["name"] == f"07-train-after-{GEN}")
    assert not any((build / k).exists() for k in after_gen)  # cancelled by Slurm with the merge they wait for
    assert 0 < sum(p.is_file() for p in no_set_runs) < len(no_set_runs)
    done = {p: p.stat().st_mtime_ns for p in sorted((build / RESULTS).glob("*.json"))}

    second = _submit(slurm, sub)  # the same script again: only what is unfinished is done
    print("second submission:", second)
    _until(lambda: not slurm.queue(), 300, "the queue drains", slurm)
    assert ref.wait(timeout=300) == 0, (tmp_path / "one.log").read_text()[-2000:]
    seconds = time.monotonic() - t0

    # the sets: byte for byte those of one process; the results: the same metrics and losses
    for name in (GEN, EDITS):
        assert _tree(build / name) == _tree(one / name), name
    shards = sorted(p.name for p in (build / GEN / "logs").iterdir())
    assert shards == ["generate.rank-00000-of-00002.jsonl", "generate.rank-00001-of-00002.jsonl"]
    starts = [json.loads(x) for x in (build / GEN / "logs" / shards[0]).read_text().splitlines()]
    assert [s["attempts_this_start"] > 0 for s in starts] == [True, False]  # shard 0 was finished: nothing redone
    results = sorted(p.name for p in (one / RESULTS).glob("*.json"))
    assert results == sorted(p.name for p in (build / RESULTS).glob("*.json")) and len(results) == 11
    for name in results:
        a, b = (json.loads((d / RESULTS / name).read_text()) for d in (one, build))
        assert a["metrics"] == b["metrics"], name
        assert [e["train_loss"] for e in a["history"]] == [e["train_loss"] for e in b["history"]], name

    # finished work was skipped: same files, and each task of it said so
    assert {p: p.stat().st_mtime_ns for p in done} == done
    log = lambda name, task: (sub / "logs" / f"{name}-{second[name]}_{task}.out").read_text()  # noqa: E731
    jobs = next(s["jobs"] for s in plan["scripts"] if s["name"] == "05-train")
    skipped = {k for t, k in enumerate(jobs) if "finished, skipped" in log("05-train", t)}
    assert skipped == {k for k in jobs if build / k in done}
    assert all("finished, skipped" in log(f"02-edit-{EDITS}", t) for t in (0, 1))
    assert "finished, skipped" in log(f"06-train-after-{EDITS}", 0)  # DiffuseMix's run, done before the scancel
    names = sorted(p.name for p in (sub / "logs").iterdir())  # every task's output is in DIR/logs
    for s in plan["scripts"]:
        n = f"{s['name']}-{second[s['name']]}"
        assert (names.count(f"{n}.out") if s["tasks"] is None else sum(x.startswith(n + "_") for x in names)) == (
            s["tasks"] or 1
        ), n
    print(f"job ids: {first} then {second}; {seconds:.0f} s from the first submission to the last result")
