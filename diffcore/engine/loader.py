"""The device loader: decode every image once, augment whole batches on the training device.

The PIL loader (train.PairedTrainingSet) decodes a JPEG and a 512 px PNG and runs the crop/flip/normalise for
every sample at every visit, on CPU workers; on an H100 that, not the mixing, is what makes a DiffCoRe-Mix step
slower than a vanilla one (benchmarks/: +33% at batch 16, +185% at 64 with 12 workers). Here:
- each real and generated image is decoded once into a square uint8 cache (short side resized to `side`, centre
  crop), kept in a memory-mapped .npy file so that a run, its workers and a resumed run share it;
- a batch moves to the device as uint8 (4x fewer bytes than float) and is augmented there in one shot:
  random-resized crop + resize with torchvision's roi_align (one kernel for the whole batch), flip, normalise.
The centre-square cache is the one approximation: crops are drawn from the central square of each image.

The resident loader (`ResidentPairs`, `ResidentBatches`) goes one step further for sets whose caches fit in the
device's memory: both caches are copied to the device once, and each batch is gathered there by index, so no
worker, pinned buffer or host-to-device copy of images is left in the step (on an H100, 12 workers moving uint8
through pinned memory still made batch 64 input-bound with the device loader). It draws the same batches, crops,
flips and mixing as the device loader: same device, same weights (tests/test_resident_loader.py).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .images import load_rgb


def decode_square(im: Image.Image, side: int) -> np.ndarray:
    """(side, side, 3) uint8: short side resized to `side` (bilinear, antialiased), centre crop."""
    im = im.convert("RGB")
    w, h = im.size
    s = side / min(w, h)
    nw, nh = max(side, round(w * s)), max(side, round(h * s))
    im = im.resize((nw, nh), Image.BILINEAR)
    left, top = (nw - side) // 2, (nh - side) // 2
    return np.array(im.crop((left, top, left + side, top + side)), dtype=np.uint8)


class DecodedCache:
    """n images decoded once into `path` (.npy, memory-mapped); `path`.done marks a complete cache."""

    def __init__(self, path: str | Path, n: int, side: int):
        self.path, self.n, self.side = Path(path), n, side
        self.done_marker = self.path.with_suffix(".done")
        self.array = None

    def ready(self) -> bool:
        return self.done_marker.exists() and self.path.exists()

    def fill(self, load: Callable[[int], Image.Image], threads: int = 8, desc: str = "decode once") -> DecodedCache:
        if not self.ready():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            arr = np.lib.format.open_memmap(
                self.path, mode="w+", dtype=np.uint8, shape=(self.n, self.side, self.side, 3)
            )

            def one(i):
                arr[i] = decode_square(load(i), self.side)

            with ThreadPoolExecutor(threads) as pool:  # PIL decodes and resizes outside the GIL
                list(tqdm(pool.map(one, range(self.n)), total=self.n, desc=desc, unit="img", leave=False))
            arr.flush()
            del arr
            self.done_marker.write_text(f"{self.n} {self.side}\n")
        self.array = np.load(self.path, mmap_mode="r")
        if self.array.shape != (self.n, self.side, self.side, 3):
            raise ValueError(
                f"{self.path}: cache holds {self.array.shape}, expected {(self.n, self.side, self.side, 3)}; "
                f"delete it to rebuild"
            )
        return self

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(np.array(self.array[i])).permute(2, 0, 1)  # (3, side, side) uint8


class CachedPairs(Dataset):
    """Items as train.PairedTrainingSet, but uint8 (3, side, side) tensors from the decode-once caches."""

    def __init__(
        self, labels: list[int], real: DecodedCache, pairs: list[tuple[int, int]], gen: DecodedCache | None, ds=None
    ):
        self.labels, self.real, self.pairs, self.gen = labels, real, pairs, gen  # pairs: (real index, gen cache row)
        self.ds = ds  # the ImageSet, for the training loop's class count

    def __len__(self) -> int:
        return len(self.labels) + len(self.pairs)

    def __getitem__(self, n: int):
        if n < len(self.labels):
            x = self.real[n]
            return x, x, self.labels[n], False
        i, g = self.pairs[n - len(self.labels)]
        return self.real[i], self.gen[g], self.labels[i], True


def cached_pairs(
    ds,
    pairs: list[tuple[int, Path]],
    root: str | Path,
    side: int,
    threads: int = 8,
    load_generated: Callable[[int], Image.Image] | None = None,
    tag: str = "",
) -> CachedPairs:
    """Decode-once caches of a PairedTrainingSet's real images and counterparts under `root`.

    load_generated(k): pair k's second image when it is not the file itself (DiffuseMix's composite of the pair,
    PairedTrainingSet.generated), made once here like a decode; `tag` names what makes it. Cache files are named
    by a hash of what they hold (image ids, counterpart paths, tag, side), never by a dataset or class name, so a
    cache is reused exactly when it holds the same images.
    """
    root = Path(root)
    real_key = hashlib.sha1(("\n".join(ds.ids) + f"|{side}").encode()).hexdigest()[:16]
    real = DecodedCache(root / f"real-{real_key}.npy", len(ds), side).fill(ds.load, threads, "decode real once")
    gen = None
    if pairs:
        gen_key = hashlib.sha1(
            ("\n".join(str(p) for _, p in pairs) + (f"|{tag}" if tag else "") + f"|{side}").encode()
        ).hexdigest()[:16]
        gen = DecodedCache(root / f"generated-{gen_key}.npy", len(pairs), side).fill(
            load_generated or (lambda k: load_rgb(pairs[k][1])), threads, "decode generated once"
        )
    return CachedPairs(list(ds.labels), real, [(i, k) for k, (i, _) in enumerate(pairs)], gen, ds=ds)


# ---------------------------------------------------------------- augmentation on the device
def random_resized_boxes(
    n: int, side: int, generator: torch.Generator, device, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), tries: int = 10
) -> torch.Tensor:
    """(n, 4) x1, y1, x2, y2 boxes with torchvision RandomResizedCrop's distribution, drawn all at once.

    Per sample, the first of `tries` draws that fits inside the image is used; if none fits, the whole image.
    """
    gdev = generator.device
    area = side * side * torch.empty(n, tries, device=gdev).uniform_(*scale, generator=generator)  # (n, T)
    logr = torch.empty(n, tries, device=gdev).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    r = logr.exp()
    w, h = (area * r).sqrt().round(), (area / r).sqrt().round()  # (n, T)
    fits = (w > 0) & (h > 0) & (w <= side) & (h <= side)
    first = torch.where(fits.any(1), fits.float().argmax(1), torch.full((n,), -1, device=gdev))  # (n,)
    pick = first.clamp(min=0)[:, None]
    w = torch.where(first >= 0, w.gather(1, pick)[:, 0], torch.full((n,), float(side), device=gdev))  # (n,)
    h = torch.where(first >= 0, h.gather(1, pick)[:, 0], torch.full((n,), float(side), device=gdev))
    x1 = (torch.rand(n, device=gdev, generator=generator) * (side - w + 1)).floor()
    y1 = (torch.rand(n, device=gdev, generator=generator) * (side - h + 1)).floor()
    return torch.stack([x1, y1, x1 + w, y1 + h], 1).to(device)  # (n, 4)


def pad_crop(x: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """RandomCrop(side, padding=pad) of each (3, side, side) image, with its own integer shift: exact, no resampling.

    x: (B, C, S, S) -> (B, C, S, S); the shift (dy, dx) of each image is uniform in [-pad, pad].
    """
    b, c, side, _ = x.shape
    off = torch.randint(0, 2 * pad + 1, (b, 2), generator=generator, device=generator.device).to(x.device)  # (B, 2)
    xp = torch.nn.functional.pad(x, (pad, pad, pad, pad))  # (B, C, S+2p, S+2p), zeros
    ar = torch.arange(side, device=x.device)
    rows = (off[:, 0:1] + ar)[:, :, None]  # (B, S, 1)
    cols = (off[:, 1:2] + ar)[:, None, :]  # (B, 1, S)
    bi = torch.arange(b, device=x.device)[:, None, None]  # (B, 1, 1)
    return xp.permute(0, 2, 3, 1)[bi, rows, cols].permute(0, 3, 1, 2)  # (B, C, S, S)


def random_crop(x: torch.Tensor, out: int, generator: torch.Generator) -> torch.Tensor:
    """(B, C, S, S) -> (B, C, out, out): an independent random out x out window per image."""
    b, _, side, _ = x.shape
    off = torch.randint(0, side - out + 1, (b, 2), device=generator.device, generator=generator).to(x.device)  # (B, 2)
    ar = torch.arange(out, device=x.device)
    rows = (off[:, 0, None] + ar)[:, None, :, None]  # (B, 1, out, 1)
    cols = (off[:, 1, None] + ar)[:, None, None, :]  # (B, 1, 1, out)
    idx = torch.arange(b, device=x.device)[:, None, None, None]
    return x[idx, torch.arange(x.shape[1], device=x.device)[None, :, None, None], rows, cols]  # (B, C, out, out)


def device_augment(x: torch.Tensor, out_size: int, mode: str, mean, std, generator: torch.Generator) -> torch.Tensor:
    """(B, 3, S, S) uint8 on the device -> (B, 3, out, out) normalised float: crop+resize, flip, normalise.

    mode: "imagenet" (random-resized crop + flip), "resize-crop" (a random crop of the cached square + flip: the PIL
    recipe's crop of the whole resized image, restricted to its centre square), "small" (4-pixel pad-crop + flip),
    "digits" (2-pixel pad-crop, no flip).
    """
    from torchvision.ops import roi_align

    b, _, side, _ = x.shape
    dev = x.device
    if mode == "imagenet":
        boxes = random_resized_boxes(b, side, generator, dev)
        idx = torch.arange(b, device=dev, dtype=torch.float32)[:, None]
        rois = torch.cat([idx, boxes.float()], 1)  # (B, 5)
        out = roi_align(
            x.float(), rois, output_size=(out_size, out_size), spatial_scale=1.0, sampling_ratio=2, aligned=True
        )  # (B, 3, out, out) in 0..255
    elif mode == "resize-crop":  # the cache holds the centre square of the resized image: a random out crop of it
        out = random_crop(x, out_size, generator).float()
    else:  # the cache holds the images at the training size: an exact integer pad-crop, zero padding
        if side != out_size:
            raise ValueError(f"mode={mode!r}: cache side {side} != image size {out_size}; build it at the image size")
        out = pad_crop(x, 4 if mode == "small" else 2, generator).float()
    if mode != "digits":
        flip = torch.rand(b, device=generator.device, generator=generator).to(dev) < 0.5  # (B,)
        out = torch.where(flip[:, None, None, None], out.flip(3), out)
    m = torch.tensor(mean, device=dev).view(1, 3, 1, 1) * 255
    s = torch.tensor(std, device=dev).view(1, 3, 1, 1) * 255
    return (out - m) / s


def to_device_batch(batch, out_size: int, mode: str, mean, std, generator: torch.Generator, device):
    """A CachedPairs batch (uint8 on the host) or a ResidentBatches batch (uint8 already on the device) ->
    train_step's (real, gen, y, is_pair), augmented on the device.

    Real and generated images get independent crops and flips, as in the PIL loader.
    """
    real, gen, y, is_pair = batch
    real = real.to(device, non_blocking=True)  # (B, 3, S, S) uint8; a no-op for resident batches
    gen = gen.to(device, non_blocking=True)  # (B, 3, S, S) uint8
    both = device_augment(torch.cat([real, gen]), out_size, mode, mean, std, generator)  # (2B, 3, out, out)
    return both[: len(real)], both[len(real) :], y.to(device, non_blocking=True), is_pair.to(device, non_blocking=True)


# ---------------------------------------------------------------- the resident loader: the caches on the device
RESIDENT_SHARE = 0.5  # at most this share of the device's free memory for the caches: the rest is for the model,
# its optimizer state and activations (ResNet-50 at batch 64, bf16: a few GiB)


def free_bytes(device) -> int | None:
    """Bytes that `device` can still give: CUDA's free memory plus what PyTorch's allocator holds unused; the host's
    MemAvailable for 'cpu'; None where unknown (then nothing is checked)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    if device.type == "cpu":
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None


def check_resident_fits(n_images: int, side: int, device, share: float = RESIDENT_SHARE) -> int:
    """Bytes that `n_images` cache rows of side x side x 3 uint8 take on `device`; a one-line error, before any copy,
    if that is more than `share` of its free memory."""
    need = n_images * 3 * side * side
    free = free_bytes(device)
    if free is not None and need > share * free:
        raise ValueError(
            f"loader='resident': the decode-once caches ({n_images} images of {side}x{side}x3 uint8, "
            f"{need / 2**30:.2f} GiB) do not fit in {share:.0%} of the {free / 2**30:.2f} GiB free on "
            f"{device}; use --loader device (the same batches, read from the host cache by workers)"
        )
    return need


class ResidentPairs:
    """A CachedPairs held on the training device: one uint8 table of every real and generated cache row, and per
    item its real row, generated row, label and pair flag, so that a batch is two gathers on the device.

    Item n is what CachedPairs[n] is: (I_n, I_n, y, False) for n < N, (I_i, G_i, y, True) for the pairs after.
    """

    def __init__(self, pairs: CachedPairs, device, share: float = RESIDENT_SHARE):
        self.device, self.ds, self.pairs = torch.device(device), pairs.ds, pairs.pairs
        real, gen = pairs.real, pairs.gen if pairs.pairs else None  # no pairs: the generated cache is never read
        n_real, n_gen = real.n, 0 if gen is None else gen.n
        check_resident_fits(n_real + n_gen, real.side, self.device, share)
        self.images = torch.empty(
            n_real + n_gen, 3, real.side, real.side, dtype=torch.uint8, device=self.device
        )  # (N + G, 3, S, S)
        _upload(real, self.images[:n_real])
        if gen is not None:
            _upload(gen, self.images[n_real:])
        n = len(pairs)
        real_row = list(range(n_real)) + [i for i, _ in pairs.pairs]
        gen_row = list(range(n_real)) + [n_real + g for _, g in pairs.pairs]  # unpaired items: the real image twice
        labels = list(pairs.labels) + [pairs.labels[i] for i, _ in pairs.pairs]
        self.real_row = torch.tensor(real_row, dtype=torch.int64, device=self.device)  # (n,)
        self.gen_row = torch.tensor(gen_row, dtype=torch.int64, device=self.device)  # (n,)
        self.labels = torch.tensor(labels, dtype=torch.int64, device=self.device)  # (n,)
        self.is_pair = torch.arange(n, device=self.device) >= len(pairs.labels)  # (n,) bool

    def __len__(self) -> int:
        return len(self.real_row)

    @property
    def nbytes(self) -> int:
        return self.images.numel()

    def batch(self, idx: torch.Tensor):
        """Items `idx` ((B,) int64 on the device) as CachedPairs' collated batch: (real, gen, y, is_pair), uint8
        (B, 3, S, S) images, all on the device; no host work beyond launching the gathers."""
        real = self.images.index_select(0, self.real_row[idx])  # (B, 3, S, S) uint8
        gen = self.images.index_select(0, self.gen_row[idx])  # (B, 3, S, S) uint8
        return real, gen, self.labels[idx], self.is_pair[idx]


def _upload(cache: DecodedCache, out: torch.Tensor, chunk_bytes: int = 256 * 2**20) -> None:
    """Copy a memory-mapped (n, S, S, 3) cache into `out` ((n, 3, S, S) on the device) in chunks of ~256 MiB, so
    the host never holds more than one chunk beyond the page cache."""
    per = max(1, chunk_bytes // (3 * cache.side * cache.side))
    for s in range(0, cache.n, per):
        block = torch.from_numpy(np.array(cache.array[s : s + per]))  # (b, S, S, 3) uint8, host copy
        out[s : s + len(block)] = block.to(out.device).permute(0, 3, 1, 2)  # (b, 3, S, S), as CachedPairs collates


class _Positions(Dataset):
    """Item n is n: a DataLoader over it yields a batch sampler's index batches."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, n: int) -> int:
        return n

    def __getitems__(self, ns: list[int]) -> list[int]:
        return ns


def _index_tensor(ns: list[int]) -> torch.Tensor:
    return torch.tensor(ns, dtype=torch.int64)  # (B,)


class ResidentBatches:
    """Iterating gives one epoch of `resident`'s batches, in the order of `batch_sampler` (e.g. distributed.
    train_batches), each gathered on the device.

    The order is drawn through a worker-less DataLoader with `generator`, so the order generator advances exactly
    as it does for DataLoader(CachedPairs, batch_sampler, generator) (one draw for worker seeds per epoch, then the
    sampler's permutation): both loaders train on the same batches and checkpoint the same generator state. The
    whole epoch's indices go to the device in one copy at its start; a step then reads nothing from the host.
    """

    def __init__(self, resident: ResidentPairs, batch_sampler, generator: torch.Generator | None = None):
        self.resident = resident
        self.order = DataLoader(
            _Positions(len(resident)),
            batch_sampler=batch_sampler,
            generator=generator,
            collate_fn=_index_tensor,
            num_workers=0,
        )

    def __len__(self) -> int:
        return len(self.order)

    def __iter__(self):
        batches = list(self.order)  # this epoch's (B,) index batches, drawn now as a DataLoader would draw them
        if not batches:
            return
        flat = torch.cat(batches).to(self.resident.device, non_blocking=True)  # (sum B,): one copy per epoch
        for idx in flat.split([len(b) for b in batches]):
            yield self.resident.batch(idx)
