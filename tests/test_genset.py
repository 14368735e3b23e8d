"""The generated set's storage, without any model: statuses, the manifest read back, the loop's batches and retries,
and the replay that makes a resumed or sharded run end with the files of one uninterrupted process.

A stand-in `make_batch` decides each attempt's fate from a table (source -> the attempt at which it is kept, or
never), so the batches, rows and files of every run are known exactly.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging

import numpy as np
import pytest

import diffcore.engine.genset as G
from diffcore.engine.distributed import SINGLE, World
from diffcore.engine.safety import TMP_SUFFIX

IDS = [f"set/{c}/{n}.png" for n, c in enumerate("abababa")]
LABELS = [0, 1, 0, 1, 0, 1, 0]
CLASSES = ["a", "b"]
KEPT_AT = {0: 0, 1: 2, 2: 1, 3: None, 4: 0, 5: 1, 6: 0}  # source -> attempt kept at (None: never, capped)
MAX_ATTEMPTS = 3
# batch_size 3, one chunk: retries go first into the very next batch, the cap ends source 3 at its third attempt
BATCHES = [
    [(0, 0), (1, 0), (2, 0)],
    [(1, 1), (2, 1), (3, 0)],
    [(1, 2), (3, 1), (4, 0)],
    [(3, 2), (5, 0), (6, 0)],
    [(5, 1)],
]


class Maker:
    """make_batch for GeneratedSet.fill / run: rows, retries and a 2x2 picture per attempt, from KEPT_AT."""

    def __init__(self, store: G.GeneratedSet, fail_at: int | None = None):
        self.store, self.fail_at, self.batches = store, fail_at, []

    def __call__(self, batch, pool=None, agreed=None):
        if len(self.batches) == self.fail_at:
            raise KeyboardInterrupt("stopped")  # a kill between two batches
        self.batches.append(list(batch))
        rows, retry, files = [], [], []
        for i, a in batch:
            status = G.status(KEPT_AT[i] == a, False, False, a, MAX_ATTEMPTS)
            name = (LABELS[i], CLASSES[LABELS[i]], IDS[i])
            rel = G.kept_file(*name) if status == "kept" else G.rejected_file(*name, a)
            files.append((np.full((2, 2, 3), 10 * i + a, np.uint8), self.store.out_dir / rel))
            if status in G.RETRY_STATUSES:
                retry.append((i, a + 1))
            rows.append(row(IDS[i], a, status, rel, label=LABELS[i]))
        return rows, retry, files


def row(source_id: str, attempt, status: str, file: str = "", **fields) -> dict:
    base = {f: "" for f in G.MANIFEST_FIELDS}
    return {**base, "source_id": source_id, "attempt": attempt, "status": status, "file": file, **fields}


def store_at(out, chunk_size: int = 7, batch_size: int = 3, chosen=range(7)) -> G.GeneratedSet:
    settings = {"what": "test", "chunk_size": chunk_size}
    return G.GeneratedSet(out, settings, {}, IDS, LABELS, CLASSES, list(chosen), chunk_size, batch_size, MAX_ATTEMPTS)


def run(store: G.GeneratedSet, world: World = SINGLE, fail_at: int | None = None) -> Maker:
    maker = Maker(store, fail_at)
    info = lambda agreed, rows: {"rows": len(rows)}
    store.run(world, lambda: {"tau": [0.5, 0.5]}, maker, info, io_threads=0, progress=False)
    return maker


def tree(out) -> dict[str, str]:
    return {
        p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.relative_to(out).parts[0] != "logs"
    }


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """An uninterrupted single-process run: its batches and its files."""
    out = tmp_path_factory.mktemp("whole")
    return run(store_at(out)).batches, tree(out), out


# ---------------------------------------------------------------- statuses
def test_status_of_an_attempt():
    assert G.status(True, False, False, 0, 3) == "kept"
    assert G.status(True, True, False, 2, 3) == "kept"  # kept means accepted; an invalid image never is
    assert G.status(True, False, True, 0, 3) == G.status(False, True, True, 2, 3) == "unreadable"
    assert [G.status(False, False, False, a, 3) for a in range(3)] == ["rejected", "rejected", "rejected-final"]
    assert [G.status(False, True, False, a, 3) for a in range(3)] == ["invalid", "invalid", "invalid-final"]
    assert G.status(False, False, False, 0, 1) == "rejected-final" and G.status(False, True, False, 5, 3) == (
        "invalid-final"
    )


# ---------------------------------------------------------------- the loop
def test_retries_go_first_into_the_next_batch_and_every_source_ends_kept_or_capped(whole):
    batches, files, out = whole
    assert batches == BATCHES
    rows = G.read_manifest(out / "manifest.csv")
    assert [(r["source_id"], int(r["attempt"])) for r in rows] == [(IDS[i], a) for b in BATCHES for i, a in b]
    final = {r["source_id"]: r["status"] for r in rows}
    assert final == {IDS[i]: "rejected-final" if k is None else "kept" for i, k in KEPT_AT.items()}
    assert {k for k in files if k.endswith(".png")} == {r["file"] for r in rows}
    kept = (0, 1, 2, 4, 5, 6)
    assert G.kept_files(out) == {IDS[i]: out / G.kept_file(LABELS[i], CLASSES[LABELS[i]], IDS[i]) for i in kept}
    assert "run.json" in files and G.RUNNING not in files and G.PLAN not in files


@pytest.mark.parametrize("cut", range(len(BATCHES)))
def test_a_run_stopped_after_any_batch_resumes_with_the_missing_batches_only(whole, tmp_path, cut):
    batches, files, _ = whole
    store = store_at(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        run(store, fail_at=cut)
    assert run(store_at(tmp_path)).batches == batches[cut:]  # nothing committed is made again
    assert tree(tmp_path) == files


def test_a_torn_tail_a_cut_batch_and_stray_files_are_dropped_and_redone(whole, tmp_path, caplog):
    """What a kill leaves: the manifest ends in the middle of a batch, in the middle of a line; a half-written
    picture (.tmp) and pictures no committed row names. A resume keeps the whole batches and nothing else."""
    batches, files, src = whole
    with open(src / "manifest.csv", newline="") as f:
        text = f.read()
    lines = text.splitlines(keepends=True)  # header + 13 rows
    cut = 1 + len(BATCHES[0]) + len(BATCHES[1]) + 2  # two rows of the third batch committed, and a torn line
    (tmp_path / "manifest.csv").write_text("".join(lines[:cut]) + lines[cut][:9], newline="")
    for rel in files:
        if rel.endswith(".png"):  # every picture of the whole run, including those of uncommitted rows
            (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / rel).write_bytes((src / rel).read_bytes())
    stray = tmp_path / "images" / "0000_a" / ("half" + TMP_SUFFIX)
    stray.write_bytes(b"half")
    (tmp_path / G.RUNNING).write_text('{"settings": {"what": "test", "chunk_size": 7}}')  # the folder is this run's
    with caplog.at_level(logging.INFO, logger=G.__name__):
        assert run(store_at(tmp_path)).batches == batches[2:]
    assert tree(tmp_path) == files and not stray.exists()
    unreferenced = (len(lines) - 1 - 6) + 1  # the pictures of the 7 rows after the whole batches, and the .tmp
    assert f"{tmp_path}: removed {unreferenced} unfinished or unreferenced files of a killed run" in caplog.text
    assert f"{tmp_path / 'manifest.csv'}: kept 6 committed rows (whole batches, chunk by chunk); redoing the rest" in (
        caplog.text
    )


# ---------------------------------------------------------------- replaying committed rows
def test_replay_queue_is_the_loops_state_after_the_whole_batches():
    """After k whole batches the queue is what the loop held then: the retries first, then the untouched sources;
    the rows of a batch cut short count for nothing."""
    rows = [row(IDS[i], a, G.status(KEPT_AT[i] == a, False, False, a, MAX_ATTEMPTS)) for b in BATCHES for i, a in b]
    after = [  # the loop's queue after each batch of BATCHES
        [(1, 1), (2, 1), (3, 0), (4, 0), (5, 0), (6, 0)],
        [(1, 2), (3, 1), (4, 0), (5, 0), (6, 0)],
        [(3, 2), (5, 0), (6, 0)],
        [(5, 1)],
        [],
    ]
    end = 0
    for batch, queue in zip(BATCHES, after):
        end += len(batch)
        assert G.replay_queue(rows[:end], IDS, range(7), 3) == (end, G.deque(queue))
        for part in range(1, len(batch)):
            assert G.replay_queue(rows[: end - part], IDS, range(7), 3) == (
                end - len(batch),
                G.deque(after[BATCHES.index(batch) - 1] if BATCHES.index(batch) else [(i, 0) for i in range(7)]),
            )
    assert G.replay_queue([], IDS, range(7), 3) == (0, G.deque((i, 0) for i in range(7)))
    assert G.replay_queue(rows, IDS, [0, 1, 2, 3, 4, 5, 6], 3) == (13, G.deque())
    assert G.replay_queue(rows[:2], IDS, range(7), 2) == (2, G.deque([(1, 1), (2, 0), (3, 0), (4, 0), (5, 0), (6, 0)]))
    assert G.replay_queue(rows, IDS, range(7), 4) is None  # rows of another batch size do not follow the loop
    assert G.replay_queue(rows + [row(IDS[0], 1, "kept")], IDS, range(7), 3) is None  # a row after the end


def test_rows_that_do_not_follow_the_loop_are_resumed_image_by_image(caplog, tmp_path):
    """A manifest of an older diffcore (another batch order): the finished sources stay done, the others go on
    with their next attempt, in dataset order, and a warning says so."""
    rows = [
        row(IDS[2], 0, "rejected"),
        row(IDS[0], 0, "kept"),
        row(IDS[2], 1, "rejected"),
        row(IDS[5], 0, "kept"),
        row(IDS[3], 0, "rejected-final"),
        row(IDS[1], 0, "invalid"),
    ]
    assert G.replay_queue(rows, IDS, range(7), 3) is None
    assert G.resume_state(rows) == ({IDS[0], IDS[5], IDS[3]}, {IDS[2]: 2, IDS[0]: 1, IDS[5]: 1, IDS[3]: 1, IDS[1]: 1})
    # rows of one source out of attempt order (merged by hand): the next attempt follows the highest, so no seed
    # already drawn is drawn again
    assert G.resume_state([row(IDS[2], 1, "rejected"), row(IDS[2], 0, "rejected")]) == (set(), {IDS[2]: 2})
    with caplog.at_level(logging.WARNING, logger=G.__name__):
        n, queue = G.replay(rows, IDS, range(7), 3, tmp_path / "manifest.csv")
    assert (n, list(queue)) == (6, [(1, 1), (2, 2), (4, 0), (6, 0)])
    assert caplog.messages == [
        f"{tmp_path / 'manifest.csv'}: rows do not follow this version's batch order; resuming unfinished images in "
        "dataset order (they may differ by rounding from an uninterrupted run's)"
    ]
    assert G.replay(rows[:0], IDS, range(7), 3, tmp_path) == (0, G.deque((i, 0) for i in range(7)))


# ---------------------------------------------------------------- several processes (a Slurm array, in line)
def test_shards_make_their_chunks_and_the_merge_is_the_single_process_set(whole, tmp_path):
    """Chunks of 2 (4 chunks); shard 0 of 2 makes chunks 0 and 2, shard 1 chunks 1 and 3, each in its part file;
    shard 1 is stopped after its first batch and resumed; the merge equals one process's run with chunks of 2."""
    one = tmp_path / "one"
    single = run(store_at(one, chunk_size=2)).batches
    out = tmp_path / "array"
    s0 = run(store_at(out, chunk_size=2), World(rank=0, size=2))
    assert s0.batches == [b for b in single if b[0][0] in (0, 1, 4, 5)]
    with pytest.raises(KeyboardInterrupt):
        run(store_at(out, chunk_size=2), World(rank=1, size=2), fail_at=1)
    stray = out / G.rejected_file(LABELS[2], "a", IDS[2], 2)  # chunk 1's, never made (source 2 is kept at 1)
    elsewhere = out / G.rejected_file(LABELS[0], "a", IDS[0], 2)  # chunk 0's: shard 1 leaves it alone
    half = out / (G.kept_file(LABELS[3], "b", IDS[3]) + TMP_SUFFIX)  # a picture cut by the stop
    for path in (stray, elsewhere, half):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    s1 = run(store_at(out, chunk_size=2), World(rank=1, size=2))
    assert s1.batches == [b for b in single if b[0][0] in (2, 3, 6)][1:]
    assert not stray.exists() and not half.exists() and elsewhere.exists()
    elsewhere.unlink()
    assert {p.name for p in (out / G.PARTS).iterdir()} == {f"chunk-{c:06d}.csv" for c in range(4)}
    assert store_at(out, chunk_size=2).finish(lambda agreed, rows: {"rows": len(rows)}) == {"rows": 13}
    assert tree(out) == tree(one)


def test_chunk_rows_read_parts_or_the_manifest(tmp_path):
    store = store_at(tmp_path, chunk_size=3)  # chunks [0, 1, 2], [3, 4, 5], [6]
    G.append_rows(store.manifest, [row(IDS[3], 0, "kept"), row(IDS[0], 0, "kept"), row("elsewhere", 0, "kept")])
    G.append_rows(store.part(2), [row(IDS[6], 0, "rejected")])
    got = store.chunk_rows([0, 1, 2])
    assert [[r["source_id"] for r in got[c][0]] for c in range(3)] == [[IDS[0]], [IDS[3]], [IDS[6]]]
    assert [got[c][1] for c in range(3)] == [False, False, False]
    assert store._by_chunk(G.read_manifest(store.manifest))[-1][0]["source_id"] == "elsewhere"


# ---------------------------------------------------------------- the manifest read back
def manifest(rows: list[dict]) -> str:
    return G.manifest_text(rows, header=True)


def test_a_manifest_is_read_back_to_its_last_whole_row(tmp_path):
    path = tmp_path / "manifest.csv"
    rows = [row(IDS[0], 0, "rejected", label=0), row(IDS[0], 1, "kept", label=0)]
    path.write_text(manifest(rows), newline="")
    back, torn = G.parse_manifest(path)
    assert not torn and [(r["source_id"], r["attempt"], r["status"]) for r in back] == [
        (IDS[0], "0", "rejected"),
        (IDS[0], "1", "kept"),
    ]
    path.write_text(manifest(rows)[:-5], newline="")  # the last line cut
    assert G.parse_manifest(path) == (back[:1], True)
    bad = manifest(rows).replace("kept", "kep")  # a status cut short but the line ended: not a whole row
    path.write_text(bad, newline="")
    assert G.parse_manifest(path) == (back[:1], True)
    path.write_text(manifest([rows[0], row(IDS[0], "x", "kept")]), newline="")  # attempt not a number
    assert G.parse_manifest(path) == (back[:1], True)
    short = io.StringIO()
    csv.writer(short).writerows([G.MANIFEST_FIELDS, [IDS[0], "", 0]])  # a row with fields missing
    path.write_text(short.getvalue(), newline="")
    assert G.parse_manifest(path) == ([], True)
    assert G.parse_manifest(tmp_path / "none.csv") == ([], False)
    path.write_text("", newline="")
    assert G.parse_manifest(path) == ([], False)
    path.write_text("source,label\r\nx,1\r\n", newline="")
    with pytest.raises(ValueError, match=r"columns \['source', 'label'\]\.\.\. are not a diffcore manifest's"):
        G.parse_manifest(path)
    assert G.complete(back[0]) and not G.complete({**back[0], "seed": None})  # a field the line did not reach
    assert not G.complete({**back[0], None: ["more"]})  # more fields than columns


def test_kept_files_and_the_variants_of_a_source(tmp_path):
    """One kept image per key; a set of several images per source (DiffuseMix: one per prompt) keys them
    '<id>#v<k>': grouped per source, in variant order (2 before 10); files gone and rows not kept are left out."""
    names = ["a#v2", "a#v10", "a#v0", "b", "c#vx", "d#v1"]
    rows = [row(k, 0, "kept", f"images/{n}.png") for n, k in enumerate(names)]
    rows += [row("e", 0, "rejected", "rejected/e.png"), row("f", 0, "kept", "images/gone.png")]
    for r in rows[:-1]:
        (tmp_path / r["file"]).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / r["file"]).write_bytes(b"png")
    (tmp_path / "manifest.csv").write_text(manifest(rows), newline="")
    assert G.kept_files(tmp_path) == {k: tmp_path / f"images/{n}.png" for n, k in enumerate(names)}
    assert G.kept_by_source(tmp_path) == {
        "a": [tmp_path / "images/2.png", tmp_path / "images/0.png", tmp_path / "images/1.png"],
        "b": [tmp_path / "images/3.png"],
        "c#vx": [tmp_path / "images/4.png"],
        "d": [tmp_path / "images/5.png"],
    }
    keys = ("a#v2", "a#v", "a#vx", "a#v1#v3", "plain")
    assert [G.source_of(k) for k in keys] == ["a", "a#v", "a#vx", "a#v1", "plain"]
    with pytest.raises(FileNotFoundError, match=r"manifest.csv: no generated set here; run `diffcore generate`"):
        G.kept_files(tmp_path / "empty")


def test_remove_orphans_keeps_exactly_the_referenced_files(tmp_path):
    keep = ["images/0000_a/x.png", "rejected/0000_a/x_a0.png"]
    drop = ["images/0000_a/y.png", "rejected/0001_b/z_a1.png", "images/0000_a/x.png" + TMP_SUFFIX]
    for rel in keep + drop + ["notes.txt", "manifest.csv" + TMP_SUFFIX]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"1")
    rows = [row("x", 0, "rejected", keep[1]), row("x", 1, "kept", keep[0]), row("w", 0, "unreadable", "")]
    assert G.remove_orphans(tmp_path, rows) == 4
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == sorted(
        keep + ["notes.txt"]
    )
    assert G.remove_orphans(tmp_path, rows) == 0


# ---------------------------------------------------------------- resumes across process counts, in this process
@pytest.fixture(scope="module")
def single_in_chunks_of_2(tmp_path_factory):
    out = tmp_path_factory.mktemp("one")
    run(store_at(out, chunk_size=2))
    return tree(out)


def finish(out):
    store_at(out, chunk_size=2).finish(lambda agreed, rows: {"rows": len(rows)})
    return tree(out)


def test_a_shard_resumed_after_a_torn_part_file_ends_with_the_single_process_set(single_in_chunks_of_2, tmp_path):
    """Shard 1 of 2 is killed in the middle of a line of its chunk's part file: the torn tail is cut off before
    anything is appended to it."""
    run(store_at(tmp_path, chunk_size=2), World(rank=0, size=2))
    with pytest.raises(KeyboardInterrupt):
        run(store_at(tmp_path, chunk_size=2), World(rank=1, size=2), fail_at=1)
    part = store_at(tmp_path, chunk_size=2).part(1)
    with open(part, "a", newline="") as f:
        f.write(G.manifest_text([row(IDS[3], 0, "rejected")])[:9])  # a line cut by the kill
    run(store_at(tmp_path, chunk_size=2), World(rank=1, size=2))
    assert G.parse_manifest(part)[1] is False
    assert finish(tmp_path) == single_in_chunks_of_2


def test_a_single_process_run_resumed_as_two_shards_ends_with_the_single_process_set(single_in_chunks_of_2, tmp_path):
    """Stopped after two batches in manifest.csv, then resumed by two Slurm array tasks: each moves its chunks'
    committed rows into its part files and goes on."""
    with pytest.raises(KeyboardInterrupt):
        run(store_at(tmp_path, chunk_size=2), fail_at=2)
    run(store_at(tmp_path, chunk_size=2), World(rank=0, size=2))
    run(store_at(tmp_path, chunk_size=2), World(rank=1, size=2))
    assert finish(tmp_path) == single_in_chunks_of_2


def test_two_shards_resumed_by_one_process_fold_their_parts_into_the_manifest(single_in_chunks_of_2, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        run(store_at(tmp_path, chunk_size=2), World(rank=0, size=2), fail_at=1)
    with pytest.raises(KeyboardInterrupt):
        run(store_at(tmp_path, chunk_size=2), World(rank=1, size=2), fail_at=1)
    run(store_at(tmp_path, chunk_size=2))  # one process: every chunk's rows into manifest.csv, the parts gone
    assert not (tmp_path / G.PARTS).exists()
    assert tree(tmp_path) == single_in_chunks_of_2


# ---------------------------------------------------------------- more of the manifest read back
def test_the_manifest_round_trips_any_text_and_a_torn_header_reads_as_empty(tmp_path):
    path = tmp_path / "manifest.csv"
    rows = [row(IDS[0], 0, "kept", label=0, prompt="a photo,\r\nwith a line break", negative_prompt='"quoted"')]
    path.write_text(manifest(rows), newline="")
    back, torn = G.parse_manifest(path)
    assert (
        not torn and back[0]["prompt"] == "a photo,\r\nwith a line break" and back[0]["negative_prompt"] == '"quoted"'
    )
    path.write_bytes(manifest(rows).encode().replace(b"a photo", b"a ph\xffto"))  # a byte that is no UTF-8
    assert G.parse_manifest(path)[0][0]["prompt"] == "a ph\ufffdto,\r\nwith a line break"
    path.write_text(manifest(rows)[:7], newline="")  # killed while writing the header
    assert G.parse_manifest(path) == ([], True)
    path.write_text("source,label,x,y,z\r\n1,2,3,4,5\r\n", newline="")
    with pytest.raises(ValueError) as e:
        G.parse_manifest(path)
    assert str(e.value) == (
        f"{path}: columns ['source', 'label', 'x', 'y']... are not a diffcore manifest's "
        f"({G.MANIFEST_FIELDS[:4]}...); use a new --out folder"
    )


def test_rows_of_other_sources_at_the_same_attempts_do_not_follow_the_loop():
    rows = [row(IDS[1], 0, "kept"), row(IDS[0], 0, "kept"), row(IDS[2], 0, "kept")]  # 0 and 1 swapped
    assert G.replay_queue(rows, IDS, range(7), 3) is None
