"""Eq. (9) overhead A_O = (T_aug - T_van) / T_van * 100 of each method at equal batch size: on tensors already on
the device (`time_training`) and end to end with diffcore's loader (`time_training_loader`)."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..engine.runtime import resolve_device
from .models import sync

# The opt-in fast paths on the device, timed beside the default solvers as Table 6's extra rows: the defaults
# are what the authors ran (pyGCO's graph cut and OpenCV's saliency, on the CPU); these run on the training device.
FAST_PATHS = (
    ("puzzlemix", {"solver": "icm"}),  # batched ICM instead of the graph cut (benchmarks/fidelity.md: its gap)
    ("comixup", {"solver": "icm"}),
    ("saliencymix", {"saliency": "torch"}),  # OpenCV's fine-grained saliency rewritten in torch (equal maps)
)


def variant_name(args: dict) -> str:
    """'solver=icm' for {"solver": "icm"}: how a timed method's non-default settings are named in rows."""
    return ",".join(f"{k}={v}" for k, v in sorted(args.items()))


# ---------------------------------------------------------------- training, Eq. (9)
def time_training(
    methods: list[str],
    batch_sizes: list[int],
    model: str = "digits-cnn",
    image_size: int = 32,
    steps: int = 20,
    warmup: int = 3,
    device: str = "auto",
    rounds: int = 3,
    num_classes: int = 10,
    amp: bool = False,
    channels_last: bool = False,
    variants: tuple[tuple[str, dict], ...] = (),
) -> list[dict]:
    """ms per training step of every method at equal batch size, on tensors already on the device.

    Every method runs with its defaults (PuzzleMix and Co-Mixup: pyGCO's graph cut on the CPU, SaliencyMix:
    OpenCV's saliency on the CPU, as their authors' code); `variants` adds rows of (method, settings), e.g.
    FAST_PATHS, named by `variant_name` in each row's "variant". Methods are timed in interleaved rounds (vanilla,
    m1, m2, ..., vanilla, m1, ...) and the median round is kept, so slow drift of a shared machine hits all methods
    alike. overhead_pct is Eq. (9) against vanilla.
    """
    from ..methods import Batch
    from ..models import build_model
    from ..train import TrainConfig, method_for

    dev = resolve_device(device)
    if "vanilla" not in methods:
        methods = ["vanilla", *methods]
    timed = [(m, {}) for m in methods] + [(m, dict(a)) for m, a in variants]  # (method, its settings)
    keys = [m if not a else f"{m}[{variant_name(a)}]" for m, a in timed]
    rows = []
    for bs in batch_sizes:
        g = torch.Generator(device=dev).manual_seed(0)
        net = build_model(model, num_classes, image_size=image_size).to(dev)
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        # (B, 3, S, S): pixels uniform in [0, 1], normalised as Batch's default mean/std 0.5 say. Gaussian tensors
        # put pixels outside [0, 1]: PixMix's mixing made NaN of them at the first step, and every later step of
        # every method then ran on NaN weights (graph cuts on NaN unaries; measured 2026-12-01, embedded profile)
        x = torch.rand(bs, 3, image_size, image_size, device=dev) * 2 - 1
        batch = Batch(
            x,
            torch.randint(0, num_classes, (bs,), device=dev),
            num_classes,
            gen=torch.rand_like(x) * 2 - 1,
            is_pair=torch.ones(bs, dtype=torch.bool, device=dev),
        )
        impl = {k: method_for(TrainConfig(method=m, model=model, method_args=a)) for k, (m, a) in zip(keys, timed)}

        def step(method):
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                logits, target = method.forward(net, batch, g)
                loss = method.loss(logits.float(), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        times = {k: [] for k in keys}
        for k in keys:
            for _ in range(warmup):
                step(impl[k])
        for _ in range(rounds):
            for k in keys:
                sync(dev)
                t = time.perf_counter()
                for _ in range(steps):
                    step(impl[k])
                sync(dev)
                times[k].append((time.perf_counter() - t) / steps * 1e3)
        base = statistics.median(times["vanilla"])
        for k, (m, a) in zip(keys, timed):
            ms = statistics.median(times[k])
            rows.append(
                {
                    "method": m,
                    "variant": variant_name(a),
                    "batch_size": bs,
                    "ms_per_batch": ms,
                    "overhead_pct": (ms - base) / base * 100,
                    "ms_rounds": times[k],  # per interleaved round, in order: paired with vanilla's round by round
                    "model": model,
                    "image_size": image_size,
                    "device": str(dev),
                    "amp": amp,
                    "loader": "tensors on device",
                }
            )
    return rows


def synthetic_pairs(root: Path, n: int, classes: int = 4, real_size=(500, 375), gen_size: int = 512, seed: int = 0):
    """An ImageFolder of n smooth random JPEGs (ImageNet-like size) and one generated-style PNG per image."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    real, gen = root / "real", root / "gen"
    paths = {}
    for i in range(n):
        c = i % classes
        (real / f"class{c}").mkdir(parents=True, exist_ok=True)
        gen.mkdir(parents=True, exist_ok=True)
        low = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)  # smooth content compresses like photos, not noise
        Image.fromarray(low).resize(real_size, Image.BICUBIC).save(real / f"class{c}" / f"{i:05d}.jpg", quality=90)
        Image.fromarray(low).resize((gen_size, gen_size), Image.BICUBIC).save(gen / f"{i:05d}.png")
        paths[i] = gen / f"{i:05d}.png"
    return real, paths


def time_training_loader(
    batch_sizes: list[int],
    model: str = "resnet50",
    image_size: int = 224,
    steps: int = 20,
    warmup: int = 3,
    device: str = "auto",
    workers: int = 4,
    n_images: int = 256,
    amp: bool = False,
    channels_last: bool = False,
    method: str = "diffcore",
    loaders: tuple[str, ...] = ("pil", "device", "resident"),
) -> list[dict]:
    """ms per step end to end, each sample read from disk: one JPEG (vanilla) or a JPEG + its PNG (pairs).

    loader "pil": train.PairedTrainingSet (decode + augment per sample on CPU workers);
    loader "device": loader.CachedPairs (decoded once, timed separately) + loader.to_device_batch;
    loader "resident": the same caches copied to the device once, batches gathered there (no workers).
    """
    from torch.utils.data import BatchSampler, DataLoader, Subset, SubsetRandomSampler

    from ..data import image_folder
    from ..engine import loader as L
    from ..models import build_model
    from ..train import (
        IMAGENET_MEAN,
        IMAGENET_STD,
        PairedTrainingSet,
        TrainConfig,
        method_for,
        train_step,
        transforms_for,
    )

    dev = resolve_device(device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        real, gen_paths = synthetic_pairs(Path(tmp), n_images)
        ds = image_folder(real)
        order = [gen_paths[int(Path(ds.path(i)).stem)] for i in range(len(ds))]
        counterparts = {ds.ids[i]: order[i] for i in range(len(ds))}
        side = round(image_size * 256 / 224)
        t = time.perf_counter()
        caches = (
            L.DecodedCache(Path(tmp) / "real.npy", len(ds), side).fill(ds.load, workers),
            L.DecodedCache(Path(tmp) / "gen.npy", len(ds), side).fill(lambda i: Image.open(order[i]), workers),
        )
        decode_once_ms = (time.perf_counter() - t) / (2 * len(ds)) * 1e3
        resident = {}  # method -> L.ResidentPairs: uploaded once for every batch size
        for kind in loaders:
            for bs in batch_sizes:
                net = build_model(model, len(ds.classes), image_size=image_size).to(dev)
                if channels_last:
                    net = net.to(memory_format=torch.channels_last)
                opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
                res = {}
                for m in ("vanilla", method):
                    cfg = TrainConfig(method=m, model=model, image_size=image_size, batch_size=bs)
                    pairs = counterparts if m != "vanilla" else {}
                    if kind == "pil":
                        full = PairedTrainingSet(ds, pairs, transforms_for(cfg, True))
                    else:
                        full = L.CachedPairs(ds.labels, caches[0], [(i, i) for i in range(len(ds)) if pairs], caches[1])
                    items = range(len(ds)) if m == "vanilla" else range(len(ds), len(full))  # real only | pairs only
                    if kind == "resident":  # batches gathered on the device: no workers, no host copies
                        if m not in resident:
                            resident[m] = L.ResidentPairs(full, dev)
                        dl = L.ResidentBatches(
                            resident[m], BatchSampler(SubsetRandomSampler(list(items)), bs, drop_last=True)
                        )
                    else:
                        dl = DataLoader(
                            Subset(full, list(items)),
                            batch_size=bs,
                            shuffle=True,
                            drop_last=True,
                            num_workers=workers,
                            pin_memory=dev.type == "cuda",
                            persistent_workers=workers > 0,
                        )
                    impl, g = method_for(cfg), torch.Generator(device=dev).manual_seed(0)
                    aug_g = torch.Generator(device=dev).manual_seed(1)
                    res[m] = _time_loader_steps(
                        dl,
                        warmup,
                        steps,
                        dev,
                        lambda batch: train_step(
                            net,
                            opt,
                            batch
                            if kind == "pil"
                            else L.to_device_batch(
                                batch, image_size, "imagenet", IMAGENET_MEAN, IMAGENET_STD, aug_g, dev
                            ),
                            cfg,
                            impl,
                            len(ds.classes),
                            g,
                            dev,
                        ),
                        amp,
                    )
                for m, ms in res.items():
                    rows.append(
                        {
                            "method": m,
                            "batch_size": bs,
                            "ms_per_batch": ms,
                            "overhead_pct": (ms - res["vanilla"]) / res["vanilla"] * 100,
                            "model": model,
                            "image_size": image_size,
                            "device": str(dev),
                            "amp": amp,
                            "loader": kind,
                            "workers": 0 if kind == "resident" else workers,
                            "decode_once_ms_per_image": None if kind == "pil" else decode_once_ms,
                            "reads": "JPEG" if m == "vanilla" else "JPEG + PNG",
                        }
                    )
    return rows


def _time_loader_steps(dl, warmup: int, steps: int, dev, step, amp: bool) -> float:
    done, t = 0, None
    while done < warmup + steps:
        for batch in dl:
            if done == warmup:
                sync(dev)
                t = time.perf_counter()
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                step(batch)
            done += 1
            if done == warmup + steps:
                break
    sync(dev)
    return (time.perf_counter() - t) / steps * 1e3
