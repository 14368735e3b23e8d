"""Many processes, one result: shards from torchrun / Slurm variables, fixed chunks, one global batch order."""

import json
import threading

import pytest
import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler

from diffcore.engine.distributed import SINGLE, RankBatches, World, chunks, my_chunks, publish_once, world_from_env


def test_world_from_torchrun_slurm_array_and_both():
    assert world_from_env({}) == World()
    w = world_from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (w.rank, w.size, w.group_rank, w.group_size, w.local_rank, w.whole) == (3, 4, 3, 4, 1, True)
    # an array --array=1-8: task ids start at 1; no process group
    s = world_from_env(
        {
            "SLURM_ARRAY_TASK_ID": "5",
            "SLURM_ARRAY_TASK_COUNT": "8",
            "SLURM_ARRAY_TASK_MIN": "1",
            "SLURM_ARRAY_TASK_MAX": "8",
        }
    )
    assert (s.rank, s.size, s.group_size, s.whole, s.tag) == (4, 8, 1, False, "rank-00004-of-00008")
    step = world_from_env(
        {
            "SLURM_ARRAY_TASK_ID": "4",
            "SLURM_ARRAY_TASK_COUNT": "4",
            "SLURM_ARRAY_TASK_MIN": "0",
            "SLURM_ARRAY_TASK_MAX": "6",
            "SLURM_ARRAY_TASK_STEP": "2",
        }
    )
    assert (step.rank, step.size) == (2, 4)
    # an array of torchrun jobs: task 2 of 3, process 1 of 2 -> shard 5 of 6, collectives over its 2 processes
    both = world_from_env({"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "3", "RANK": "1", "WORLD_SIZE": "2"})
    assert (both.rank, both.size, both.group_rank, both.group_size, both.is_main, both.whole) == (
        5,
        6,
        1,
        2,
        False,
        False,
    )
    # an array of independent runs (train, run, or generate with DIFFCORE_SLURM_ARRAY=ignore): no shards
    sweep = {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "7"}
    assert world_from_env(sweep, array=False) == World() == world_from_env({**sweep, "DIFFCORE_SLURM_ARRAY": "ignore"})


@pytest.mark.parametrize(
    "env,message",
    [
        (
            {
                "SLURM_ARRAY_TASK_ID": "9",
                "SLURM_ARRAY_TASK_COUNT": "3",
                "SLURM_ARRAY_TASK_MIN": "1",
                "SLURM_ARRAY_TASK_MAX": "9",
            },
            "expected evenly spaced indices",
        ),
        ({"RANK": "2", "WORLD_SIZE": "2"}, "expected 0 <= rank < size"),
        ({"RANK": "x", "WORLD_SIZE": "2"}, "RANK='x': expected an integer"),
        ({"SLURM_ARRAY_TASK_ID": "0"}, "SLURM_ARRAY_TASK_COUNT is not set"),
    ],
)
def test_bad_launch_variables_fail_in_one_line(env, message):
    with pytest.raises(ValueError, match=message):
        world_from_env(env)


def test_chunks_do_not_depend_on_the_number_of_shards():
    items = list(range(103))
    cut = chunks(items, 10)
    assert [len(c) for c in cut] == [10] * 10 + [3] and sum(cut, []) == items and my_chunks(11, World()) == [*range(11)]
    for size in (2, 3, 7, 16):
        shards = [my_chunks(len(cut), World(rank=r, size=size)) for r in range(size)]
        assert sorted(sum(shards, [])) == list(range(11))  # every chunk taken exactly once
        assert max(map(len, shards)) - min(map(len, shards)) <= 1  # balanced to within one chunk
    with pytest.raises(ValueError, match="chunk_size=0"):
        chunks(items, 0)


def test_publish_once_first_writer_wins(tmp_path):
    path = tmp_path / "plan.json"
    made, barrier = [], threading.Barrier(4)

    def shard(k):
        def make():
            made.append(k)
            barrier.wait()  # every shard makes its own before any publishes: a real race
            return {"tau": [0.5 + k]}

        return publish_once(path, make)

    results = [None] * 4
    threads = [threading.Thread(target=lambda k=k: results.__setitem__(k, shard(k))) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(made) == [0, 1, 2, 3] and len({json.dumps(r) for r in results}) == 1  # all use one copy
    assert publish_once(path, lambda: pytest.fail("must not be made again")) == results[0]
    assert [p.name for p in tmp_path.iterdir()] == ["plan.json"]  # no temporary file left behind


def test_rank_batches_split_the_single_process_batches():
    n, batch = 23, 6

    def batches(world, seed=5):
        g = torch.Generator().manual_seed(seed)
        loader = DataLoader(
            range(n),
            generator=g,
            batch_sampler=RankBatches(
                BatchSampler(RandomSampler(range(n), generator=g), batch, drop_last=False), n, batch, world
            ),
        )
        return [[b.tolist() for b in loader] for _epoch in range(2)], len(loader)

    # one process: exactly the batches of DataLoader(shuffle=True), epoch after epoch (existing results unchanged)
    g = torch.Generator().manual_seed(5)
    plain = DataLoader(range(n), batch_size=batch, shuffle=True, generator=g)
    one, length = batches(World())
    assert one == [[b.tolist() for b in plain] for _epoch in range(2)] and length == 4
    # two and three processes: each step's rows, put together, are that step's single-process batch
    for size in (2, 3):
        per_rank = [batches(World(rank=r, size=size, group_rank=r, group_size=size)) for r in range(size)]
        for epoch in range(2):
            steps = zip(*(p[0][epoch] for p in per_rank))
            assert [sorted(sum(rows, [])) for rows in steps] == [sorted(b) for b in one[epoch]]
        assert all(p[1] == 4 for p in per_rank)
    # a remainder smaller than the world is dropped rather than leave a rank without rows
    per_rank = [batches(World(rank=r, size=6, group_rank=r, group_size=6)) for r in range(6)]
    assert all(len(p[0][0]) == 3 == p[1] for p in per_rank)  # 23 = 3 x 6 + 5: the last 5 rows are dropped


def _torchrun(args, cwd, timeout=240, nproc=2):
    """Run `args` under torchrun with `nproc` processes on a free port; returns the completed process."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import diffcore

    # the workers import the diffcore under test (a checkout or worktree), not whichever one is installed
    here = str(Path(diffcore.__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc_per_node",
        str(nproc),
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        "localhost:0",
        *args,
    ]
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """One torchrun launch of 2 gloo processes (tests/ddp_train_worker.py): a generation, then trainings."""
    from pathlib import Path

    import ddp_train_worker as W

    out = tmp_path_factory.mktemp("torchrun")
    return out, _torchrun([str(Path(W.__file__)), str(out)], cwd=out)


def test_ddp_training_two_processes(two_processes):
    import ddp_train_worker as W

    tmp_path, _ = two_processes
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    # metrics and losses are reduced over the ranks: both return the same numbers, over the whole test set
    assert r0["metrics"] == r1["metrics"] and r0["metrics"]["n"] == 10
    assert [e["train_loss"] for e in r0["history"]] == [e["train_loss"] for e in r1["history"]]
    assert r0["processes"] == r1["processes"] == 2
    assert r0["model_methods"] == r1["model_methods"] and set(r0["model_methods"]) == set(W.MODEL_METHODS)
    assert r0["device_loader"] == r1["device_loader"] and r0["device_loader"]["n"] == 10
    assert r0["resident_loader"] == r0["device_loader"] == r1["resident_loader"]  # a cache in each rank's memory
    assert sorted(p.suffix for p in (tmp_path / "cache").iterdir()) == [".done", ".npy"]  # one cache, made once
    # only rank 0 writes the result and the checkpoint, whose weights any process count can load (no "module.")
    assert (tmp_path / "result-0.json").is_file() and not (tmp_path / "result-1.json").exists()
    assert (tmp_path / "result-0.ckpt.pt").is_file() and not (tmp_path / "result-1.ckpt.pt").exists()
    state = torch.load(tmp_path / "result-0.ckpt.pt", weights_only=True)
    assert state["state_dict"] and not any(k.startswith("module.") for k in state["state_dict"])
    assert json.loads((tmp_path / "result-0.json").read_text())["metrics"] == r0["metrics"]
    # the reported metrics are those of the saved model, evaluated by one process on the whole test set
    from diffcore.models import build_model
    from diffcore.train import EvalSet, TrainConfig, evaluate, transforms_for

    saved = build_model("digits-cnn", 10, image_size=32)
    saved.load_state_dict(state["state_dict"])
    _, test_ds = W.data()
    cfg = TrainConfig(model="digits-cnn", image_size=32, augment="digits")
    again = evaluate(
        saved, DataLoader(EvalSet(test_ds, transforms_for(cfg, False)), batch_size=64), torch.device("cpu")
    )
    assert (again["top1"], again["top5"], again["n"]) == (r0["metrics"]["top1"], r0["metrics"]["top5"], 10)
    # every image's predictions, gathered from the two ranks' shares in the set's order, as one process sees them
    loader = DataLoader(EvalSet(test_ds, transforms_for(cfg, False)), batch_size=64)
    alone = evaluate(saved, loader, torch.device("cpu"), ids=test_ds.ids)["predictions"]
    assert json.loads((tmp_path / "result-0.json").read_text())["predictions"]["test"] == alone
    assert again["loss"] == pytest.approx(r0["metrics"]["loss"], rel=1e-6)
    # the same global batches: without BatchNorm and augmentation, 2 processes end where 1 process does
    one = W.fit_linear(World())
    assert r0["linear"]["weights"] == r1["linear"]["weights"]  # DDP keeps the ranks in step, bit for bit
    torch.testing.assert_close(torch.tensor(r0["linear"]["weights"]), torch.tensor(one["weights"]), rtol=0, atol=1e-6)
    assert r0["linear"]["losses"] == pytest.approx(one["losses"], rel=1e-6)
    assert r0["linear"]["final"]["n"] == one["final"]["n"] == 10
    assert r0["linear"]["final"]["top1"] == one["final"]["top1"]


# ---------------------------------------------------------------- generation: shards write one set
def _tree(root):
    """{relative path: sha256} of every file under root, logs/ (per-process provenance) aside."""
    import hashlib

    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).parts[0] != "logs"
    }


@pytest.fixture(scope="module")
def gen_parts(tiny_sd_dir, tiny_clip_files):
    import numpy as np

    from diffcore.counterparts import CounterpartConfig
    from diffcore.data import ImageSet, digits
    from diffcore.filter import FilterConfig, load_clip
    from diffcore.generate import GenerateConfig, load_pipeline
    from diffcore.prompts import PromptConfig

    cpu = torch.device("cpu")
    gen = GenerateConfig(
        model=str(tiny_sd_dir), steps=2, guidance_scale=3.0, size=16, batch_size=3, dtype="float32", run_seed=11
    )
    filt = FilterConfig(
        clip_model="test-tiny-clip",
        clip_config=str(tiny_clip_files[0]),
        clip_pretrained=str(tiny_clip_files[1]),
        z_pairs=20,
        max_attempts=3,
    )
    full = digits("train", size=16)
    labels = np.asarray(full.labels)
    idx = np.concatenate([np.flatnonzero(labels == k)[:4] for k in (1, 4, 8)])  # 12 sources: chunks of 4 -> 3
    ds = ImageSet(
        "digits-1-4-8",
        ["one", "four", "eight"],
        [full.ids[i] for i in idx],
        [0] * 4 + [1] * 4 + [2] * 4,
        loader=lambda j: full.load(int(idx[j])),
        dataset_type="digits",
    )
    cfgs = (
        PromptConfig(dataset_type="handwritten digit", negative_key="digits"),
        gen,
        filt,
        CounterpartConfig(chunk_size=4),
    )
    return load_pipeline(gen, cpu, torch.float32), load_clip(filt, cpu), ds, cfgs


def _generate(gen_parts, out, world=SINGLE):
    from diffcore.counterparts import make_counterparts

    pipe, clip, ds, cfgs = gen_parts
    return make_counterparts(ds, pipe, clip, out, *cfgs, progress=False, world=world)


def test_shards_write_the_same_files_as_one_process(gen_parts, tmp_path):
    from diffcore.counterparts import finish_counterparts, read_manifest

    _, _, ds, cfgs = gen_parts
    one = _generate(gen_parts, tmp_path / "one")
    rows = read_manifest(tmp_path / "one" / "manifest.csv")
    assert one["summary"]["sources"] == 12 and any(r["attempt"] != "0" for r in rows)  # retries happened
    assert not (tmp_path / "one" / "parts").exists()
    for size in (3,):  # shards of a Slurm array (no process group, merged afterwards); 2 under torchrun below
        out = tmp_path / f"array-{size}"
        assert all(_generate(gen_parts, out, World(rank=r, size=size)) is None for r in range(size))
        assert not (out / "manifest.csv").exists()
        merged = finish_counterparts(ds, out, *cfgs)
        assert merged == json.loads((tmp_path / "one" / "run.json").read_text())
        assert _tree(out) == _tree(tmp_path / "one"), f"{size} shards differ from one process"
        print(f"1 process vs a {size}-task array: {len(_tree(out))} files compared by sha256, all equal")
        assert len(list((out / "logs").iterdir())) == size  # one provenance log per process
    assert len(_tree(tmp_path / "one")) > 12  # images, rejected attempts, manifest, run.json, plan.json


def test_a_run_resumes_on_another_number_of_processes(gen_parts, tmp_path):
    from diffcore.counterparts import finish_counterparts, read_manifest

    _, _, ds, cfgs = gen_parts
    _generate(gen_parts, tmp_path / "one")
    out = tmp_path / "mixed"
    _generate(gen_parts, out, World(rank=0, size=2))  # shard 0 of 2 runs (chunks 0 and 2), shard 1 never starts
    with pytest.raises(ValueError, match="4 of 12 sources unfinished"):
        finish_counterparts(ds, out, *cfgs)
    _generate(gen_parts, out)  # one process finishes the run: only chunk 1 is left
    assert _tree(out) == _tree(tmp_path / "one")
    logs = [json.loads(line) for p in sorted((out / "logs").iterdir()) for line in p.read_text().splitlines()]
    assert [(g["world"]["size"], g["chunks"]) for g in logs] == [(1, [0, 1, 2]), (2, [0, 2])]
    chunk1 = set(ds.ids[4:8])  # chunks 0 and 2 were found finished in their parts, not redone
    assert logs[0]["attempts_this_start"] == sum(r["source_id"] in chunk1 for r in read_manifest(out / "manifest.csv"))
    before = _tree(out)
    _generate(gen_parts, out, World(rank=1, size=3))  # a finished set started again as an array, and merged:
    finish_counterparts(ds, out, *cfgs)  # nothing changes
    assert _tree(out) == before


def test_a_shard_killed_mid_chunk_resumes_to_the_same_set(gen_parts, tmp_path):
    """SIGKILL of an array task while it writes its chunks; the task run again, the other task, the merge: the
    set of one uninterrupted process, and no partial file behind any row."""
    import os
    import signal
    import time

    from PIL import Image

    from diffcore.counterparts import finish_counterparts, read_manifest

    _, _, ds, cfgs = gen_parts
    _generate(gen_parts, tmp_path / "one")
    out, task0 = tmp_path / "killed", World(rank=0, size=2)  # chunks 0 and 2
    pid = os.fork()
    if pid == 0:  # the task, killed below
        try:
            torch.set_num_threads(1)
            _generate(gen_parts, out, task0)
        finally:
            os._exit(0)
    part, ended = out / "parts" / "chunk-000000.csv", False
    while len(read_manifest(part)) < 3 and not ended:
        ended = bool(os.waitpid(pid, os.WNOHANG)[0])
        time.sleep(0.002)
    if not ended:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert not ended, "the task ended before it could be killed"
    for r in read_manifest(part):  # every committed row names a whole file
        if r["file"]:
            with Image.open(out / r["file"]) as im:
                im.load()
    killed_rows = len(read_manifest(part))
    _generate(gen_parts, out, World(rank=1, size=2))
    _generate(gen_parts, out, task0)  # resumes chunk 0 from its part (or 2, if 0 was done)
    finish_counterparts(ds, out, *cfgs)
    assert killed_rows >= 3 and _tree(out) == _tree(tmp_path / "one")


def test_torchrun_generation_equals_one_process(two_processes, tmp_path):
    """`diffcore generate` under torchrun with 2 processes and in one process write the same files (logs/ aside)."""
    import ddp_train_worker as W

    from diffcore.cli import main

    two, done = two_processes
    assert main(["generate", *W.GEN_FLAGS, "--out", str(tmp_path / "one" / "other-name")]) == 0  # names differ
    one, two_files = _tree(tmp_path / "one" / "other-name"), _tree(two / "two" / "gen")
    assert one == two_files, f"{len(set(one.items()) ^ set(two_files.items()))} files differ"
    assert len(one) >= 10 and "preview.png" in one and "manifest.csv" in one
    print(f"1 vs 2 processes (torchrun, gloo): {len(one)} files compared by sha256, all equal")
    assert done.stdout.count("preview (real | kept | rejected") == 2  # rank 0 alone reports, once per generation
    logs = sorted((two / "two" / "gen" / "logs").iterdir())
    assert [p.name for p in logs] == ["generate.rank-00000-of-00002.jsonl", "generate.rank-00001-of-00002.jsonl"]
    assert [json.loads(p.read_text())["chunks"] for p in logs] == [[0, 2, 4], [1, 3]]


def test_torchrun_generation_at_the_default_settings_spreads_over_both_processes(two_processes, tmp_path):
    """100 digits at the embedded profile's batch of 64 and default chunk: 2 batches, so both processes generate
    (with 1,024 sources per chunk, rank 1 used to log `chunks: []`), and the set equals one process's."""
    import ddp_train_worker as W

    from diffcore.cli import main

    two, _ = two_processes
    logs = [json.loads(p.read_text()) for p in sorted((two / "two" / "defaults" / "logs").iterdir())]
    assert [(g["world"]["rank"], g["chunks"], g["sources"]) for g in logs] == [(0, [0], 64), (1, [1], 36)]
    assert all(g["attempts_this_start"] >= g["sources"] for g in logs)  # each made every image of its chunk
    assert main(["generate", *W.DEFAULT_FLAGS, "--out", str(tmp_path / "elsewhere")]) == 0  # another folder name
    assert _tree(tmp_path / "elsewhere") == _tree(two / "two" / "defaults")  # preview.png included


@pytest.mark.gpu
def test_torchrun_generation_on_one_gpu_equals_one_process(tmp_path):
    """As above on CUDA, where batched kernels do round by batch composition: 2 processes share cuda:0."""
    import ddp_train_worker as W

    from diffcore.cli import main

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    flags = [*W.GEN_FLAGS[:-2], "--device", "cuda:0"]
    assert main(["generate", *flags, "--out", str(tmp_path / "one" / "gen")]) == 0
    _torchrun(["-m", "diffcore", "generate", *flags, "--out", str(tmp_path / "two" / "gen")], cwd=tmp_path)
    assert _tree(tmp_path / "one" / "gen") == _tree(tmp_path / "two" / "gen")


# ---------------------------------------------------------------- processes that start together on one folder
def _toy_set(out):
    """A generated set of 24 sources in chunks of 4, batches of 2, made by a model-free stand-in (a 4x4 image per
    attempt; every third first attempt rejected): the storage layer's life, claim to finish, in milliseconds."""
    import diffcore.engine.genset as G

    ids = [f"s{i:02d}" for i in range(24)]
    labels = [i % 3 for i in range(24)]
    return G.GeneratedSet(out, {"toy": 1}, {}, ids, labels, ["a", "b", "c"], list(range(24)), 4, 2, 2)


def _toy_batch(store, batch):
    import numpy as np

    import diffcore.engine.genset as G

    rows, retry, files = [], [], []
    for i, a in batch:
        status = G.status(a > 0 or i % 3, False, False, a, store.max_attempts)
        rel = G.kept_file(store.labels[i], store.classes[store.labels[i]], store.ids[i]) if status == "kept" else ""
        if rel:
            files.append((np.full((4, 4, 3), 10 * i + a, np.uint8), G.inside(store.out_dir, rel)))
        retry += [(i, a + 1)] if status in G.RETRY_STATUSES else []
        row = {**dict.fromkeys(G.MANIFEST_FIELDS, ""), "source_id": store.ids[i], "label": store.labels[i]}
        rows.append({**row, "attempt": a, "status": status, "file": rel})
    return rows, retry, files


def _toy_run(out, world=SINGLE):
    import diffcore.engine.genset as G

    store = _toy_set(out)
    return store.run(
        world,
        lambda: {"tau": [0.5]},
        lambda batch, pool, plan: _toy_batch(store, batch),
        lambda plan, rows: {"settings": store.settings, "summary": G.summarize(rows, store.classes, {}, 24)},
        io_threads=0,
        progress=False,
    )


def test_processes_starting_together_on_fresh_half_done_and_finished_folders_never_refuse(tmp_path, monkeypatch):
    """Twelve 3-process runs (array tasks: no barrier at all) start at once, on fresh, half-done and finished
    folders, with random delays (seeded per process) injected where reading the recorded settings, listing the
    folder and publishing running.json meet; on a fresh folder, processes 1 and 2 find no settings and then wait
    for process 0's running.json before they go on (the window, forced open). Every process ends without a
    refusal and every folder, merged, holds the set of one uninterrupted process. The check used to read the
    settings, then list the folder, and refused a folder in which another process had published running.json in
    between (always, with the window forced open)."""
    import os
    import random
    import shutil
    import time

    import diffcore.engine.genset as G

    _toy_run(tmp_path / "one")
    folders = {f"{kind}-{k}": kind for kind in ("fresh", "half", "finished") for k in range(4)}
    for name, kind in folders.items():
        if kind == "half":
            _toy_run(tmp_path / name, World(rank=0, size=2))  # half of a 2-task array: chunks 0, 2 and 4 done
        elif kind == "finished":
            shutil.copytree(tmp_path / "one", tmp_path / name)
    delay, me = random.Random(), {"rank": 0}

    def slow(fn):
        def wrapped(*args, **kw):
            time.sleep(delay.uniform(0, 0.05))
            out = fn(*args, **kw)
            time.sleep(delay.uniform(0, 0.05))
            return out

        return wrapped

    def after_rank_0_claims(fn):
        def wrapped(store):
            out, end = fn(store), time.time() + 2
            while out is None and me["rank"] > 0 and not (store.out_dir / G.RUNNING).exists() and time.time() < end:
                time.sleep(0.001)
            return out

        return wrapped

    monkeypatch.setattr(G.GeneratedSet, "recorded_settings", after_rank_0_claims(G.GeneratedSet.recorded_settings))
    for name in ("recorded_settings", "strangers"):
        monkeypatch.setattr(G.GeneratedSet, name, slow(getattr(G.GeneratedSet, name)))
    monkeypatch.setattr(G.D, "publish_once", slow(G.D.publish_once))
    go, pids = time.time() + 0.5, {}
    for seed, (name, rank) in enumerate((n, r) for n in folders for r in range(3)):
        pid = os.fork()
        if pid == 0:  # one process of a 3-task array on `name`: exit 0, or 1 on any error (a refusal included)
            code = 1
            try:
                delay.seed(seed)
                me["rank"] = rank
                time.sleep(max(0.0, go - time.time()))  # all 36 start together
                _toy_run(tmp_path / name, World(rank=rank, size=3))
                code = 0
            finally:
                os._exit(code)
        pids[pid] = (name, rank)
    failed = [pids[pid] for pid in pids if os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) != 0]
    assert failed == []
    for name in folders:  # the merge (`diffcore merge`): the set of one process, byte for byte
        _toy_set(tmp_path / name).finish(
            lambda plan, rows: {"settings": {"toy": 1}, "summary": G.summarize(rows, ["a", "b", "c"], {}, 24)}
        )
        assert _tree(tmp_path / name) == _tree(tmp_path / "one"), name
