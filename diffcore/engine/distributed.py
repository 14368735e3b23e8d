"""Many processes, one result: which share of the work this process does, and the few collective steps that
generation and training need. In a single process every function here is a no-op, so one code path serves 1
process and 1,000.

Who this process is, read in one place (`world_from_env`):
- torchrun (one process per GPU, one or many machines): RANK, WORLD_SIZE, LOCAL_RANK. A process group gives
  barriers and reductions (NCCL when training on GPUs; gloo otherwise, and for `generate`, which only needs
  barriers).
- a Slurm job array (independent tasks, no process group): SLURM_ARRAY_TASK_ID, _COUNT, _MIN, _STEP. Only
  `generate` (and `merge`) read them: an array of `train` or `run` jobs is a sweep of independent runs, and so is
  an array of `generate` jobs when DIFFCORE_SLURM_ARRAY=ignore is set.
- both, an array of torchrun jobs: shard = task * torchrun world + torchrun rank.

Generation (`counterparts.make_counterparts`) cuts the chosen source images into fixed chunks and gives chunk c to
shard c % shards. Chunks do not depend on the number of shards, so every image is generated in the same batch on
1 GPU or on 100 (batched kernels round differently at other batch compositions), with a seed that depends only on
(run seed, image id, attempt): the generated set is the same, file for file.

Training (`train.train`) uses DistributedDataParallel: every process draws the same global batch order and takes
rows rank::world of each global batch (`RankBatches`), so a step sees the same samples on any process count.
"""

from __future__ import annotations

import atexit
import json
import os
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from .checks import json_text
from .runtime import resolve_device

# How long a rank waits at a barrier before it gives up. The longest legitimate wait: generation ranks wait while
# rank 0 makes tau_k (Eq. 5), which for ImageNet-1K reads nearly every training image once (z = 1000 pairs per
# class of ~1,300 images; ~20-40 min at ~1,150 JPEG decodes/s on one core, REFERENCE.md); then ranks finishing
# up to a chunk apart (256 images ~ 2 min on an H100). A dead rank ends the job through torchrun anyway.
TIMEOUT = timedelta(hours=2)


@dataclass(frozen=True)
class World:
    rank: int = 0  # this process's shard, in [0, size)
    size: int = 1  # shards in all: torchrun processes x Slurm array tasks
    group_rank: int = 0  # rank in the torchrun process group (0 without one)
    group_size: int = 1  # processes in the torchrun process group; collectives span these only
    local_rank: int = 0  # GPU index on this machine (torchrun LOCAL_RANK)

    def __post_init__(self):
        if not (0 <= self.rank < self.size and 0 <= self.group_rank < self.group_size and self.local_rank >= 0):
            raise ValueError(
                f"rank={self.rank} of size={self.size} (group rank {self.group_rank} of "
                f"{self.group_size}, local rank {self.local_rank}): expected 0 <= rank < size"
            )
        if self.size % self.group_size:
            raise ValueError(f"size={self.size} is not a multiple of the process group's {self.group_size}")

    @property
    def is_main(self) -> bool:
        """The process of its group that prints, writes results and merges."""
        return self.group_rank == 0

    @property
    def whole(self) -> bool:
        """True when the process group spans every shard (no Slurm array): it can merge the shards itself."""
        return self.size == self.group_size

    @property
    def tag(self) -> str:
        """File-name tag of this shard, e.g. 'rank-00001-of-00004'."""
        return f"rank-{self.rank:05d}-of-{self.size:05d}"


SINGLE = World()


# ---------------------------------------------------------------- who am I
def _int(env: Mapping[str, str], name: str, default: int | None = None) -> int:
    value = env.get(name)
    if value is None or value == "":
        if default is None:
            raise ValueError(f"{name} is not set but its companions are: launch with torchrun or sbatch --array")
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r}: expected an integer (set by torchrun or Slurm)") from None


def _torchrun(env: Mapping[str, str]) -> tuple[int, int, int]:
    """(rank, world size, local rank) of a torchrun launch; (0, 1, 0) outside one."""
    if "WORLD_SIZE" not in env and "RANK" not in env:
        return 0, 1, 0
    return _int(env, "RANK"), _int(env, "WORLD_SIZE"), _int(env, "LOCAL_RANK", 0)


def _slurm_array(env: Mapping[str, str]) -> tuple[int, int]:
    """(task index from 0, task count) of a Slurm job array; (0, 1) outside one.

    Slurm numbers tasks as given to --array (0-15, 1-16, 0-30:2), so the index is (id - min) / step; lists with
    gaps (--array=1,4,9) cannot be mapped to shards and are refused.
    """
    if "SLURM_ARRAY_TASK_ID" not in env:
        return 0, 1
    task, count = _int(env, "SLURM_ARRAY_TASK_ID"), _int(env, "SLURM_ARRAY_TASK_COUNT")
    lo, step = _int(env, "SLURM_ARRAY_TASK_MIN", 0), _int(env, "SLURM_ARRAY_TASK_STEP", 1)
    hi = _int(env, "SLURM_ARRAY_TASK_MAX", lo + (count - 1) * step)
    if step < 1 or (task - lo) % step or (hi - lo) // step + 1 != count or (hi - lo) % step:
        raise ValueError(
            f"Slurm array task {task} of {count} (min {lo}, max {hi}, step {step}): expected evenly "
            f"spaced indices, e.g. sbatch --array=0-{count - 1}"
        )
    return (task - lo) // step, count


def world_from_env(env: Mapping[str, str] | None = None, array: bool = True) -> World:
    """This process's place from torchrun's and Slurm's environment variables (see the module docstring).
    array=False, or DIFFCORE_SLURM_ARRAY=ignore: a Slurm array's tasks are independent runs, not shards."""
    env = os.environ if env is None else env
    g_rank, g_size, local = _torchrun(env)
    shards = array and env.get("DIFFCORE_SLURM_ARRAY", "") != "ignore"
    task, tasks = _slurm_array(env) if shards else (0, 1)
    return World(
        rank=task * g_size + g_rank, size=tasks * g_size, group_rank=g_rank, group_size=g_size, local_rank=local
    )


def device_for(world: World, name: str = "auto") -> torch.device:
    """`runtime.resolve_device(name)`; on CUDA without an index, GPU LOCAL_RANK (one GPU per torchrun process)."""
    dev = resolve_device(name)
    if dev.type == "cuda":
        if dev.index is None:
            dev = torch.device("cuda", world.local_rank)
        if dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {dev} (LOCAL_RANK={world.local_rank}) but {torch.cuda.device_count()} GPU(s) "
                f"visible: start at most one process per GPU (torchrun --nproc_per_node)"
            )
        torch.cuda.set_device(dev)  # NCCL and un-indexed allocations then use this process's GPU
    return dev


# ---------------------------------------------------------------- process group and collectives
def init_process_group(world: World, backend: str) -> None:
    """The torchrun process group ('gloo' or 'nccl'), made by the first call of a process and kept until it exits;
    nothing for one process. Later calls reuse it: making a second group after destroying the first hung in 2 of
    our first 4 test launches (torch 2.14, c10d rendezvous; cause not established), so a process makes one."""
    if world.group_size == 1 or dist.is_initialized():
        return
    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else None
    dist.init_process_group(backend, timeout=TIMEOUT, device_id=device)
    atexit.register(_destroy)


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def barrier(world: World) -> None:
    if world.group_size > 1:
        dist.barrier()


def main_first(world: World, make: Callable):
    """make() on rank 0, then, after a barrier, on the other ranks: for work that writes shared files once (rank 0
    writes them; the others find them written)."""
    out = make() if world.is_main else None
    barrier(world)
    return out if world.is_main else make()


def sum_over_ranks(values: Sequence[float], world: World) -> list[float]:
    """Element-wise sum of `values` over the process group (float64); the values themselves for one process."""
    if world.group_size == 1:
        return [float(v) for v in values]
    dev = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=dev)  # (len(values),)
    dist.all_reduce(t)
    return t.tolist()


def mean_over_ranks(values: Sequence[float], world: World) -> float:
    """Mean of every rank's `values` together (e.g. per-step losses); numpy's mean for one process."""
    if world.group_size == 1:
        import numpy as np

        return float(np.mean(values))
    total, n = sum_over_ranks([sum(values), len(values)], world)
    return total / n


def from_main(obj, world: World):
    """Rank 0's `obj` on every rank of the group (picklable objects), e.g. a decision only rank 0 can make."""
    if world.group_size == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


# ---------------------------------------------------------------- generation: shards of fixed chunks
def chunks(items: Sequence[int], chunk_size: int) -> list[list[int]]:
    """`items` cut into chunks of `chunk_size`, the last one shorter: the same whatever the number of shards."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size}: expected >= 1 sources per chunk")
    return [list(items[s : s + chunk_size]) for s in range(0, len(items), chunk_size)]


def my_chunks(n_chunks: int, world: World) -> list[int]:
    """The chunks of this shard: chunk c goes to shard c % world.size."""
    return list(range(world.rank, n_chunks, world.size))


def publish_once(path: Path, make: Callable[[], dict]) -> dict:
    """The JSON object at `path`: read if it is there, else made here and published; the first publisher wins.

    Shards without a process group (a Slurm array) that start together each make it, but all of them then use
    the first one published, so they agree by construction; a resumed run reads it instead of making it again.
    """
    if not path.is_file():
        obj = make()
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json_text(obj, indent=1))
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # atomic create-if-absent, also on NFS and Lustre
        except FileExistsError:
            pass  # another shard was first: use its copy
        finally:
            tmp.unlink()
    return json.loads(path.read_text(encoding="utf-8"))


# ---------------------------------------------------------------- training: one global batch, split over ranks
class RankBatches(Sampler[list[int]]):
    """This rank's rows rank::world of every global batch of `batches`, which all ranks draw identically.

    With the same seed every process count sees the same samples at each step (the global batch stays the
    configured batch size); a final remainder with fewer rows than ranks is dropped, so no rank gets an empty
    batch. DistributedSampler would instead permute with its own generator, so 2 processes would not see the
    batches of 1 process.
    """

    def __init__(self, batches: Iterable[list[int]], n_samples: int, batch_size: int, world: World):
        self.batches, self.world = batches, world
        rem = n_samples % batch_size
        self.length = n_samples // batch_size + (rem >= world.group_size)

    def __iter__(self):
        for batch in self.batches:
            if len(batch) >= self.world.group_size:
                yield batch[self.world.group_rank :: self.world.group_size]

    def __len__(self) -> int:
        return self.length


def rank_seed(seed: int, world: World) -> int:
    """Per-rank seed `seed * world + rank` (DiT); the seed itself for one process, so its results do not change."""
    return seed * world.group_size + world.group_rank


def train_batches(dataset, batch_size: int, generator: torch.Generator, world: World) -> RankBatches:
    """This rank's rows of the global batches that `DataLoader(shuffle=True, generator=generator)` would draw."""
    from torch.utils.data import BatchSampler, RandomSampler

    if batch_size % world.group_size:
        raise ValueError(
            f"batch_size={batch_size} is the global batch and must split evenly over "
            f"{world.group_size} processes; pass a multiple of {world.group_size}"
        )
    order = BatchSampler(RandomSampler(dataset, generator=generator), batch_size, drop_last=False)
    return RankBatches(order, len(dataset), batch_size, world)


def gather_eval_rows(rows, n: int, world: World):
    """The (n, ...) numpy rows of a whole evaluation set from each rank's share (rank r holds items r, r + N, ...;
    eval_indices), in the set's order; the rows themselves for one process."""
    import numpy as np

    if world.group_size == 1:
        return rows
    parts = [None] * world.group_size
    dist.all_gather_object(parts, rows)  # small: a few integers per image
    out = np.empty((n, *rows.shape[1:]), dtype=rows.dtype)
    for r, part in enumerate(parts):
        out[r :: world.group_size] = part
    return out


def eval_indices(n: int, world: World) -> range:
    """This rank's share of an evaluation set: every image exactly once over all ranks (no padding, unlike
    DistributedSampler, which repeats images to even out the shares and so would skew the metrics)."""
    return range(world.group_rank, n, world.group_size)


def wrap_ddp(model: torch.nn.Module, world: World, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel over the process group (the model itself for one process).

    On GPUs BatchNorm becomes SyncBatchNorm, so that its statistics are those of the global batch, as with one
    process (the paper's batch of 16 over 8 GPUs would otherwise normalise over 2 images); PyTorch has no
    SyncBatchNorm on CPUs, where each rank normalises over its own rows.
    """
    if world.group_size == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    if device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return DistributedDataParallel(model, device_ids=[device.index])
    return DistributedDataParallel(model)


def share_buffers(model: torch.nn.Module, world: World) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank. Without SyncBatchNorm (CPUs) each rank's
    statistics drift apart over its own rows; after this every rank holds the model rank 0 saves."""
    if world.group_size > 1:
        for b in unwrap(model).buffers():
            dist.broadcast(b, src=0)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside DistributedDataParallel (for evaluation, state dicts and hooks)."""
    return getattr(model, "module", model)


class ReseedWorker:
    """DataLoader worker_init_fn giving each rank's workers their own augmentation stream (all ranks share the
    loader generator, which seeds the workers, so that they draw the same global batch order)."""

    def __init__(self, rank: int):
        self.rank = rank

    def __call__(self, worker_id: int) -> None:
        from .runtime import derive_seed

        torch.manual_seed(derive_seed(torch.initial_seed(), "rank", self.rank) % 2**63)
