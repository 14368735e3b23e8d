"""Generation survives SIGKILL: killed at random points and resumed, it ends with the set and manifest of an
uninterrupted run, byte for byte; no row ever names a missing or partial file; no committed image is redone.

The runs are real processes killed with SIGKILL: forked from the test (models loaded once, so ten kills take
seconds) and, once, `python -m diffcore generate` itself. The shipped tiny models, 2 denoising steps, 20 digits.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hostile import RunsAShellCommand
from PIL import Image

import diffcore.counterparts as C
import diffcore.engine.genset as G
from diffcore import cli
from diffcore import data as D
from diffcore.engine.distributed import SINGLE
from diffcore.filter import load_clip
from diffcore.generate import draw_images, invalid_images, load_pipeline
from diffcore.profiles import PROFILES

CPU = torch.device("cpu")
ARGV = ["generate", "--few-shot", "2", "--steps", "2", "--gen-batch-size", "4", "--max-attempts", "3"]
KILLS = 10
KILL_SEED = int(os.environ.get("DIFFCORE_KILL_SEED", "2026"))  # another seed, other kill points


@pytest.fixture(scope="module")
def job():
    """Configs exactly as `diffcore generate <ARGV>` builds them, the dataset, and the models, loaded once."""
    exp = cli.experiment_of(cli.parser().parse_args(ARGV + ["--out", "unused"]))
    ds = D.open_dataset("digits", None, "train", 2)
    pipe = load_pipeline(exp.generate, CPU, torch.float32)
    clip = load_clip(exp.filter, CPU)
    cfgs = (exp.prompt, exp.generate, exp.filter, exp.counterparts)
    return ds, pipe, clip, cfgs


def _fork(fn) -> int:
    """Run fn() in a child process (one torch thread, output discarded); the child exits 0, or 1 on an error."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            torch.set_num_threads(1)  # as DataLoader workers do: a forked OpenMP pool is not to be trusted
            sys.stdout = sys.stderr = open(os.devnull, "w")
            fn()
            code = 0
        finally:
            os._exit(code)
    return pid


def _generate(job, out: Path):
    ds, pipe, clip, cfgs = job
    return lambda: C.make_counterparts(ds, pipe, clip, out, *cfgs, progress=False)


def _wait(pid: int, timeout: float) -> int | None:
    """Exit status if the child ended within `timeout` seconds, else None (still running)."""
    end = time.perf_counter() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.perf_counter() >= end:
            return None
        time.sleep(0.002)


def _kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def _rows_on_disk(out: Path) -> int:
    path = out / "manifest.csv"
    return max(0, path.read_bytes().count(b"\r\n") - 1) if path.is_file() else 0


@pytest.fixture(scope="module")
def reference(job, tmp_path_factory):
    """An uninterrupted run (in a child, like the killed ones) and its time per batch in seconds."""
    out = tmp_path_factory.mktemp("uninterrupted")
    pid, t_first = _fork(_generate(job, out)), None
    while (code := _wait(pid, 0.002)) is None:
        if t_first is None and _rows_on_disk(out):
            t_first = time.perf_counter()
    assert code == 0
    batches = -(-_rows_on_disk(out) // job[3][1].batch_size)
    return out, (time.perf_counter() - t_first) / max(1, batches - 1)


def _files(out: Path) -> dict[str, str]:
    """sha256 of every file of the set (images, rejected attempts, manifest, run.json); logs/ holds each start's
    clock and host."""
    return {
        p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.relative_to(out).parts[0] != "logs"
    }


def _whole_batches(job, rows: list[dict]) -> list[dict]:
    """The rows that form whole batches: what a resume keeps (a cut batch is redone, identically). One process
    makes the chunks one after the other, each to its end, so each chunk's rows are replayed on their own."""
    ds, _, _, (prompt, gen, filt, cp) = job
    whole = []
    for chunk in C.counterpart_set(ds, "unused", prompt, gen, filt, cp).chunks:
        ids = {ds.ids[i] for i in chunk}
        mine = [r for r in rows if r["source_id"] in ids]
        n, _ = G.replay_queue(mine, ds.ids, chunk, gen.batch_size)
        whole += mine[:n]
    return whole


def _unreferenced(out: Path, rows: list[dict]) -> int:
    named = {r["file"] for r in rows}
    return sum(
        p.relative_to(out).as_posix() not in named for sub in ("images", "rejected") for p in (out / sub).rglob("*.png")
    )


def _check_after_kill(out: Path, committed: dict[str, tuple[int, int]], job) -> None:
    """No row names a missing or partial file; remember (inode, mtime) of every committed file."""
    for r in C.read_manifest(out / "manifest.csv"):
        if r["file"]:
            with Image.open(out / r["file"]) as im:
                im.load()  # a truncated PNG would raise here
    for r in _whole_batches(job, C.read_manifest(out / "manifest.csv")):
        if r["file"]:
            st = (out / r["file"]).stat()
            committed.setdefault(r["file"], (st.st_ino, st.st_mtime_ns))


def _assert_same_set(out: Path, ref: Path, committed: dict[str, tuple[int, int]]) -> None:
    assert _files(out) == _files(ref)  # the manifest and every image, byte for byte; no orphan, no .tmp
    assert (out / "run.json").is_file() and not (out / G.RUNNING).exists()
    for rel, (ino, mtime) in committed.items():  # nothing committed before a kill was generated again
        st = (out / rel).stat()
        assert (st.st_ino, st.st_mtime_ns) == (ino, mtime), f"{rel} was rewritten after it was committed"
    assert C.read_manifest(out / "manifest.csv") == C.read_manifest(ref / "manifest.csv")


def test_ten_sigkills_at_random_points_resume_to_the_uninterrupted_set(job, reference, tmp_path):
    """Kill k comes at a random moment within the batch after the run has committed target_k manifest rows
    (10 sorted random targets over the run, so kills land in setup, mid-batch, mid-write, mid-commit alike)."""
    ref, t_batch = reference
    ref_rows, batch = len(C.read_manifest(ref / "manifest.csv")), job[3][1].batch_size
    rng = random.Random(KILL_SEED)
    targets = sorted(rng.randrange(0, ref_rows - 3 * batch) for _ in range(KILLS))  # 3 batches to spare
    out, committed, kills, runs = tmp_path / "killed", {}, 0, 0
    seen = {"rows at kill": [], "cut batches": 0, "left-overs": 0}
    while kills < KILLS:
        runs += 1
        pid = _fork(_generate(job, out))
        while _rows_on_disk(out) < targets[kills] and _wait(pid, 0.002) is None:
            pass
        if _wait(pid, rng.uniform(0, t_batch)) is not None:
            continue  # ended before its kill (a slow machine): the next run is killed instead
        _kill(pid)
        kills += 1
        _check_after_kill(out, committed, job)
        rows = C.read_manifest(out / "manifest.csv")
        seen["rows at kill"].append(len(rows))
        seen["cut batches"] += len(_whole_batches(job, rows)) < len(rows)
        seen["left-overs"] += len(list(out.rglob("*.tmp"))) + _unreferenced(out, rows)
    assert _wait(_fork(_generate(job, out)), 300) == 0
    print(
        f"{kills} kills in {runs} runs, rows committed at each: {seen['rows at kill']} of {ref_rows}; kills that "
        f"left a cut batch: {seen['cut batches']}, .tmp or unreferenced files: {seen['left-overs']}; "
        f"{len(_files(out))} files compared"
    )
    assert len(committed) > 0  # some files were committed before a kill, and were left alone after it
    _assert_same_set(out, ref, committed)
    # manifest.csv, run.json and one file per row that names one
    assert len(_files(out)) == 2 + sum(r["file"] != "" for r in C.read_manifest(ref / "manifest.csv"))


def _cli(argv: list[str]):
    def run():
        if cli.main(argv) != 0:
            raise SystemExit(1)

    return run


def test_sigkill_of_the_cli_process_resumes_to_the_uninterrupted_set(job, reference, tmp_path):
    """`python -m diffcore generate` itself, killed once its first batch is committed, resumed by the CLI again
    (`cli.main` in a forked child: the same code without a second 6-second interpreter start)."""
    ref, _ = reference
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "diffcore"] + ARGV + ["--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    run = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while _rows_on_disk(out) == 0 and run.poll() is None:  # its first batch is committed
        time.sleep(0.002)
    time.sleep(random.Random(7).uniform(0, 0.05))
    assert run.poll() is None, "the run ended before it could be killed"
    run.send_signal(signal.SIGKILL)
    run.wait()
    killed_rows = len(C.read_manifest(out / "manifest.csv"))
    assert killed_rows < len(C.read_manifest(ref / "manifest.csv"))
    committed: dict[str, tuple[int, int]] = {}
    _check_after_kill(out, committed, job)
    assert _wait(_fork(_cli(ARGV + ["--out", str(out)])), 300) == 0
    (out / "preview.png").unlink()  # the CLI adds a preview; the reference ran make_counterparts alone
    _assert_same_set(out, ref, committed)


# ---------------------------------------------------------------- the narrow windows, deterministically
def _copy_prefix(ref: Path, out: Path, rows: int, extra: bytes = b"") -> list[dict]:
    """A set as a kill leaves it: the first `rows` manifest rows with their files, plus `extra` bytes."""
    all_rows = C.read_manifest(ref / "manifest.csv")
    out.mkdir()
    settings = json.loads((ref / "run.json").read_text())["settings"]
    (out / G.RUNNING).write_text(json.dumps({"settings": settings}))  # a killed run has no run.json yet
    (out / "manifest.csv").write_bytes(G.manifest_text(all_rows[:rows], header=True).encode() + extra)
    for r in all_rows[:rows]:
        if r["file"]:
            (out / r["file"]).parent.mkdir(parents=True, exist_ok=True)
            (out / r["file"]).write_bytes((ref / r["file"]).read_bytes())
    return all_rows


def test_torn_manifest_line_cut_batch_tmp_and_orphan_files_are_cleaned_then_redone(job, reference, tmp_path):
    ref, _ = reference
    ref_rows = C.read_manifest(ref / "manifest.csv")
    cut = next(n for n in range(5, len(ref_rows)) if len(_whole_batches(job, ref_rows[:n])) < n)  # mid-batch
    out = tmp_path / "torn"
    all_rows = _copy_prefix(ref, out, cut, extra=b'digits/0007,,1,one,"Generate hea')  # + a cut line
    whole = _whole_batches(job, all_rows[:cut])
    orphan = out / "images" / "0009_nine" / "x-00000000.png"  # an image written, its row never appended
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"\x89PNG")
    (out / "images" / "0009_nine" / "y.png.tmp").write_bytes(b"half")
    (out / "run.json.tmp").write_bytes(b"half")
    assert len(C.read_manifest(out / "manifest.csv")) == cut  # readers never see the cut line
    ds, pipe, clip, cfgs = job
    store = C.counterpart_set(ds, out, *cfgs)
    queues, rows = store.recover(list(range(len(store.chunks))), SINGLE)
    assert rows == whole and len(whole) < cut  # whole batches only: the cut batch's rows are dropped
    assert (out / "manifest.csv").read_bytes() == G.manifest_text(whole, header=True).encode()
    todo = [(ds.ids[i], a) for c in range(len(store.chunks)) for i, a in queues[c]]
    assert todo[0] == (all_rows[len(whole)]["source_id"], int(all_rows[len(whole)]["attempt"]))  # redone first
    kept_files = {r["file"] for r in whole if r["file"]}
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert on_disk == kept_files | {"manifest.csv", G.RUNNING}  # orphans, .tmp files, the cut batch's files: gone
    C.make_counterparts(ds, pipe, clip, out, *cfgs, progress=False)
    assert _files(out) == _files(ref)


def test_other_settings_refused_even_when_the_first_run_was_killed(job, tmp_path):
    ds, pipe, clip, (prompt, gen, filt, cp) = job
    out = tmp_path / "o"
    C.counterpart_set(ds, out, prompt, gen, filt, cp).claim()  # what a run killed in its first batch leaves
    with pytest.raises(ValueError, match=r"other settings \(generate differ\)"):
        C.check_out_dir(ds, out, prompt, gen.__class__(**{**gen.__dict__, "steps": 3}), filt, cp)
    stranger = tmp_path / "theirs"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds other files .*notes.txt.* and no generated set"):
        C.make_counterparts(ds, pipe, clip, stranger, prompt, gen, filt, cp, progress=False)
    assert (stranger / "notes.txt").read_text() == "mine"


def test_a_run_killed_under_an_older_version_resumes_while_the_new_fields_keep_their_defaults(job, reference, tmp_path):
    """Settings recorded before a field existed (here: step_cache, compile_scope) read as that field's default: the
    killed run resumes to the uninterrupted set; setting the new field to anything else is refused."""
    import shutil

    ds, _, _, (prompt, gen, filt, cp) = job
    ref, _ = reference
    out = tmp_path / "old"
    shutil.copytree(ref, out)
    info = json.loads((out / "run.json").read_text())
    old = info["settings"]
    for name in ("step_cache", "compile_scope"):
        del old["generate"][name]
    (out / "run.json").unlink()  # what an older version's run killed after its first batch leaves
    (out / G.RUNNING).write_text(json.dumps({"settings": old}))
    (out / G.PLAN).write_text(
        json.dumps({"settings": old, "classes": list(ds.classes), "tau": [info["tau"][c] for c in ds.classes]})
    )
    rows = C.read_manifest(out / "manifest.csv")
    (out / "manifest.csv").write_text(G.manifest_text(rows[: gen.batch_size], header=True), newline="")
    assert _wait(_fork(_generate(job, out)), 120) == 0
    assert _files(out) == _files(ref)
    (out / G.RUNNING).write_text(json.dumps({"settings": old}))
    with pytest.raises(ValueError, match=r"other settings \(generate differ\)"):
        C.check_out_dir(ds, out, prompt, gen.__class__(**{**gen.__dict__, "step_cache": 2}), filt, cp)


# ---------------------------------------------------------------- NaN, black, constant images
def test_invalid_images_are_nan_or_constant():
    x = torch.rand(5, 3, 8, 8)
    x[1, 0, 0, 0] = float("nan")
    x[2] = 0.0  # all black: the fp16 VAE overflow after NaN -> 0
    x[3] = 0.5  # constant
    x[4, :, :4] = 0.2  # half and half: a real image
    x[4, :, 4:] = 0.8
    assert invalid_images(x).tolist() == [False, True, True, True, False]
    one_level = torch.zeros(2, 3, 8, 8)  # two grey levels apart by exactly one step of 255: a (faint) picture
    one_level[:, :, :4] = torch.tensor(1 / 255, dtype=torch.float32)
    one_level[1, :, :4] = torch.tensor(1 / 255, dtype=torch.float32) * 0.999  # less than one level: constant
    assert invalid_images(one_level).tolist() == [False, True]


class _BrokenDecoder:
    """The pipeline, but images of the listed seeds come out NaN / black / constant, as a broken fp16 VAE gives."""

    def __init__(self, pipe, bad: dict[int, float]):
        self.pipe, self.bad, self.device = pipe, bad, pipe.device

    def __call__(self, **kw):
        out = self.pipe(**kw)
        for j, g in enumerate(kw["generator"]):
            if g.initial_seed() in self.bad:
                out.images[j] = self.bad[g.initial_seed()]
        return out


def test_nan_black_constant_images_are_counted_and_regenerated_with_the_next_seed(job, reference, tmp_path):
    ds, pipe, clip, (prompt, gen, filt, cp) = job
    ref, _ = reference
    first = C.read_manifest(ref / "manifest.csv")[:3]  # attempt 0 of three sources
    bad = dict(zip((int(r["seed"]) for r in first), (float("nan"), 0.0, 0.5)))
    info = C.make_counterparts(ds, _BrokenDecoder(pipe, bad), clip, tmp_path, prompt, gen, filt, cp, progress=False)
    rows = C.read_manifest(tmp_path / "manifest.csv")
    for r in first:
        mine = [x for x in rows if x["source_id"] == r["source_id"]]
        assert mine[0]["status"] == "invalid" and mine[0]["similarity"] == "nan"
        assert mine[1]["attempt"] == "1" and mine[1]["seed"] != mine[0]["seed"]  # regenerated, new seed
        assert mine[1]["status"] != "invalid"
    assert info["summary"]["invalid"] == 3
    assert sum(v["invalid"] for v in info["summary"]["per_class"].values()) == 3
    images, flags = draw_images(pipe, ["seven"], ["thin"], [11], gen)
    assert images.shape == (1, 32, 32, 3) and flags.tolist() == [False]


def test_a_model_that_only_makes_black_images_is_stopped_early(job, tmp_path):
    ds, pipe, clip, (prompt, gen, filt, cp) = job

    class AllBlack(_BrokenDecoder):
        def __call__(self, **kw):
            out = self.pipe(**kw)
            out.images.zero_()
            return out

    with pytest.raises(ValueError, match=r"dtype='float32', vae=None: \d+ of \d+ generated images are NaN, black"):
        C.make_counterparts(ds, AllBlack(pipe, {}), clip, tmp_path, prompt, gen, filt, cp, progress=False)
    rows = C.read_manifest(tmp_path / "manifest.csv")
    assert G.INVALID_GUARD_MIN_ATTEMPTS <= len(rows) < G.INVALID_GUARD_MIN_ATTEMPTS + gen.batch_size


# ---------------------------------------------------------------- every invalid parameter: one line, before heavy work
@pytest.fixture
def no_heavy_work(monkeypatch):
    """Loading a model, generating, training: any of them starting fails the test."""
    import diffcore.experiment as X
    import diffcore.train

    def heavy(*a, **k):
        raise AssertionError("heavy work started before the bad parameter was refused")

    for module, name in (
        (X, "load_pipeline"),
        (X, "load_clip"),
        (X, "load_editor"),
        (X, "make_counterparts"),
        (diffcore.train, "train"),
    ):
        monkeypatch.setattr(module, name, heavy)


def _bad_flags(tmp_path: Path) -> list[tuple[list[str], str, str]]:
    """(argv, parameter, value): each must be named in the one-line refusal."""
    f = tmp_path / "a-file"
    f.write_text("x")
    clip = str(Path(PROFILES["embedded"]["filter"]["clip_pretrained"]))
    g, t, r = (
        ["generate", "--out", str(tmp_path / "g")],
        ["train", "--method", "vanilla", "--out", str(tmp_path / "t.json")],
        ["run", "--out", str(tmp_path / "r")],
    )
    cases = [
        (g + ["--fraction", "0"], "fraction", "0.0"),
        (g + ["--fraction", "1.5"], "fraction", "1.5"),
        (g + ["--few-shot", "0"], "few_shot", "0"),
        (t + ["--few-shot", "-3"], "few_shot", "-3"),
        (g + ["--steps", "0"], "steps", "0"),
        (g + ["--steps", "abc"], "--steps", "'abc'"),
        (g + ["--size", "30"], "size", "30"),
        (g + ["--gen-batch-size", "0"], "batch_size", "0"),
        (g + ["--guidance-scale", "-1"], "guidance_scale", "-1.0"),
        (g + ["--guidance-scale", "1"], "guidance_scale", "1.0"),
        (g + ["--dtype", "fp64"], "dtype", "'fp64'"),
        (g + ["--device", "gpu"], "device", "'gpu'"),
        (g + ["--model", "/no/such/model"], "model", "/no/such/model"),
        (g + ["--model", str(tmp_path / "w.ckpt")], "model", "w.ckpt"),
        (g + ["--model", clip, "--config-dir", "/no/dir"], "config_dir", "/no/dir"),
        (g + ["--vae", "/no/vae"], "vae", "/no/vae"),
        (g + ["--template", "a photo"], "template", "'a photo'"),
        (g + ["--template", "{label} in {place}"], "template", "{place}"),
        (g + ["--clip-model", "nope"], "clip_model", "'nope'"),
        (g + ["--clip-pretrained", "/no/clip.safetensors"], "clip_pretrained", "/no/clip.safetensors"),
        (g + ["--clip-config", "/no/c.json"], "clip_config", "/no/c.json"),
        (g + ["--z-pairs", "0"], "z_pairs", "0"),
        (g + ["--max-attempts", "0"], "max_attempts", "0"),
        (g + ["--step-cache", "0"], "step_cache", "0"),
        (g + ["--io-threads", "-1"], "io_threads", "-1"),
        (g + ["--compile-scope", "half"], "compile_scope", "'half'"),
        (g + ["--profile", "laptop"], "profile", "'laptop'"),
        (g + ["--dataset", "mnist"], "dataset", "'mnist'"),
        (g + ["--dataset", "cifar100"], "dataset", "cifar100"),
        (g + ["--dataset", "folder", "--data-root", "/no/root"], "data_root", "/no/root"),
        (["generate", "--out", str(f)], "out", str(f)),
        (t + ["--method", "nope"], "--method", "'nope'"),
        (t + ["--method-arg", "alpha"], "--method-arg", "'alpha'"),
        (t + ["--method", "diffcore"], "method", "'diffcore'"),
        (t + ["--method", "diffcore", "--generated", "/no/gen"], "generated", "/no/gen"),
        (t + ["--arch", "vgg16"], "model", "'vgg16'"),
        (t + ["--epochs", "0"], "epochs", "0"),
        (t + ["--batch-size", "0"], "batch_size", "0"),
        (t + ["--lr", "0"], "lr", "0.0"),
        (t + ["--lr", "-1"], "lr", "-1.0"),
        (t + ["--image-size", "4"], "image_size", "4"),
        (t + ["--augment", "big"], "--augment", "'big'"),
        (t + ["--workers", "-1"], "workers", "-1"),
        (t + ["--pretrained", "/no/w.pt"], "pretrained", "/no/w.pt"),
        (t + ["--pretrained", str(f)], "pretrained", str(f)),
        (t + ["--mix-mode", "both2"], "--mix-mode", "'both2'"),
        (t + ["--lam-alpha", "0"], "lam_alpha", "0.0"),
        (t + ["--lam-beta", "-1"], "lam_beta", "-1.0"),
        (t + ["--seed", "x"], "--seed", "'x'"),
        (t + ["--test-split", "dev"], "split", "'dev'"),
        (t + ["--device", "cuda:x"], "device", "'cuda:x'"),
        (["train", "--out", str(tmp_path)], "out", str(tmp_path)),
        (r + ["--seeds", "a"], "--seeds", "'a'"),
        (r + ["--steps", "-2"], "steps", "-2"),
        (r + ["--epochs", "0"], "epochs", "0"),
        (r + ["--dataset", "folder"], "dataset", "folder"),
    ]
    if not torch.cuda.is_available():
        cases.append((t + ["--device", "cuda"], "device", "'cuda'"))
    (tmp_path / "w.ckpt").write_bytes(b"")
    base = {  # the rest of a command line that would run
        "generate": g,
        "merge": ["merge", "--out", str(tmp_path / "g")],
        "run": r,
        "edit": ["edit", "--out", str(tmp_path / "e")],
        "train": t,
        "estimate": ["estimate"],
    }
    for command, flag, name in float_flags():  # NaN passes `x <= 0`, inf passes `x > 0`: both refused by name
        for value in ("nan", "inf", "-inf"):  # named together: `lr=-inf`
            cases.append((base[command] + [flag, value], f"{name}={float(value)}", str(float(value))))
    for value in ("nan", "inf", "-inf", "NaN", "Infinity", "-Infinity"):  # a method's hyperparameters too
        argv = t + ["--method", "mixup", "--method-arg", f"alpha={value}"]
        cases.append((argv, f"alpha={float(value)}", str(float(value))))
    return cases


def float_flags() -> list[tuple[str, str, str]]:
    """(command, flag, parameter) of every float setting of every command: read from the parser (flags of type
    float) and the config fields (tuples of floats, such as --milestones), so that a new one is covered unlisted."""
    import argparse
    import typing

    from diffcore import experiment as X

    def floats(dest: str) -> bool:
        targets = X.NAMES.get(dest, []) + [("edit", dest)] * (dest in X.EditConfig.__dataclass_fields__)
        hints = [typing.get_type_hints(X.STEPS[step])[field] for step, field in targets]
        return any(h == tuple[float, ...] for h in hints)

    sub = next(a for a in cli.parser()._actions if isinstance(a, argparse._SubParsersAction))
    out = []
    for command, parser in sub.choices.items():
        for action in parser._actions:
            flag = next((s for s in action.option_strings if s.startswith("--")), None)
            if flag and (action.type is float or floats(action.dest)):
                name = action.dest + ("[0]" if action.type is not float else "")  # a tuple: its first item
                out.append((command, flag, name))
    return out


def test_float_flags_are_found(tmp_path):
    """The derivation above finds the float settings (a guard against it silently finding none)."""
    found = {(c, f) for c, f, _ in float_flags()}
    assert {
        ("generate", "--guidance-scale"),
        ("train", "--lr"),
        ("train", "--lam-alpha"),
        ("run", "--milestones"),
    } <= found
    assert {("edit", "--image-guidance-scale"), ("estimate", "--s-per-img"), ("merge", "--fraction")} <= found
    assert len(found) >= 40


def test_every_bad_flag_fails_in_one_line_naming_parameter_and_value(tmp_path, capsys, no_heavy_work):
    for argv, name, value in _bad_flags(tmp_path):
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("diffcore: error: "), (argv, err)
        assert name in err and value in err, (argv, err)
    assert not (tmp_path / "g").exists() and not (tmp_path / "r").exists()  # nothing written


@pytest.mark.parametrize(
    "make",
    [
        lambda: __import__("diffcore.generate", fromlist=["x"]).GenerateConfig(steps=0),
        lambda: __import__("diffcore.generate", fromlist=["x"]).GenerateConfig(dtype="fp64"),
        lambda: __import__("diffcore.generate", fromlist=["x"]).GenerateConfig(scheduler="ddim"),
        lambda: __import__("diffcore.generate", fromlist=["x"]).GenerateConfig(batch_size=0),
        lambda: __import__("diffcore.filter", fromlist=["x"]).FilterConfig(batch_size=0),
        lambda: __import__("diffcore.filter", fromlist=["x"]).FilterConfig(tau_seed=-1),
        lambda: C.CounterpartConfig(selection_seed=-1),
        lambda: __import__("diffcore.train", fromlist=["x"]).TrainConfig(momentum=1.0),
        lambda: __import__("diffcore.train", fromlist=["x"]).TrainConfig(weight_decay=-1.0),
        lambda: __import__("diffcore.train", fromlist=["x"]).TrainConfig(lr_decay=0.0),
        lambda: __import__("diffcore.train", fromlist=["x"]).TrainConfig(milestones=(1.5,)),
        lambda: __import__("diffcore.train", fromlist=["x"]).TrainConfig(selection_seed=-2),
        lambda: __import__("diffcore.train", fromlist=["x"]).TrainConfig(device="tpu"),
        lambda: __import__("diffcore.train", fromlist=["x"]).TrainConfig(method_args={"nope": 1}),
        lambda: __import__("diffcore.mix", fromlist=["x"]).MixConfig(p_pixel=2.0),
    ],
)
def test_configs_built_in_code_refuse_bad_values_in_one_line(make):
    """What a notebook's parameters cell ends up in: the same checks as the command line, at construction."""
    with pytest.raises(ValueError) as e:
        make()
    msg = str(e.value)
    assert "\n" not in msg and "=" in msg and "expected" in msg or "bad hyperparameters" in msg


# ---------------------------------------------------------------- loading: no code from model or checkpoint files
def _evil_code(marker: Path) -> str:
    return (
        f"open({str(marker)!r}, 'w').write('ran')\nfrom diffusers import UNet2DConditionModel\n"
        f"class EvilUNet(UNet2DConditionModel):\n    pass\n"
    )


def test_a_model_folder_that_ships_code_is_refused_and_the_code_never_runs(tiny_sd_dir, tmp_path, capsys):
    import shutil

    evil, marker = tmp_path / "evil", tmp_path / "code-ran"
    shutil.copytree(tiny_sd_dir, evil)
    (evil / "unet" / "evil_unet.py").write_text(_evil_code(marker))
    index = json.loads((evil / "model_index.json").read_text())
    (evil / "model_index.json").write_text(json.dumps({**index, "unet": ["evil_unet", "EvilUNet"]}))
    assert (
        cli.main(["generate", "--model", str(evil), "--size", "16", "--few-shot", "2", "--out", str(tmp_path / "o")])
        == 2
    )
    err = [line for line in capsys.readouterr().err.splitlines() if "diffcore: error:" in line]
    assert len(err) == 1 and "refused by diffusers" in err[0] and "trust_remote_code" in err[0]
    assert not marker.exists()


def test_pickled_weights_in_a_model_folder_are_never_unpickled(tiny_sd_dir, tmp_path):
    import shutil

    evil, marker = tmp_path / "evil", tmp_path / "code-ran"
    shutil.copytree(tiny_sd_dir, evil)
    (evil / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    torch.save({"conv_in.weight": RunsAShellCommand(marker)}, evil / "unet" / "diffusion_pytorch_model.bin")
    cfg = __import__("diffcore.generate", fromlist=["x"]).GenerateConfig(model=str(evil), size=16)
    with pytest.raises((FileNotFoundError, ValueError), match=f"model={evil}"):
        load_pipeline(cfg, CPU, torch.float32)  # safetensors only
    assert not marker.exists()


def test_the_package_never_runs_code_from_files_nor_builds_a_shell_command():
    """Read the source: no trust_remote_code=True, every torch.load has weights_only=True, no pickle, eval, exec,
    os.system/popen, shell=True; subprocess only ever gets an argument list (no string for a shell to parse)."""
    import ast

    bad = []
    for path in sorted(Path(C.__file__).parent.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            kw = {k.arg: k.value for k in node.keywords}
            const = lambda key: isinstance(kw.get(key), ast.Constant) and kw[key].value  # noqa: E731
            where = f"{path.name}:{node.lineno} {name}"
            if "trust_remote_code" in kw and const("trust_remote_code") is not False:
                bad.append(where)
            if name.endswith("torch.load") and const("weights_only") is not True:
                bad.append(where)
            if name in ("eval", "exec", "os.system", "os.popen", "pickle.load", "pickle.loads") or const("shell"):
                bad.append(where)
            if name.startswith("subprocess.") and node.args and not isinstance(node.args[0], (ast.List, ast.Name)):
                bad.append(where)
    assert bad == []
