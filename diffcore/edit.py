"""DiffuseMix's generated set: every chosen training image edited by an InstructPix2Pix-style model with a style
prompt (Islam et al., CVPR 2024), written in the same layout, manifest and seeding as `diffcore generate`.

    python -m diffcore.edit --out runs/edits                       # embedded profile: digits, tiny stand-in, CPU
    python -m diffcore.edit --profile paper --dataset cub-200-2011 --data-root DATA --model ./instruct-pix2pix --out E
    diffcore train --method diffusemix --generated runs/edits --out r.json

The seed of an edit is derive_seed(run seed, image id, attempt), as for counterparts; the prompt of an image is
one of the style prompts, picked by derive_seed(run seed, image id, "prompt"), and recorded. An edit that comes out
blank or non-finite is rejected as 'invalid' and tried again with the next attempt's seed (DiffuseMix drops such
images, `is_black_image`); after `max_attempts` the image gets no edit ('invalid-final'). The concatenation and
fractal blending happen at training time, on the device (diffcore.methods.diffusemix).

Departures from the authors' code (khawar-islam/diffuseMix), all for the kit's one-counterpart-per-image layout:
they edit every image with every prompt in the list; here each image gets one edit, with a prompt from the list.

The embedded profile's editing model is a STAND-IN: the shipped tiny text-to-image model (diffcore/assets/tiny-t2i)
with its UNet's conv_in widened from 4 to 8 input channels, the extra weights zero, exactly as InstructPix2Pix
initialises its UNet from Stable Diffusion before training. It was never trained to edit, so its output ignores the
input image: it is a text-to-image sample of '<class name>, <style prompt>'. It exists so that the whole DiffuseMix
path runs offline on a CPU; numbers made with it are not DiffuseMix's.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import deque
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from .counterparts import MANIFEST_FIELDS, _append_rows, _save_png, class_dir, read_manifest, safe_name, summarize
from .data import ImageSet, choose_fraction
from .profiles import TINY_T2I_DIR
from .runtime import derive_seed, provenance, resolve_device, resolve_dtype

log = logging.getLogger(__name__)

# khawar-islam/diffuseMix README, "List of Prompts"
DIFFUSEMIX_PROMPTS = ("Autumn", "snowy", "watercolor art", "sunset", "rainbow", "aurora", "mosaic", "ukiyo-e",
                      "a sketch with crayon")
STANDIN = "tiny-standin"  # --model value of the embedded stand-in editor


@dataclass(frozen=True)
class EditConfig:
    model: str = "timbrooks/instruct-pix2pix"  # local diffusers InstructPix2Pix folder (authors' main.py), or STANDIN
    prompts: tuple[str, ...] = DIFFUSEMIX_PROMPTS  # authors' README list
    steps: int = 100                   # diffusers' InstructPix2Pix default, which the authors' handler keeps
    guidance_scale: float = 4.0        # text guidance, authors' main.py
    image_guidance_scale: float = 1.5  # diffusers default, which the authors' handler keeps
    size: int = 512                    # authors resize sources and edits to 512 x 512
    scheduler: str = "euler-ancestral"  # authors' handler: EulerAncestralDiscreteScheduler
    batch_size: int = 8                # images per pipeline call
    dtype: str = "auto"                # authors: fp16; auto = bf16 on CUDA, fp32 on CPU
    run_seed: int = 0
    max_attempts: int = 3              # our retry cap for blank edits (the authors drop them)
    fraction: float = 1.0              # share of training images edited (same choice rule as counterparts)
    selection_seed: int = 0

    def __post_init__(self):
        if not self.prompts or any(not p.strip() for p in self.prompts):
            raise ValueError(f"prompts={self.prompts!r}: expected at least one non-empty style prompt")
        if self.steps < 1 or self.batch_size < 1 or self.max_attempts < 1:
            raise ValueError(f"steps={self.steps}, batch_size={self.batch_size}, max_attempts={self.max_attempts}: "
                             f"expected each >= 1")
        if self.size < 8 or self.size % 8:
            raise ValueError(f"size={self.size}: expected a multiple of 8 pixels")
        if self.guidance_scale < 0 or self.image_guidance_scale < 0:
            raise ValueError(f"guidance_scale={self.guidance_scale}, image_guidance_scale={self.image_guidance_scale}:"
                             f" expected >= 0")
        if self.scheduler not in ("euler-ancestral", "auto"):
            raise ValueError(f"scheduler={self.scheduler!r}: expected 'euler-ancestral' or 'auto' (the model's own)")
        if not 0 < self.fraction <= 1:
            raise ValueError(f"fraction={self.fraction}: expected a value in (0, 1]")


PROFILES = {
    "embedded": {"model": STANDIN, "steps": 20, "size": 32, "batch_size": 64, "dtype": "float32"},
    "paper": {},  # EditConfig's defaults are the authors' settings
}


# ---------------------------------------------------------------- the editing pipeline
def widen_conv_in(unet, in_channels: int = 8):
    """The UNet with conv_in taking `in_channels`: old weights in the first channels, zeros in the new ones
    (InstructPix2Pix's initialisation from Stable Diffusion, diffusers' train_instruct_pix2pix.py)."""
    old = unet.conv_in
    new = torch.nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding,
                          dtype=old.weight.dtype, device=old.weight.device)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, :old.in_channels].copy_(old.weight)
        new.bias.copy_(old.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=in_channels)
    return unet


def load_editor(cfg: EditConfig, device: torch.device, dtype: torch.dtype):
    """An InstructPix2Pix pipeline from local files only: the model folder, or the stand-in built from tiny-t2i."""
    from diffusers import (EulerAncestralDiscreteScheduler, StableDiffusionInstructPix2PixPipeline,
                           StableDiffusionPipeline)

    kw = dict(dtype=dtype, local_files_only=True, use_safetensors=True)
    if cfg.model == STANDIN:
        t2i = StableDiffusionPipeline.from_pretrained(TINY_T2I_DIR, **kw)
        pipe = StableDiffusionInstructPix2PixPipeline(
            vae=t2i.vae, text_encoder=t2i.text_encoder, tokenizer=t2i.tokenizer, unet=widen_conv_in(t2i.unet),
            scheduler=t2i.scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    else:
        if not Path(cfg.model).expanduser().exists() and cfg.model.startswith((".", "/", "~")):
            raise FileNotFoundError(f"model={cfg.model}: no such folder (a diffusers InstructPix2Pix pipeline, e.g. a "
                                    f"local copy of timbrooks/instruct-pix2pix)")
        try:
            pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(cfg.model, safety_checker=None,
                                                                          requires_safety_checker=False, **kw)
        except OSError as e:
            raise FileNotFoundError(f"model={cfg.model}: could not load it from local files "
                                    f"({str(e).splitlines()[0]}); download it on a connected machine and pass the "
                                    f"local folder") from None
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
def edit_images(pipe, sources: Sequence[Image.Image], prompts: Sequence[str], seeds: Sequence[int],
                cfg: EditConfig) -> tuple[np.ndarray, np.ndarray]:
    """((N, size, size, 3) uint8 edits, (N,) bool invalid), one CPU torch.Generator per image (same noise on any
    device and at any batch size)."""
    if not len(sources) == len(prompts) == len(seeds):
        raise ValueError(f"{len(sources)} sources, {len(prompts)} prompts and {len(seeds)} seeds differ")
    out, bad = [], []
    for s in range(0, len(sources), cfg.batch_size):
        sl = slice(s, s + cfg.batch_size)
        images = pipe(prompt=list(prompts[sl]), image=[im.convert("RGB").resize((cfg.size, cfg.size))
                                                        for im in sources[sl]],
                      num_inference_steps=cfg.steps, guidance_scale=cfg.guidance_scale,
                      image_guidance_scale=cfg.image_guidance_scale, output_type="pt",
                      generator=[torch.Generator("cpu").manual_seed(int(x)) for x in seeds[sl]]).images
        bad.append(invalid(images).cpu().numpy())
        out.append((images.float().nan_to_num(0.0).clamp(0, 1) * 255).round().to(torch.uint8)
                   .permute(0, 2, 3, 1).cpu().numpy())                                  # (b, H, W, 3)
    if not out:
        return np.zeros((0, cfg.size, cfg.size, 3), np.uint8), np.zeros(0, bool)
    return np.concatenate(out), np.concatenate(bad)


# ---------------------------------------------------------------- the edited set on disk
def prompt_for(image_id: str, class_name: str, cfg: EditConfig) -> str:
    """The image's style prompt; the stand-in, which cannot see the image, also gets the class name in front
    ('<class>, <style>', a caption form the tiny model was trained on), standing in for an editor that keeps the
    image's content."""
    style = cfg.prompts[derive_seed(cfg.run_seed, image_id, "prompt") % len(cfg.prompts)]
    return f"{class_name}, {style}" if cfg.model == STANDIN else style


def _settings(ds: ImageSet, cfg: EditConfig) -> dict:
    edit = {k: v for k, v in asdict(cfg).items() if k != "batch_size"}  # batch size does not change any image
    return {"kind": "diffcore-edits", "dataset": ds.name, "num_images": len(ds), "edit": _jsonable(edit)}


def _jsonable(d: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def _check_out_dir(out_dir: Path, settings: dict) -> None:
    info = out_dir / "run.json"
    if info.is_file():
        old = json.loads(info.read_text()).get("settings")
        if old != settings:
            raise ValueError(f"{out_dir} holds a set made with other settings; use a new --out or the same settings "
                             f"to resume")
    elif (out_dir / "manifest.csv").is_file():
        raise ValueError(f"{out_dir}/manifest.csv exists without run.json (another kind of run?); use a new --out")


def make_edits(ds: ImageSet, pipe, out_dir: str | Path, cfg: EditConfig, model_name: str | None = None,
               progress: bool = True) -> dict:
    """Edit `cfg.fraction` of `ds` into out_dir (images/<class>/<id>.png, manifest.csv, run.json); resumable."""
    out_dir = Path(out_dir)
    settings = _settings(ds, cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_out_dir(out_dir, settings)
    (out_dir / "run.json").write_text(json.dumps({"settings": settings}, indent=2))
    manifest = out_dir / "manifest.csv"
    rows = read_manifest(manifest)
    finished = {r["source_id"] for r in rows if r["status"] in ("kept", "invalid-final")}
    attempts = {r["source_id"]: int(r["attempt"]) + 1 for r in rows}
    chosen = choose_fraction(ds, cfg.fraction, cfg.selection_seed)
    queue = deque((int(i), attempts.get(ds.ids[i], 0)) for i in chosen if ds.ids[i] not in finished)
    bar = tqdm(total=len(chosen), initial=len(chosen) - len(queue), desc="edits", unit="img", disable=not progress)
    while queue:
        batch = [queue.popleft() for _ in range(min(cfg.batch_size, len(queue)))]
        new_rows, retry = _edit_batch(ds, batch, pipe, out_dir, cfg, model_name or cfg.model)
        _append_rows(manifest, new_rows)                     # after the images: a row never names a missing file
        queue.extendleft(reversed(retry))
        bar.update(len(batch) - len(retry))
    bar.close()
    summary = summarize(read_manifest(manifest), ds, {}, len(chosen))
    info = {"settings": settings, "summary": summary, "provenance": provenance(getattr(pipe, "device", None))}
    (out_dir / "run.json").write_text(json.dumps(info, indent=2, default=str))
    return info


def _edit_batch(ds: ImageSet, batch, pipe, out_dir: Path, cfg: EditConfig, model_name: str):
    prompts = [prompt_for(ds.ids[i], ds.classes[ds.labels[i]], cfg) for i, _ in batch]
    seeds = [derive_seed(cfg.run_seed, ds.ids[i], a) for i, a in batch]
    images, bad = edit_images(pipe, [ds.load(i) for i, _ in batch], prompts, seeds, cfg)
    rows, retry = [], []
    for j, (i, a) in enumerate(batch):
        label = ds.labels[i]
        status = "kept" if not bad[j] else ("invalid" if a + 1 < cfg.max_attempts else "invalid-final")
        rel = f"images/{class_dir(label, ds.classes[label])}/{safe_name(ds.ids[i])}.png" if status == "kept" else ""
        if rel:
            _save_png(images[j], out_dir / rel)
        if status == "invalid":
            retry.append((i, a + 1))
        rows.append({**dict.fromkeys(MANIFEST_FIELDS, ""), "source_id": ds.ids[i], "source_path": ds.path(i) or "",
                     "label": label, "class_name": ds.classes[label], "prompt": prompts[j], "seed": seeds[j],
                     "attempt": a, "status": status, "file": rel, "model": model_name, "steps": cfg.steps,
                     "guidance_scale": cfg.guidance_scale, "height": cfg.size, "width": cfg.size})
    return rows, retry


# ---------------------------------------------------------------- command line
def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m diffcore.edit", description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder for images/, manifest.csv, run.json")
    ap.add_argument("--profile", default="embedded", choices=sorted(PROFILES))
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--data-root")
    ap.add_argument("--few-shot", type=int)
    ap.add_argument("--fraction", type=float)
    ap.add_argument("--model", help=f"local InstructPix2Pix folder, or {STANDIN!r}")
    ap.add_argument("--prompts", help="comma-separated style prompts (default: the authors' nine)")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--guidance-scale", type=float)
    ap.add_argument("--image-guidance-scale", type=float)
    ap.add_argument("--size", type=int)
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--dtype")
    ap.add_argument("--seed", type=int, dest="run_seed")
    ap.add_argument("--max-attempts", type=int)
    ap.add_argument("--device", default="auto")
    return ap


def config_from_args(args) -> EditConfig:
    over = {k: getattr(args, k) for k in ("model", "steps", "guidance_scale", "image_guidance_scale", "size",
                                          "batch_size", "dtype", "run_seed", "max_attempts", "fraction")
            if getattr(args, k) is not None}
    if args.prompts:
        over["prompts"] = tuple(p.strip() for p in args.prompts.split(","))
    return replace(EditConfig(**PROFILES[args.profile]), **over)


def main(argv: list[str] | None = None) -> int:
    from .cli import open_dataset

    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        cfg = config_from_args(args)
        ds = open_dataset(args.dataset, args.data_root, "train", args.few_shot)
        device = resolve_device(args.device)
        pipe = load_editor(cfg, device, resolve_dtype(cfg.dtype, device))
        s = make_edits(ds, pipe, args.out, cfg)["summary"]
    except (ValueError, FileNotFoundError) as e:
        print(f"diffcore.edit: error: {e}", file=sys.stderr)
        return 2
    print(f"kept {s['kept']} edits of {s['attempts']} attempts -> {args.out}; train with "
          f"`diffcore train --method diffusemix --generated {args.out}`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
