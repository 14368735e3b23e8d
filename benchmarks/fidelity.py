"""The kit's comparison methods against the authors' code, on identical inputs (benchmarks/fidelity.md).

The official repositories are cloned OUTSIDE this repository and imported from there by path; nothing of theirs is
copied here. Each comparison feeds both sides the same images, saliency maps and random draws (the kit draws them
from a seeded torch.Generator and the official function is called with them, or its own draw is replaced by them
for the duration of the call) and measures how far the outputs are apart.

    python benchmarks/fidelity.py --official /path/to/clones --out benchmarks/fidelity-cpu-2026-12-01.json
    python benchmarks/fidelity.py --report benchmarks/fidelity-cpu-2026-12-01.json      # the page's tables

`--official` holds the clones, each under its repository's name: PuzzleMix (snu-mllab/PuzzleMix), Co-Mixup
(snu-mllab/Co-Mixup), SaliencyMix (afm-shahab-uddin/SaliencyMix), GuidedMixup (3neutronstar/GuidedMixup),
diffuseMix (khawar-islam/diffuseMix), pixmix (andyzoujm/pixmix); their commits are recorded in the JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from diffcore.data import digits
from diffcore.engine.runtime import provenance
from diffcore.methods import Batch, build_method
from diffcore.methods import common as U
from diffcore.methods import graphcut as GC
from diffcore.methods import saliency_guided as S
from diffcore.methods.fractals import fractal
from diffcore.models import DigitsCNN

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet normalisation, as their ImageNet code
REPOS = {
    "puzzlemix": "PuzzleMix",
    "comixup": "Co-Mixup",
    "saliencymix": "SaliencyMix",
    "guided-ap": "GuidedMixup",
    "diffusemix": "diffuseMix",
    "pixmix": "pixmix",
}


# ---------------------------------------------------------------- the official code, by path
def load(path: Path, name: str, extra_path: Path | None = None):
    """Import the file at `path` as module `name` (their files share names such as mixup.py, so never by name)."""
    if extra_path is not None and str(extra_path) not in sys.path:
        sys.path.insert(0, str(extra_path))  # their own `from match import ...`
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def cpu_name() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what platform knows."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def commit(repo: Path) -> str:
    return subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()


@contextlib.contextmanager
def dirichlet_returns(sample: torch.Tensor):
    """torch.distributions.Dirichlet(...).sample() gives `sample` while the block runs (Co-Mixup draws its prior so)."""
    real = torch.distributions.dirichlet.Dirichlet

    class Fixed:
        def __init__(self, *a, **k):
            pass

        def sample(self):
            return sample.clone()

    torch.distributions.dirichlet.Dirichlet = Fixed
    try:
        yield
    finally:
        torch.distributions.dirichlet.Dirichlet = real


# ---------------------------------------------------------------- identical inputs
def images(kind: str, size: int, b: int, seed: int) -> torch.Tensor:
    """(b, 3, size, size) pixels in [0, 1]: scikit-learn's handwritten digits (an object on a plain ground) or the
    kit's procedural fractals (colour, texture everywhere)."""
    g = torch.Generator().manual_seed(seed)
    if kind == "digits":
        ds = digits("train", size)
        idx = torch.randperm(len(ds), generator=g)[:b].tolist()
        return torch.stack([torch.from_numpy(np.array(ds.load(i))).permute(2, 0, 1).float() / 255 for i in idx])
    return torch.stack([fractal(int(i), size, seed=1000 + seed) for i in torch.randint(0, 10**6, (b,), generator=g)])


def gradient_saliency(x: torch.Tensor, seed: int) -> torch.Tensor:
    """(B, H, W) sqrt(mean_c (dCE/dx)^2) of a seeded, randomly initialised DigitsCNN (the kit's and the authors'
    input-gradient saliency; the network's weights only shape the map)."""
    torch.manual_seed(seed)
    net = DigitsCNN(10)
    y = torch.arange(len(x)) % 10
    return U.input_gradient_saliency(net, x, y, keep_graph=False)[0]


def object_saliency(b: int, size: int, seed: int) -> torch.Tensor:
    """(B, H, W) object-like saliency: one or two Gaussian bumps (sigma = size / 10) at random places, over a 1%
    floor, the concentrated maps a trained network gives (a random network's input gradient is spread out)."""
    g = torch.Generator().manual_seed(10_000 + seed)
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    sal = torch.full((b, size, size), 0.01)
    for i in range(b):
        for _ in range(int(torch.randint(1, 3, (1,), generator=g))):
            cy, cx = (torch.rand(2, generator=g) * size).tolist()
            sal[i] += torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (size / 10) ** 2))
    return sal


def saliency(kind: str, x: torch.Tensor, seed: int) -> torch.Tensor:
    return gradient_saliency(x, seed) if kind == "gradient" else object_saliency(len(x), x.shape[-1], seed)


def normalise(p: torch.Tensor) -> torch.Tensor:
    return (p - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def settings(sizes, kinds):
    return [(k, s) for s in sizes for k in kinds]


def timed(fn, *args, **kw):
    t = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t


# ---------------------------------------------------------------- PuzzleMix
def puzzle_energy(graph: S.PuzzleGraph, labels: torch.Tensor) -> torch.Tensor:
    """(B,) PuzzleMix's float energy of labelings (B, n, n), in float64 (the one both solvers minimise)."""
    unary, pair = graph.energy()
    return S.grid_energy(labels, unary.double(), graph.w_rows.double(), graph.w_cols.double(), pair.double())


def puzzlemix(root: Path, trials: int, b: int, sizes, kinds) -> list[dict]:
    """mixup.py mixup_graph (graph cut + transport) against PuzzleMix.mix_with, and the ICM path's gap."""
    off = load(root / "PuzzleMix" / "mixup.py", "official_puzzlemix_mixup")
    masks = []
    real_gc = off.graphcut_multi
    off.graphcut_multi = lambda *a, **k: masks.append(real_gc(*a, **k)) or masks[-1]  # record their labels
    rows = []
    for kind, size in settings(sizes, kinds):
        m_gc, m_icm = build_method("puzzlemix"), build_method("puzzlemix", solver="icm")
        acc = {k: [] for k in ("cells", "out", "w", "same", "e_gap", "worse", "icm_cells", "icm_w", "n")}
        t = {"official": [], "graphcut": [], "icm": []}
        for trial in range(trials):
            p = images("digits", size, b, seed=trial)
            x = normalise(p)
            sal = saliency(kind, x, seed=trial)
            batch = Batch(x, torch.arange(b), b, MEAN, STD)  # a class per image: weights per source
            (out_k, tgt_k), dt = timed(m_gc.mix_with, batch, sal, torch.Generator().manual_seed(trial))
            t["graphcut"].append(dt)
            g = torch.Generator().manual_seed(trial)  # the kit's draws again: blocks, permutation, lam
            choices = U.block_choices(size, size)
            n = choices[int(U.randint(0, len(choices), 1, g, "cpu")[0])]
            perm = U.permutation(b, g, "cpu")
            lam = float(U.beta(1.0, 1.0, 1, g, "cpu")[0])
            masks.clear()
            (out_o, ratio_o), dt = timed(
                off.mixup_graph,
                x.clone(),
                sal,
                perm,
                block_num=n,
                alpha=lam,
                beta=1.2,
                gamma=0.5,
                eta=0.2,
                neigh_size=m_gc.neighbourhood(size),
                n_labels=3,
                mean=torch.tensor(MEAN).view(1, 3, 1, 1),
                std=torch.tensor(STD).view(1, 3, 1, 1),
                transport=True,
                t_eps=0.8,
                t_size=-1,
                device="cpu",
            )
            t["official"].append(dt)
            lab_o = torch.from_numpy(np.round((1 - np.stack(masks)) * 2)).long()  # (B, n, n) their labels
            graph = S.puzzle_graph(p, sal, perm, n, lam, 1.2, 0.5, 0.2, m_gc.neighbourhood(size), 3)
            lab_k = S.puzzle_labels(graph, "graphcut", 10)
            lab_i, dt = timed(S.puzzle_labels, graph, "icm", 10)
            t["icm"].append(dt)
            e_o, e_i = puzzle_energy(graph, lab_o), puzzle_energy(graph, lab_i)
            w_i = m_icm.mix_with(batch, sal, torch.Generator().manual_seed(trial))[1]
            acc["cells"].append(float((lab_k == lab_o).float().mean()))
            acc["out"].append(float((out_k - out_o).abs().max()))
            acc["w"].append(float((tgt_k - U.pair_targets(batch.one_hot(), perm, ratio_o)).abs().max()))
            acc["same"].append(float(torch.equal(lab_k, lab_o)))
            acc["e_gap"] += ((e_i - e_o) / e_o.abs()).tolist()
            acc["worse"] += (e_i > e_o + 1e-9).float().tolist()
            acc["icm_cells"].append(float((lab_i == lab_o).float().mean()))
            acc["icm_w"] += (w_i - tgt_k).abs().sum(1).div(2).tolist()  # total variation between label weights
            acc["n"].append(n)
        rows.append(
            {
                "saliency": kind,
                "size": size,
                "batches": trials,
                "batch": b,
                "neigh_size": m_gc.neighbourhood(size),
                "graphcut_cells_equal": float(np.mean(acc["cells"])),
                "graphcut_batches_identical": float(np.mean(acc["same"])),
                "graphcut_max_abs_output_diff": float(np.max(acc["out"])),
                "graphcut_max_abs_weight_diff": float(np.max(acc["w"])),
                "icm_energy_gap_mean": float(np.mean(acc["e_gap"])),
                "icm_energy_gap_max": float(np.max(acc["e_gap"])),
                "icm_worse_share": float(np.mean(acc["worse"])),
                "icm_cells_equal": float(np.mean(acc["icm_cells"])),
                "icm_weight_tv_mean": float(np.mean(acc["icm_w"])),
                "ms_per_batch": {k: 1e3 * float(np.median(v)) for k, v in t.items()},
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    off.graphcut_multi = real_gc
    return rows


# ---------------------------------------------------------------- Co-Mixup
def comixup(root: Path, trials: int, b: int, sizes, kinds) -> list[dict]:
    """match.get_onehot_matrix + mix_input against CoMixup's graph cut and ICM paths, one partition of `b` inputs
    per batch with the kit's prior and initial labels."""
    match = load(root / "Co-Mixup" / "match.py", "official_comixup_match")
    m_gc, m_icm = build_method("comixup", part=b), build_method("comixup", part=b, solver="icm")
    size_ = m_gc.block_num**2
    rows = []
    for kind, size in settings(sizes, kinds):
        acc = {k: [] for k in ("same", "mask", "out", "w", "gap", "worse", "cells", "icm_w", "blend", "nomix")}
        t = {"official": [], "graphcut": [], "icm": []}
        for trial in range(trials):
            p = images("digits", size, b, seed=trial)
            x = normalise(p)
            sal = saliency(kind, x, seed=trial)
            onehot = F.one_hot(torch.arange(b), b).float()
            (prob,) = m_gc.problems(sal, torch.Generator().manual_seed(trial))
            sal_norm = prob.sal_blocks[0] / prob.sal_blocks[0].reshape(b, -1).sum(1).reshape(b, 1, 1)
            with dirichlet_returns(prob.prior[0]):
                mask_o, dt = timed(
                    match.get_onehot_matrix,
                    (-sal_norm).clone(),
                    prob.compat[0],
                    b,
                    idx=prob.init[0].clone(),
                    beta=m_gc.beta,
                    gamma=m_gc.gamma,
                    eta=m_gc.eta,
                    mixup_alpha=m_gc.alpha,
                    thres=m_gc.thres,
                    thres_type="hard",
                    set_resolve=True,
                    niter=m_gc.niter,
                    device="cpu",
                )
            t["official"].append(dt)
            out_o, tgt_o = match.mix_input(mask_o, x, onehot)
            mask_k, dt = timed(m_gc.masks, prob)
            t["graphcut"].append(dt)
            mask_i, dt = timed(m_icm.masks, prob)
            t["icm"].append(dt)
            mask_k, mask_i = mask_k[0], mask_i[0]
            out_k, tgt_k = S.comixup_mix(mask_k, x, onehot)
            _, tgt_i = S.comixup_mix(mask_i, x, onehot)
            cost = GC.comixup_cost(prob.sal_blocks[0], prob.prior[0], m_gc.eta)
            e_o, e_i = (
                float(GC.partition_objective(cost, mk, m_gc.beta / size_, m_gc.gamma / size_))
                for mk in (mask_o, mask_i)
            )
            acc["same"].append(float(torch.equal(mask_k, mask_o)))
            acc["mask"].append(float((mask_k - mask_o).abs().max()))
            acc["out"].append(float((out_k - out_o).abs().max()))
            acc["w"].append(float((tgt_k - tgt_o).abs().max()))
            acc["gap"].append((e_i - e_o) / abs(e_o))
            acc["worse"].append(float(e_i > e_o + 1e-7))
            acc["cells"].append(float((mask_i.argmax(-1) == mask_o.argmax(-1)).float().mean()))
            acc["icm_w"] += (tgt_i - tgt_o).abs().sum(1).div(2).tolist()
            acc["blend"].append(float(((mask_o > 0) & (mask_o < 1)).any(-1).float().mean()))
            acc["nomix"].append(float((tgt_o.max(1).values == 1).float().mean()))
        rows.append(
            {
                "saliency": kind,
                "size": size,
                "batches": trials,
                "partition": b,
                "graphcut_masks_identical": float(np.mean(acc["same"])),
                "graphcut_max_abs_mask_diff": float(np.max(acc["mask"])),
                "graphcut_max_abs_output_diff": float(np.max(acc["out"])),
                "graphcut_max_abs_weight_diff": float(np.max(acc["w"])),
                "official_blended_cells": float(np.mean(acc["blend"])),
                "official_unmixed_outputs": float(np.mean(acc["nomix"])),
                "icm_objective_gap_mean": float(np.mean(acc["gap"])),
                "icm_objective_gap_max": float(np.max(acc["gap"])),
                "icm_worse_share": float(np.mean(acc["worse"])),
                "icm_cells_equal": float(np.mean(acc["cells"])),
                "icm_weight_tv_mean": float(np.mean(acc["icm_w"])),
                "ms_per_batch": {k: 1e3 * float(np.median(v)) for k, v in t.items()},
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


# ---------------------------------------------------------------- SaliencyMix
def function_from(path: Path, name: str, namespace: dict):
    """One top-level function of a script, without running the script (their train.py parses arguments and trains
    at import): its source, compiled in `namespace`."""
    import ast

    tree = ast.parse(path.read_text())
    (node,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name]
    exec(compile(ast.Module([node], []), str(path), "exec"), namespace)
    return namespace[name]


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def peak_distance(a, b) -> float:
    pa, pb = np.unravel_index(np.argmax(a), a.shape), np.unravel_index(np.argmax(b), b.shape)
    return float(np.hypot(pa[0] - pb[0], pa[1] - pb[1]))


def saliencymix(root: Path, trials: int, b: int, sizes, kinds) -> list[dict]:
    """SaliencyMix-ImageNet/train.py saliency_bbox (one box per batch, from the normalised float tensor) against the
    kit's 'opencv-float' path; how far the authors' float-input map is from OpenCV's uint8 map (the kit's default);
    and the kit's torch rewrite of OpenCV's algorithm against cv2's uint8 map."""
    import cv2

    if not hasattr(np, "int"):
        np.int = int  # their code calls np.int, gone since numpy 1.24; pyGCO's import restores it the same way
    bbox = function_from(
        root / "SaliencyMix" / "SaliencyMix-ImageNet" / "train.py", "saliency_bbox", {"np": np, "cv2": cv2}
    )
    rows = []
    for kind, size in settings(sizes, kinds):
        acc = {k: [] for k in ("same", "r_float", "d_float", "px_torch", "peak_torch")}
        t = {"official": [], "opencv": [], "torch": []}
        for trial in range(trials):
            p = images(kind, size, b, seed=trial)
            x = normalise(p)
            batch = Batch(x, torch.arange(b), b, MEAN, STD)
            m_float = build_method("saliencymix", saliency="opencv-float", per_sample=False)
            g = torch.Generator().manual_seed(trial)
            plan = m_float.plan(batch, g)
            g = torch.Generator().manual_seed(trial)
            perm, lam = U.permutation(b, g, "cpu"), float(U.beta(1.0, 1.0, 1, g, "cpu")[0])
            box, dt = timed(bbox, x[perm[0]], lam)
            t["official"].append(dt)
            acc["same"].append(float(tuple(int(v) for v in box) == tuple(plan.boxes[0].tolist())))
            u8, dt = timed(build_method("saliencymix").saliency_map, batch, x)
            t["opencv"].append(dt)
            fl = build_method("saliencymix", saliency="opencv-float").saliency_map(batch, x)
            tc, dt = timed(build_method("saliencymix", saliency="torch").saliency_map, batch, x)
            t["torch"].append(dt)
            for i in range(b):
                acc["r_float"].append(pearson(fl[i].numpy(), u8[i].numpy()))
                acc["d_float"].append(peak_distance(fl[i].numpy(), u8[i].numpy()))
                acc["px_torch"].append(float((tc[i] == u8[i]).float().mean()))
                acc["peak_torch"].append(float(peak_distance(tc[i].numpy(), u8[i].numpy()) == 0))
        rows.append(
            {
                "images": kind,
                "size": size,
                "batches": trials,
                "batch": b,
                "float_boxes_identical": float(np.mean(acc["same"])),
                "float_vs_uint8_r": float(np.nanmean(acc["r_float"])),
                "float_vs_uint8_peak_px": float(np.mean(acc["d_float"])),
                "torch_pixels_equal": float(np.mean(acc["px_torch"])),
                "torch_peaks_equal": float(np.mean(acc["peak_torch"])),
                "ms_per_batch": {
                    "official (1 map)": 1e3 * float(np.median(t["official"])),
                    "opencv uint8 (a map per image)": 1e3 * float(np.median(t["opencv"])),
                    "torch (a map per image)": 1e3 * float(np.median(t["torch"])),
                },
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


# ---------------------------------------------------------------- Guided-AP
def guided_ap(root: Path, trials: int, b: int, sizes, kinds) -> list[dict]:
    """FGVC/Implementor/guidedmixup.py (GuidedMixupLearner.pairing and _saliency_normalization, the torchvision
    GaussianBlur it builds, and its two-line mask) against GuidedAP.mix_with; and the root mixup.py `pairing` the
    CIFAR / Tiny-ImageNet commands run, which under --condition greedy is called with 'greedy_c'."""
    import types

    import torchvision.transforms as T

    for name in ("torch.utils.tensorboard", "wandb"):  # their Baseline imports these loggers; no function used here
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["torch.utils.tensorboard"].SummaryWriter = object
    sys.path.insert(0, str(root / "GuidedMixup" / "FGVC"))
    from Implementor.guidedmixup import GuidedMixupLearner as L  # noqa: E402  (their FGVC package, by path)

    cifar = load(root / "GuidedMixup" / "mixup.py", "official_guidedmixup_root", root / "GuidedMixup")
    blur = T.GaussianBlur((7, 7), sigma=(3.0, 3.0))
    rows = []
    for kind, size in settings(sizes, kinds):
        acc = {k: [] for k in ("pair", "out", "w", "cifar_greedy")}
        for trial in range(trials):
            p = images("digits", size, b, seed=trial)
            x = normalise(p)
            sal = saliency(kind, x, seed=trial)
            out_k, tgt_k = build_method("guided-ap", prob=1.0).mix_with(
                Batch(x, torch.arange(b), b, MEAN, STD), sal, torch.Generator().manual_seed(trial)
            )
            fake = types.SimpleNamespace(
                configs={"condition": "greedy", "m_part": b, "batch_size": b, "distance_metric": "l2"}
            )
            sc = L._saliency_normalization(fake, blur(sal.clone()), "sumto1")
            idx = torch.as_tensor(np.asarray(L.pairing(fake, sc.detach())), dtype=torch.long)
            sc_b = sc[idx]
            mask_a, mask_b = sc / (sc + sc_b), sc_b / (sc + sc_b)
            out_o = mask_a[:, None] * x + mask_b[:, None] * x[idx]
            tgt_o = U.pair_targets(F.one_hot(torch.arange(b), b).float(), idx, mask_a.mean((1, 2)), mask_b.mean((1, 2)))
            perm_k = S.greedy_cycle_pairing(torch.cdist(sc.flatten(1), sc.flatten(1)))
            acc["pair"].append(float(torch.equal(perm_k, idx)))
            acc["out"].append(float((out_k - out_o).abs().max()))
            acc["w"].append(float((tgt_k - tgt_o).abs().max()))
            np.random.seed(trial)
            cifar_idx = torch.as_tensor(np.asarray(cifar.pairing(sc.detach(), condition="greedy_c")))
            acc["cifar_greedy"].append(float(torch.equal(cifar_idx, idx)))
        rows.append(
            {
                "saliency": kind,
                "size": size,
                "batches": trials,
                "batch": b,
                "pairing_identical": float(np.mean(acc["pair"])),
                "max_abs_output_diff": float(np.max(acc["out"])),
                "max_abs_weight_diff": float(np.max(acc["w"])),
                "root_mixup_greedy_equals_fgvc_greedy": float(np.mean(acc["cifar_greedy"])),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


# ---------------------------------------------------------------- DiffuseMix
def diffusemix(root: Path, trials: int, b: int, sizes, kinds) -> list[dict]:
    """augment/utils.py Utils.combine_images + blend_images_with_resize against DiffuseMix.pair_image's
    concat_and_blend: the same real image, edit, fractal and orientation (their random.choice is answered with the
    kit's draw), at their two edit sizes (512 px until 2024-07-08, 256 px at HEAD)."""
    from diffcore.methods.diffusemix import concat_and_blend

    utils = load(root / "diffuseMix" / "augment" / "utils.py", "official_diffusemix_utils")
    m = build_method("diffusemix")
    rows = []
    for kind, size in settings([s for s in (256, 512)], kinds):
        same, worst = [], 0
        for trial in range(trials):
            p = images(kind, 64, 2, seed=trial)  # a real image, and a stand-in edit at the edit size
            real = Image.fromarray((p[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).resize((48, 40))
            edit = Image.fromarray((p[1].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).resize((size, size))
            vertical, k = m.draws(f"trial-{trial}.png")
            frac = m.fractal_image(k).resize((size, size))  # their fractals: loaded and resized to the edit size
            ours = np.asarray(concat_and_blend(real, edit, frac, vertical, 20, 0.2))
            choice, utils.random.choice = (
                utils.random.choice,
                lambda opts, v=vertical: "vertical" if v else "horizontal",
            )
            try:
                combined = utils.Utils.combine_images(real.convert("RGB").resize((size, size)), edit)
            finally:
                utils.random.choice = choice
            theirs = np.asarray(utils.Utils.blend_images_with_resize(combined, frac))
            same.append(float(np.array_equal(ours, theirs)))
            worst = max(worst, int(np.abs(ours.astype(int) - theirs).max()))
        rows.append(
            {
                "images": kind,
                "size": size,
                "pairs": trials,
                "bytes_identical": float(np.mean(same)),
                "max_abs_diff": worst,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


# ---------------------------------------------------------------- PixMix
def image_stats(p: torch.Tensor) -> dict:
    """Per-image statistics of (N, 3, H, W) pixels in [0, 1]: mean, std, lit share (max channel > 0.05) and
    colourfulness (Hasler & Suesstrunk 2003), each as mean and std over the images."""
    rg, yb = p[:, 0] - p[:, 1], 0.5 * (p[:, 0] + p[:, 1]) - p[:, 2]
    colour = (rg.flatten(1).std(1) ** 2 + yb.flatten(1).std(1) ** 2).sqrt() + 0.3 * (
        rg.flatten(1).mean(1) ** 2 + yb.flatten(1).mean(1) ** 2
    ).sqrt()
    per = {
        "mean": p.flatten(1).mean(1),
        "std": p.flatten(1).std(1),
        "lit": (p.amax(1) > 0.05).flatten(1).float().mean(1),
        "colourfulness": colour,
    }
    return {k: [float(v.mean()), float(v.std())] for k, v in per.items()}


def pixmix(root: Path, trials: int, b: int, sizes, kinds) -> list[dict]:
    """cifar.py pixmix / augment_input (their PIL operations, np.random) against PixMix.pixmix (batched torch
    operations), both mixing with the same pictures (the kit's first 100 procedural fractals) at CIFAR's 32 px: the
    random streams differ, so the comparison is of distributions (per-image statistics over trials x batch images),
    not image by image. Then the procedural mixing set itself at 100 and 1,000 fractals."""
    import types

    import torchvision.transforms as T

    from diffcore.methods.fractals import fractal_bank

    putils = load(root / "pixmix" / "pixmix_utils.py", "official_pixmix_utils")
    ns = {"np": np, "torch": torch, "utils": putils}
    ns["args"] = types.SimpleNamespace(k=4, beta=3, aug_severity=3, all_ops=False)  # cifar.py defaults
    cifar = root / "pixmix" / "cifar.py"
    function_from(cifar, "augment_input", ns)
    official = function_from(cifar, "pixmix", ns)
    bank = fractal_bank(100, 32, 0)  # (100, 3, 32, 32): the kit's default mixing set
    pics = [Image.fromarray((f.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)) for f in bank]
    rows = []
    for kind in kinds:
        p = torch.cat([images(kind, 32, b, seed=t) for t in range(trials)])  # (N, 3, 32, 32)
        np.random.seed(0)
        theirs = torch.stack(
            [
                official(
                    Image.fromarray((x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)),
                    pics[np.random.randint(len(pics))],
                    {"tensorize": T.ToTensor(), "normalize": lambda t: t},
                )
                for x in p
            ]
        )
        ours = build_method("pixmix").pixmix(p, torch.Generator().manual_seed(0))
        rows.append(
            {
                "images": kind,
                "size": 32,
                "images_mixed": len(p),
                "input": image_stats(p),
                "official": image_stats(theirs),
                "kit": image_stats(ours),
                "mean_abs_change": {
                    "official": float((theirs - p).abs().mean()),
                    "kit": float((ours - p).abs().mean()),
                },
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    sets = {}
    for n in (100, 1000):
        f = fractal_bank(n, 32, 0)
        d = torch.cdist(f.flatten(1), f.flatten(1))
        d.fill_diagonal_(float("inf"))
        sets[n] = {**image_stats(f), "nearest_neighbour_l2": float(d.min(1).values.mean())}
    rows.append({"procedural_set": sets})
    print(json.dumps(rows[-1]), flush=True)
    return rows


COMPARISONS = {
    "puzzlemix": puzzlemix,
    "comixup": comixup,
    "saliencymix": saliencymix,
    "guided-ap": guided_ap,
    "diffusemix": diffusemix,
    "pixmix": pixmix,
}
GRAPH_CUTS = ("puzzlemix", "comixup", "guided-ap")  # rows by saliency kind (images: digits); the others by images


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--official", type=Path, help="folder holding the official clones (see the module docstring)")
    ap.add_argument("--methods", nargs="+", default=list(COMPARISONS), choices=list(COMPARISONS))
    ap.add_argument("--trials", type=int, default=20, help="batches per setting")
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 224])
    ap.add_argument("--images", nargs="+", default=["digits", "fractals"], choices=["digits", "fractals"])
    ap.add_argument("--saliency", nargs="+", default=["gradient", "object"], choices=["gradient", "object"])
    ap.add_argument("--out", type=Path, help="JSON file for the results and their provenance")
    ap.add_argument("--report", type=Path, help="print the page's tables from a stored JSON file and exit")
    a = ap.parse_args(argv)
    if a.report:
        print(report(json.loads(a.report.read_text())))
        return 0
    if a.official is None:
        ap.error("--official is required (the folder holding the official clones)")
    torch.set_num_threads(1)  # their graph cuts are single-threaded; so is every timing here
    from importlib.metadata import version

    run = {
        "provenance": {
            **provenance(),
            "cpu": cpu_name(),
            "solvers": {p: version(p) for p in ("gco-wrapper", "opencv-contrib-python-headless")},
        },
        "official": {m: {"repo": REPOS[m], "commit": commit(a.official / REPOS[m])} for m in a.methods},
        "results": {},
    }
    batch = {"puzzlemix": 16, "comixup": 20}
    for m in a.methods:
        run["results"][m] = COMPARISONS[m](
            a.official, a.trials, batch.get(m, 16), a.sizes, a.saliency if m in GRAPH_CUTS else a.images
        )
    if a.out:
        a.out.write_text(json.dumps(run, indent=1))
    print(report(run))
    return 0


# ---------------------------------------------------------------- the page's tables
def pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def ms(d: dict) -> str:
    return " / ".join(f"{v:.1f}" for v in d.values())


def table(head: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


def md_puzzlemix(rows) -> str:
    head = [
        "saliency", "px", "batches x images", "neigh", "graph cut = theirs: labels / batches",
        "max abs diff: image, weight", "ICM energy gap: mean (max)", "ICM worse", "ICM labels = theirs",
        "ICM weight TV", "ms/batch: theirs / graph cut / ICM",
    ]  # fmt: skip
    body = [
        [
            r["saliency"], r["size"], f"{r['batches']} x {r['batch']}", r["neigh_size"],
            f"{pct(r['graphcut_cells_equal'])} / {pct(r['graphcut_batches_identical'])}",
            f"{r['graphcut_max_abs_output_diff']:.1g}, {r['graphcut_max_abs_weight_diff']:.1g}",
            f"{pct(r['icm_energy_gap_mean'])} ({pct(r['icm_energy_gap_max'])})", pct(r["icm_worse_share"]),
            pct(r["icm_cells_equal"]), f"{r['icm_weight_tv_mean']:.3f}", ms(r["ms_per_batch"]),
        ]
        for r in rows
    ]  # fmt: skip
    return table(head, body)


def md_comixup(rows) -> str:
    head = [
        "saliency", "px", "partitions x inputs", "graph cut = theirs: masks", "max abs diff: mask, image, weight",
        "theirs: blended cells", "theirs: unmixed outputs", "ICM objective gap: mean (max)", "ICM worse",
        "ICM labels = theirs", "ICM weight TV", "ms/partition: theirs / graph cut / ICM",
    ]  # fmt: skip
    body = [
        [
            r["saliency"], r["size"], f"{r['batches']} x {r['partition']}", pct(r["graphcut_masks_identical"]),
            f"{r['graphcut_max_abs_mask_diff']:.1g}, {r['graphcut_max_abs_output_diff']:.1g}, "
            f"{r['graphcut_max_abs_weight_diff']:.1g}",
            pct(r["official_blended_cells"]), pct(r["official_unmixed_outputs"]),
            f"{pct(r['icm_objective_gap_mean'])} ({pct(r['icm_objective_gap_max'])})", pct(r["icm_worse_share"]),
            pct(r["icm_cells_equal"]), f"{r['icm_weight_tv_mean']:.3f}", ms(r["ms_per_batch"]),
        ]
        for r in rows
    ]  # fmt: skip
    return table(head, body)


def md_saliencymix(rows) -> str:
    head = [
        "images", "px", "batches x images", "'opencv-float' boxes = theirs", "their float map vs uint8 map: r",
        "peak distance (px)", "'torch' = cv2 uint8: pixels / peaks",
        "ms/batch: theirs (1 map) / 'opencv' / 'torch' (a map per image)",
    ]  # fmt: skip
    body = [
        [
            r["images"], r["size"], f"{r['batches']} x {r['batch']}", pct(r["float_boxes_identical"]),
            f"{r['float_vs_uint8_r']:.3f}", f"{r['float_vs_uint8_peak_px']:.1f}",
            f"{pct(r['torch_pixels_equal'])} / {pct(r['torch_peaks_equal'])}", ms(r["ms_per_batch"]),
        ]
        for r in rows
    ]  # fmt: skip
    return table(head, body)


def md_guided_ap(rows) -> str:
    head = ["saliency", "px", "batches x images", "pairing = theirs (FGVC)", "max abs diff: image, weight",
            "root mixup.py 'greedy' = FGVC greedy"]  # fmt: skip
    body = [
        [
            r["saliency"], r["size"], f"{r['batches']} x {r['batch']}", pct(r["pairing_identical"]),
            f"{r['max_abs_output_diff']:.1g}, {r['max_abs_weight_diff']:.1g}",
            pct(r["root_mixup_greedy_equals_fgvc_greedy"]),
        ]
        for r in rows
    ]  # fmt: skip
    return table(head, body)


def md_diffusemix(rows) -> str:
    head = ["images", "edit px", "pairs", "composite bytes = theirs", "max abs diff (grey levels)"]
    body = [[r["images"], r["size"], r["pairs"], pct(r["bytes_identical"]), r["max_abs_diff"]] for r in rows]
    return table(head, body)


def md_pixmix(rows) -> str:
    stats = ("mean", "std", "lit", "colourfulness")
    head = ["images", "n", "statistic (mean ± std over images)", "input", "theirs", "kit"]
    body = []
    for r in rows:
        if "procedural_set" in r:
            continue
        for k in stats:
            cell = lambda v: f"{v[0]:.3f} ± {v[1]:.3f}"  # noqa: E731
            body.append(
                [r["images"], r["images_mixed"], k, cell(r["input"][k]), cell(r["official"][k]), cell(r["kit"][k])]
            )
        c = r["mean_abs_change"]
        body.append([r["images"], r["images_mixed"], "mean abs change", "", f"{c['official']:.3f}", f"{c['kit']:.3f}"])
    sets = next(r["procedural_set"] for r in rows if "procedural_set" in r)
    head2 = ["procedural set", "mean", "std", "lit", "colourfulness", "nearest-neighbour L2 (32 px)"]
    body2 = [
        [f"{n} fractals"] + [f"{v[k][0]:.3f} ± {v[k][1]:.3f}" for k in stats] + [f"{v['nearest_neighbour_l2']:.2f}"]
        for n, v in sets.items()
    ]
    return table(head, body) + "\n\n" + table(head2, body2)


MARKDOWN = {
    "puzzlemix": md_puzzlemix,
    "comixup": md_comixup,
    "saliencymix": md_saliencymix,
    "guided-ap": md_guided_ap,
    "diffusemix": md_diffusemix,
    "pixmix": md_pixmix,
}


def report(run: dict) -> str:
    """The page's tables: one per method (PixMix: two), separated by blank lines, in the run's order."""
    return "\n\n".join(MARKDOWN[m](rows) for m, rows in run["results"].items())


if __name__ == "__main__":
    raise SystemExit(main())
