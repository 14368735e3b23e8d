"""The generated set: for each chosen real image, generate -> filter -> keep or try again (paper Sec. 3).

On disk (`out_dir`):
    images/<label:04d>_<class>/<image>.png     one file per kept counterpart, ImageFolder-readable
    rejected/<label:04d>_<class>/<image>_a<attempt>.png   rejected attempts (if save_rejected)
    manifest.csv                               one row per attempt, kept or rejected, with its provenance
    run.json                                   config, tau per class, discard counts, provenance

Seeds depend only on (run seed, image id, attempt), so any image can be regenerated alone, and a run that was
stopped resumes from the manifest: finished sources are skipped, unfinished ones continue at their next attempt.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import re
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from . import prompts as P
from .data import ImageSet, choose_fraction
from .filter import ClipEncoder, FilterConfig, accept, class_pairs, class_thresholds, cosine, pairs_needed
from .generate import GenerateConfig, generate_images
from .runtime import derive_seed, provenance

MANIFEST_FIELDS = ["source_id", "source_path", "label", "class_name", "prompt", "negative_prompt", "seed",
                   "attempt", "similarity", "tau", "status", "file", "model", "steps", "guidance_scale",
                   "height", "width"]
STATUSES = ("kept", "rejected", "rejected-final")  # rejected-final: the retry cap was reached, no counterpart


@dataclass(frozen=True)
class CounterpartConfig:
    fraction: float = 1.0          # share of training images that get a counterpart: -50 -> 0.5, -100 -> 1.0
    selection_seed: int = 0        # which images, when fraction < 1
    save_rejected: bool = True     # keep rejected attempts on disk (Fig. 3: kept vs rejected); off for huge runs

    def __post_init__(self):
        if not (0.0 < self.fraction <= 1.0):
            raise ValueError(f"fraction={self.fraction}: expected a value in (0, 1], e.g. 0.5 for DiffCoRe-Mix-50")


def safe_name(text: str, limit: int = 60) -> str:
    """A file-system-safe, collision-free name: readable part plus a hash of the exact text."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")[:limit] or "x"
    return f"{readable}-{hashlib.sha1(text.encode('utf-8')).hexdigest()[:8]}"


def class_dir(label: int, name: str) -> str:
    return f"{label:04d}_{re.sub(r'[^A-Za-z0-9._-]+', '_', name).strip('._')[:60] or 'class'}"


def _save_png(array: np.ndarray, path: Path) -> None:
    """Atomic write: a crash never leaves a half-written file under the final name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        Image.fromarray(array).save(f, format="PNG")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_manifest(path: Path) -> list[dict]:
    if not Path(path).is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _append_rows(path: Path, rows: list[dict]) -> None:
    new = not path.is_file()
    with open(path, "a", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=MANIFEST_FIELDS)
        if new:
            w.writeheader()
        w.writerows(rows)
        f.flush()
        os.fsync(f.fileno())


def _resume_state(rows: list[dict]) -> tuple[set[str], dict[str, int]]:
    """Sources already finished (kept or capped) and the next attempt of the others."""
    done, next_attempt = set(), {}
    for r in rows:
        if r["status"] in ("kept", "rejected-final"):
            done.add(r["source_id"])
        next_attempt[r["source_id"]] = max(next_attempt.get(r["source_id"], 0), int(r["attempt"]) + 1)
    return done, next_attempt


def _check_classes(ds: ImageSet) -> None:
    counts = ds.class_counts()
    empty = [ds.classes[k] for k in range(len(ds.classes)) if counts[k] == 0]
    if empty:
        raise ValueError(f"{ds.name}: class(es) {empty[:5]} have no images; remove them or add images")


def _settings(ds, prompt_cfg, gen_cfg, filter_cfg, cp_cfg) -> dict:
    return {"dataset": ds.name, "num_images": len(ds), "prompt": asdict(prompt_cfg), "generate": asdict(gen_cfg),
            "filter": asdict(filter_cfg), "counterparts": asdict(cp_cfg)}


def _check_resume_settings(out_dir: Path, settings: dict) -> None:
    info = out_dir / "run.json"
    if not info.is_file():
        return
    old = json.loads(info.read_text())["settings"]
    if old != settings:
        diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        raise ValueError(f"{out_dir} holds a run with other settings ({', '.join(diff)} differ); "
                         f"use a new --out folder or the same settings to resume")


def thresholds(ds: ImageSet, clip: ClipEncoder, cfg: FilterConfig) -> dict[int, float]:
    """tau_k for every class (Eq. 5), embedding only the real images that appear in a sampled pair."""
    pairs = class_pairs(ds.labels, len(ds.classes), cfg.z_pairs, cfg.tau_seed)
    needed = pairs_needed(pairs)
    emb = clip.embed([ds.load(int(i)) for i in needed])      # (n_needed, D)
    row = {int(i): r for r, i in enumerate(needed)}
    return class_thresholds(pairs, lambda idx: emb[[row[int(i)] for i in idx]])


def make_counterparts(ds: ImageSet, pipe, clip: ClipEncoder, out_dir: str | Path, prompt_cfg: P.PromptConfig,
                      gen_cfg: GenerateConfig, filter_cfg: FilterConfig, cp_cfg: CounterpartConfig,
                      model_name: str | None = None, progress: bool = True) -> dict:
    """Generate, filter and write counterparts for `cp_cfg.fraction` of `ds`; returns the run summary."""
    _check_classes(ds)
    out_dir = Path(out_dir)
    settings = _settings(ds, prompt_cfg, gen_cfg, filter_cfg, cp_cfg)
    _check_resume_settings(out_dir, settings)
    out_dir.mkdir(parents=True, exist_ok=True)
    taus = thresholds(ds, clip, filter_cfg)
    chosen = choose_fraction(ds, cp_cfg.fraction, cp_cfg.selection_seed)
    manifest = out_dir / "manifest.csv"
    done, next_attempt = _resume_state(read_manifest(manifest))
    queue = deque((int(i), next_attempt.get(ds.ids[i], 0)) for i in chosen if ds.ids[i] not in done)
    neg = P.negative_prompt(prompt_cfg)
    bar = tqdm(total=len(chosen), initial=len(chosen) - len(queue), desc="counterparts", unit="img",
               disable=not progress)
    src_cache: dict[int, torch.Tensor] = {}
    while queue:
        batch = [queue.popleft() for _ in range(min(gen_cfg.batch_size, len(queue)))]
        rows, retry = _run_batch(ds, batch, pipe, clip, taus, src_cache, out_dir, prompt_cfg, neg, gen_cfg,
                                 filter_cfg, cp_cfg, model_name or gen_cfg.model)
        _append_rows(manifest, rows)
        queue.extendleft(reversed(retry))  # rejected images are regenerated first, inside the next batch
        bar.update(len(batch) - len(retry))
    bar.close()
    summary = summarize(read_manifest(manifest), ds, taus, len(chosen))
    info = {"settings": settings, "tau": {ds.classes[k]: t for k, t in taus.items()}, "summary": summary,
            "provenance": provenance(getattr(pipe, "device", None))}
    (out_dir / "run.json").write_text(json.dumps(info, indent=2))
    return info


def _run_batch(ds, batch, pipe, clip, taus, src_cache, out_dir, prompt_cfg, neg, gen_cfg, filter_cfg, cp_cfg,
               model_name) -> tuple[list[dict], list[tuple[int, int]]]:
    """One pipeline call over `batch` = [(dataset index, attempt)]: rows for the manifest, and what to retry."""
    labels = [ds.labels[i] for i, _ in batch]
    texts = [P.contextual_prompt(ds.classes[k], prompt_cfg) for k in labels]
    seeds = [derive_seed(gen_cfg.run_seed, ds.ids[i], a) for i, a in batch]
    images = generate_images(pipe, texts, [neg] * len(batch), seeds, gen_cfg)          # (b, H, W, 3) uint8
    for i, _ in batch:
        if i not in src_cache:
            src_cache[i] = clip.embed([ds.load(i)])[0]
    gen_emb = clip.embed([Image.fromarray(im) for im in images])                        # (b, D)
    src_emb = torch.stack([src_cache[i] for i, _ in batch])                             # (b, D)
    sims = cosine(src_emb, gen_emb)                                                     # (b,)
    tau = torch.tensor([taus[k] for k in labels])
    keep = accept(sims, tau)
    rows, retry = [], []
    for j, (i, a) in enumerate(batch):
        cdir, stem = class_dir(labels[j], ds.classes[labels[j]]), safe_name(ds.ids[i])
        final = not keep[j] and a + 1 >= filter_cfg.max_attempts
        status = "kept" if keep[j] else ("rejected-final" if final else "rejected")
        rel = ""
        if keep[j] or cp_cfg.save_rejected:
            rel = f"images/{cdir}/{stem}.png" if keep[j] else f"rejected/{cdir}/{stem}_a{a}.png"
            _save_png(images[j], out_dir / rel)
        if keep[j]:
            src_cache.pop(i, None)
        elif not final:
            retry.append((i, a + 1))
        else:
            src_cache.pop(i, None)
        rows.append({"source_id": ds.ids[i], "source_path": ds.path(i) or "", "label": labels[j],
                     "class_name": ds.classes[labels[j]], "prompt": texts[j], "negative_prompt": neg,
                     "seed": seeds[j], "attempt": a, "similarity": f"{float(sims[j]):.6f}",
                     "tau": f"{float(tau[j]):.6f}", "status": status, "file": rel, "model": model_name,
                     "steps": gen_cfg.steps, "guidance_scale": gen_cfg.guidance_scale,
                     "height": gen_cfg.size, "width": gen_cfg.size})
    return rows, retry


def summarize(rows: list[dict], ds: ImageSet, taus: dict[int, float], n_chosen: int) -> dict:
    """Discard rate overall and per class (Fig. 7 reports ~10-11% on CUB)."""
    per_class = {}
    for k, name in enumerate(ds.classes):
        r = [x for x in rows if int(x["label"]) == k]
        kept = sum(x["status"] == "kept" for x in r)
        per_class[name] = {"attempts": len(r), "kept": kept, "discarded": len(r) - kept,
                           "no_counterpart": sum(x["status"] == "rejected-final" for x in r),
                           "discard_rate": (len(r) - kept) / len(r) if r else 0.0, "tau": taus.get(k)}
    attempts = len(rows)
    kept = sum(x["status"] == "kept" for x in rows)
    return {"sources": n_chosen, "attempts": attempts, "kept": kept, "discarded": attempts - kept,
            "discard_rate": (attempts - kept) / attempts if attempts else 0.0,
            "no_counterpart": sum(x["status"] == "rejected-final" for x in rows), "per_class": per_class}


def kept_counterparts(out_dir: str | Path) -> dict[str, Path]:
    """source id -> path of its kept generated image, read from the manifest (only files that exist)."""
    out_dir = Path(out_dir)
    rows = read_manifest(out_dir / "manifest.csv")
    if not rows:
        raise FileNotFoundError(f"{out_dir}/manifest.csv: no generated set here; run `diffcore generate` first")
    return {r["source_id"]: out_dir / r["file"] for r in rows
            if r["status"] == "kept" and (out_dir / r["file"]).is_file()}
