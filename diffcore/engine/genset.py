"""A generated set on disk: the storage both the counterparts (`diffcore generate`) and DiffuseMix's edited set
(`diffcore edit`) are written through. It knows files, rows and processes, not how an image is made.

On disk (`out_dir`):
    images/<label:04d>_<class>/<image>.png     one file per kept image, ImageFolder-readable
    rejected/<label:04d>_<class>/<image>_a<attempt>.png   rejected attempts (when the caller writes them)
    manifest.csv                               one row per attempt, kept or not, with its provenance
    run.json                                   settings and summary (once finished)
    running.json                               the settings, while the run is not finished
    plan.json                                  settings and what every process must agree on (tau_k), while running
    parts/chunk-<c>.csv                        while several processes run: the manifest of chunk c
    logs/<what>.rank-<r>-of-<n>.jsonl          one line per process and start: provenance, its chunks, wall time

Surviving a kill (SIGKILL, preemption, power): each batch is committed in this order: its images are written
atomically (temporary name, fsync, rename), their folders fsynced, then its manifest rows appended and fsynced.
A manifest row therefore never names a missing or half-written file. On restart the manifest is replayed through
the loop's own bookkeeping (`replay_queue`): whole batches are kept, a batch cut by the kill is dropped and redone,
files no committed row references are deleted, and the loop continues with the very batches an uninterrupted run
would form, so the final set and manifest are byte for byte those of an uninterrupted run (on the same machine)
and no committed image is made twice.

Many processes (torchrun, a Slurm array; engine.distributed): the chosen sources are cut into fixed chunks of
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
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from . import distributed as D
from .checks import json_text
from .runtime import provenance
from .safety import TMP_SUFFIX, append_durable, atomic_open, atomic_write_text, fsync_dir, inside, tmp_path

log = logging.getLogger(__name__)

MANIFEST_FIELDS = [
    "source_id",
    "source_path",
    "label",
    "class_name",
    "prompt",
    "negative_prompt",
    "seed",
    "attempt",
    "similarity",
    "tau",
    "status",
    "file",
    "model",
    "steps",
    "guidance_scale",
    "height",
    "width",
]
# kept: accepted. rejected: refused by the filter, tried again. invalid: NaN, black or constant image (a failed
# decode such as the fp16 SDXL VAE overflow), tried again. *-final: the retry cap was reached, nothing kept.
# unreadable: the source image could not be decoded; it gets nothing.
STATUSES = ("kept", "rejected", "rejected-final", "invalid", "invalid-final", "unreadable")
RETRY_STATUSES = ("rejected", "invalid")
NO_COUNTERPART = ("rejected-final", "invalid-final", "unreadable")
RUNNING = "running.json"  # the settings of a run not finished yet; run.json appears only when it is finished
PLAN = "plan.json"  # settings and what every process must agree on: made by one process, read by all
PARTS = "parts"  # parts/chunk-<c>.csv: chunk c's manifest, appended by the one process that makes it (n > 1)

Batch = list[tuple[int, int]]  # [(dataset index, attempt)]
Files = list[tuple[np.ndarray, Path]]  # [(uint8 image, where it goes)]


def status(kept: bool, invalid: bool, unreadable: bool, attempt: int, max_attempts: int) -> str:
    """The manifest status of one attempt."""
    if unreadable:
        return "unreadable"
    if kept:
        return "kept"
    return ("invalid" if invalid else "rejected") + ("-final" if attempt + 1 >= max_attempts else "")


# ---------------------------------------------------------------- names and files
def safe_name(text: str, limit: int = 60) -> str:
    """A file-system-safe, collision-free name: readable part plus a hash of the exact text."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")[:limit] or "x"
    return f"{readable}-{hashlib.sha1(text.encode('utf-8')).hexdigest()[:8]}"


def class_dir(label: int, name: str) -> str:
    return f"{label:04d}_{re.sub(r'[^A-Za-z0-9._-]+', '_', name).strip('._')[:60] or 'class'}"


def kept_file(label: int, class_name: str, image_id: str) -> str:
    """Where the kept image of a source goes, relative to the set's folder."""
    return f"images/{class_dir(label, class_name)}/{safe_name(image_id)}.png"


def rejected_file(label: int, class_name: str, image_id: str, attempt: int) -> str:
    return f"rejected/{class_dir(label, class_name)}/{safe_name(image_id)}_a{attempt}.png"


def save_png(array: np.ndarray, path: Path) -> None:
    """Atomic write: a crash never leaves a half-written file under the final name (folder fsync: see commit)."""
    with atomic_open(path, "wb", sync_dir=False) as f:
        Image.fromarray(array).save(f, format="PNG")


# ---------------------------------------------------------------- the manifest: append-only, torn tails cut
def manifest_text(rows: list[dict], header: bool = False) -> str:
    """Rows as CSV text in MANIFEST_FIELDS order (\\r\\n line ends, as the csv module writes them)."""
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=MANIFEST_FIELDS)
    if header:
        w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def complete(row: dict) -> bool:
    """A row every field of which was written (a kill can cut the last one short)."""
    return None not in row and None not in row.values() and row["status"] in STATUSES and row["attempt"].isdigit()


def parse_manifest(path: Path) -> tuple[list[dict], bool]:
    """(the complete rows, whether a torn tail was left out). Rows end in \\r\\n (csv), so a cut line is the part
    after the last one; a row with missing fields ends the complete part too."""
    if not Path(path).is_file():
        return [], False
    raw = Path(path).read_bytes()
    end = raw.rfind(b"\r\n") + 2 if b"\r\n" in raw else 0
    torn, rows = end < len(raw), []
    reader = csv.DictReader(io.StringIO(raw[:end].decode("utf-8", errors="replace"), newline=""))
    if reader.fieldnames is not None and reader.fieldnames != MANIFEST_FIELDS:
        raise ValueError(
            f"{path}: columns {reader.fieldnames[:4]}... are not a diffcore manifest's "
            f"({MANIFEST_FIELDS[:4]}...); use a new --out folder"
        )
    for row in reader:
        if not complete(row):
            return rows, True
        rows.append(row)
    return rows, torn


def read_manifest(path: Path) -> list[dict]:
    """The manifest's committed rows; a tail torn by a kill is left out (the file itself is not changed)."""
    return parse_manifest(path)[0]


def append_rows(path: Path, rows: list[dict]) -> None:
    if not path.is_file():
        atomic_write_text(path, manifest_text([], header=True))
    append_durable(path, manifest_text(rows))


def commit(manifest: Path, out_dir: Path, rows: list[dict]) -> None:
    """Make a batch durable: its images' folder entries first, then its manifest rows (never the other way)."""
    written = {(out_dir / r["file"]).parent for r in rows if r["file"]}
    for folder in sorted(written | {f.parent for f in written}):
        fsync_dir(folder)
    append_rows(manifest, rows)


# A set may hold several images of one source, one per variant (DiffuseMix's edited set: one per prompt). Each
# (source, variant) is then a source of its own to the storage, keyed "<source id>#v<variant>": the chunks, batches,
# seeds, retries, resume and file names work per key unchanged, and a set of one image per source (the
# counterparts) keeps its plain ids. The manifest's source_id holds the key.
VARIANT_SEP = "#v"


def variant_key(source_id: str, variant: int) -> str:
    """The storage key of a source's `variant`-th image."""
    return f"{source_id}{VARIANT_SEP}{int(variant)}"


def source_of(key: str) -> str:
    """The source id of a storage key: the key without its last '#v<digits>' (a plain id stays as it is)."""
    head, sep, tail = key.rpartition(VARIANT_SEP)
    return head if sep and tail.isdigit() else key


def kept_files(out_dir: str | Path) -> dict[str, Path]:
    """key -> path of its kept image, read from the manifest (only files that exist inside out_dir); the key is the
    source id, or `variant_key(source id, variant)` in a set of several images per source."""
    out_dir = Path(out_dir)
    rows = read_manifest(out_dir / "manifest.csv")
    if not rows:
        raise FileNotFoundError(f"{out_dir}/manifest.csv: no generated set here; run `diffcore generate` first")
    found = {r["source_id"]: inside(out_dir, r["file"]) for r in rows if r["status"] == "kept"}
    return {sid: path for sid, path in found.items() if path.is_file()}


def kept_by_source(out_dir: str | Path) -> dict[str, list[Path]]:
    """source id -> the paths of its kept images, in variant order (the variants kept; a plain id: its one image)."""
    out: dict[str, list[tuple[int, Path]]] = defaultdict(list)
    for key, path in kept_files(out_dir).items():
        sid = source_of(key)
        out[sid].append((int(key[len(sid) + len(VARIANT_SEP) :]) if sid != key else 0, path))
    return {sid: [p for _, p in sorted(found)] for sid, found in out.items()}


# ---------------------------------------------------------------- resume: replay the loop's bookkeeping
def replay_queue(rows: list[dict], ids: Sequence[str], chosen, batch_size: int) -> tuple[int, deque] | None:
    """Re-run the loop's bookkeeping over committed rows without generating anything.

    Returns (rows that form whole batches, the queue of (index, attempt) after them): the state an uninterrupted
    run was in after those batches. None when the rows do not follow the loop (a manifest of an older diffcore).
    """
    queue, n = deque((int(i), 0) for i in chosen), 0
    while queue and n < len(rows):
        batch = [queue[j] for j in range(min(batch_size, len(queue)))]
        got = rows[n : n + len(batch)]
        if any(r["source_id"] != ids[i] or int(r["attempt"]) != a for r, (i, a) in zip(got, batch)):
            return None
        if len(got) < len(batch):
            break  # a batch cut by a kill: its rows are dropped and the batch is redone
        for _ in batch:
            queue.popleft()
        queue.extendleft(reversed([(i, a + 1) for r, (i, a) in zip(got, batch) if r["status"] in RETRY_STATUSES]))
        n += len(batch)
    return None if n < len(rows) and not queue else (n, queue)


def resume_state(rows: list[dict]) -> tuple[set[str], dict[str, int]]:
    """Sources already finished and the next attempt of the others (for manifests replay_queue cannot follow)."""
    done, next_attempt = set(), {}
    for r in rows:
        if r["status"] not in RETRY_STATUSES:
            done.add(r["source_id"])
        next_attempt[r["source_id"]] = max(next_attempt.get(r["source_id"], 0), int(r["attempt"]) + 1)
    return done, next_attempt


def replay(rows: list[dict], ids: Sequence[str], chosen, batch_size: int, where: Path) -> tuple[int, deque]:
    """replay_queue, or for rows it cannot follow (an older diffcore's), the unfinished images in dataset order."""
    replayed = replay_queue(rows, ids, chosen, batch_size)
    if replayed is not None:
        return replayed
    log.warning(
        "%s: rows do not follow this version's batch order; resuming unfinished images in dataset "
        "order (they may differ by rounding from an uninterrupted run's)",
        where,
    )
    done, next_attempt = resume_state(rows)
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


# ---------------------------------------------------------------- counts
def counts(rows: list[dict]) -> dict:
    attempts = sum(r["status"] != "unreadable" for r in rows)  # an unreadable source's row is no attempt
    kept = sum(r["status"] == "kept" for r in rows)
    return {
        "attempts": attempts,
        "kept": kept,
        "discarded": attempts - kept,
        "discard_rate": (attempts - kept) / attempts if attempts else 0.0,
        "invalid": sum(r["status"].startswith("invalid") for r in rows),
        "unreadable": sum(r["status"] == "unreadable" for r in rows),
        "no_counterpart": sum(r["status"] in NO_COUNTERPART for r in rows),
    }


def summarize(rows: list[dict], classes: Sequence[str], taus: dict[int, float], n_chosen: int) -> dict:
    """Discard rate overall and per class (Fig. 7 reports ~10-11% on CUB); invalid images and unreadable sources."""
    by_label = defaultdict(list)
    for r in rows:
        by_label[int(r["label"])].append(r)
    per_class = {name: {**counts(by_label[k]), "tau": taus.get(k)} for k, name in enumerate(classes)}
    return {"sources": n_chosen, **counts(rows), "per_class": per_class}


# ---------------------------------------------------------------- writing while the next batch is made
class Done:
    """A finished job's result, for work done in line (the Future interface the loop reads)."""

    def __init__(self, fn, *args):
        self.value = fn(*args)

    def result(self):
        return self.value


def submit(pool: ThreadPoolExecutor | None, fn, *args):
    """pool.submit(fn, *args), or fn(*args) now when there is no pool; either way `.result()` gives the value."""
    return pool.submit(fn, *args) if pool is not None else Done(fn, *args)


class Committer:
    """Batch k's PNGs encoded (in parallel) and committed on background threads while batch k+1 is made.

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

    def submit(self, manifest: Path, out_dir: Path, rows: list[dict], files: Files) -> None:
        self.wait()
        self.pending = submit(self.committer, self._write, manifest, out_dir, rows, files)

    def _write(self, manifest: Path, out_dir: Path, rows: list[dict], files: Files) -> None:
        for job in [submit(self.png, save_png, image, path) for image, path in files]:
            job.result()  # every file of the batch durable before its rows name it
        commit(manifest, out_dir, rows)

    def wait(self) -> None:
        pending, self.pending = self.pending, None
        if pending is not None:
            pending.result()  # an error of the write (disk full, ...) is raised here, in the generating thread

    def __enter__(self) -> Committer:
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


# ---------------------------------------------------------------- one set: claim, plan, recover, fill, finish
def with_new_fields(old: dict, defaults: dict) -> dict:
    """Settings recorded by an older diffcore, read with today's fields: a field it did not have yet takes its
    default (which is what that version did), so its run resumes, and is refused only if the field is set.
    `defaults`: section name -> the section's config with default values."""
    out = json.loads(json.dumps(old))
    for section, cfg in defaults.items():
        if isinstance(out.get(section), dict):
            for name, value in json.loads(json.dumps(asdict(cfg))).items():
                out[section].setdefault(name, value)
    return out


@dataclass
class GeneratedSet:
    """One generated set's folder and the sources it is made for.

    settings: everything the files depend on (recorded in running.json/plan.json/run.json, compared on resume).
    defaults: {section: default config} for `with_new_fields`. chosen: the dataset indices that get an image, in
    order. A resume must use the same settings, hence the same chunks and batches.
    """

    out_dir: Path
    settings: dict
    defaults: dict
    ids: Sequence[str]
    labels: Sequence[int]
    classes: Sequence[str]
    chosen: Sequence[int]
    chunk_size: int
    batch_size: int
    max_attempts: int
    what: str = "generate"  # names the log files: logs/<what>.<rank>.jsonl

    def __post_init__(self):
        self.out_dir = Path(self.out_dir)
        self.chunks = D.chunks(self.chosen, self.chunk_size)

    @property
    def manifest(self) -> Path:
        return self.out_dir / "manifest.csv"

    def part(self, chunk: int) -> Path:
        return self.out_dir / PARTS / f"chunk-{chunk:06d}.csv"

    # ------------------------------------------------ the folder and its recorded settings
    def recorded_settings(self) -> dict | None:
        """The settings a run recorded here: running.json while it is unfinished, run.json once it is finished;
        None where no run has claimed the folder. running.json is read first, and a file gone by the time it is
        read counts as absent: `finish` writes run.json before it removes running.json, so a folder claimed before
        this call never reads as unclaimed, whatever another process does meanwhile."""
        for name in (RUNNING, "run.json"):
            try:
                return json.loads((self.out_dir / name).read_text(encoding="utf-8"))["settings"]
            except FileNotFoundError:
                continue
        return None

    def strangers(self) -> list[str]:
        """Names in the folder that no generated set explains (temporary files aside; a folder with a manifest.csv
        is a set, of an older diffcore without running.json)."""
        if not self.out_dir.is_dir():
            return []
        names = [p.name for p in self.out_dir.iterdir() if not p.name.endswith(TMP_SUFFIX)]
        return [] if "manifest.csv" in names else sorted(names)

    def check(self) -> None:
        """The folder must be new, empty, or a set made with the same settings (a resume).

        Processes that start together on one folder race no check: a run creates running.json before any other file
        (`claim`), so a file seen in the listing below was preceded by a running.json, and the settings are read
        once more before a folder with other files is refused: a process of the same run that claimed the folder
        meanwhile is found, not taken for a stranger."""
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise ValueError(f"out={self.out_dir}: is a file; expected a folder for the generated set")
        old = self.recorded_settings()
        others = self.strangers() if old is None else []
        if others:  # listed after the settings were read: claimed in between?
            old = self.recorded_settings()
        if old is None and others:  # resume deletes stray files: never in someone else's folder
            raise ValueError(
                f"out={self.out_dir}: holds other files ({', '.join(others[:3])}) and no generated set; pass a new "
                f"or empty folder"
            )
        if old is not None:
            old, settings = with_new_fields(old, self.defaults), json.loads(json.dumps(self.settings))
            if old != settings:
                diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
                raise ValueError(
                    f"{self.out_dir} holds a run with other settings ({', '.join(diff)} differ); "
                    f"use a new --out folder or the same settings to resume"
                )

    def claim(self) -> None:
        """Check the folder and claim it in one step: running.json (the settings) is created only where it is
        absent (publish_once: a hard link, atomic also on NFS and Lustre), so of the processes that start together
        one creates it and the others read it, and each compares the recorded settings with its own. Recorded
        before the first image, they refuse a resume with other settings even after a kill."""
        self.check()
        if self.recorded_settings() is None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            D.publish_once(self.out_dir / RUNNING, lambda: {"settings": self.settings})  # one wins, all read it
        self.check()  # the winner's settings, compared with this process's

    def plan(self, world: D.World, make: Callable[[], dict]) -> dict:
        """plan.json: {"settings", "classes", **make()}. Under torchrun rank 0 makes it while the others wait; the
        tasks of a Slurm array may each make it, and all then use the first one published."""

        def made() -> dict:
            return {"settings": self.settings, "classes": list(self.classes), **make()}

        plan = D.main_first(world, lambda: D.publish_once(self.out_dir / PLAN, made))
        if with_new_fields(plan["settings"], self.defaults) != json.loads(json.dumps(self.settings)):
            raise ValueError(f"{self.out_dir}/{PLAN} was made with other settings; use a new --out folder")
        return plan

    # ------------------------------------------------ rows per chunk, recovery
    def _by_chunk(self, rows: list[dict]) -> dict[int, list[dict]]:
        """Rows grouped by the chunk of their source, each group in file order."""
        chunk_of = {self.ids[i]: c for c, chunk in enumerate(self.chunks) for i in chunk}
        grouped = defaultdict(list)
        for r in rows:
            grouped[chunk_of.get(r["source_id"], -1)].append(r)
        return grouped

    def chunk_rows(self, wanted) -> dict[int, tuple[list[dict], bool]]:
        """(committed rows, torn tail) of each wanted chunk: from its part file if there is one (it holds all of
        the chunk's rows), else from manifest.csv (a single-process run, finished or not)."""
        got, merged = {}, None
        for c in wanted:
            if self.part(c).is_file():
                got[c] = parse_manifest(self.part(c))
            else:
                merged = merged if merged is not None else self._by_chunk(read_manifest(self.manifest))
                got[c] = (merged.get(c, []), False)
        return got

    def recover(self, mine: list[int], world: D.World) -> tuple[dict[int, deque], list[dict]]:
        """Replay the committed rows of this process's chunks (whole batches kept, a torn tail or cut batch dropped
        from the file) and remove the files no kept row references: {chunk: queue still to do}, the kept rows.

        One process works in manifest.csv: the parts of an earlier run on several processes are folded into it.
        A process among several works in its chunks' part files and touches no file of another chunk.
        """
        got = self.chunk_rows(mine)
        queues, kept = {}, []
        for c in mine:
            rows, torn = got[c]
            n, queues[c] = replay(rows, self.ids, self.chunks[c], self.batch_size, self.part(c))
            kept += rows[:n]
            if world.size > 1:
                if torn or n < len(rows) or (queues[c] and rows and not self.part(c).is_file()):
                    atomic_write_text(self.part(c), manifest_text(rows[:n], header=True))  # whole batches only
                if queues[c]:  # a finished chunk's files are all committed
                    self._remove_chunk_orphans(self.chunks[c], rows[:n])
        if world.size == 1:
            current, torn = parse_manifest(self.manifest)
            if kept != current or torn:
                atomic_write_text(self.manifest, manifest_text(kept, header=True))
                log.info(
                    "%s: kept %d committed rows (whole batches, chunk by chunk); redoing the rest",
                    self.manifest,
                    len(kept),
                )
            shutil.rmtree(self.out_dir / PARTS, ignore_errors=True)
            remove_orphans(self.out_dir, kept)
        return queues, kept

    def _remove_chunk_orphans(self, chunk: list[int], rows: list[dict]) -> None:
        """remove_orphans for one chunk's sources only (other processes are writing other chunks' files)."""
        referenced = {r["file"] for r in rows if r["file"]}
        for i in chunk:
            args = (self.labels[i], self.classes[self.labels[i]], self.ids[i])
            for rel in [kept_file(*args)] + [rejected_file(*args, a) for a in range(self.max_attempts)]:
                for path, stray in ((self.out_dir / rel, rel not in referenced), (tmp_path(self.out_dir / rel), True)):
                    if stray and path.is_file():
                        path.unlink()

    # ------------------------------------------------ the loop
    def fill(
        self,
        mine: list[int],
        queues: dict[int, deque],
        world: D.World,
        make_batch: Callable[[Batch, ThreadPoolExecutor | None], tuple[list[dict], Batch, Files]],
        on_rows: Callable[[list[dict]], None] = lambda rows: None,
        io_threads: int = 4,
        progress: bool = True,
        desc: str = "images",
    ) -> int:
        """Make every queued batch of this process's chunks, each chunk to its end; returns the attempts made.

        make_batch(batch, pool) -> (its manifest rows, the (index, attempt) to retry, the files to write); `pool`
        decodes sources while the device works. Rows are committed in batch order on a background thread
        (Committer) while the next batch is made; retries go first into the next batch."""
        total = sum(len(self.chunks[c]) for c in mine)
        bar = tqdm(
            total=total,
            initial=total - sum(map(len, queues.values())),
            desc=desc,
            unit="img",
            disable=not (progress and world.is_main),
        )
        attempts = 0
        with Committer(io_threads) as writer:
            for c in mine:  # each chunk to its end, as one process does: its batches do not depend on the process count
                manifest, queue = self.manifest if world.size == 1 else self.part(c), queues[c]
                while queue:
                    batch = [queue.popleft() for _ in range(min(self.batch_size, len(queue)))]
                    rows, retry, files = make_batch(batch, writer.pool)
                    writer.submit(manifest, self.out_dir, rows, files)  # written while the next batch is made
                    on_rows(rows)
                    queue.extendleft(reversed(retry))  # retried first, inside the next batch
                    bar.update(len(batch) - len(retry))
                    attempts += len(batch)
        bar.close()
        return attempts

    def log(self, world: D.World, fields: dict, device) -> None:
        """One JSON line per process and start in logs/: what only that process knows (who, where, how long)."""
        line = {"world": asdict(world), **fields, "provenance": provenance(device)}
        path = self.out_dir / "logs" / f"{self.what}.{world.tag}.jsonl"
        path.parent.mkdir(exist_ok=True)
        append_durable(path, json_text(line) + "\n")

    # ------------------------------------------------ the end: one manifest, run.json
    def finish(self, run_info: Callable[[dict, list[dict]], dict]) -> dict:
        """The end of a run, on one process: manifest.csv (the chunks in order, each in the order it was made,
        from the part files of several processes) and run.json = run_info(plan, rows); the run's temporary files
        removed. Returns run.json's content.

        Refused under other settings than the run's, and while a source is unfinished (a process still running,
        or killed: start the same command again, which resumes).
        """
        self.check()
        if not (self.out_dir / PLAN).is_file() and (self.out_dir / "run.json").is_file():
            return json.loads((self.out_dir / "run.json").read_text(encoding="utf-8"))  # finished (merged) before
        if not (self.out_dir / PLAN).is_file():
            raise FileNotFoundError(
                f"{self.out_dir}/{PLAN}: no generation was started here; run `diffcore {self.what}` first"
            )
        plan = json.loads((self.out_dir / PLAN).read_text(encoding="utf-8"))
        got = self.chunk_rows(range(len(self.chunks)))
        rows, unfinished = [], 0
        for c, chunk in enumerate(self.chunks):
            n, queue = replay(got[c][0], self.ids, chunk, self.batch_size, self.part(c))
            rows.extend(got[c][0][:n])
            unfinished += len(queue)
        if unfinished:
            raise ValueError(
                f"{self.out_dir}: {unfinished} of {len(self.chosen)} sources unfinished (a process still "
                f"running or stopped); start the same `diffcore {self.what}` again, it resumes"
            )
        if (rows, False) != parse_manifest(self.manifest):  # one process wrote it in this order already: left alone
            atomic_write_text(self.manifest, manifest_text(rows, header=True))
        info = run_info(plan, rows)
        atomic_write_text(self.out_dir / "run.json", json_text(info, indent=2))
        for name in (RUNNING, PLAN):
            (self.out_dir / name).unlink(missing_ok=True)
        shutil.rmtree(self.out_dir / PARTS, ignore_errors=True)
        return info

    def run(
        self,
        world: D.World,
        plan: Callable[[], dict],
        make_batch: Callable[[Batch, ThreadPoolExecutor | None, dict], tuple[list[dict], Batch, Files]],
        run_info: Callable[[dict, list[dict]], dict],
        invalid_hint: Callable[[int, int], str] | None = None,
        io_threads: int = 4,
        progress: bool = True,
        device=None,
        desc: str | None = None,
    ) -> dict | None:
        """The whole life of a set on this process: claim the folder, agree on the plan, recover, fill this
        process's chunks, log, and (rank 0 of a whole group) finish. Returns run.json's content; a Slurm array
        task returns None (`diffcore merge` finishes once every task is done).

        plan() -> what all processes share (called only where no plan.json exists yet); make_batch(batch, pool,
        plan) as in `fill`; run_info(plan, rows) -> run.json. invalid_hint(bad, attempts): with it, the run stops
        once more than half of at least 32 attempts were invalid images, with that message (InvalidGuard)."""
        if io_threads < 0:
            raise ValueError(f"io_threads={io_threads}: expected >= 0 (0: PNG writing and source decoding in line)")
        t0 = time.perf_counter()
        self.claim()
        agreed = self.plan(world, plan)
        mine = D.my_chunks(len(self.chunks), world)
        queues, recovered = self.recover(mine, world)
        guard = InvalidGuard(recovered, invalid_hint)
        attempts = self.fill(
            mine,
            queues,
            world,
            lambda batch, pool: make_batch(batch, pool, agreed),
            guard.check,
            io_threads,
            progress,
            desc=desc or self.what,
        )
        self.log(
            world,
            {
                "chunks": mine,
                "sources": sum(len(self.chunks[c]) for c in mine),
                "attempts_this_start": attempts,
                "wall_s": round(time.perf_counter() - t0, 3),
            },
            device,
        )
        D.barrier(world)
        if not world.whole:
            return None
        info = self.finish(run_info) if world.is_main else None
        D.barrier(world)
        return info if world.is_main else json.loads((self.out_dir / "run.json").read_text(encoding="utf-8"))


# Stop when more than half of at least 32 attempts were invalid images: the model or dtype is broken (fp16 SDXL
# VAE), and days of black images help nobody. Our choice; the paper has no such failure.
INVALID_GUARD_MIN_ATTEMPTS = 32
INVALID_GUARD_MAX_SHARE = 0.5


class InvalidGuard:
    """Counts statuses over the committed rows and each new batch; `check` raises hint(bad, attempts) once more
    than INVALID_GUARD_MAX_SHARE of at least INVALID_GUARD_MIN_ATTEMPTS attempts were invalid."""

    def __init__(self, rows: list[dict], hint: Callable[[int, int], str] | None):
        self.statuses, self.hint = Counter(r["status"] for r in rows), hint

    def check(self, rows: list[dict]) -> None:
        self.statuses.update(r["status"] for r in rows)
        if self.hint is None:
            return
        bad = self.statuses["invalid"] + self.statuses["invalid-final"]
        attempts = sum(self.statuses.values()) - self.statuses["unreadable"]
        if attempts >= INVALID_GUARD_MIN_ATTEMPTS and bad > INVALID_GUARD_MAX_SHARE * attempts:
            raise ValueError(self.hint(bad, attempts))
