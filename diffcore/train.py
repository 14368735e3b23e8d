"""Classifier training: vanilla, GenAug, pixel-/patch-wise and DiffCoRe-Mix (paper Sec. 4-6).

An epoch visits every real training image once, unmixed, plus every (I_i, G_i) pair once: "DiffCoRe-Mix-50
uses 50% generative augmentation along with original data" (Sec. 6). Pairs are mixed on the device inside the
training step (Eq. 8) with fresh eta / lambda / box at each visit.

With a result path `out`, a checkpoint is written beside it at every epoch end and a killed run resumes from it
(diffcore.checkpoint): the final weights and metrics equal an uninterrupted run's.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import transforms as T
from tqdm.auto import tqdm

from .counterparts import read_manifest
from .data import ImageSet, choose_fraction, skipped_summary
from .engine import checkpoint as CK
from .engine import distributed as D
from .engine import genset as G
from .engine import loader as L
from .engine.checks import check_fields, json_text
from .engine.runtime import check_device_name, derive_seed, provenance
from .engine.safety import atomic_write_text
from .methods import REGISTRY, Batch, Method, build_method
from .mix import MixConfig
from .results import encode_predictions

log = logging.getLogger(__name__)

# every trainable method, by name (diffcore.methods registers them)
METHODS = REGISTRY
LOADERS = ("pil", "device", "resident")  # TrainConfig.loader
# TrainConfig.augment, traditional augmentation: "imagenet" RandomResizedCrop + flip (torchvision's ImageNet recipe);
# "resize-crop" shorter side to 256/224 of the input, random crop + flip (GuidedMixup's FGVC and SnapMix's
# fine-tuning recipe); "small" 4-pixel pad-crop + flip (CIFAR, Tiny-ImageNet); "digits" 2-pixel pad-crop, no flip
AUGMENTS = ("imagenet", "resize-crop", "small", "digits")
SMALL_PAD = 4  # GuidedMixup FGVC/DataLoad/data_load.py: Pad(4) + RandomCrop(32) (CIFAR), RandomCrop(64, 4) (Tiny)


@dataclass(frozen=True)
class TrainConfig:
    method: str = "diffcore"  # one of METHODS
    method_args: dict = field(default_factory=dict)  # the method's hyperparameters; defaults: its paper's
    model: str = "resnet50"  # diffcore.models name
    epochs: int = 300  # paper Sec. 4
    batch_size: int = 16  # paper Sec. 4
    lr: float = 0.01  # paper Sec. 4
    momentum: float = 0.9  # paper Sec. 4
    weight_decay: float = 5e-4  # paper Sec. 4
    nesterov: bool = True  # paper silent; GuidedMixup's FGVC recipe (which the paper's matches) uses it
    milestones: tuple[float, ...] = (0.5, 0.75)  # lr x0.1 at 150 and 225 of 300 epochs, as fractions of `epochs`
    lr_decay: float = 0.1  # paper Sec. 4
    image_size: int = 224  # input side in pixels (ImageNet/FGVC 224, Tiny-ImageNet 64, CIFAR 32)
    augment: str = "imagenet"  # traditional augmentation: imagenet | resize-crop | small | digits (see AUGMENTS)
    seed: int = 0  # init, data order, mixing draws: all derive from it
    device: str = "auto"  # auto | cpu | cuda | cuda:N (auto: CUDA if present); generation runs there too
    workers: int = 0  # DataLoader worker processes
    pretrained: str | None = None  # local weights file for fine-tuning (Table 5)
    pretrained_lr_scale: float = 1.0  # lr of the layers loaded from `pretrained` (the classifier keeps lr): 0.1 in
    # Table 5, SnapMix's fine-tuning convention (config/comm.yml lr_group [0.001, 0.01]); the paper is silent
    fraction: float = 1.0  # share of real images whose counterpart is used: -50 -> 0.5, -100 -> 1.0
    selection_seed: int = 0  # which images at fraction < 1 (same rule as generation: data.choose_fraction)
    mix: MixConfig = field(default_factory=MixConfig)
    loader: str = "pil"  # "pil": decode + augment each sample on CPU workers; "device": decode once into
    # a uint8 cache, crop/flip/normalise whole batches on the device (loader.py;
    # on an H100 +8% instead of +192% Eq. 9 overhead at batch 64, benchmarks/);
    # "resident": the same caches copied once into device memory (at most half
    # of what is free), batches gathered there: no workers, no host copies; the
    # same batches and draws as "device", so the same weights on the same device
    cache_dir: str | None = None  # the device/resident loaders' decode-once caches; default: <result folder>/cache

    def __post_init__(self):
        from .models import MODELS

        check_fields(self)  # types, finite numbers, method_args included (engine.checks)

        if self.loader not in LOADERS:
            raise ValueError(f"loader={self.loader!r}: expected 'pil', 'device' or 'resident'")
        if self.method not in METHODS:
            raise ValueError(f"method={self.method!r}: expected one of {sorted(METHODS)}")
        method_for(self)  # bad hyperparameters fail here, before any data is read
        if self.model not in MODELS:
            raise ValueError(f"model={self.model!r}: expected one of {sorted(MODELS)}")
        if self.pretrained is not None and not Path(self.pretrained).is_file():
            from .models import where_to_get

            raise FileNotFoundError(f"pretrained={self.pretrained}: no such weights file; {where_to_get(self.model)}")
        if self.pretrained is not None and Path(self.pretrained).suffix not in (".safetensors", ".pt", ".pth"):
            raise ValueError(f"pretrained={self.pretrained}: expected a .safetensors, .pt or .pth weights file")
        if not 0 < self.pretrained_lr_scale < float("inf"):
            raise ValueError(f"pretrained_lr_scale={self.pretrained_lr_scale}: expected a factor > 0")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs={self.epochs}, batch_size={self.batch_size}: expected both >= 1")
        if self.lr <= 0:
            raise ValueError(f"lr={self.lr}: expected > 0")
        if not 0 <= self.momentum < 1 or (self.nesterov and self.momentum == 0):
            raise ValueError(f"momentum={self.momentum}: expected 0 <= momentum < 1 (> 0 with nesterov)")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay={self.weight_decay}: expected >= 0")
        if not 0 < self.lr_decay <= 1:
            raise ValueError(f"lr_decay={self.lr_decay}: expected a factor in (0, 1]")
        if self.image_size < 8:
            raise ValueError(f"image_size={self.image_size}: expected >= 8 pixels")
        if self.workers < 0:
            raise ValueError(f"workers={self.workers}: expected >= 0 DataLoader processes")
        if self.selection_seed < 0:
            raise ValueError(f"selection_seed={self.selection_seed}: expected an integer >= 0")
        check_device_name(self.device)
        if self.augment not in AUGMENTS:
            raise ValueError(f"augment={self.augment!r}: expected one of {AUGMENTS}")
        if not 0 < self.fraction <= 1:
            raise ValueError(f"fraction={self.fraction}: expected a value in (0, 1], e.g. 0.5 for DiffCoRe-Mix-50")
        if any(not 0 < m < 1 for m in self.milestones):
            raise ValueError(f"milestones={self.milestones}: expected fractions of the schedule in (0, 1)")


# ---------------------------------------------------------------- data
_MEAN = {"digits": (0.5, 0.5, 0.5)}
_STD = {"digits": (0.5, 0.5, 0.5)}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def transforms_for(cfg: TrainConfig, train: bool):
    """Traditional augmentation; generated 512px images go through the same pipeline (resized first)."""
    s = cfg.image_size
    norm = T.Normalize(_MEAN.get(cfg.augment, IMAGENET_MEAN), _STD.get(cfg.augment, IMAGENET_STD))
    if cfg.augment == "imagenet":
        ops = (
            [T.RandomResizedCrop(s), T.RandomHorizontalFlip()]
            if train
            else [T.Resize(int(s * 256 / 224)), T.CenterCrop(s)]
        )
    elif cfg.augment == "resize-crop":  # fine-grained recipe: shorter side to 256/224 * s, a random s crop
        ops = (
            [T.Resize(int(s * 256 / 224)), T.RandomCrop(s), T.RandomHorizontalFlip()]
            if train
            else [T.Resize(int(s * 256 / 224)), T.CenterCrop(s)]
        )
    elif cfg.augment == "small":  # CIFAR / Tiny-ImageNet: 4-pixel pad-crop + flip (GuidedMixup, PuzzleMix)
        ops = (
            [T.Resize((s, s)), T.RandomCrop(s, padding=SMALL_PAD), T.RandomHorizontalFlip()]
            if train
            else [T.Resize((s, s))]
        )
    else:  # digits: no flips (a flipped 2 is not a 2)
        ops = [T.Resize((s, s)), T.RandomCrop(s, padding=2)] if train else [T.Resize((s, s))]
    return T.Compose(ops + [T.ToTensor(), norm])


Compose = Callable[[Image.Image, Image.Image, str], Image.Image]  # Method.pair_image


class PairedTrainingSet(Dataset):
    """Items 0..N-1: (I_n, I_n, y, False), the real images. Items N..N+M-1: (I_i, G_i, y, True), the pairs: one per
    generated image of a source (a DiffCoRe-Mix counterpart; DiffuseMix: one per prompt).

    compose: a method that builds the pair's second image from the aligned pair before augmentation (DiffuseMix's
    concatenation and fractal blend, `Method.pair_image`); G_i is then compose(I_i, G_i, file name), transformed."""

    def __init__(self, ds: ImageSet, counterparts: dict[str, Path | list[Path]], transform, compose: Compose = None):
        self.ds, self.transform, self.compose = ds, transform, compose
        self.pairs = [(i, p) for i in range(len(ds)) for p in as_paths(counterparts.get(ds.ids[i]))]

    def __len__(self) -> int:
        return len(self.ds) + len(self.pairs)

    def generated(self, k: int) -> Image.Image:
        """Pair k's second image, before augmentation: the generated file, or the method's composite of the pair."""
        i, path = self.pairs[k]
        with Image.open(path) as im:
            g = im.convert("RGB")
        return g if self.compose is None else self.compose(self.ds.load(i), g, Path(path).name)

    def __getitem__(self, n: int):
        if n < len(self.ds):
            x = self.transform(self.ds.load(n))
            return x, x, self.ds.labels[n], False
        i, _ = self.pairs[n - len(self.ds)]
        g = self.transform(self.generated(n - len(self.ds)))
        return self.transform(self.ds.load(i)), g, self.ds.labels[i], True


def as_paths(found: Path | list[Path] | None) -> list[Path]:
    """A source's generated files as a list (one counterpart, several edits, or none)."""
    return [] if found is None else [found] if isinstance(found, (str, Path)) else list(found)


class EvalSet(Dataset):
    def __init__(self, ds: ImageSet, transform):
        self.ds, self.transform = ds, transform

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, n: int):
        return self.transform(self.ds.load(n)), self.ds.labels[n]


def check_generated(cfg: TrainConfig, generated: str | Path | None) -> None:
    """A method that mixes with a generated set needs one, with its manifest: checked before any data is read."""
    if METHODS[cfg.method].uses is None:
        return
    if generated is None:
        raise ValueError(f"method={cfg.method!r} needs a generated set: pass --generated <dir of `diffcore generate`>")
    if not (Path(generated) / "manifest.csv").is_file():
        raise FileNotFoundError(
            f"generated={generated}: no manifest.csv there; run `diffcore generate --out "
            f"{generated}` first (or pass the folder it wrote)"
        )


def load_counterparts(ds: ImageSet, generated: str | Path | None, cfg: TrainConfig) -> dict[str, list[Path]]:
    """source id -> its generated files (a counterpart; DiffuseMix's edited set: one per prompt), for the
    `cfg.fraction` of images chosen as in generation.

    Image seeds do not depend on the fraction, so the -50 pairs are exactly a subset of a -100 run's pairs.
    """
    if (
        METHODS[cfg.method].uses is None
    ):  # "counterparts" or "edits": both are manifest sets of `diffcore generate`-style runs
        return {}
    check_generated(cfg, generated)
    found = G.kept_by_source(generated)
    chosen = {ds.ids[i] for i in choose_fraction(ds, cfg.fraction, cfg.selection_seed)}
    matched = {k: v for k, v in found.items() if k in chosen}
    if not matched:
        raise ValueError(
            f"generated set {generated} has no usable counterpart for {ds.name}: "
            f"{no_counterpart_cause(generated, chosen)}"
        )
    return matched


def no_counterpart_cause(generated: str | Path, chosen: set[str]) -> str:
    """Why a generated set gives none of the `chosen` image ids a counterpart, from its manifest: the filter
    rejected every attempt (with the tau range and the best similarity reached), the images were invalid or the
    sources unreadable, the kept files are gone, or the set was made for other images."""
    rows = read_manifest(Path(generated) / "manifest.csv")
    mine = [r for r in rows if r["source_id"] in chosen]
    if not mine:
        return (
            f"none of its {len({r['source_id'] for r in rows})} sources is among the {len(chosen)} chosen images "
            f"(its first: {rows[0]['source_id']!r}, the dataset's: {min(chosen)!r}); was it generated for another "
            f"dataset, split or --few-shot?"
        )
    kept = [r for r in mine if r["status"] == "kept"]
    if kept:
        return f"its {len(kept)} kept images are not on disk (e.g. {kept[0]['file']}); was the folder moved or cleaned?"
    status = Counter(r["status"] for r in mine)
    attempts, sources = sum(status.values()) - status["unreadable"], len({r["source_id"] for r in mine})
    said = [f"no attempt was kept: {attempts} attempts for {sources} sources"]
    rejected = status["rejected"] + status["rejected-final"]
    taus = [float(r["tau"]) for r in mine if _finite_text(r["tau"])]
    scored = [r for r in mine if _finite_text(r["similarity"])]
    if rejected and taus and scored:
        best = max(scored, key=lambda r: float(r["similarity"]))
        said.append(
            f"{rejected} rejected by the filter (S > tau needed; tau {min(taus):.3f} to {max(taus):.3f}, best "
            f"similarity reached {float(best['similarity']):.3f}, {best['source_id']} at attempt {best['attempt']})"
        )
    if status["invalid"] + status["invalid-final"]:
        said.append(f"{status['invalid'] + status['invalid-final']} invalid images (NaN, black or constant)")
    if status["unreadable"]:
        said.append(f"{status['unreadable']} sources unreadable")
    return "; ".join(said) + " (more --max-attempts, or another --model, --template or --guidance-scale)"


def _finite_text(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


# ---------------------------------------------------------------- loop
@dataclass
class Trained:
    """What `train` returns: the trained classifier (unwrapped from DDP, in eval mode) and its result, the
    dict written to the result file (metrics, per-epoch history, counts, config, provenance)."""

    model: torch.nn.Module
    result: dict

    @property
    def metrics(self) -> dict:
        """top1, top5 (%), loss and n on the evaluation set."""
        return self.result["metrics"]


def topk_correct(logits: torch.Tensor, y: torch.Tensor, ks=(1, 5)) -> list[int]:
    """Number of samples whose label is among the top-k logits, for each k (k capped at the class count)."""
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices  # (B, kmax)
    hit = top == y[:, None]  # (B, kmax)
    return [int(hit[:, : min(k, kmax)].any(1).sum()) for k in ks]


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, loader: DataLoader, device: torch.device, world: D.World = D.SINGLE, ids=None
) -> dict:
    """Top-1/top-5/loss over the loader; under torchrun each rank's share, summed over ranks (the same numbers).
    ids: the evaluation set's image ids, in order: then also "predictions", every image's top-5 classes and label
    (results.encode_predictions), so that two runs can be compared image by image without retraining."""
    model = D.unwrap(model).eval()  # no DDP forward: ranks may hold different numbers of evaluation batches
    n, c1, c5, loss, tops, labels = 0, 0, 0, 0.0, [], []
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logits = model(x)
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
        a, b = topk_correct(logits, y)
        n, c1, c5 = n + len(y), c1 + a, c5 + b
        if ids is not None:
            tops.append(logits.topk(min(5, logits.shape[1]), dim=1).indices.cpu())  # (B, k), best first
            labels.append(y.cpu())
    n, c1, c5, loss = D.sum_over_ranks([n, c1, c5, loss], world)
    n, c1, c5 = int(n), int(c1), int(c5)
    out = {"top1": 100.0 * c1 / n, "top5": 100.0 * c5 / n, "loss": loss / n, "n": n}
    if ids is not None:
        rows = torch.cat([torch.cat(tops), torch.cat(labels)[:, None]], 1).numpy()  # (n_rank, k + 1)
        rows = D.gather_eval_rows(rows, n, world)  # (n, k + 1) in the set's order
        out["predictions"] = encode_predictions(rows[:, :-1], rows[:, -1], ids)
    return out


def method_for(cfg: TrainConfig) -> Method:
    """The configured method; DiffCoRe-Mix's variants take their mixing draws from `cfg.mix`."""
    hp = dict(cfg.method_args)
    if "mix_config" in getattr(METHODS[cfg.method], "__dataclass_fields__", {}):
        hp.setdefault("mix_config", cfg.mix)
    return build_method(cfg.method, **hp)


def train_step(
    model, opt, batch, cfg: TrainConfig, method: Method, num_classes: int, mix_gen: torch.Generator, device
) -> torch.Tensor:
    """One optimizer step on `batch`; returns the detached loss, a 0-d tensor on the device.

    No host sync: reading the loss (float(loss)) would wait for the step to finish and drain the launch queue, so
    the loop keeps the losses on the device and reads them once per epoch.
    """
    real, gen, y, is_pair = (t.to(device, non_blocking=True) for t in batch)
    mean, std = _MEAN.get(cfg.augment, IMAGENET_MEAN), _STD.get(cfg.augment, IMAGENET_STD)
    logits, target = method.forward(model, Batch(real, y, num_classes, mean, std, gen, is_pair), mix_gen)
    loss = method.loss(logits, target)  # cross-entropy unless the method adds a term (AugMix's JSD)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()


def check_train_out(out: str | Path | None) -> None:
    """The result path must be a file path (its checkpoint goes beside it), not a folder."""
    if out is not None and Path(out).is_dir():
        raise ValueError(f"out={out}: is a folder; expected a result file path such as results/vanilla-seed0.json")


def train(
    cfg: TrainConfig,
    train_ds: ImageSet,
    test_ds: ImageSet,
    generated: str | Path | None = None,
    out: str | Path | None = None,
    progress: bool = True,
    checkpoint: bool = True,
    world: D.World = D.SINGLE,
    extra_tests: dict[str, ImageSet] | None = None,
    test_split: str = "test",
) -> Trained:
    """Train one classifier and evaluate it; returns the trained model and its results (written to `out`), with
    provenance.

    With `out` and `checkpoint`, the state is saved to checkpoint.checkpoint_path(out) at every epoch end and a
    run killed earlier resumes from there; the file then holds the final weights ("state_dict").

    Under torchrun (`world`, its process group initialised) the model is trained with DDP on the same global
    batches; the metrics are reduced over the ranks (every rank returns the same); rank 0 alone writes `out` and
    the checkpoint, which any number of processes can resume.

    extra_tests: {split: set} evaluated too (Table 2's validation split beside its test split): the result then has
    "metrics_by_split", {split: metrics}, the test set's first (under `test_split`).
    """
    from .models import build_model

    check_train_out(out)
    if not world.whole:
        raise ValueError(
            "training runs under torchrun (srun ... torchrun for several machines), not as a Slurm "
            "array: the array's tasks would train separate models"
        )
    device = D.device_for(world, cfg.device)
    counterparts = load_counterparts(train_ds, generated, cfg)
    method = method_for(cfg)
    compose = method.pair_image if method.composes_pairs else None  # DiffuseMix: blend each pair before augmenting
    tr = PairedTrainingSet(train_ds, counterparts, transforms_for(cfg, True), compose)
    if cfg.loader in ("device", "resident"):  # under torchrun rank 0 decodes the cache, the other ranks then map it
        paired = tr
        if cfg.loader == "resident":  # too big for the device: say so before decoding anything
            L.check_resident_fits(len(train_ds) + len(paired.pairs), _cache_side(cfg), device)
        tr = D.main_first(
            world,
            lambda: L.cached_pairs(
                train_ds,
                paired.pairs,
                _cache_dir(cfg, out),
                _cache_side(cfg),
                max(1, cfg.workers),
                load_generated=paired.generated if compose else None,
                tag=repr(method) if compose else "",  # a composite's cache names the settings that made it
            ),
        )
        if cfg.loader == "resident":  # every rank holds the whole cache on its own device and gathers its rows
            tr = L.ResidentPairs(tr, device)
    te = EvalSet(test_ds, transforms_for(cfg, False))
    ckpt = CK.checkpoint_path(out) if out is not None and checkpoint else None
    identity = {
        "config": _jsonable(asdict(cfg)),
        "dataset": train_ds.name,
        "real": len(train_ds),
        "pairs": len(tr.pairs),
        "test": len(test_ds),
    }
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):  # seeded init and transforms without touching the caller's RNG
        torch.manual_seed(derive_seed(cfg.seed, "init") % 2**31)
        model = build_model(cfg.model, len(train_ds.classes), pretrained=cfg.pretrained, image_size=cfg.image_size).to(
            device
        )
        model = D.wrap_ddp(model, world, device)
        history = _fit(model, tr, te, cfg, device, progress and world.is_main, ckpt, identity, world)
        by_split = {
            name: evaluate(model, eval_loader(ds, cfg, world), device, world, ids=ds.ids)
            for name, ds in (extra_tests or {}).items()
        }
    predictions = {test_split: history["final"].pop("predictions")}  # per image: top-5 classes and label
    predictions |= {name: m.pop("predictions") for name, m in by_split.items()}
    result = {
        "kind": "diffcore-train-result",
        "method": cfg.method,
        "dataset": train_ds.name,
        "test_dataset": test_ds.name,
        "config": _jsonable(asdict(cfg)),
        "counts": {"real": len(train_ds), "pairs": len(tr.pairs), "test": len(test_ds)},
        "skipped": skipped_summary(train_ds),
        "test_skipped": skipped_summary(test_ds),  # the evaluation split's (data.skipped_summary)
        "generated": None if generated is None else str(generated),
        "metrics": history["final"],
        **({"metrics_by_split": {test_split: history["final"], **by_split}} if extra_tests else {}),
        "history": history["epochs"],
        "predictions": predictions,
        "resumed_at_epoch": history["resumed_at"],
        "checkpoint": None if ckpt is None else str(ckpt),
        "wall_time_s": time.perf_counter() - t0,
        "processes": world.group_size,
        "provenance": provenance(device),
    }
    if out is not None and world.is_main:
        atomic_write_text(out, json_text(result, indent=2))
    return Trained(D.unwrap(model).eval(), result)


def eval_loader(ds: ImageSet, cfg: TrainConfig, world: D.World = D.SINGLE) -> DataLoader:
    """This rank's share of an evaluation set, with the evaluation transforms."""
    te = EvalSet(ds, transforms_for(cfg, False))
    return DataLoader(
        Subset(te, D.eval_indices(len(te), world)), batch_size=max(64, cfg.batch_size), num_workers=cfg.workers
    )


def _loop_parts(model, tr, te, cfg: TrainConfig, device, world: D.World = D.SINGLE):
    """Loaders, optimizer, scheduler and the loop's own generators (data order, mixing draws).

    Under torchrun every rank draws the same global batches (the order generator is the same on all) and takes
    its rows of each (distributed.RankBatches); each rank evaluates its share of the test set. The resident loader
    draws its batches from the same sampler and order generator as the DataLoader of the other loaders."""
    loader_gen = torch.Generator().manual_seed(derive_seed(cfg.seed, "order") % 2**63)
    batches = D.train_batches(tr, cfg.batch_size, loader_gen, world)
    if cfg.loader == "resident":
        loader = L.ResidentBatches(tr, batches, loader_gen)
    else:
        loader = DataLoader(
            tr,
            batch_sampler=batches,
            generator=loader_gen,
            num_workers=cfg.workers,
            pin_memory=device.type == "cuda",
            worker_init_fn=D.ReseedWorker(world.group_rank) if world.group_size > 1 else None,
        )
    test_loader = eval_loader(te.ds, cfg, world)
    opt = torch.optim.SGD(
        param_groups(model, cfg),
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        nesterov=cfg.nesterov,
        foreach=True,  # CUDA's default; on a CPU the same weights to the bit, 3x faster (WRN-101-2: 0.19 vs 0.59 s)
    )
    steps = [max(1, math.floor(m * cfg.epochs)) for m in cfg.milestones]
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=steps, gamma=cfg.lr_decay)
    mix_gen = torch.Generator(device=device).manual_seed(derive_seed(cfg.seed, "mix") % 2**63)
    gens = {"order": loader_gen, "mix": mix_gen}
    if cfg.loader in ("device", "resident"):  # crops and flips drawn on the device
        gens["augment"] = torch.Generator(device=device).manual_seed(derive_seed(cfg.seed, "augment") % 2**63)
    return loader, test_loader, opt, sched, gens


def param_groups(model, cfg: TrainConfig) -> list[dict]:
    """One group at lr; fine-tuning (pretrained, pretrained_lr_scale != 1): the loaded layers at lr x scale, the
    new classifier at lr."""
    if cfg.pretrained is None or cfg.pretrained_lr_scale == 1.0:
        return [{"params": list(model.parameters())}]
    from .models import classifier_layer

    head = {id(p) for p in classifier_layer(cfg.model, D.unwrap(model)).parameters()}
    body = [p for p in model.parameters() if id(p) not in head]
    return [
        {"params": body, "lr": cfg.lr * cfg.pretrained_lr_scale},
        {"params": [p for p in model.parameters() if id(p) in head]},
    ]


def _fit(
    model,
    tr,
    te,
    cfg: TrainConfig,
    device,
    progress: bool,
    ckpt: Path | None = None,
    identity: dict | None = None,
    world: D.World = D.SINGLE,
) -> dict:
    loader, test_loader, opt, sched, gens = _loop_parts(model, tr, te, cfg, device, world)
    method, num_classes = method_for(cfg), len(tr.ds.classes)
    start, epochs = 0, []
    if ckpt is not None and world.is_main:
        CK.remove_partial(ckpt)
    if ckpt is not None and ckpt.is_file():  # every rank loads rank 0's checkpoint: the same weights everywhere
        start, epochs = CK.restore(CK.load(ckpt, identity), D.unwrap(model), opt, sched, gens)
        log.info("%s: resumed at epoch %d of %d", ckpt, start, cfg.epochs)
    bar = tqdm(range(start, cfg.epochs), desc=f"train {cfg.method}", unit="epoch", disable=not progress)
    for epoch in bar:
        model.train()
        if world.group_size > 1:  # per-rank streams (DiT: seed * world + rank), re-derived at every epoch so
            rs = D.rank_seed(cfg.seed, world)  # that a resume needs only rank 0's checkpoint
            torch.manual_seed(derive_seed(rs, "augment", epoch) % 2**63)
            for name in ("mix", "augment"):  # "augment": the device loader's crops and flips
                if name in gens:
                    gens[name].manual_seed(derive_seed(rs, name, epoch, "gen") % 2**63)
        t0, losses = time.perf_counter(), []
        for batch in loader:
            if cfg.loader in ("device", "resident"):  # resident batches are on the device already
                batch = L.to_device_batch(
                    batch,
                    cfg.image_size,
                    cfg.augment,
                    _MEAN.get(cfg.augment, IMAGENET_MEAN),
                    _STD.get(cfg.augment, IMAGENET_STD),
                    gens["augment"],
                    device,
                )
            losses.append(train_step(model, opt, batch, cfg, method, num_classes, gens["mix"], device))
        losses = torch.stack(losses).tolist() if losses else []  # the epoch's one host sync: (steps,) losses
        sched.step()
        epochs.append(
            {
                "epoch": epoch + 1,
                "train_loss": D.mean_over_ranks(losses, world),
                "lr": opt.param_groups[0]["lr"],
                "time_s": time.perf_counter() - t0,
            }
        )
        bar.set_postfix(loss=f"{epochs[-1]['train_loss']:.3f}")
        if not math.isfinite(epochs[-1]["train_loss"]) and world.is_main:  # named, not only a null in the result
            loss = epochs[-1]["train_loss"]
            log.warning("epoch %d: training loss %s: the run diverged (lower --lr)", epoch + 1, loss)
        if ckpt is not None and world.is_main:
            last = epoch + 1 == cfg.epochs  # nothing trains after it: no momentum buffers (half the file)
            CK.save(ckpt, identity, epoch + 1, epochs, D.unwrap(model), None if last else opt, sched, gens)
    D.share_buffers(model, world)  # evaluate, everywhere, the model that rank 0 saved
    final = evaluate(model, test_loader, device, world, ids=te.ds.ids)
    return {"final": final, "epochs": epochs, "resumed_at": start or None}


def _cache_side(cfg: TrainConfig) -> int:
    """Cached square side: 256/224 of the input for random-resized crops, the input size for pad-crops."""
    return round(cfg.image_size * 256 / 224) if cfg.augment in ("imagenet", "resize-crop") else cfg.image_size


def _cache_dir(cfg: TrainConfig, out: str | Path | None) -> Path:
    if cfg.cache_dir is not None:
        return Path(cfg.cache_dir)
    if out is None:
        raise ValueError(f"loader={cfg.loader!r} needs cache_dir or a result path (the cache goes beside it)")
    return Path(out).parent / "cache"


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj
