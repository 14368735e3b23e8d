"""The generated set: for each chosen real image, generate -> filter -> keep or try again (paper Sec. 3).

    tau_k per class from random real pairs (Eq. 5)                       `thresholds`
    for each chosen source i, attempt a = 0, 1, ...:
        seed(i, a) -> T2I(P_c, P_n) (Eq. 4)                              `draw_images`
        S = cos(clip(I_i), clip(G_ia)) > tau_k ? keep : next attempt     `accept`
    the images and one manifest row per attempt, on disk                 engine.genset

Seeds depend only on (run seed, image id, attempt), so any image can be regenerated alone. The folder layout,
durability, resume after a kill, chunks shared out to processes and their merge are the storage layer's
(`diffcore.engine.genset`, which DiffuseMix's edited set uses too): a killed or sharded run ends with the very
files of one uninterrupted process.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import prompts as P
from .data import ImageSet, choose_fraction, skipped_summary
from .engine import distributed as D
from .engine import genset as G
from .engine.checks import check_fields
from .engine.runtime import derive_seed
from .engine.safety import inside
from .filter import ClipEncoder, FilterConfig, accept, class_pairs, class_thresholds, cosine, pairs_needed
from .generate import GenerateConfig, check_guidance, draw_images

log = logging.getLogger(__name__)

# The manifest and its statuses are the storage layer's; named here too, where readers of the method look.
MANIFEST_FIELDS, read_manifest, kept_counterparts = G.MANIFEST_FIELDS, G.read_manifest, G.kept_files


@dataclass(frozen=True)
class CounterpartConfig:
    fraction: float = 1.0  # share of training images that get a counterpart: -50 -> 0.5, -100 -> 1.0
    selection_seed: int = 0  # which images, when fraction < 1
    save_rejected: bool = True  # keep rejected attempts on disk (Fig. 3: kept vs rejected); off for huge runs
    # Sources per unit of work. Processes take whole chunks, so each image is made in the same batch on any number
    # of GPUs (an image's bits depend on its batch). None: one generation batch (gen_batch_size), so that N
    # processes each generate once the set holds N batches (embedded: 898 sources = 15 chunks of 64; CUB: 188 of
    # 32). Larger: fewer short batches of retries (each chunk ends with its own), fewer processes with work.
    chunk_size: int | None = None

    def __post_init__(self):
        check_fields(self)  # types, finite numbers (engine.checks)
        if not (0.0 < self.fraction <= 1.0):
            raise ValueError(f"fraction={self.fraction}: expected a value in (0, 1], e.g. 0.5 for DiffCoRe-Mix-50")
        if self.selection_seed < 0:
            raise ValueError(f"selection_seed={self.selection_seed}: expected an integer >= 0")
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ValueError(f"chunk_size={self.chunk_size}: expected >= 1 sources per chunk (None: gen_batch_size)")


def counterpart_set(
    ds: ImageSet,
    out_dir: str | Path,
    prompt_cfg: P.PromptConfig,
    gen_cfg: GenerateConfig,
    filter_cfg: FilterConfig,
    cp_cfg: CounterpartConfig,
) -> G.GeneratedSet:
    """The set's folder, settings and sources: everything but the models."""
    settings = {
        "dataset": ds.name,
        "num_images": len(ds),
        "prompt": asdict(prompt_cfg),
        "generate": asdict(gen_cfg),
        "filter": asdict(filter_cfg),
        "counterparts": asdict(cp_cfg),
    }
    defaults = {
        "prompt": P.PromptConfig(),
        "generate": GenerateConfig(),
        "filter": FilterConfig(),
        "counterparts": CounterpartConfig(),
    }
    return G.GeneratedSet(
        Path(out_dir),
        settings,
        defaults,
        ds.ids,
        ds.labels,
        ds.classes,
        choose_fraction(ds, cp_cfg.fraction, cp_cfg.selection_seed),
        cp_cfg.chunk_size or gen_cfg.batch_size,  # None: a chunk per generation batch
        gen_cfg.batch_size,
        filter_cfg.max_attempts,
        what="generate",
    )


def check_out_dir(
    ds: ImageSet,
    out_dir: str | Path,
    prompt_cfg: P.PromptConfig,
    gen_cfg: GenerateConfig,
    filter_cfg: FilterConfig,
    cp_cfg: CounterpartConfig,
) -> None:
    """make_counterparts' check of `out_dir`, for callers that want it before loading any model."""
    counterpart_set(ds, out_dir, prompt_cfg, gen_cfg, filter_cfg, cp_cfg).check()


def check_classes(ds: ImageSet) -> None:
    counts = ds.class_counts()
    empty = [ds.classes[k] for k in range(len(ds.classes)) if counts[k] == 0]
    if empty:
        raise ValueError(f"{ds.name}: class(es) {empty[:5]} have no images; remove them or add images")


def load_source(ds: ImageSet, i: int, unreadable: set[int]):
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


def thresholds(
    ds: ImageSet, clip: ClipEncoder, cfg: FilterConfig, unreadable: set[int] | None = None
) -> dict[int, float]:
    """tau_k for every class (Eq. 5), embedding only the real images that appear in a sampled pair.
    Pairs with an unreadable image are left out (a class left without pairs gets the fallback tau)."""
    unreadable = set() if unreadable is None else unreadable
    pairs = class_pairs(ds.labels, len(ds.classes), cfg.z_pairs, cfg.tau_seed)
    images = {int(i): load_source(ds, int(i), unreadable) for i in pairs_needed(pairs)}
    if unreadable:
        pairs = {k: p[~np.isin(p, sorted(unreadable)).any(axis=1)] for k, p in pairs.items()}  # (m', 2)
    needed = [i for i, im in images.items() if im is not None]
    emb = clip.embed([images[i] for i in needed])  # (n_needed, D)
    row = {i: r for r, i in enumerate(needed)}
    return class_thresholds(pairs, lambda idx: emb[[row[int(i)] for i in idx]])


def make_counterparts(
    ds: ImageSet,
    pipe,
    clip: ClipEncoder,
    out_dir: str | Path,
    prompt_cfg: P.PromptConfig,
    gen_cfg: GenerateConfig,
    filter_cfg: FilterConfig,
    cp_cfg: CounterpartConfig,
    model_name: str | None = None,
    progress: bool = True,
    world: D.World = D.SINGLE,
    io_threads: int = 4,
) -> dict | None:
    """Generate, filter and write counterparts for `cp_cfg.fraction` of `ds`; returns run.json's content.

    Resumes a killed run in `out_dir`: the result equals an uninterrupted run's. `world`: this process's shard
    (engine.distributed; its process group, if any, initialised). Rank 0 of the group merges the shards at the
    end; a Slurm array task returns None, and `finish_counterparts` (`diffcore merge`) merges once every task is
    done. `io_threads`: threads that decode sources and encode/commit PNGs while the GPU generates (0: in line);
    the files are the same either way.
    """
    # 1. cheap checks, before anything is written
    check_classes(ds)
    neg = P.final_negative(prompt_cfg, ds.classes)[0]  # P_n of this dataset: no phrase names one of its classes
    check_guidance(neg, gen_cfg)
    store = counterpart_set(ds, out_dir, prompt_cfg, gen_cfg, filter_cfg, cp_cfg)
    unreadable: set[int] = set()

    # 2. tau_k per class (Eq. 5): made once, into plan.json, and read by every process
    def plan() -> dict:
        taus = thresholds(ds, clip, filter_cfg, unreadable)
        return {"tau": [taus[k] for k in range(len(ds.classes))]}

    # 3. each batch: generate (Eq. 4), compare with its own source in CLIP space, keep or try again
    src_cache: dict[int, torch.Tensor | None] = {}

    def make_batch(batch, pool, agreed):
        src_cache.update({i: None for i in unreadable if i not in src_cache})
        taus = dict(enumerate(agreed["tau"]))
        return _run_batch(
            ds,
            batch,
            pipe,
            clip,
            taus,
            src_cache,
            store,
            prompt_cfg,
            neg,
            gen_cfg,
            filter_cfg,
            cp_cfg,
            model_name or gen_cfg.model,
            pool,
        )

    # 4. the set's life on disk: claim, recover, fill this process's chunks, merge (engine.genset)
    return store.run(
        world,
        plan,
        make_batch,
        lambda agreed, rows: _run_info(ds, store, agreed, rows),
        invalid_hint=lambda bad, attempts: _invalid_hint(bad, attempts, gen_cfg),
        io_threads=io_threads,
        progress=progress,
        device=getattr(pipe, "device", None),
        desc="counterparts",
    )


def _invalid_hint(bad: int, attempts: int, gen_cfg: GenerateConfig) -> str:
    return (
        f"dtype={gen_cfg.dtype!r}, vae={gen_cfg.vae!r}: {bad} of {attempts} generated images are NaN, black or "
        f"constant; SDXL's VAE overflows in fp16: pass --vae <sdxl-vae-fp16-fix> or --dtype bfloat16/float32 "
        f"(and a new --out)"
    )


def _run_info(ds: ImageSet, store: G.GeneratedSet, agreed: dict, rows: list[dict]) -> dict:
    """run.json of a finished set: settings, tau per class, discard counts, the dataset's skipped files."""
    taus = dict(enumerate(agreed["tau"]))
    return {
        "settings": store.settings,
        "negative_prompt": P.final_negative(P.PromptConfig(**store.settings["prompt"]), ds.classes)[0],
        "tau": {ds.classes[k]: t for k, t in taus.items()},
        "summary": G.summarize(rows, ds.classes, taus, len(store.chosen)),
        "dataset_skipped": skipped_summary(ds),
    }


def finish_counterparts(
    ds: ImageSet,
    out_dir: str | Path,
    prompt_cfg: P.PromptConfig,
    gen_cfg: GenerateConfig,
    filter_cfg: FilterConfig,
    cp_cfg: CounterpartConfig,
) -> dict:
    """After a Slurm array (`diffcore merge`): the shards -> manifest.csv and run.json (see GeneratedSet.finish)."""
    store = counterpart_set(ds, out_dir, prompt_cfg, gen_cfg, filter_cfg, cp_cfg)
    return store.finish(lambda agreed, rows: _run_info(ds, store, agreed, rows))


def _run_batch(
    ds, batch, pipe, clip, taus, src_cache, store, prompt_cfg, neg, gen_cfg, filter_cfg, cp_cfg, model_name, pool=None
) -> tuple[list[dict], G.Batch, G.Files]:
    """One pipeline call over `batch` = [(dataset index, attempt)]: its manifest rows, what to retry, and the
    (image, path) files to write before the rows are committed. `pool` decodes the sources while the GPU works."""
    labels = [ds.labels[i] for i, _ in batch]
    texts = [P.contextual_prompt(ds.classes[k], prompt_cfg) for k in labels]
    seeds = [derive_seed(gen_cfg.run_seed, ds.ids[i], a) for i, a in batch]
    fresh = {i: G.submit(pool, _preprocessed_source, ds, i, clip) for i, _ in batch if i not in src_cache}
    images, invalid = draw_images(pipe, texts, [neg] * len(batch), seeds, gen_cfg)  # (b, H, W, 3) uint8, (b,)
    for i, job in fresh.items():  # each source embedded alone: its S does not depend on its batch's company
        x = job.result()
        src_cache[i] = None if x is None else clip.encode(x[None])[0]
    src = [src_cache[i] for i, _ in batch]
    gen_emb = clip.embed([Image.fromarray(im) for im in images], pool)  # (b, D)
    src_emb = torch.stack([torch.full_like(gen_emb[0], float("nan")) if e is None else e for e in src])  # (b, D)
    sims = cosine(src_emb, gen_emb)  # (b,); NaN: unreadable
    sims[torch.from_numpy(invalid)] = float("nan")  # a failed decode has no S
    tau = torch.tensor([taus[k] for k in labels])
    keep = accept(sims, tau)
    rows, retry, files = [], [], []
    for j, (i, a) in enumerate(batch):
        status = G.status(bool(keep[j]), bool(invalid[j]), src[j] is None, a, filter_cfg.max_attempts)
        name = (labels[j], ds.classes[labels[j]], ds.ids[i])
        rel = ""
        if status == "kept" or (status != "unreadable" and cp_cfg.save_rejected):
            rel = G.kept_file(*name) if status == "kept" else G.rejected_file(*name, a)
            files.append((images[j], inside(store.out_dir, rel)))
        if status in G.RETRY_STATUSES:
            retry.append((i, a + 1))
        else:
            src_cache.pop(i, None)
        rows.append(
            {
                "source_id": ds.ids[i],
                "source_path": ds.path(i) or "",
                "label": labels[j],
                "class_name": ds.classes[labels[j]],
                "prompt": texts[j],
                "negative_prompt": neg,
                "seed": seeds[j],
                "attempt": a,
                "similarity": f"{float(sims[j]):.6f}",
                "tau": f"{float(tau[j]):.6f}",
                "status": status,
                "file": rel,
                "model": model_name,
                "steps": gen_cfg.steps,
                "guidance_scale": gen_cfg.guidance_scale,
                "height": gen_cfg.size,
                "width": gen_cfg.size,
            }
        )
    return rows, retry, files


def _preprocessed_source(ds: ImageSet, i: int, clip: ClipEncoder) -> torch.Tensor | None:
    """Source image i decoded and CLIP-preprocessed (3, h, w), or None when it does not decode."""
    image = load_source(ds, i, set())
    return None if image is None else clip.preprocess(image)
