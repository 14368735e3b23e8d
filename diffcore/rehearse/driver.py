"""`python -m diffcore rehearse`: every job of the paper profile, executed on stand-ins written in the real formats,
then the paper book built from them and checked in Chromium.

    python -m diffcore rehearse --out runs/rehearsal                       # tiny, CPU: what `make rehearse` and CI run
    python -m diffcore rehearse --out /scratch/rehearsal --size full --device cuda   # the real shapes, on a GPU

What it writes, under --out:
    weights/   random, seeded weights in the files `--weights` expects (diffcore.rehearse.weights): cosxl.safetensors
               in CosXL's original single-file key layout with the sdxl-base-1.0/ config folder, sdxl-vae-fp16-fix/,
               clip-vit-b-32/open_clip_model.safetensors, wide_resnet101_2.pth, instruct-pix2pix/
    data/      every paper dataset in its real on-disk layout, a few images per class (diffcore.rehearse.datasets)
    runs/      the plan's output (`diffcore plan --profile paper --weights weights --data data --out runs`), the
               executed notebooks and the book (`python -m diffcore.reproduce --profile paper ...`)
    costs.json seconds and peak memory of every job (what `diffcore plan --costs` reads), rehearsal.json a summary

What runs is the real code path: the plan's jobs (plan.jobs.jobs / run_job) with the weights and datasets given as a
real run gives them, then `diffcore.reproduce` in a subprocess, as a user starts it. Nothing in that path knows it is a
rehearsal; it is told only the sizes (SIZES: denoising steps, image sizes, one epoch) and, for the book, a notice that
every page shows. A tiny rehearsal proves that every job and page runs and that the files are read as the real ones
would be; it proves nothing about the numbers (random weights), nor about speed or memory at the real sizes (that is
--size full, on a GPU).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

from ..engine.checks import json_text
from ..engine.runtime import provenance, resolve_device
from ..engine.safety import atomic_write_text
from ..plan import jobs as J

REPO = Path(__file__).resolve().parents[2]
NOTICE = "Rehearsal: random weights and stand-in datasets; the numbers mean nothing."

# What a rehearsal changes of the paper profile: sizes only. "overrides" go to every job (experiment setting names,
# diffcore.experiment.NAMES), "edit" to DiffuseMix's editor, "notebooks" to the pages that time or sample something.
SIZES: dict[str, dict] = {
    "tiny": {  # a 2-core CPU in minutes: every job and page runs, nothing is measured
        "overrides": {
            "steps": 2,  # denoising steps (paper: 50)
            "size": 64,  # generated side in px (paper: 512); the tiny SDXL's latent is 8x8
            "epochs": 1,  # paper: 300
            "image_size": 64,  # classifier input (paper: 32 / 64 / 224 by dataset): every network's last stage keeps
            # a 2x2 map, so BatchNorm sees more than one value per channel even in a last batch of one image
        },
        "edit": {"steps": 2, "size": 64},  # DiffuseMix's InstructPix2Pix (paper: 100 steps, 512 px)
        "notebooks": {
            "batch_sizes": [16],  # Table 6 (paper: 16, 32, 64)
            "steps": 1,
            "warmup": 1,
            "image_size": 64,
            "fractions": [0.5, 1.0],  # Fig. 7
            "n_images": 4,  # Fig. 5
            "per_class": 2,  # the method page's grid
        },
    },
    "full": {  # the paper's networks, batch sizes and resolutions on a GPU: one epoch and a few images per class
        "overrides": {"epochs": 1},
        "edit": {},
        "notebooks": {"steps": 20, "warmup": 3},  # Table 6 as the paper profile times it
    },
}


# ---------------------------------------------------------------- inputs
def write_inputs(out: Path, size: str, seed: int = 0) -> tuple[Path, Path]:
    """The stand-in weights and datasets under out/weights and out/data; a complete one is kept (re-runs are fast)."""
    from .datasets import write_datasets
    from .weights import write_weights

    weights, data = out / "weights", out / "data"
    t0 = time.perf_counter()
    write_weights(weights, size, seed, progress=_say)
    write_datasets(data, size, seed, progress=_say)
    _say(f"inputs ready in {time.perf_counter() - t0:.0f} s: --weights {weights} --data {data}")
    return weights, data


def settings(weights: Path, data: Path, size: str) -> dict:
    """The plan's arguments and the notebooks' parameters of a rehearsal: the paths a real run gives, the sizes."""
    paths = J.paper_paths(str(weights), str(data))
    s = SIZES[size]
    return {
        "overrides": {**paths["overrides"], **s["overrides"]},
        "edit": {**paths["edit"], **s["edit"]},
        "data_roots": paths["data_roots"],
        "pretrained": paths.get("pretrained"),
        "notebooks": s["notebooks"],
    }


def plan(out: Path, cfg: dict, tables: list[str] | None, device: str | None) -> list[J.Job]:
    """The paper profile's jobs, as `diffcore plan --profile paper --weights W --data D` lists them, sized."""
    return J.jobs(
        "paper",
        tables,
        out / "runs",
        [0],
        cfg["data_roots"],
        cfg["overrides"],
        cfg["edit"],
        device=device,
        pretrained=cfg["pretrained"],
    )


# ---------------------------------------------------------------- running and measuring each job
def _cuda(device: str | None):
    import torch

    d = resolve_device(device or "auto")
    return d if d.type == "cuda" and torch.cuda.is_available() else None


def is_out_of_memory(e: BaseException) -> bool:
    import torch

    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()


def measure(job: J.Job, device: str | None = None) -> dict:
    """Run one job (the plan's run_job) and return what it cost: wall seconds, seconds per unit of work (generated
    image, edit or optimizer step) and, on CUDA, the peak memory allocated. Raises what the job raises."""
    import torch

    cuda = _cuda(device)
    if cuda is not None:
        torch.cuda.synchronize(cuda)
        torch.cuda.reset_peak_memory_stats(cuda)
    t0 = time.perf_counter()
    J.run_job(job, progress=False)
    seconds = time.perf_counter() - t0
    row = {**job_key(job), "seed": job.seed, "out": job.out, "seconds": seconds, **units(job)}
    row["s_per_unit"] = seconds / row["units"] if row.get("units") else None
    if job.kind == "train" and row.get("train_s") is not None and row.get("units"):
        row["s_per_unit"] = row["train_s"] / row["units"]  # the training loop's time, without build and evaluation
    row["peak_mem_gb"] = None if cuda is None else torch.cuda.max_memory_allocated(cuda) / 2**30
    return row


def job_key(job: J.Job) -> dict:
    return {"kind": job.kind, "table": job.table, "column": job.column, "row": job.row}


def units(job: J.Job) -> dict:
    """The units of work a finished job did, read from what it wrote: generation attempts, edits, optimizer steps;
    with the batch size and resolution they ran at."""
    import math

    if job.kind in ("generate", "edit"):
        s = json.loads((Path(job.out) / "run.json").read_text())["summary"]
        cfg = job.exp.generate if job.kind == "generate" else job.exp.edit
        return {"unit": "image", "units": s["attempts"], "kept": s["kept"], "batch": cfg.batch_size, "px": cfg.size}
    r = json.loads(Path(job.out).read_text())
    t = job.exp.train
    per_epoch = math.ceil((r["counts"]["real"] + r["counts"]["pairs"]) / t.batch_size)
    epochs = len(r["history"])
    return {
        "unit": "step",
        "units": per_epoch * epochs,
        "train_s": sum(e["time_s"] for e in r["history"]),
        "batch": t.batch_size,
        "px": t.image_size,
        "model": t.model,
    }


def largest_batch(job: J.Job, scratch: Path, device: str | None = None) -> int | None:
    """After an out-of-memory failure: the largest power-of-two fraction of the job's batch that runs, tried into
    `scratch` (the job's own outputs are left alone); None if not even one image fits."""
    import torch

    name, batch = ("gen_batch_size", job.exp.generate.batch_size) if job.kind == "generate" else ("batch_size", None)
    if job.kind == "edit":
        name, batch = "edit", job.exp.edit.batch_size
    elif job.kind == "train":
        batch = job.exp.train.batch_size
    while batch > 1:
        batch //= 2
        over = {"edit": {**dataclasses.asdict(job.exp.edit), "batch_size": batch}} if name == "edit" else {name: batch}
        trial = dataclasses.replace(
            job, exp=job.exp.replace(**over), out=str(scratch / f"batch{batch}" / Path(job.out).name)
        )
        try:
            J.run_job(trial, progress=False)
            return batch
        except Exception as e:  # noqa: BLE001 - only an out-of-memory failure means "try smaller"
            if not is_out_of_memory(e):
                raise
            if _cuda(device) is not None:
                torch.cuda.empty_cache()
    return None


# ---------------------------------------------------------------- the whole rehearsal
def run_jobs(jobs: list[J.Job], out: Path, device: str | None, keep_going: bool = False) -> tuple[list, list]:
    """Every job in order; (cost rows, failures). A failure stops the run unless keep_going."""
    rows, failures = [], []
    for k, job in enumerate(jobs, 1):
        where = f"{job.kind} {job.table} / {job.column} / {job.row}" + ("" if job.seed is None else f" seed {job.seed}")
        try:
            row = measure(job, device)
        except Exception as e:  # noqa: BLE001 - every failure is named with its job, then re-raised or listed
            failure = {**job_key(job), "error": f"{type(e).__name__}: {e}", "command": job.command()}
            if is_out_of_memory(e):
                failure["largest_batch_that_fits"] = largest_batch(job, out / "oom-probe" / f"job{k}", device)
            failures.append(failure)
            _say(f"[{k}/{len(jobs)}] FAILED {where}: {failure['error']}")
            if not keep_going:
                traceback.print_exc()
                break
            continue
        rows.append(row)
        unit = f", {row['s_per_unit']:.3g} s/{row['unit']}" if row.get("s_per_unit") else ""
        _say(f"[{k}/{len(jobs)}] {where}: {row['seconds']:.1f} s{unit}")
    return rows, failures


def build_book(out: Path, cfg: dict, weights: Path, data: Path, device: str | None) -> str:
    """Every notebook on the paper profile through papermill and the book, as a user runs them
    (`python -m diffcore.reproduce`), every page carrying the rehearsal's notice; then the book checked in Chromium.
    Returns how the check went: "passed", or "skipped: no Chromium" where none is installed (as `make check-book`)."""
    params = {"overrides": cfg["overrides"], "edit": cfg["edit"], **cfg["notebooks"]}
    params_file = out / "notebook-params.json"
    params_file.write_text(json_text(params, indent=1))
    cmd = [sys.executable, "-m", "diffcore.reproduce", "--profile", "paper", "--weights", str(weights)]
    cmd += ["--data", str(data), "--out", str(out / "runs"), "--params-file", str(params_file), "--notice", NOTICE]
    cmd += ["--device", device] if device else []
    _say("[book] " + " ".join(cmd))
    _run(cmd, "the paper book")
    check = [sys.executable, str(REPO / "scripts" / "check_book.py"), str(out / "runs" / "book" / "_build" / "html")]
    check += ["--notice", NOTICE]
    _say("[check] " + " ".join(check))
    if _run(check, "the book check in Chromium", no_browser_ok=True) == NO_BROWSER:
        _say("[check] skipped: no Chromium (make setup unpacks Debian's chromium into .venv/chromium)")
        return "skipped: no Chromium"
    return "passed"


NO_BROWSER = 2  # scripts/check_book.py's exit code when it finds no Chromium (as `make check-book`, then skipped)


def _run(cmd: list[str], what: str, no_browser_ok: bool = False) -> int:
    done = subprocess.run(cmd, cwd=REPO)
    if done.returncode and not (no_browser_ok and done.returncode == NO_BROWSER):
        raise SystemExit(f"rehearse: {what} failed (exit {done.returncode}): {' '.join(cmd)}")
    return done.returncode


def rehearse(
    out: str | Path,
    size: str = "tiny",
    device: str | None = None,
    tables: list[str] | None = None,
    book: bool = True,
    seed: int = 0,
    keep_going: bool = False,
    fresh: bool = False,
) -> dict:
    """Write the stand-ins, run every job of the paper plan (of `tables`), build and check the paper book; returns
    the summary written to <out>/rehearsal.json. Exits non-zero on the first failure (keep_going: after all jobs).
    A second call resumes: finished inputs, sets and runs are kept (the plan skips them); fresh: start from nothing."""
    if size not in SIZES:
        raise ValueError(f"size={size!r}: expected one of {list(SIZES)}")
    out = Path(out).resolve()
    if fresh and out.exists():
        if not (out / "rehearsal.json").is_file() and not (out / "weights").is_dir() and any(out.iterdir()):
            raise SystemExit(f"rehearse: --fresh would delete {out}, which holds no rehearsal: pass another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    weights, data = write_inputs(out, size, seed)
    cfg = settings(weights, data, size)
    jobs = plan(out, cfg, tables, device)
    _say(f"{len(jobs)} jobs of the paper plan ({', '.join(dict.fromkeys(j.table for j in jobs))})")
    t_jobs = time.perf_counter()
    rows, failures = run_jobs(jobs, out, device, keep_going)
    summary = {
        "kind": "diffcore-rehearsal",
        "size": size,
        "tables": sorted({j.table for j in jobs}),
        "jobs": len(jobs),
        "ran": len(rows),
        "failures": failures,
        "seconds": {"inputs": t_jobs - t0, "jobs": time.perf_counter() - t_jobs},
        "provenance": provenance(resolve_device(device or "auto")),
        "sizes": SIZES[size],
    }
    atomic_write_text(out / "costs.json", json_text({**summary, "measured": rows}, indent=1))
    if failures:
        atomic_write_text(out / "rehearsal.json", json_text(summary, indent=1))
        raise SystemExit(f"rehearse: {len(failures)} of {len(jobs)} jobs failed (listed in {out / 'rehearsal.json'})")
    if book and tables is None:
        t_book = time.perf_counter()
        summary["book_check"] = build_book(out, cfg, weights, data, device)
        summary["seconds"]["book"] = time.perf_counter() - t_book
    elif book:
        _say("book: not built for a subset of the tables (every page reads every table's runs)")
    summary["seconds"]["total"] = time.perf_counter() - t0
    atomic_write_text(out / "rehearsal.json", json_text(summary, indent=1))
    _say(f"rehearsal OK: {len(rows)} jobs in {summary['seconds']['jobs']:.0f} s, {summary['seconds']['total']:.0f} s")
    return summary


def _say(text: str) -> None:
    print(text, flush=True)


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m diffcore rehearse", description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder for the stand-ins, the runs, the book and costs.json")
    ap.add_argument("--size", default="tiny", choices=list(SIZES), help="tiny: CPU, minutes; full: real shapes, GPU")
    ap.add_argument("--device", help="auto | cpu | cuda | cuda:N (default: the profile's, auto)")
    ap.add_argument("--table", action="append", metavar="N", help="2, 3, 4, 5 or 7 (repeatable; default: all + book)")
    ap.add_argument("--no-book", action="store_true", help="run the jobs only")
    ap.add_argument("--keep-going", action="store_true", help="run every job even after a failure; list them all")
    ap.add_argument("--seed", type=int, default=0, help="seed of the stand-in weights and images")
    ap.add_argument("--fresh", action="store_true", help="delete --out first (default: resume what is there)")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    import logging

    a = parse(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    tables = [f"Table {t.removeprefix('Table').strip()}" for t in a.table or []] or None
    unknown = sorted(set(tables or []) - set(J.TABLES))
    if unknown:
        raise SystemExit(f"rehearse: table={unknown}: expected one of {[t.removeprefix('Table ') for t in J.TABLES]}")
    rehearse(a.out, a.size, a.device, tables, not a.no_book, a.seed, a.keep_going, a.fresh)
    return 0
