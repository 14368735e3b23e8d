"""The generated set: for each chosen real image, generate -> filter -> keep or try again (paper Sec. 3).

On disk (`out_dir`):
    images/<label:04d>_<class>/<image>.png     one file per kept counterpart, ImageFolder-readable
    rejected/<label:04d>_<class>/<image>_a<attempt>.png   rejected attempts (if save_rejected)
    manifest.csv                               one row per attempt, kept or rejected, with its provenance
    run.json                                   settings, tau per class, discard counts (once finished)
    running.json                               the settings, while the run is not finished
    plan.json                                  settings and tau per class, while running: made once, read by all
    parts/chunk-<c>.csv                        while several processes run: the manifest of chunk c
    logs/generate.rank-<r>-of-<n>.jsonl        one line per process and start: provenance, its chunks, wall time

Seeds depend only on (run seed, image id, attempt), so any image can be regenerated alone.

Surviving a kill (SIGKILL, preemption, power): each batch is committed in this order: its images are written
atomically (temporary name, fsync, rename), their folders fsynced, then its manifest rows appended and fsynced.
A manifest row therefore never names a missing or half-written file. On restart the manifest is replayed through
the loop's own bookkeeping (`replay_queue`): whole batches are kept, a batch cut by the kill is dropped and redone,
files no committed row references are deleted, and the loop continues with the very batches an uninterrupted run
would form, so the final set and manifest are byte for byte those of an uninterrupted run (on the same machine)
and no committed image is generated twice.

Many processes (torchrun, a Slurm array; diffcore.distributed): the chosen sources are cut into fixed chunks of
`chunk_size`, and process r of n makes the chunks c with c % n == r, each chunk to its end, as one process makes
them one after the other. Chunks, hence batches, hence images do not depend on n; the manifest lists the chunks
in order, each in the order it was made; run.json holds no clock or host (those go to logs/). So 1 and n
processes write the same files, byte for byte (logs/ aside), and a run may be resumed on any number of them.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import re
import shutil
import time
from collections import Counter, defaultdict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from . import distributed as D
from . import prompts as P
from .data import ImageSet, choose_fraction, skipped_summary
from .filter import ClipEncoder, FilterConfig, accept, class_pairs, class_thresholds, cosine, pairs_needed
from .generate import GenerateConfig, check_guidance, draw_images
from .runtime import derive_seed, provenance
from .safety import TMP_SUFFIX, append_durable, atomic_open, atomic_write_text, fsync_dir, inside, tmp_path

log = logging.getLogger(__name__)

MANIFEST_FIELDS = ["source_id", "source_path", "label", "class_name", "prompt", "negative_prompt", "seed",
                   "attempt", "similarity", "tau", "status", "file", "model", "steps", "guidance_scale",
                   "height", "width"]
# kept: S > tau. rejected: S <= tau, tried again. invalid: NaN, black or constant image (a failed decode such as
# the fp16 SDXL VAE overflow), tried again. *-final: the retry cap was reached, no counterpart.
# unreadable: the source image could not be decoded; it gets no counterpart.
STATUSES = ("kept", "rejected", "rejected-final", "invalid", "invalid-final", "unreadable")
RETRY_STATUSES = ("rejected", "invalid")
NO_COUNTERPART = ("rejected-final", "invalid-final", "unreadable")
# Stop when more than half of at least 32 attempts were invalid images: the model or dtype is broken (fp16 SDXL
# VAE), and days of black images help nobody. Our choice; the paper has no such failure.
INVALID_GUARD_MIN_ATTEMPTS = 32
INVALID_GUARD_MAX_SHARE = 0.5


@dataclass(frozen=True)
class CounterpartConfig:
    fraction: float = 1.0          # share of training images that get a counterpart: -50 -> 0.5, -100 -> 1.0
    selection_seed: int = 0        # which images, when fraction < 1
    save_rejected: bool = True     # keep rejected attempts on disk (Fig. 3: kept vs rejected); off for huge runs
    # Sources per unit of work. Processes take whole chunks, so each image is made in the same batch on any number
    # of GPUs (an image's bits depend on its batch); smaller: finer load balance, larger: fewer short batches at
    # chunk ends. 1024: the embedded run (898 sources) is one chunk. The paper profile uses 256.
    chunk_size: int = 1024

    def __post_init__(self):
        if not (0.0 < self.fraction <= 1.0):
            raise ValueError(f"fraction={self.fraction}: expected a value in (0, 1], e.g. 0.5 for DiffCoRe-Mix-50")
        if self.selection_seed < 0:
            raise ValueError(f"selection_seed={self.selection_seed}: expected an integer >= 0")
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size={self.chunk_size}: expected >= 1 sources per chunk")


def safe_name(text: str, limit: int = 60) -> str:
    """A file-system-safe, collision-free name: readable part plus a hash of the exact text."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")[:limit] or "x"
    return f"{readable}-{hashlib.sha1(text.encode('utf-8')).hexdigest()[:8]}"


def class_dir(label: int, name: str) -> str:
    return f"{label:04d}_{re.sub(r'[^A-Za-z0-9._-]+', '_', name).strip('._')[:60] or 'class'}"


def _save_png(array: np.ndarray, path: Path) -> None:
    """Atomic write: a crash never leaves a half-written file under the final name (folder fsync: see _commit)."""
    with atomic_open(path, "wb", sync_dir=False) as f:
        Image.fromarray(array).save(f, format="PNG")


# ---------------------------------------------------------------- the manifest: append-only, torn tails cut
def _csv_text(rows: list[dict], header: bool = False) -> str:
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=MANIFEST_FIELDS)
    if header:
        w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def _complete(row: dict) -> bool:
    """A row every field of which was written (a kill can cut the last one short)."""
    return None not in row and None not in row.values() and row["status"] in STATUSES and row["attempt"].isdigit()


def _parse_manifest(path: Path) -> tuple[list[dict], bool]:
    """(the complete rows, whether a torn tail was left out). Rows end in \\r\\n (csv), so a cut line is the part
    after the last one; a row with missing fields ends the complete part too."""
    if not Path(path).is_file():
        return [], False
    raw = Path(path).read_bytes()
    end = raw.rfind(b"\r\n") + 2 if b"\r\n" in raw else 0
    torn, rows = end < len(raw), []
    reader = csv.DictReader(io.StringIO(raw[:end].decode("utf-8", errors="replace"), newline=""))
    if reader.fieldnames is not None and reader.fieldnames != MANIFEST_FIELDS:
        raise ValueError(f"{path}: columns {reader.fieldnames[:4]}... are not a diffcore manifest's "
                         f"({MANIFEST_FIELDS[:4]}...); use a new --out folder")
    for row in reader:
        if not _complete(row):
            return rows, True
        rows.append(row)
    return rows, torn


def read_manifest(path: Path) -> list[dict]:
    """The manifest's committed rows; a tail torn by a kill is left out (the file itself is not changed)."""
    return _parse_manifest(path)[0]


def _append_rows(path: Path, rows: list[dict]) -> None:
    if not path.is_file():
        atomic_write_text(path, _csv_text([], header=True))
    append_durable(path, _csv_text(rows))


def _commit(manifest: Path, out_dir: Path, rows: list[dict]) -> None:
    """Make a batch durable: its images' folder entries first, then its manifest rows (never the other way)."""
    written = {(out_dir / r["file"]).parent for r in rows if r["file"]}
    for folder in sorted(written | {f.parent for f in written}):
        fsync_dir(folder)
    _append_rows(manifest, rows)


def replay_queue(rows: list[dict], ids: list[str], chosen, batch_size: int) -> tuple[int, deque] | None:
    """Re-run the loop's bookkeeping over committed rows without generating anything.

    Returns (rows that form whole batches, the queue of (index, attempt) after them): the state an uninterrupted
    run was in after those batches. None when the rows do not follow the loop (a manifest of an older diffcore).
    """
    queue, n = deque((int(i), 0) for i in chosen), 0
    while queue and n < len(rows):
        batch = [queue[j] for j in range(min(batch_size, len(queue)))]
        got = rows[n:n + len(batch)]
        if any(r["source_id"] != ids[i] or int(r["attempt"]) != a for r, (i, a) in zip(got, batch)):
            return None
        if len(got) < len(batch):
            break  # a batch cut by a kill: its rows are dropped and the batch is redone
        for _ in batch:
            queue.popleft()
        queue.extendleft(reversed([(i, a + 1) for r, (i, a) in zip(got, batch) if r["status"] in RETRY_STATUSES]))
        n += len(batch)
    return None if n < len(rows) and not queue else (n, queue)


def _resume_state(rows: list[dict]) -> tuple[set[str], dict[str, int]]:
    """Sources already finished and the next attempt of the others (for manifests replay_queue cannot follow)."""
    done, next_attempt = set(), {}
    for r in rows:
        if r["status"] not in RETRY_STATUSES:
            done.add(r["source_id"])
        next_attempt[r["source_id"]] = max(next_attempt.get(r["source_id"], 0), int(r["attempt"]) + 1)
    return done, next_attempt


def recover_manifest(manifest: Path, ids: list[str], chosen, batch_size: int) -> tuple[list[dict], deque]:
    """The committed rows and the queue still to do. A torn tail (a cut line, the rows of an unfinished batch) is
    removed from the file, atomically, so that what follows is appended to whole batches."""
    rows, torn = _parse_manifest(manifest)
    n, queue = _replay(rows, ids, chosen, batch_size, manifest)
    if torn or n < len(rows):
        atomic_write_text(manifest, _csv_text(rows[:n], header=True))
        log.info("%s: cut the tail of a killed run (%d complete rows of an unfinished batch%s); redoing that batch",
                 manifest.name, len(rows) - n, " and a cut line" if torn else "")
    return rows[:n], queue


def _replay(rows: list[dict], ids: list[str], chosen, batch_size: int, where: Path) -> tuple[int, deque]:
    """replay_queue, or for rows it cannot follow (an older diffcore's), the unfinished images in dataset order."""
    replayed = replay_queue(rows, ids, chosen, batch_size)
    if replayed is not None:
        return replayed
    log.warning("%s: rows do not follow this version's batch order; resuming unfinished images in dataset "
                "order (they may differ by rounding from an uninterrupted run's)", where)
    done, next_attempt = _resume_state(rows)
    return len(rows), deque((int(i), next_attempt.get(ids[i], 0)) for i in chosen if ids[i] not in done)


def remove_orphans(out_dir: Path, rows: list[dict]) -> int:
    """Delete what a kill can leave behind: temporary files, and images that no committed row references."""
    referenced = {r["file"] for r in rows if r["file"]}
    candidates = list(out_dir.glob("*" + TMP_SUFFIX))
    for sub in ("images", "rejected"):
        candidates += [p for p in (out_dir / sub).rglob("*") if p.is_file()]
    removed = 0
    for p in candidates:
        if p.name.endswith(TMP_SUFFIX) or p.relative_to(out_dir).as_posix() not in referenced:
            p.unlink()
            removed += 1
    if removed:
        log.info("%s: removed %d unfinished or unreferenced files of a killed run", out_dir, removed)
    return removed


def _check_classes(ds: ImageSet) -> None:
    counts = ds.class_counts()
    empty = [ds.classes[k] for k in range(len(ds.classes)) if counts[k] == 0]
    if empty:
        raise ValueError(f"{ds.name}: class(es) {empty[:5]} have no images; remove them or add images")


def _settings(ds, prompt_cfg, gen_cfg, filter_cfg, cp_cfg) -> dict:
    return {"dataset": ds.name, "num_images": len(ds), "prompt": asdict(prompt_cfg), "generate": asdict(gen_cfg),
            "filter": asdict(filter_cfg), "counterparts": asdict(cp_cfg)}


RUNNING = "running.json"  # the settings of a run not finished yet; run.json appears only when it is finished


def _with_new_fields(old: dict) -> dict:
    """Settings recorded by an older diffcore, read with today's fields: a field it did not have yet takes its
    default (which is what that version did), so its run resumes, and is refused only if the field is set."""
    defaults = {"prompt": P.PromptConfig(), "generate": GenerateConfig(), "filter": FilterConfig(),
                "counterparts": CounterpartConfig()}
    out = json.loads(json.dumps(old))
    for section, cfg in defaults.items():
        if isinstance(out.get(section), dict):
            for name, value in json.loads(json.dumps(asdict(cfg))).items():
                out[section].setdefault(name, value)
    return out


def _recorded_settings(out_dir: Path) -> dict | None:
    for name in ("run.json", RUNNING):
        if (out_dir / name).is_file():
            return json.loads((out_dir / name).read_text(encoding="utf-8"))["settings"]
    return None


def _check_out_dir(out_dir: Path, settings: dict) -> None:
    """`out_dir` must be new, empty, or a set made with the same settings (a resume)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"out={out_dir}: is a file; expected a folder for the generated set")
    old = _recorded_settings(out_dir)
    if old is not None:
        old, settings = _with_new_fields(old), json.loads(json.dumps(settings))
        if old != settings:
            diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            raise ValueError(f"{out_dir} holds a run with other settings ({', '.join(diff)} differ); "
                             f"use a new --out folder or the same settings to resume")
        return
    others = [p.name for p in out_dir.iterdir() if not p.name.endswith(TMP_SUFFIX)] if out_dir.is_dir() else []
    if others and "manifest.csv" not in others:  # resume deletes stray files: never in someone else's folder
        raise ValueError(f"out={out_dir}: holds other files ({', '.join(sorted(others)[:3])}) and no generated set; "
                         f"pass a new or empty folder")


def check_out_dir(ds: ImageSet, out_dir: str | Path, prompt_cfg: P.PromptConfig, gen_cfg: GenerateConfig,
                  filter_cfg: FilterConfig, cp_cfg: CounterpartConfig) -> None:
    """make_counterparts' check of `out_dir`, for callers that want it before loading any model."""
    _check_out_dir(Path(out_dir), _settings(ds, prompt_cfg, gen_cfg, filter_cfg, cp_cfg))


def _open_out_dir(out_dir: Path, settings: dict) -> None:
    """Check `out_dir`, then record the settings at once (running.json), so that a run killed before its end is
    still refused to a resume with other settings."""
    _check_out_dir(out_dir, settings)
    if _recorded_settings(out_dir) is None:
        out_dir.mkdir(parents=True, exist_ok=True)
        D.publish_once(out_dir / RUNNING, lambda: {"settings": settings})  # processes starting together: one wins
        _check_out_dir(out_dir, settings)  # ... and any other settings than the winner's are refused


def _load_source(ds: ImageSet, i: int, unreadable: set[int]):
    """Source image i, or None when it does not decode (logged once, remembered in `unreadable`).

    Datasets opened by the CLI were checked file by file (data.verify_images); this covers files that change
    under a running job and sets built in code."""
    if i in unreadable:
        return None
    try:
        return ds.load(i)
    except Exception as e:  # PIL raises OSError, SyntaxError, DecompressionBombError, ...: the source is skipped
        log.warning("source %r unreadable, no counterpart: %s", ds.path(i) or ds.ids[i], str(e).splitlines()[0])
        unreadable.add(i)
        return None


def thresholds(ds: ImageSet, clip: ClipEncoder, cfg: FilterConfig, unreadable: set[int] | None = None
               ) -> dict[int, float]:
    """tau_k for every class (Eq. 5), embedding only the real images that appear in a sampled pair.
    Pairs with an unreadable image are left out (a class left without pairs gets the fallback tau)."""
    unreadable = set() if unreadable is None else unreadable
    pairs = class_pairs(ds.labels, len(ds.classes), cfg.z_pairs, cfg.tau_seed)
    images = {int(i): _load_source(ds, int(i), unreadable) for i in pairs_needed(pairs)}
    if unreadable:
        pairs = {k: p[~np.isin(p, sorted(unreadable)).any(axis=1)] for k, p in pairs.items()}  # (m', 2)
    needed = [i for i, im in images.items() if im is not None]
    emb = clip.embed([images[i] for i in needed])      # (n_needed, D)
    row = {i: r for r, i in enumerate(needed)}
    return class_thresholds(pairs, lambda idx: emb[[row[int(i)] for i in idx]])


def make_counterparts(ds: ImageSet, pipe, clip: ClipEncoder, out_dir: str | Path, prompt_cfg: P.PromptConfig,
                      gen_cfg: GenerateConfig, filter_cfg: FilterConfig, cp_cfg: CounterpartConfig,
                      model_name: str | None = None, progress: bool = True, world: D.World = D.SINGLE,
                      io_threads: int = 4) -> dict | None:
    """Generate, filter and write counterparts for `cp_cfg.fraction` of `ds`; returns the run summary.

    Resumes a killed run in `out_dir` (see the module docstring): the result equals an uninterrupted run's.
    `world`: this process's shard (diffcore.distributed; its process group, if any, initialised). Rank 0 of the
    group merges the shards at the end; a Slurm array task returns None, and `finish_counterparts` (`diffcore
    merge`) merges once every task is done.
    `io_threads`: threads that decode sources and encode/commit PNGs while the GPU generates (see _Committer);
    0 does all of it in line. The files are the same either way.
    """
    if io_threads < 0:
        raise ValueError(f"io_threads={io_threads}: expected >= 0 (0: PNG writing and source decoding in line)")
    t0 = time.perf_counter()
    _check_classes(ds)
    neg = P.negative_prompt(prompt_cfg)
    check_guidance(neg, gen_cfg)
    out_dir = Path(out_dir)
    settings = _settings(ds, prompt_cfg, gen_cfg, filter_cfg, cp_cfg)
    _open_out_dir(out_dir, settings)
    unreadable: set[int] = set()
    taus = _plan(out_dir, ds, clip, filter_cfg, settings, world, unreadable)
    chunks = D.chunks(choose_fraction(ds, cp_cfg.fraction, cp_cfg.selection_seed), cp_cfg.chunk_size)
    mine = D.my_chunks(len(chunks), world)
    queues, rows = _recover(out_dir, ds, chunks, mine, gen_cfg, filter_cfg, world)
    statuses = Counter(r["status"] for r in rows)
    total = sum(len(chunks[c]) for c in mine)
    bar = tqdm(total=total, initial=total - sum(map(len, queues.values())), desc="counterparts", unit="img",
               disable=not (progress and world.is_main))
    src_cache: dict[int, torch.Tensor | None] = {i: None for i in unreadable}
    attempts = 0
    with _Committer(io_threads) as io:
        for c in mine:  # each chunk to its end, as one process does: its batches do not depend on the process count
            manifest, queue = out_dir / "manifest.csv" if world.size == 1 else _part(out_dir, c), queues[c]
            while queue:
                batch = [queue.popleft() for _ in range(min(gen_cfg.batch_size, len(queue)))]
                rows, retry, files = _run_batch(ds, batch, pipe, clip, taus, src_cache, out_dir, prompt_cfg, neg,
                                                gen_cfg, filter_cfg, cp_cfg, model_name or gen_cfg.model, io.pool)
                io.submit(manifest, out_dir, rows, files)  # written while the next batch generates
                statuses.update(r["status"] for r in rows)
                _check_invalid_share(statuses, gen_cfg)
                queue.extendleft(reversed(retry))  # rejected images are regenerated first, inside the next batch
                bar.update(len(batch) - len(retry))
                attempts += len(batch)
    bar.close()
    _log(out_dir, world, {"chunks": mine, "sources": total, "attempts_this_start": attempts,
                          "wall_s": round(time.perf_counter() - t0, 3)}, getattr(pipe, "device", None))
    D.barrier(world)
    if not world.whole:
        return None
    info = finish_counterparts(ds, out_dir, prompt_cfg, gen_cfg, filter_cfg, cp_cfg) if world.is_main else None
    D.barrier(world)
    return info if world.is_main else json.loads((out_dir / "run.json").read_text(encoding="utf-8"))


def _check_invalid_share(statuses: Counter, gen_cfg: GenerateConfig) -> None:
    bad = statuses["invalid"] + statuses["invalid-final"]
    attempts = sum(statuses.values()) - statuses["unreadable"]
    if attempts >= INVALID_GUARD_MIN_ATTEMPTS and bad > INVALID_GUARD_MAX_SHARE * attempts:
        raise ValueError(f"dtype={gen_cfg.dtype!r}, vae={gen_cfg.vae!r}: {bad} of {attempts} generated images are "
                         f"NaN, black or constant; SDXL's VAE overflows in fp16: pass --vae <sdxl-vae-fp16-fix> or "
                         f"--dtype bfloat16/float32 (and a new --out)")


def _status(kept: bool, invalid: bool, unreadable: bool, attempt: int, max_attempts: int) -> str:
    if unreadable:
        return "unreadable"
    if kept:
        return "kept"
    return ("invalid" if invalid else "rejected") + ("-final" if attempt + 1 >= max_attempts else "")


def _run_batch(ds, batch, pipe, clip, taus, src_cache, out_dir, prompt_cfg, neg, gen_cfg, filter_cfg, cp_cfg,
               model_name, pool=None) -> tuple[list[dict], list[tuple[int, int]], list[tuple[np.ndarray, Path]]]:
    """One pipeline call over `batch` = [(dataset index, attempt)]: its manifest rows, what to retry, and the
    (image, path) files to write before the rows are committed. `pool` decodes the sources while the GPU works."""
    labels = [ds.labels[i] for i, _ in batch]
    texts = [P.contextual_prompt(ds.classes[k], prompt_cfg) for k in labels]
    seeds = [derive_seed(gen_cfg.run_seed, ds.ids[i], a) for i, a in batch]
    fresh = {i: _submit(pool, _preprocessed_source, ds, i, clip) for i, _ in batch if i not in src_cache}
    images, invalid = draw_images(pipe, texts, [neg] * len(batch), seeds, gen_cfg)     # (b, H, W, 3) uint8, (b,)
    for i, job in fresh.items():  # each source embedded alone: its S does not depend on its batch's company
        x = job.result()
        src_cache[i] = None if x is None else clip.encode(x[None])[0]
    src = [src_cache[i] for i, _ in batch]
    gen_emb = clip.embed([Image.fromarray(im) for im in images], pool)                 # (b, D)
    src_emb = torch.stack([torch.full_like(gen_emb[0], float("nan")) if e is None else e for e in src])  # (b, D)
    sims = cosine(src_emb, gen_emb)                                                     # (b,); NaN: unreadable
    sims[torch.from_numpy(invalid)] = float("nan")                                      # a failed decode has no S
    tau = torch.tensor([taus[k] for k in labels])
    keep = accept(sims, tau)
    rows, retry, files = [], [], []
    for j, (i, a) in enumerate(batch):
        status = _status(bool(keep[j]), bool(invalid[j]), src[j] is None, a, filter_cfg.max_attempts)
        cdir, stem = class_dir(labels[j], ds.classes[labels[j]]), safe_name(ds.ids[i])
        rel = ""
        if status == "kept" or (status != "unreadable" and cp_cfg.save_rejected):
            rel = f"images/{cdir}/{stem}.png" if status == "kept" else f"rejected/{cdir}/{stem}_a{a}.png"
            files.append((images[j], inside(out_dir, rel)))
        if status in RETRY_STATUSES:
            retry.append((i, a + 1))
        else:
            src_cache.pop(i, None)
        rows.append({"source_id": ds.ids[i], "source_path": ds.path(i) or "", "label": labels[j],
                     "class_name": ds.classes[labels[j]], "prompt": texts[j], "negative_prompt": neg,
                     "seed": seeds[j], "attempt": a, "similarity": f"{float(sims[j]):.6f}",
                     "tau": f"{float(tau[j]):.6f}", "status": status, "file": rel, "model": model_name,
                     "steps": gen_cfg.steps, "guidance_scale": gen_cfg.guidance_scale,
                     "height": gen_cfg.size, "width": gen_cfg.size})
    return rows, retry, files


def _preprocessed_source(ds: ImageSet, i: int, clip: ClipEncoder) -> torch.Tensor | None:
    """Source image i decoded and CLIP-preprocessed (3, h, w), or None when it does not decode."""
    image = _load_source(ds, i, set())
    return None if image is None else clip.preprocess(image)


class _Done:
    """A finished job's result, for work done in line (the Future interface the loop reads)."""

    def __init__(self, fn, *args):
        self.value = fn(*args)

    def result(self):
        return self.value


def _submit(pool: ThreadPoolExecutor | None, fn, *args):
    return pool.submit(fn, *args) if pool is not None else _Done(fn, *args)


class _Committer:
    """Batch k's PNGs encoded (in parallel) and committed on background threads while batch k+1 generates.

    PNG encoding costs ~50 ms per 512 px image on one CPU core: in line, about as long as a batch of 32 takes
    on an H100 for 4-5 of its images. One batch is in flight at most: `submit` waits for the previous one first,
    so commits keep batch order (a resume replays whole batches in order) and at most two batches of images are
    held. A kill loses at most the batch in flight, which a resume redoes, as before. threads=0: all in line.
    """

    def __init__(self, threads: int):
        self.png = ThreadPoolExecutor(threads, thread_name_prefix="png") if threads > 0 else None
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="decode") if threads > 0 else None  # for the loop:
        # source decoding and CLIP preprocessing, never queued behind the PNGs
        self.committer = ThreadPoolExecutor(1, thread_name_prefix="commit") if threads > 0 else None
        self.pending = None

    def submit(self, manifest: Path, out_dir: Path, rows: list[dict], files: list[tuple[np.ndarray, Path]]) -> None:
        self.wait()
        self.pending = _submit(self.committer, self._write, manifest, out_dir, rows, files)

    def _write(self, manifest: Path, out_dir: Path, rows: list[dict], files: list[tuple[np.ndarray, Path]]) -> None:
        for job in [_submit(self.png, _save_png, image, path) for image, path in files]:
            job.result()  # every file of the batch durable before its rows name it
        _commit(manifest, out_dir, rows)

    def wait(self) -> None:
        pending, self.pending = self.pending, None
        if pending is not None:
            pending.result()  # an error of the write (disk full, ...) is raised here, in the generating thread

    def __enter__(self) -> "_Committer":
        return self

    def __exit__(self, kind, error, tb) -> None:
        try:
            self.wait()  # the batch in flight is committed even when the loop stopped on an error
        except Exception:
            if kind is None:
                raise
            log.exception("writing the last batch failed as well")
        finally:
            for pool in (self.committer, self.png, self.pool):
                if pool is not None:
                    pool.shutdown(wait=True)


def _counts(rows: list[dict]) -> dict:
    attempts = sum(r["status"] != "unreadable" for r in rows)  # an unreadable source's row is no attempt
    kept = sum(r["status"] == "kept" for r in rows)
    return {"attempts": attempts, "kept": kept, "discarded": attempts - kept,
            "discard_rate": (attempts - kept) / attempts if attempts else 0.0,
            "invalid": sum(r["status"].startswith("invalid") for r in rows),
            "unreadable": sum(r["status"] == "unreadable" for r in rows),
            "no_counterpart": sum(r["status"] in NO_COUNTERPART for r in rows)}


def summarize(rows: list[dict], ds: ImageSet, taus: dict[int, float], n_chosen: int) -> dict:
    """Discard rate overall and per class (Fig. 7 reports ~10-11% on CUB); invalid images and unreadable sources."""
    by_label = defaultdict(list)
    for r in rows:
        by_label[int(r["label"])].append(r)
    per_class = {name: {**_counts(by_label[k]), "tau": taus.get(k)} for k, name in enumerate(ds.classes)}
    return {"sources": n_chosen, **_counts(rows), "per_class": per_class}


def kept_counterparts(out_dir: str | Path) -> dict[str, Path]:
    """source id -> path of its kept generated image, read from the manifest (only files that exist inside out_dir)."""
    out_dir = Path(out_dir)
    rows = read_manifest(out_dir / "manifest.csv")
    if not rows:
        raise FileNotFoundError(f"{out_dir}/manifest.csv: no generated set here; run `diffcore generate` first")
    found = {r["source_id"]: inside(out_dir, r["file"]) for r in rows if r["status"] == "kept"}
    return {sid: path for sid, path in found.items() if path.is_file()}


# ---------------------------------------------------------------- many processes: plan, chunks, parts, merge
PLAN = "plan.json"  # settings and tau_k: made by one process, read by all, so that every shard filters alike
PARTS = "parts"     # parts/chunk-<c>.csv: chunk c's manifest, appended by the one process that makes it (n > 1)


def _plan(out_dir: Path, ds: ImageSet, clip: ClipEncoder, filter_cfg: FilterConfig, settings: dict,
          world: D.World, unreadable: set[int]) -> dict[int, float]:
    """tau_k per class (Eq. 5), from plan.json. Under torchrun rank 0 makes it while the others wait; the tasks
    of a Slurm array may each make it, and all then use the first one published (distributed.publish_once)."""
    def make() -> dict:
        taus = thresholds(ds, clip, filter_cfg, unreadable)
        return {"settings": settings, "classes": list(ds.classes), "tau": [taus[k] for k in range(len(ds.classes))]}

    plan = D.main_first(world, lambda: D.publish_once(out_dir / PLAN, make))
    if _with_new_fields(plan["settings"]) != json.loads(json.dumps(settings)):
        raise ValueError(f"{out_dir}/{PLAN} was made with other settings; use a new --out folder")
    return dict(enumerate(plan["tau"]))


def _part(out_dir: Path, chunk: int) -> Path:
    return out_dir / PARTS / f"chunk-{chunk:06d}.csv"


def _by_chunk(rows: list[dict], ds: ImageSet, chunks: list[list[int]]) -> dict[int, list[dict]]:
    """Rows grouped by the chunk of their source, each group in file order."""
    chunk_of = {ds.ids[i]: c for c, chunk in enumerate(chunks) for i in chunk}
    grouped = defaultdict(list)
    for r in rows:
        grouped[chunk_of.get(r["source_id"], -1)].append(r)
    return grouped


def _chunk_rows(out_dir: Path, ds: ImageSet, chunks: list[list[int]], wanted) -> dict[int, tuple[list[dict], bool]]:
    """(committed rows, torn tail) of each wanted chunk: from its part file if there is one (it holds all of the
    chunk's rows), else from manifest.csv (a single-process run, finished or not)."""
    got, merged = {}, None
    for c in wanted:
        if _part(out_dir, c).is_file():
            got[c] = _parse_manifest(_part(out_dir, c))
        else:
            merged = merged if merged is not None else _by_chunk(read_manifest(out_dir / "manifest.csv"), ds, chunks)
            got[c] = (merged.get(c, []), False)
    return got


def _recover(out_dir: Path, ds: ImageSet, chunks: list[list[int]], mine: list[int], gen_cfg: GenerateConfig,
             filter_cfg: FilterConfig, world: D.World) -> tuple[dict[int, deque], list[dict]]:
    """recover_manifest and remove_orphans for this process's chunks: {chunk: queue still to do}, committed rows.

    One process works in manifest.csv: the parts of an earlier run on several processes are folded into it.
    A process among several works in its chunks' part files and touches no file of another chunk.
    """
    got = _chunk_rows(out_dir, ds, chunks, mine)
    queues, kept = {}, []
    for c in mine:
        rows, torn = got[c]
        n, queues[c] = _replay(rows, ds.ids, chunks[c], gen_cfg.batch_size, _part(out_dir, c))
        kept += rows[:n]
        if world.size > 1:
            if torn or n < len(rows) or (queues[c] and rows and not _part(out_dir, c).is_file()):
                atomic_write_text(_part(out_dir, c), _csv_text(rows[:n], header=True))  # whole batches only
            if queues[c]:  # a finished chunk's files are all committed
                _remove_chunk_orphans(out_dir, ds, chunks[c], rows[:n], filter_cfg.max_attempts)
    if world.size == 1:
        manifest = out_dir / "manifest.csv"
        current, torn = _parse_manifest(manifest)
        if kept != current or torn:
            atomic_write_text(manifest, _csv_text(kept, header=True))
            log.info("%s: kept %d committed rows (whole batches, chunk by chunk); redoing the rest", manifest,
                     len(kept))
        shutil.rmtree(out_dir / PARTS, ignore_errors=True)
        remove_orphans(out_dir, kept)
    return queues, kept


def _remove_chunk_orphans(out_dir: Path, ds: ImageSet, chunk: list[int], rows: list[dict], max_attempts: int) -> None:
    """remove_orphans for one chunk's sources only (other processes are writing other chunks' files)."""
    referenced = {r["file"] for r in rows if r["file"]}
    for i in chunk:
        cdir, stem = class_dir(ds.labels[i], ds.classes[ds.labels[i]]), safe_name(ds.ids[i])
        for rel in [f"images/{cdir}/{stem}.png"] + [f"rejected/{cdir}/{stem}_a{a}.png" for a in range(max_attempts)]:
            for path, stray in ((out_dir / rel, rel not in referenced), (tmp_path(out_dir / rel), True)):
                if stray and path.is_file():
                    path.unlink()


def finish_counterparts(ds: ImageSet, out_dir: str | Path, prompt_cfg: P.PromptConfig, gen_cfg: GenerateConfig,
                        filter_cfg: FilterConfig, cp_cfg: CounterpartConfig) -> dict:
    """The end of a run, on one process: manifest.csv (the chunks in order, each in the order it was made, from
    the part files of several processes), run.json; the run's temporary files removed. Returns run.json's content.

    Refused under other settings than the run's, and while a source is unfinished (a process still running, or
    killed: start the same `diffcore generate` again, which resumes).
    """
    out_dir = Path(out_dir)
    settings = _settings(ds, prompt_cfg, gen_cfg, filter_cfg, cp_cfg)
    _check_out_dir(out_dir, settings)
    if not (out_dir / PLAN).is_file() and (out_dir / "run.json").is_file():
        return json.loads((out_dir / "run.json").read_text(encoding="utf-8"))  # finished (and merged) before
    if not (out_dir / PLAN).is_file():
        raise FileNotFoundError(f"{out_dir}/{PLAN}: no generation was started here; run `diffcore generate` first")
    taus = dict(enumerate(json.loads((out_dir / PLAN).read_text(encoding="utf-8"))["tau"]))
    chosen = choose_fraction(ds, cp_cfg.fraction, cp_cfg.selection_seed)
    chunks = D.chunks(chosen, cp_cfg.chunk_size)
    got = _chunk_rows(out_dir, ds, chunks, range(len(chunks)))
    rows, unfinished = [], 0
    for c, chunk in enumerate(chunks):
        n, queue = _replay(got[c][0], ds.ids, chunk, gen_cfg.batch_size, _part(out_dir, c))
        rows.extend(got[c][0][:n])
        unfinished += len(queue)
    if unfinished:
        raise ValueError(f"{out_dir}: {unfinished} of {len(chosen)} sources unfinished (a process still running or "
                         f"stopped); start the same `diffcore generate` again, it resumes")
    manifest = out_dir / "manifest.csv"
    if (rows, False) != _parse_manifest(manifest):  # one process wrote it in this order already: left alone
        atomic_write_text(manifest, _csv_text(rows, header=True))
    info = {"settings": settings, "tau": {ds.classes[k]: t for k, t in taus.items()},
            "summary": summarize(rows, ds, taus, len(chosen)), "dataset_skipped": skipped_summary(ds)}
    atomic_write_text(out_dir / "run.json", json.dumps(info, indent=2))
    for name in (RUNNING, PLAN):
        (out_dir / name).unlink(missing_ok=True)
    shutil.rmtree(out_dir / PARTS, ignore_errors=True)
    return info


def _log(out_dir: Path, world: D.World, fields: dict, device) -> None:
    """One JSON line per process and start in logs/: what only that process knows (who, where, how long)."""
    line = {"world": asdict(world), **fields, "provenance": provenance(device)}
    path = out_dir / "logs" / f"generate.{world.tag}.jsonl"
    path.parent.mkdir(exist_ok=True)
    append_durable(path, json.dumps(line) + "\n")
