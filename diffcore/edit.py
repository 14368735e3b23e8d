"""DiffuseMix's generated set: every chosen training image edited by an InstructPix2Pix-style model with every style
prompt of the list (Islam et al., CVPR 2024), written in the same layout, manifest and seeding as `diffcore generate`.

    diffcore edit --out runs/edits                                 # embedded profile: digits, tiny stand-in, CPU
    diffcore edit --profile paper --dataset cub-200-2011 --data-root DATA --model ./instruct-pix2pix --out E
    diffcore train --method diffusemix --generated runs/edits --out r.json

Each chosen image gets one edit per prompt, as the authors' loop `for prompt in self.prompts` does (augment/
diffuseMix.py, num_images 1): the set holds image x prompt edits, each stored under the key
`engine.genset.variant_key(image id, prompt index)` (manifest source_id "<image id>#v<k>", its prompt in the prompt
column). The seed of an edit is derive_seed(run seed, that key, attempt), so any edit can be made again alone. An
edit that comes out blank or non-finite is rejected as 'invalid' and tried again with the next attempt's seed
(DiffuseMix drops such images, `is_black_image`); after `max_attempts` that (image, prompt) gets no edit
('invalid-final'). The set is written through the same storage layer as the counterparts (engine.genset): atomic
commits, resume after a kill, chunks of (image, prompt) keys shared out to processes under torchrun.

The concatenation and fractal blend are not stored: they are made from each (image, edit) pair, aligned at the
edit's resolution, before the training augmentation (diffcore.methods.diffusemix.DiffuseMix.pair_image), as the
authors' blended files are.

The embedded profile's editing model is a STAND-IN: the shipped tiny text-to-image model (diffcore/assets/tiny-t2i)
with its UNet's conv_in widened from 4 to 8 input channels, the extra weights zero, exactly as InstructPix2Pix
initialises its UNet from Stable Diffusion before training. It was never trained to edit, so its output ignores the
input image: it is a text-to-image sample of '<class name>, <style prompt>'. It exists so that the whole DiffuseMix
path runs offline on a CPU; numbers made with it are not DiffuseMix's.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .data import ImageSet, choose_fraction, skipped_summary
from .engine import distributed as D
from .engine import genset as G
from .engine.checks import check_fields
from .engine.runtime import derive_seed
from .engine.safety import inside
from .profiles import EDIT_STANDIN as STANDIN  # --model of the embedded stand-in editor
from .profiles import TINY_T2I_DIR

log = logging.getLogger(__name__)

# khawar-islam/diffuseMix README, "List of Prompts"
DIFFUSEMIX_PROMPTS = (
    "Autumn",
    "snowy",
    "watercolor art",
    "sunset",
    "rainbow",
    "aurora",
    "mosaic",
    "ukiyo-e",
    "a sketch with crayon",
)


@dataclass(frozen=True)
class EditConfig:
    model: str = "timbrooks/instruct-pix2pix"  # local diffusers InstructPix2Pix folder (authors' main.py), or STANDIN
    prompts: tuple[str, ...] = DIFFUSEMIX_PROMPTS  # authors' README list; every image is edited with each of them
    steps: int = 100  # diffusers' InstructPix2Pix default, which the authors' handler keeps
    guidance_scale: float = 4.0  # text guidance, authors' main.py
    image_guidance_scale: float = 1.5  # diffusers default, which the authors' handler keeps
    size: int = 512  # px: the authors' sources and edits until 2024-07-08 (d93cf72); their HEAD: 256
    scheduler: str = "euler-ancestral"  # authors' handler: EulerAncestralDiscreteScheduler
    batch_size: int = 8  # images per pipeline call
    dtype: str = "auto"  # authors: fp16; auto = bf16 on CUDA, fp32 on CPU
    run_seed: int = 0  # edit seed = derive_seed(run_seed, image id, attempt), as for counterparts
    max_attempts: int = 3  # our retry cap for blank edits (the authors drop them)
    fraction: float = 1.0  # share of training images edited (same choice rule as counterparts)
    selection_seed: int = 0  # which images, when fraction < 1
    chunk_size: int | None = None  # sources per unit of work shared out to processes; None: batch_size (as
    # CounterpartConfig's: N processes each edit once the set holds N batches)

    def __post_init__(self):
        check_fields(self)  # types, finite numbers (engine.checks)
        if not self.prompts or any(not p.strip() for p in self.prompts):
            raise ValueError(f"prompts={self.prompts!r}: expected at least one non-empty style prompt")
        if self.steps < 1 or self.batch_size < 1 or self.max_attempts < 1:
            raise ValueError(
                f"steps={self.steps}, batch_size={self.batch_size}, max_attempts={self.max_attempts}: "
                f"expected each >= 1"
            )
        if self.size < 8 or self.size % 8:
            raise ValueError(f"size={self.size}: expected a multiple of 8 pixels")
        if self.guidance_scale < 0 or self.image_guidance_scale < 0:
            raise ValueError(
                f"guidance_scale={self.guidance_scale}, image_guidance_scale={self.image_guidance_scale}: expected >= 0"
            )
        if self.scheduler not in ("euler-ancestral", "auto"):
            raise ValueError(f"scheduler={self.scheduler!r}: expected 'euler-ancestral' or 'auto' (the model's own)")
        if not 0 < self.fraction <= 1:
            raise ValueError(f"fraction={self.fraction}: expected a value in (0, 1]")
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ValueError(f"chunk_size={self.chunk_size}: expected >= 1 sources per chunk (None: batch_size)")


# ---------------------------------------------------------------- the editing pipeline
def widen_conv_in(unet, in_channels: int = 8):
    """The UNet with conv_in taking `in_channels`: old weights in the first channels, zeros in the new ones
    (InstructPix2Pix's initialisation from Stable Diffusion, diffusers' train_instruct_pix2pix.py)."""
    old = unet.conv_in
    new = torch.nn.Conv2d(
        in_channels,
        old.out_channels,
        old.kernel_size,
        old.stride,
        old.padding,
        dtype=old.weight.dtype,
        device=old.weight.device,
    )
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, : old.in_channels].copy_(old.weight)
        new.bias.copy_(old.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=in_channels)
    return unet


def load_editor(cfg: EditConfig, device: torch.device, dtype: torch.dtype):
    """An InstructPix2Pix pipeline from local files only: the model folder, or the stand-in built from tiny-t2i."""
    from diffusers import (
        EulerAncestralDiscreteScheduler,
        StableDiffusionInstructPix2PixPipeline,
        StableDiffusionPipeline,
    )

    kw = dict(dtype=dtype, local_files_only=True, use_safetensors=True)
    if cfg.model == STANDIN:
        t2i = StableDiffusionPipeline.from_pretrained(TINY_T2I_DIR, **kw)
        pipe = StableDiffusionInstructPix2PixPipeline(
            vae=t2i.vae,
            text_encoder=t2i.text_encoder,
            tokenizer=t2i.tokenizer,
            unet=widen_conv_in(t2i.unet),
            scheduler=t2i.scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    else:
        if not Path(cfg.model).expanduser().exists() and cfg.model.startswith((".", "/", "~")):
            raise FileNotFoundError(
                f"model={cfg.model}: no such folder (a diffusers InstructPix2Pix pipeline, e.g. a "
                f"local copy of timbrooks/instruct-pix2pix)"
            )
        try:
            pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(
                cfg.model, safety_checker=None, requires_safety_checker=False, **kw
            )
        except OSError as e:
            raise FileNotFoundError(
                f"model={cfg.model}: could not load it from local files "
                f"({str(e).splitlines()[0]}); download it on a connected machine and pass the "
                f"local folder"
            ) from None
    if cfg.scheduler == "euler-ancestral":
        pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def invalid(images: torch.Tensor) -> torch.Tensor:
    """(N,) True where a (N, C, H, W) edit has a non-finite value or is blank (max - min below one grey level)."""
    flat = images.flatten(1).float()
    clean = flat.nan_to_num(0.0, posinf=0.0, neginf=0.0)
    return ~torch.isfinite(flat).all(1) | (clean.amax(1) - clean.amin(1) < 1 / 255)


@torch.no_grad()
def edit_images(
    pipe, sources: Sequence[Image.Image], prompts: Sequence[str], seeds: Sequence[int], cfg: EditConfig
) -> tuple[np.ndarray, np.ndarray]:
    """((N, size, size, 3) uint8 edits, (N,) bool invalid), one CPU torch.Generator per image (same noise on any
    device and at any batch size)."""
    if not len(sources) == len(prompts) == len(seeds):
        raise ValueError(f"{len(sources)} sources, {len(prompts)} prompts and {len(seeds)} seeds differ")
    out, bad = [], []
    for s in range(0, len(sources), cfg.batch_size):
        sl = slice(s, s + cfg.batch_size)
        images = pipe(
            prompt=list(prompts[sl]),
            image=[im.convert("RGB").resize((cfg.size, cfg.size)) for im in sources[sl]],
            num_inference_steps=cfg.steps,
            guidance_scale=cfg.guidance_scale,
            image_guidance_scale=cfg.image_guidance_scale,
            output_type="pt",
            generator=[torch.Generator("cpu").manual_seed(int(x)) for x in seeds[sl]],
        ).images
        bad.append(invalid(images).cpu().numpy())
        out.append(
            (images.float().nan_to_num(0.0).clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        )  # (b, H, W, 3)
    if not out:
        return np.zeros((0, cfg.size, cfg.size, 3), np.uint8), np.zeros(0, bool)
    return np.concatenate(out), np.concatenate(bad)


# ---------------------------------------------------------------- the edited set on disk
def prompt_for(k: int, class_name: str, cfg: EditConfig) -> str:
    """The k-th style prompt; the stand-in, which cannot see the image, also gets the class name in front
    ('<class>, <style>', a caption form the tiny model was trained on), standing in for an editor that keeps the
    image's content."""
    style = cfg.prompts[k]
    return f"{class_name}, {style}" if cfg.model == STANDIN else style


def edit_items(ds: ImageSet, cfg: EditConfig) -> list[tuple[int, int]]:
    """(dataset index, prompt index) of every edit: each chosen image with each prompt, image by image."""
    return [(int(i), k) for i in choose_fraction(ds, cfg.fraction, cfg.selection_seed) for k in range(len(cfg.prompts))]


def edit_set(ds: ImageSet, out_dir: str | Path, cfg: EditConfig) -> G.GeneratedSet:
    """The edited set's folder, settings and (image, prompt) keys (everything but the model)."""
    items = edit_items(ds, cfg)
    settings = {
        "kind": "diffcore-edits",
        "layout": "every-prompt",  # an image x prompt set; older sets (one prompt per image) are not resumed into it
        "dataset": ds.name,
        "num_images": len(ds),
        "edit": asdict(cfg),
    }
    return G.GeneratedSet(
        Path(out_dir),
        settings,
        {"edit": EditConfig()},
        [G.variant_key(ds.ids[i], k) for i, k in items],
        [ds.labels[i] for i, _ in items],
        ds.classes,
        range(len(items)),
        cfg.chunk_size or cfg.batch_size,
        cfg.batch_size,
        cfg.max_attempts,
        what="edit",
    )


def make_edits(
    ds: ImageSet,
    pipe,
    out_dir: str | Path,
    cfg: EditConfig,
    model_name: str | None = None,
    progress: bool = True,
    world: D.World = D.SINGLE,
    io_threads: int = 4,
) -> dict | None:
    """Edit `cfg.fraction` of `ds` with every prompt into out_dir (images/<class>/<key>.png, manifest.csv,
    run.json); resumable, and shared out over the processes of `world` like the counterparts. Returns run.json's
    content."""
    store = edit_set(ds, out_dir, cfg)
    items = edit_items(ds, cfg)
    return store.run(
        world,
        dict,
        lambda batch, pool, agreed: _edit_batch(ds, items, batch, pipe, store, cfg, model_name or cfg.model),
        lambda agreed, rows: _run_info(ds, store, cfg, rows),
        io_threads=io_threads,
        progress=progress,
        device=getattr(pipe, "device", None),
        desc="edits",
    )


def finish_edits(ds: ImageSet, out_dir: str | Path, cfg: EditConfig) -> dict:
    """After a Slurm array of edit tasks (`diffcore plan --merge`): the shards -> manifest.csv and run.json, as
    finish_counterparts does for the counterparts (see GeneratedSet.finish)."""
    store = edit_set(ds, out_dir, cfg)
    return store.finish(lambda agreed, rows: _run_info(ds, store, cfg, rows))


def _run_info(ds: ImageSet, store: G.GeneratedSet, cfg: EditConfig, rows: list[dict]) -> dict:
    """run.json of a finished edited set: settings, counts, the dataset's skipped files."""
    edits = len(store.chosen)  # every chosen image with every prompt
    return {
        "settings": store.settings,
        "summary": {**G.summarize(rows, ds.classes, {}, edits), "images": edits // len(cfg.prompts)},
        "dataset_skipped": skipped_summary(ds),
    }


def _edit_batch(ds, items, batch: G.Batch, pipe, store: G.GeneratedSet, cfg: EditConfig, model_name: str):
    """One batch of (item, attempt): the edits, their manifest rows, the retries and the files to write."""
    src = [items[j] for j, _ in batch]  # (dataset index, prompt index) of each
    prompts = [prompt_for(k, ds.classes[ds.labels[i]], cfg) for i, k in src]
    seeds = [derive_seed(cfg.run_seed, store.ids[j], a) for j, a in batch]
    images, bad = edit_images(pipe, [ds.load(i) for i, _ in src], prompts, seeds, cfg)
    rows, retry, files = [], [], []
    for n, ((j, a), (i, _)) in enumerate(zip(batch, src)):
        label = ds.labels[i]
        status = G.status(not bad[n], bool(bad[n]), False, a, cfg.max_attempts)
        rel = G.kept_file(label, ds.classes[label], store.ids[j]) if status == "kept" else ""
        if rel:
            files.append((images[n], inside(store.out_dir, rel)))
        if status in G.RETRY_STATUSES:
            retry.append((j, a + 1))
        rows.append(
            {
                **dict.fromkeys(G.MANIFEST_FIELDS, ""),
                "source_id": store.ids[j],
                "source_path": ds.path(i) or "",
                "label": label,
                "class_name": ds.classes[label],
                "prompt": prompts[n],
                "seed": seeds[n],
                "attempt": a,
                "status": status,
                "file": rel,
                "model": model_name,
                "steps": cfg.steps,
                "guidance_scale": cfg.guidance_scale,
                "height": cfg.size,
                "width": cfg.size,
            }
        )
    return rows, retry, files


if __name__ == "__main__":  # moved: the command line lives in diffcore.cli
    raise SystemExit("python -m diffcore.edit is now `python -m diffcore edit` (same flags)")
