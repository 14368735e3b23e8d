"""Saliency-guided mixing: SaliencyMix, SnapMix, PuzzleMix, Co-Mixup, Guided-AP (Tables 2-6).

SaliencyMix uses image saliency; SnapMix the model's class activation maps; PuzzleMix, Co-Mixup and Guided-AP the
gradient of the loss with respect to the input (one extra forward and backward pass per step, which is most of
their cost in Table 6). PuzzleMix and Co-Mixup then optimise their masks with pyGCO's graph cut on the CPU, one
grid after the other, as the reference code does (diffcore.methods.graphcut, the default); `solver='icm'` minimises
the same energies on the device by batched checkerboard ICM (iterated conditional modes, `icm_grid`), faster and
weaker. SaliencyMix calls OpenCV's saliency on the CPU by default. benchmarks/fidelity.md compares each with the
authors' code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from . import common as U
from . import graphcut as GC
from .base import Batch, Method, register

# ---------------------------------------------------------------- SaliencyMix
FINE_GRAINED_SCALES = (12, 24, 48, 28, 56, 112)  # px: OpenCV's surround half-widths, 3*4*{1,2,4} and 7*4*{1,2,4}


def _blur121(g: torch.Tensor) -> torch.Tensor:
    """OpenCV's 8-bit GaussianBlur(3x3, sigma 0) of (B, H, W) int32 grey levels: [1 2 1]^2 / 16, rounded, with
    reflect-101 borders (torch's 'reflect')."""
    x = F.pad(g[:, None].to(torch.float32), (1, 1, 1, 1), mode="reflect")[:, 0]  # (B, H+2, W+2) exact below 2^24
    s = x[:, :, :-2] + 2 * x[:, :, 1:-1] + x[:, :, 2:]  # (B, H+2, W)
    s = s[:, :-2] + 2 * s[:, 1:-1] + s[:, 2:]  # (B, H, W)
    return torch.div(s + 8, 16, rounding_mode="floor").to(torch.int32)


def fine_grained_saliency(u8: torch.Tensor) -> torch.Tensor:
    """(B, H, W) uint8: OpenCV's StaticSaliencyFineGrained (Montabone & Soto 2010, opencv_contrib
    staticSaliencyFineGrained.cpp) of (B, 3, H, W) uint8 images, batched on their device, quantised as SaliencyMix
    does ((map * 255).astype(uint8)).

    The same integer and float32 steps as OpenCV: grey = BGR2GRAY in 16-bit fixed point (the channels read as BGR,
    as cv2 reads the arrays SaliencyMix hands it), two 3x3 Gaussian blurs, a float32 integral image, and at each of
    six surround sizes the on- and off-centre differences between a pixel and the mean of its surround (itself
    left out), truncated to 8 bits; the on and off sums over scales normalised to 255 each, added, normalised again.
    Equal to cv2's map pixel for pixel while the integral image stays below 2^24 (images up to 65,536 pixels, e.g.
    256 x 256); above, OpenCV's float32 running sums round (tests/test_methods.py, benchmarks/fidelity.md).
    """
    b_, g_, r_ = (u8[:, i].to(torch.int32) for i in range(3))  # OpenCV's B, G, R = the tensor's channels 0, 1, 2
    g = _blur121(_blur121((b_ * 7470 + g_ * 38470 + r_ * 19596 + 32768) >> 16))  # (B, H, W) int32 grey, blurred
    bsz, h, w = g.shape
    dev = g.device
    ii = torch.zeros(bsz, h + 1, w + 1, dtype=torch.int64, device=dev)
    ii[:, 1:, 1:] = g.to(torch.int64).cumsum(1).cumsum(2)  # exact sums, then float32 as cv::integral's
    ii = ii.to(torch.float32)
    gf = g.to(torch.float32)
    ys, xs = torch.arange(h, device=dev), torch.arange(w, device=dev)
    on_sum = torch.zeros(bsz, h, w, dtype=torch.int32, device=dev)
    off_sum = torch.zeros_like(on_sum)
    for r in FINE_GRAINED_SCALES:
        y1, y2 = (ys - r + 1).clamp(0, h), (ys + r + 1).clamp(0, h)  # (H,) clamped to the integral image
        x1, x2 = (xs - r + 1).clamp(0, w), (xs + r + 1).clamp(0, w)  # (W,)
        box = ii[:, y2][:, :, x2] + ii[:, y1][:, :, x1] - ii[:, y2][:, :, x1] - ii[:, y1][:, :, x2]  # (B, H, W)
        area = ((y2 - y1)[:, None] * (x2 - x1)[None] - 1).to(torch.float32)  # (H, W) surround without the centre
        mean = (box - gf) / area
        on_sum += (gf - mean).clamp_min(0).trunc().to(torch.int32)  # (uchar) of a positive float: truncation
        off_sum += (mean - gf).clamp_min(0).trunc().to(torch.int32)

    def to_255(v: torch.Tensor) -> torch.Tensor:  # (uchar)(255. * (float)(v / (float)max)), 0 where max is 0
        top = v.flatten(1).amax(1).view(-1, 1, 1).to(torch.float32)
        return (255.0 * (v.to(torch.float32) / top).to(torch.float64)).nan_to_num(0.0).trunc().to(torch.int64)

    on, off = to_255(on_sum), to_255(off_sum)
    top = torch.maximum(on.flatten(1).amax(1), off.flatten(1).amax(1)).view(-1, 1, 1).to(torch.float64)
    sal = (255.0 * (on + off).to(torch.float64) / top).nan_to_num(0.0).trunc().to(torch.int64) % 256  # x86 (uchar)
    return sal.to(torch.uint8)  # cv2 returns it / 255 as float32 and SaliencyMix * 255 truncated: the same levels


def opencv_saliency(images: np.ndarray) -> np.ndarray:
    """(N, H, W) uint8 maps of OpenCV's StaticSaliencyFineGrained (opencv-contrib), image by image on the CPU, each
    quantised as SaliencyMix does (`(map * 255).astype('uint8')`). images (N, H, W, 3): uint8, or the float arrays
    the authors pass; OpenCV takes the channels as BGR, as it does for them (their tensors are RGB)."""
    try:
        import cv2
    except ImportError as e:
        raise ImportError(
            f"SaliencyMix's saliency needs OpenCV's contrib modules: pip install opencv-contrib-python-headless ({e})"
            f"; or pass --method-arg saliency=torch"
        ) from None
    if not hasattr(cv2, "saliency"):
        raise ImportError(
            "cv2 has no `saliency` module: opencv-python shadows opencv-contrib-python-headless; uninstall it"
        )
    detector = cv2.saliency.StaticSaliencyFineGrained_create()
    maps = []
    for im in images:
        ok, m = detector.computeSaliency(np.ascontiguousarray(im))
        if not ok:
            raise RuntimeError(f"OpenCV's fine-grained saliency failed on a {im.shape} {im.dtype} image")
        maps.append((m * 255).astype("uint8"))
    return np.stack(maps)


def saliency_peaks(sal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, col) of each (B, H, W) map's maximum (the first one on ties, in row-major order, as np.argmax)."""
    idx = sal.flatten(1).argmax(1)
    return idx // sal.shape[-1], idx % sal.shape[-1]


class SaliencyPlan(NamedTuple):
    perm: torch.Tensor  # (B,) source image of each row's patch
    boxes: torch.Tensor  # (B, 4) y1, x1, y2, x2, centred on the source's saliency peak, clipped
    peaks: torch.Tensor  # (B, 2) that peak (row, col)


SALIENCY = ("opencv", "opencv-float", "torch")  # SaliencyMix's saliency map: see SaliencyMix


@register
@dataclass
class SaliencyMix(Method):
    """SaliencyMix (Uddin et al., ICLR 2021): CutMix whose box is centred on the peak of the source image's saliency.

    lam ~ Beta(beta, beta), box side = sqrt(1 - lam) * size centred at the saliency maximum of x_perm(i), clipped; the
    patch of x_perm(i) is pasted at the same place of x_i and lam = the kept area, exactly. Defaults: beta = 1.0
    (REFERENCE.md), prob = 1.0 (the authors' ImageNet command; CIFAR: 0.5). The authors' code computes one saliency
    map (of the first shuffled image) and pastes one box for the whole batch (per_sample=False); the default follows
    the paper, one box per image at its own source's peak.

    saliency: 'opencv' (default) OpenCV's fine-grained static saliency (the detector the paper names) of the 8-bit
    image, on the CPU. 'opencv-float': what the authors' code actually computes: it hands OpenCV the *normalised
    float* tensor (SaliencyMix train.py / saliencymix.py saliency_bbox; GuidedMixup's reimplementation does the
    same), which OpenCV's detector, written for 8-bit images, reads as raw bytes, so the box lands almost anywhere
    (benchmarks/fidelity.md: its map hardly correlates with the uint8 one). The paper's SaliencyMix numbers most
    likely come from that float-input behaviour: every public implementation it could have run (the authors' CIFAR
    and ImageNet scripts; GuidedMixup's FGVC code, whose row names 'Guided-AP (Random/Greedy)' Table 6 uses) passes
    the float tensor, and none converts to 8 bits. 'torch': OpenCV's algorithm rewritten in torch, batched on the device
    (`fine_grained_saliency`), an opt-in fast path equal to 'opencv' pixel for pixel up to 256 x 256 images.
    """

    name = "saliencymix"
    cite = (
        "Uddin et al., SaliencyMix: A saliency guided data augmentation strategy for better regularization, ICLR 2021"
    )
    beta: float = 1.0  # REFERENCE.md
    prob: float = 1.0  # afm-shahab-uddin/SaliencyMix ImageNet command (CIFAR: 0.5)
    per_sample: bool = True  # False: the authors' one-box-per-batch shortcut
    saliency: str = "opencv"  # 'opencv' (uint8), 'opencv-float' (the authors' input), 'torch' (OpenCV's on the device)

    def __post_init__(self):
        U.check("saliencymix beta", self.beta, self.beta > 0, "a Beta parameter > 0")
        U.check("saliencymix prob", self.prob, 0 <= self.prob <= 1, "a probability in [0, 1]")
        U.check("saliencymix saliency", self.saliency, self.saliency in SALIENCY, f"one of {SALIENCY}")

    def saliency_map(self, batch: Batch, x: torch.Tensor) -> torch.Tensor:
        """(n, H, W) saliency of the normalised images x (n, C, H, W), by the configured detector."""
        u8 = batch.to_pixels(x).detach().clamp(0, 1).mul(255).round().to(torch.uint8)  # (n, C, H, W)
        if self.saliency == "torch":
            return fine_grained_saliency(u8)
        if self.saliency == "opencv-float":
            arrays = x.detach().float().cpu().numpy().transpose(0, 2, 3, 1)  # (n, H, W, C), as the authors pass it
        else:
            arrays = u8.cpu().numpy().transpose(0, 2, 3, 1)  # (n, H, W, C) uint8
        return torch.from_numpy(opencv_saliency(arrays)).to(x.device)

    def plan(self, batch: Batch, generator) -> SaliencyPlan:
        x = batch.x
        b, _, h, w = x.shape
        dev = x.device
        n = b if self.per_sample else 1
        perm = U.permutation(b, generator, dev)
        lam = U.beta(self.beta, self.beta, n, generator, dev)  # (n,)
        cy, cx = saliency_peaks(self.saliency_map(batch, x[perm[:n]]))  # (n,), (n,)
        boxes = U.boxes_from_centres(cy, cx, *U.cut_sides(lam, h, w), h, w)  # (n, 4)
        return SaliencyPlan(perm, boxes.expand(b, 4), torch.stack([cy, cx], 1).expand(b, 2))

    def mix(self, batch: Batch, generator, model=None):
        if not U.coin(self.prob, generator, batch.x.device):
            return batch.x, batch.y
        p = self.plan(batch, generator)
        h, w = batch.x.shape[-2:]
        out = torch.where(U.box_mask(p.boxes, h, w), batch.x[p.perm], batch.x)
        lam = 1 - U.box_area(p.boxes).to(batch.x.dtype) / (h * w)
        return out, U.pair_targets(batch.one_hot(), p.perm, lam)


# ---------------------------------------------------------------- SnapMix
def class_activation_maps(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, method: str) -> torch.Tensor:
    """(B, H, W) CAM of each image's own class, upsampled, shifted to min 0 and normalised to sum 1 (SnapMix SPM).

    Runs the model as it is (train mode during training, as the authors' get_spm does), without gradients.
    """
    layer, head = U.feature_and_head(model, method)
    with torch.no_grad():
        _, fmap = U.features_of(model, layer, x)
        fmap = F.relu(fmap)  # (B, C, h, w)
        w_y = head.weight[y]  # (B, C)
        cam = torch.einsum("bchw,bc->bhw", fmap, w_y)  # (B, h, w)
        if head.bias is not None:
            cam = cam + head.bias[y].view(-1, 1, 1)
        cam = F.interpolate(cam[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        cam = cam - cam.flatten(1).amin(1).view(-1, 1, 1)
        return cam / cam.flatten(1).sum(1).view(-1, 1, 1)  # NaN where the map is flat


class SnapPlan(NamedTuple):
    perm: torch.Tensor  # (B,)
    dst_boxes: torch.Tensor  # (B, 4) where the patch goes in x_i
    src_boxes: torch.Tensor  # (B, 4) where it is cut from x_perm(i), then resized to the dst box
    lam_a: torch.Tensor  # (B,) semantic share of x_i: 1 - its CAM mass inside the dst box
    lam_b: torch.Tensor  # (B,) semantic share of x_perm(i): its CAM mass inside the src box
    valid: torch.Tensor  # (B,) bool: both boxes non-empty (else nothing is pasted: lam_a = 1, lam_b = 0)


@register
@dataclass
class SnapMix(Method):
    """SnapMix (Huang et al., AAAI 2021): a box of x_perm(i) resized into another box of x_i; label weights are the
    class-activation-map mass each image keeps (so they need not sum to 1).

    Defaults (Shaoli-Huang/SnapMix README): beta = 5.0 for both box areas ~ Beta(beta, beta) (REFERENCE.md), prob =
    1.0. One pair of boxes per batch as the authors' code (per_sample=True: per row). Where a CAM is flat (sum 0)
    the weights fall back to the areas, as theirs do. For two images of the same class the target is (lam_a + lam_b)
    on that class; the authors' code adds lam_b to lam_a and lam_a to lam_b, which counts the class twice.
    """

    name = "snapmix"
    cite = "Huang et al., SnapMix: Semantically proportional mixing for augmenting fine-grained data, AAAI 2021"
    needs_model = True
    beta: float = 5.0  # REFERENCE.md / SnapMix README
    prob: float = 1.0  # SnapMix README: prob = 1
    per_sample: bool = False  # authors' code: one pair of boxes per batch

    def __post_init__(self):
        U.check("snapmix beta", self.beta, self.beta > 0, "a Beta parameter > 0")
        U.check("snapmix prob", self.prob, 0 <= self.prob <= 1, "a probability in [0, 1]")

    def _boxes(self, n, h, w, generator, dev) -> torch.Tensor:
        lam = U.beta(self.beta, self.beta, n, generator, dev)
        cy, cx = U.randint(0, h, n, generator, dev), U.randint(0, w, n, generator, dev)
        return U.boxes_from_centres(cy, cx, *U.cut_sides(lam, h, w), h, w)  # (n, 4)

    def plan(self, batch: Batch, generator, model) -> SnapPlan:
        x = batch.x
        b, _, h, w = x.shape
        dev = x.device
        cam = class_activation_maps(model, x, batch.y, self.name)  # (B, H, W)
        n = b if self.per_sample else 1
        perm = U.permutation(b, generator, dev)
        dst = self._boxes(n, h, w, generator, dev).expand(b, 4)
        src = self._boxes(n, h, w, generator, dev).expand(b, 4)
        valid = (U.box_area(dst) > 0) & (U.box_area(src) > 0)  # (B,)
        kept_a = (cam * U.box_mask(dst, h, w)[:, 0]).flatten(1).sum(1)  # CAM mass under the paste
        cam_b = cam[perm]
        took_b = (cam_b * U.box_mask(src, h, w)[:, 0]).flatten(1).sum(1)
        area = U.box_area(dst).to(x.dtype) / (h * w)
        lam_a = torch.nan_to_num(1 - kept_a, nan=0.0) + torch.isnan(kept_a) * (1 - area)
        lam_b = torch.nan_to_num(took_b, nan=0.0) + torch.isnan(took_b) * area
        return SnapPlan(perm, dst, src, torch.where(valid, lam_a, 1.0), torch.where(valid, lam_b, 0.0), valid)

    def mix(self, batch: Batch, generator, model=None):
        if model is None:
            raise ValueError("method 'snapmix' needs the model (its class activation maps): call forward or pass model")
        if not U.coin(self.prob, generator, batch.x.device):
            return batch.x, batch.y
        p = self.plan(batch, generator, model)
        pasted = U.paste_resized(batch.x, batch.x[p.perm], p.dst_boxes, p.src_boxes)
        out = torch.where(p.valid.view(-1, 1, 1, 1), pasted, batch.x)
        return out, U.pair_targets(batch.one_hot(), p.perm, p.lam_a, p.lam_b)


# ---------------------------------------------------------------- graph energies on a grid, minimised by ICM
def icm_grid(
    unary: torch.Tensor,
    w_rows: torch.Tensor,
    w_cols: torch.Tensor,
    pair: torch.Tensor,
    sweeps: int,
    init: torch.Tensor | None = None,
) -> torch.Tensor:
    """Labels (B, n, m) approximately minimising sum_p unary[p, l_p] + sum_(p,q) w_pq * pair[l_p, l_q].

    unary (B, n, m, L); w_rows (B, n-1, m) weights between vertical neighbours, w_cols (B, n, m-1) horizontal;
    pair (L, L). Checkerboard ICM: the two colours of the grid are updated in turn, each node to its best label
    given its neighbours (exact coordinate descent, so the energy never increases); stops early at a fixed point.
    The default graph cut (graphcut.swap_grid, pyGCO's alpha-beta swap) makes larger moves; the gap between the two
    is measured in benchmarks/fidelity.md.
    """
    b, n, m, nl = unary.shape
    lab = unary.argmin(-1) if init is None else init.clone()  # (B, n, m)
    colour = (torch.arange(n, device=unary.device)[:, None] + torch.arange(m, device=unary.device)[None]) % 2
    for _ in range(sweeps):
        before = lab
        for c in (0, 1):
            msg = F.one_hot(lab, nl).to(unary.dtype) @ pair  # (B, n, m, L): cost vs each label
            cost = unary.clone()
            cost[:, :-1] += w_rows[..., None] * msg[:, 1:]  # neighbour below
            cost[:, 1:] += w_rows[..., None] * msg[:, :-1]  # neighbour above
            cost[:, :, :-1] += w_cols[..., None] * msg[:, :, 1:]  # neighbour right
            cost[:, :, 1:] += w_cols[..., None] * msg[:, :, :-1]  # neighbour left
            lab = torch.where(colour == c, cost.argmin(-1), lab)
        if torch.equal(lab, before):
            break
    return lab


def grid_energy(labels, unary, w_rows, w_cols, pair) -> torch.Tensor:
    """(B,) the energy `icm_grid` minimises, for tests and diagnostics."""
    e = unary.gather(-1, labels[..., None])[..., 0].flatten(1).sum(1)
    e = e + (w_rows * pair[labels[:, :-1], labels[:, 1:]]).flatten(1).sum(1)
    return e + (w_cols * pair[labels[:, :, :-1], labels[:, :, 1:]]).flatten(1).sum(1)


def to_blocks(img: torch.Tensor, n: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, n*n, H/n, W/n) row-major blocks."""
    b, c, h, w = img.shape
    x = img.view(b, c, n, h // n, n, w // n).permute(0, 1, 2, 4, 3, 5)  # (B, C, n, n, H/n, W/n)
    return x.reshape(b, c, n * n, h // n, w // n)


def from_blocks(blocks: torch.Tensor, n: int) -> torch.Tensor:
    """Inverse of to_blocks: (B, C, n*n, bh, bw) -> (B, C, n*bh, n*bw)."""
    b, c, _, bh, bw = blocks.shape
    x = blocks.view(b, c, n, n, bh, bw).permute(0, 1, 2, 4, 3, 5)  # (B, C, n, bh, n, bw)
    return x.reshape(b, c, n * bh, n * bw)


# ---------------------------------------------------------------- input-gradient saliency methods
class _GradientSaliency(Method):
    """Shared step: saliency from dCE/dx, then `mix_with`; clean_lam > 0 adds clean_lam * CE(clean) to the loss."""

    needs_model = True
    clean_lam: float = 0.0
    prob: float = 1.0

    def mix_with(self, batch: Batch, sal: torch.Tensor, generator) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def mix(self, batch: Batch, generator, model=None):
        if model is None:
            raise ValueError(
                f"method {self.name!r} needs the model (input-gradient saliency): call forward or pass model"
            )
        if not U.coin(self.prob, generator, batch.x.device):
            return batch.x, batch.y
        sal, _ = U.input_gradient_saliency(model, batch.x, batch.y, keep_graph=False)
        return self.mix_with(batch, sal, generator)

    def forward(self, model, batch: Batch, generator):
        if not U.coin(self.prob, generator, batch.x.device):
            return model(batch.x), batch.y
        sal, clean = U.input_gradient_saliency(model, batch.x, batch.y, keep_graph=self.clean_lam > 0)
        x, target = self.mix_with(batch, sal, generator)
        return U.with_clean_loss(model(x), target, clean, batch.one_hot(), self.clean_lam)


def _check_common(m) -> None:
    U.check(f"{m.name} clean_lam", m.clean_lam, m.clean_lam >= 0, "a loss weight >= 0")
    U.check(f"{m.name} prob", m.prob, 0 <= m.prob <= 1, "a probability in [0, 1]")


# ---------------------------------------------------------------- PuzzleMix
def _neigh_penalty(a: torch.Tensor, b: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """PuzzleMix data smoothness: mean |a - b| across each block boundary, (B, n-1, n) rows and (B, n, n-1) cols."""
    pr = (a[:, :, :-1, :] - b[:, :, 1:, :])[:, :, k - 1 :: k, :]  # (B, C, n-1, H')
    pc = (a[:, :, :, :-1] - b[:, :, :, 1:])[:, :, :, k - 1 :: k]  # (B, C, W', n-1)
    return (F.avg_pool2d(pr.abs().mean(1), kernel_size=(1, k)), F.avg_pool2d(pc.abs().mean(1), kernel_size=(k, 1)))


SOLVERS = ("graphcut", "icm")  # PuzzleMix and Co-Mixup: the authors' graph cut, or batched ICM on the device


class PuzzleGraph(NamedTuple):
    """PuzzleMix's graph over n x n blocks (mixup_graph): label l keeps the own image with weight 1 - s_l, s_l =
    l / (L - 1), and costs (1 - s_l) * partner + s_l * own + prior[l]; neighbours with labels l, l' cost
    w * (s_l - s_l')^2."""

    own: torch.Tensor  # (B, n, n) own image's block saliency (sums to 1) + folded data smoothness: lost if not kept
    partner: torch.Tensor  # (B, n, n) the same for the partner image
    w_rows: torch.Tensor  # (B, n-1, n) weight between vertical neighbours: data smoothness + beta'
    w_cols: torch.Tensor  # (B, n, n-1) between horizontal neighbours
    prior: np.ndarray  # (L,) float64, -eta * log P(l | lam) / n^2 (graphcut.puzzle_prior)

    def energy(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(unary (B, n, n, L), pair (L, L)) of this graph as floats, for `icm_grid` and `grid_energy`."""
        nl = len(self.prior)
        steps = torch.linspace(0, 1, nl, device=self.own.device, dtype=self.own.dtype)  # s_l
        prior = torch.as_tensor(self.prior, device=self.own.device).to(self.own.dtype)
        unary = (1 - steps) * self.partner[..., None] + steps * self.own[..., None] + prior  # (B, n, n, L)
        return unary, (steps[:, None] - steps[None]) ** 2


def puzzle_graph(
    x_pix: torch.Tensor,
    sal: torch.Tensor,
    perm: torch.Tensor,
    n: int,
    lam: float,
    beta: float,
    gamma: float,
    eta: float,
    neigh: int,
    n_labels: int,
) -> PuzzleGraph:
    """PuzzleMix's graph (mixup.py mixup_graph), operation for operation: block saliency normalised to sum 1, the
    data-smoothness terms (mean |difference| across each block boundary of the neigh x neigh pooled images, x beta'
    gamma) folded into the unaries and edge weights as theirs, beta' = beta / n / 16, and the binomial prior."""
    b, _, h, _ = x_pix.shape
    bs = h // n
    neigh = math.gcd(neigh, bs)  # their min(neigh, block size): the same for every power-of-two setting they use
    pooled = F.avg_pool2d(sal, bs)  # (B, n, n)
    u1 = pooled / pooled.reshape(b, -1).sum(1).clamp_min(1e-12).reshape(b, 1, 1)  # own; a zero map stays 0, not NaN
    u2 = u1[perm]  # partner
    p1 = F.avg_pool2d(x_pix, neigh)
    p2 = p1[perm]
    k = bs // neigh
    beta = beta / n / 16
    pr, pc = {}, {}
    for (i, a), (j, c) in [((0, p2), (0, p2)), ((0, p2), (1, p1)), ((1, p1), (0, p2)), ((1, p1), (1, p1))]:
        r, cc = _neigh_penalty(a, c, k)
        pr[i, j], pc[i, j] = beta * gamma * r, beta * gamma * cc
    u1, u2 = u1.clone(), u2.clone()
    u2[:, :-1, :] += (pr[1, 0] + pr[1, 1]) / 2.0
    u1[:, :-1, :] += (pr[0, 1] + pr[0, 0]) / 2.0
    u2[:, 1:, :] += (pr[0, 1] + pr[1, 1]) / 2.0
    u1[:, 1:, :] += (pr[1, 0] + pr[0, 0]) / 2.0
    u2[:, :, :-1] += (pc[1, 0] + pc[1, 1]) / 2.0
    u1[:, :, :-1] += (pc[0, 1] + pc[0, 0]) / 2.0
    u2[:, :, 1:] += (pc[0, 1] + pc[1, 1]) / 2.0
    u1[:, :, 1:] += (pc[1, 0] + pc[0, 0]) / 2.0
    w_rows = (pr[1, 0] + pr[0, 1] - pr[1, 1] - pr[0, 0]) / 2 + beta
    w_cols = (pc[1, 0] + pc[0, 1] - pc[1, 1] - pc[0, 0]) / 2 + beta
    return PuzzleGraph(u1, u2, w_rows, w_cols, GC.puzzle_prior(lam, eta, n_labels, n))


def puzzle_labels(g: PuzzleGraph, solver: str, sweeps: int) -> torch.Tensor:
    """(B, n, n) labels of `g`: the authors' graph cut (on the CPU), or batched ICM on the same float energy."""
    if solver == "graphcut":
        return GC.puzzle_graphcut(g.own, g.partner, g.w_rows, g.w_cols, g.prior, len(g.prior))
    unary, pair = g.energy()
    return icm_grid(unary, g.w_rows, g.w_cols, pair, sweeps)


def mask_transport(mask: torch.Tensor, sal_blocks: torch.Tensor, eps: float) -> torch.Tensor:
    """PuzzleMix's greedy transport plan (B, N, N), N = n*n blocks, exactly as the reference's `mask_transport`:
    each source block claims the destination where eps * distance - its saliency * (mask > 0 there) is lowest;
    each destination is won by the row that is first among the minima of its column of plan * cost, in which the
    sources that did not claim it count 0 (so when every claim costs more than 0 nobody wins it); losers pay 1 there
    and claim again, for n rounds. Claims are resolved with per-destination scatter-min over the (B, N) choices
    instead of (B, N, N) float products: the same plan, several times faster at 16 x 16 blocks on a CPU.
    """
    b, nn_ = sal_blocks.shape
    n = int(round(nn_**0.5))
    z = (mask.reshape(b, nn_) > 0).to(sal_blocks.dtype)
    cost = eps * U.grid_cost_matrix(n, mask.device, sal_blocks.dtype)[None] - sal_blocks[:, :, None] * z[:, None, :]
    src = torch.arange(nn_, device=mask.device).expand(b, nn_)  # (B, N)
    for _ in range(n):
        choice = cost.argmin(-1)  # (B, N) destination of each source (first minimum, as torch's min)
        c = cost.gather(-1, choice[..., None])[..., 0]  # (B, N) its cost there
        best = torch.full_like(c, float("inf")).scatter_reduce(1, choice, c, "amin")  # (B, N) cheapest claim
        claims = torch.zeros_like(src).scatter_add(1, choice, torch.ones_like(src))  # (B, N) claims per destination
        free = claims < nn_  # (B, N) some source did not claim it: a 0 in its column of plan * cost
        differ = choice != choice[:, :1]  # (B, N) sources whose claim differs from source 0's
        d = torch.where(differ.any(1), differ.to(torch.uint8).argmax(1), nn_)  # (B,) the first of them
        first_free = torch.where(src == choice[:, :1], d[:, None], 0)  # (B, N) first source not claiming each
        col_min = torch.where(free, best.clamp_max(0), best)  # (B, N) the column minimum of plan * cost
        cand = torch.where(c == col_min.gather(1, choice), src, nn_)
        first = torch.full_like(src, nn_).scatter_reduce(1, choice, cand, "amin")  # first claim at the minimum
        winner = torch.where(free & (col_min == 0), torch.minimum(first, first_free), first)  # (B, N)
        win = winner.gather(1, choice) == src  # (B, N) does the source win its claim?
        cost.scatter_add_(-1, choice[..., None], (~win)[..., None].to(cost.dtype))  # losers pay and move on
    return torch.zeros_like(cost).scatter_(-1, choice[..., None], win[..., None].to(cost.dtype))


def transport(img: torch.Tensor, plan: torch.Tensor, n: int) -> torch.Tensor:
    """Move the blocks of (B, C, H, W) by plan (B, N, N): destination j gets the source i with plan[i, j] = 1."""
    blocks = to_blocks(img, n)  # (B, C, N, bh, bw)
    return from_blocks(torch.einsum("bij,bcipq->bcjpq", plan, blocks), n)


@register
@dataclass
class PuzzleMix(_GradientSaliency):
    """PuzzleMix (Kim et al., ICML 2020): a mask over n x n blocks (n ~ {2, 4, 8, 16}) with labels {1, 1/2, 0} for the
    own image, optimised for kept saliency, a lam prior and smoothness, then a transport that moves salient blocks
    into the kept regions. Target weight of the own image = mean of the mask.

    Defaults (snu-mllab/PuzzleMix README, CIFAR-100 command): alpha = 1.0 (lam ~ Beta, one per batch), n_labels 3,
    eta 0.2, beta 1.2, gamma 0.5, transport on, t_eps 0.8, clean_lam 0; t_size = -1 (main.py default: transport at
    the graph-cut resolution; their CIFAR command uses 4 px). neigh_size 0 = theirs for the input size: 4 up to
    64 px (main.py, CIFAR and Tiny-ImageNet commands), 2 above (imagenet/train.py: min(neigh_size, 2)).
    solver 'graphcut' (default): pyGCO's alpha-beta swap on the CPU, image by image, with their integer scaling
    (diffcore.methods.graphcut): the authors' masks exactly (benchmarks/fidelity.md). solver 'icm': batched
    checkerboard ICM on the same energy on the device (`icm_grid`, up to `sweeps` sweeps), a weaker minimiser whose
    gap to the graph cut is measured in benchmarks/fidelity.md. Left out: their adversarial training (adv_p = 0 by
    default). neigh_size is gcd(neigh_size, block size), their min(...) for every setting they use, and boundaries
    stay aligned at any other size.
    """

    name = "puzzlemix"
    cite = "Kim et al., Puzzle Mix: Exploiting saliency and local statistics for optimal mixup, ICML 2020"
    alpha: float = 1.0  # REFERENCE.md / README: --mixup_alpha 1.0
    n_labels: int = 3  # README
    eta: float = 0.2  # prior weight, README
    beta: float = 1.2  # label smoothness, README
    gamma: float = 0.5  # data smoothness, README
    neigh_size: int = 0  # px; 0: theirs for the input size (4 up to 64 px: README; 2 above: imagenet/train.py)
    transport: bool = True  # README
    t_eps: float = 0.8  # README
    t_size: int = -1  # main.py default (-1: graph-cut resolution); CIFAR command: 4
    clean_lam: float = 0.0  # main.py default
    prob: float = 1.0
    solver: str = "graphcut"  # 'graphcut': pyGCO swap on the CPU, as theirs; 'icm': batched ICM on the device
    sweeps: int = 10  # ICM sweeps (solver='icm' only)

    def __post_init__(self):
        _check_common(self)
        U.check("puzzlemix alpha", self.alpha, self.alpha > 0, "a Beta parameter > 0")
        U.check("puzzlemix n_labels", self.n_labels, self.n_labels >= 2, "an integer >= 2")
        U.check("puzzlemix neigh_size", self.neigh_size, self.neigh_size >= 0, "pixels >= 1, or 0 (theirs per size)")
        U.check("puzzlemix solver", self.solver, self.solver in SOLVERS, f"one of {SOLVERS}")
        U.check("puzzlemix sweeps", self.sweeps, self.sweeps >= 1, "an integer >= 1")

    def neighbourhood(self, size: int) -> int:
        """The smoothness neighbourhood in pixels: neigh_size, or the authors' setting for this input size."""
        return self.neigh_size or (4 if size <= 64 else 2)

    def mix_with(self, batch: Batch, sal: torch.Tensor, generator):
        x = batch.x
        b, _, h, w = x.shape
        dev = x.device
        choices = U.block_choices(h, w)
        if not choices:
            raise ValueError(f"puzzlemix: image size {h}x{w} is not divisible by 2, 4, 8 or 16 blocks")
        n = choices[int(U.randint(0, len(choices), 1, generator, dev)[0])]
        perm = U.permutation(b, generator, dev)
        lam = float(U.beta(self.alpha, self.alpha, 1, generator, dev)[0])
        g = puzzle_graph(
            batch.to_pixels(x), sal, perm, n, lam, self.beta, self.gamma, self.eta, self.neighbourhood(w), self.n_labels
        )
        labels = puzzle_labels(g, self.solver, self.sweeps)  # (B, n, n)
        mask = 1 - labels.to(x.dtype)[:, None] / (self.n_labels - 1)  # (B, 1, n, n) own-image weight
        x1, x2 = x, x[perm]
        if self.transport:
            x1, x2, mask = self._transport(x1, x2, mask, sal, perm, n)
        mask = F.interpolate(mask, size=(h, w), mode="nearest")  # (B, 1, H, W)
        ratio = mask.reshape(b, -1).mean(-1)  # (B,) after upsampling, as theirs (the same mean)
        return mask * x1 + (1 - mask) * x2, U.pair_targets(batch.one_hot(), perm, ratio)

    def _transport(self, x1, x2, mask, sal, perm, n):
        b, _, h, w = x1.shape
        tn = n
        if self.t_size > 0 and self.t_size < h // n and h % self.t_size == 0 and w % self.t_size == 0:
            tn = h // self.t_size
            mask = F.interpolate(mask, size=(tn, tn), mode="nearest")
        pooled = F.avg_pool2d(sal, h // tn)  # (B, tn, tn)
        s1 = (pooled / pooled.reshape(b, -1).sum(1).clamp_min(1e-12).reshape(b, 1, 1)).reshape(b, -1)  # (B, tn*tn)
        x1 = transport(x1, mask_transport(mask, s1, self.t_eps), tn)
        x2 = transport(x2, mask_transport(1 - mask, s1[perm], self.t_eps), tn)
        return x1, x2, mask


# ---------------------------------------------------------------- Co-Mixup
def comixup_objective(cost, labels, beta, gamma) -> torch.Tensor:
    """(P,) Co-Mixup's objective (match.obj_fn) of hard labelings (P, n_out, n, m) over n_in inputs, for P
    partitions at once; cost (P, n_in, n, m); beta, gamma already divided by the number of blocks."""
    n_in = cost.shape[1]
    oh = F.one_hot(labels, n_in).to(cost.dtype)  # (P, n_out, n, m, n_in)
    counts = oh.flatten(2, 3).sum(2)  # (P, n_out, n_in)
    e = (cost.permute(0, 2, 3, 1)[:, None] * oh).flatten(1).sum(1)
    e = e + beta / 2 * (
        ((oh[:, :, :-1] - oh[:, :, 1:]) ** 2).flatten(1).sum(1)
        + ((oh[:, :, :, :-1] - oh[:, :, :, 1:]) ** 2).flatten(1).sum(1)
    )
    return e + gamma * ((counts.sum(1) ** 2).sum(1) - (counts**2).flatten(1).sum(1))


def _resolve_identical(labels: torch.Tensor, n_in: int) -> torch.Tensor:
    """Co-Mixup's set_resolve: (P, n_out, n_in) extra cost that pushes outputs using the same inputs apart."""
    used = (F.one_hot(labels.flatten(2), n_in).sum(2) > 0).float()  # (P, n_out, n_in)
    add = torch.zeros_like(used)
    same = torch.triu((torch.cdist(used, used, p=1) == 0).float(), diagonal=1)  # (P, n_out, n_out)
    for p, i1, i2 in same.nonzero().tolist():  # few pairs: loop is fine
        nz = used[p, i1].nonzero().flatten()
        if len(nz) > 1:
            add[p, i1, nz[0]], add[p, i2, nz[1]] = 1.0, 1.0
    return add


def comixup_icm(
    cost: torch.Tensor,
    compat: torch.Tensor,
    init: torch.Tensor,
    beta: float,
    gamma: float,
    thres: float,
    niter: int,
    sweeps: int,
) -> torch.Tensor:
    """(P, n_out = n_in, n, m) input index per block of each output, for P partitions solved side by side on the
    device: match.get_onehot_matrix with each output's graph cut replaced by checkerboard ICM from its current
    labeling, and hard labels only (no 50/50 blends). cost (P, n_in, n, m) as graphcut.comixup_cost; compat
    (P, n_in, n_in); init (P, n_out, n, m). Stops when every partition's objective has stopped changing.
    """
    np_, n_in, n, m = cost.shape
    dt = cost.dtype
    size = n * m
    beta, gamma, thres = beta / size, gamma / size, thres * size
    labels = init.clone()
    counts = F.one_hot(labels.flatten(2), n_in).sum(2).to(dt)  # (P, n_out, n_in)
    potts = 1 - torch.eye(n_in, device=cost.device, dtype=dt)
    w_rows = torch.full((np_, n - 1, m), beta, device=cost.device, dtype=dt)
    w_cols = torch.full((np_, n, m - 1), beta, device=cost.device, dtype=dt)
    add, prev = None, comixup_objective(cost, labels, beta, gamma)
    for it in range(niter):
        for i in range(n_in):  # one output at a time
            others = (counts.sum(1) - counts[:, i])[..., None]  # (P, n_in, 1)
            over = ((compat @ others)[..., 0] > thres).to(dt)  # (P, n_in)
            penalty = 2 * gamma * ((over[:, None, :] * compat) @ others)[..., 0]  # their (over * A) @ p
            if add is not None:
                penalty = penalty + gamma * add[:, i]
            unary = (cost + penalty[..., None, None]).permute(0, 2, 3, 1)  # (P, n, m, n_in)
            labels[:, i] = icm_grid(unary, w_rows, w_cols, potts, sweeps, init=labels[:, i])
            counts[:, i] = F.one_hot(labels[:, i].flatten(1), n_in).sum(1).to(dt)
        if it == niter - 2:
            add = _resolve_identical(labels, n_in)
        obj = comixup_objective(cost, labels, beta, gamma)
        if bool(((prev - obj).abs() / obj.abs().clamp_min(1e-12) < 1e-6).all()):
            break
        prev = obj
    return labels


def comixup_mix(mask: torch.Tensor, x: torch.Tensor, onehot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(outputs (n_out, C, H, W), targets (n_out, K)) of one partition's labeling mask (n_out, n, m, n_in), soft
    or one-hot (match.mix_input): each block of an output is its inputs' blocks weighted by the mask; the target is
    the mask mass of each input's label, normalised to sum 1."""
    n_out, n, m, _ = mask.shape
    up = F.interpolate(mask.permute(0, 3, 1, 2), size=x.shape[-1], mode="nearest")  # (n_out, n_in, H, W)
    out = torch.sum(up.unsqueeze(2) * x.unsqueeze(0), dim=1)  # (n_out, C, H, W)
    target = torch.matmul(mask, onehot).reshape(n_out, n * m, -1).sum(-2)  # (n_out, K)
    return out, target / target.sum(-1, keepdim=True)


def saliency_compatibility(sal: torch.Tensor) -> torch.Tensor:
    """(B, B) L1 distance between the saliency peaks (of an 8x8 box filter), Co-Mixup's compatibility A_dist."""
    k = min(8, *sal.shape[-2:])
    z = F.avg_pool2d(sal[:, None], k, stride=1)[:, 0]  # (B, h', w')
    r, c = saliency_peaks(z)
    pos = torch.stack([r, c], 1).to(sal.dtype)
    return torch.cdist(pos, pos, p=1)


class CoMixupProblem(NamedTuple):
    """P joint problems of k inputs each, solved side by side (or one after the other by the graph cut)."""

    rows: torch.Tensor  # (P, k) batch rows of each problem's inputs
    sal_blocks: torch.Tensor  # (P, k, n, n) block saliency
    prior: torch.Tensor  # (P, k) Dirichlet(alpha) draw of each problem
    compat: torch.Tensor  # (P, k, k) compatibility A
    init: torch.Tensor  # (P, k, n, n) random initial labels


@register
@dataclass
class CoMixup(_GradientSaliency):
    """Co-Mixup (Kim et al., ICLR 2021): each output image is a labeling of an n x n grid by the batch's inputs,
    optimised jointly over the outputs of a partition of the batch for saliency, smoothness and diversity between
    outputs. Targets: the share of blocks from each input (rows sum to 1).

    Defaults (snu-mllab/Co-Mixup README, CIFAR-100 command / main.py): m_part 20, m_block_num 4, mixup_alpha 2.0,
    clean_lam 1.0, m_beta 0.32, m_gamma 1.0, m_thres 0.83 (hard), m_eta 0.05, m_omega 0.001, m_niter 4, set_resolve on.
    solver 'graphcut' (default): match.get_onehot_matrix as theirs (diffcore.methods.graphcut.comixup_graphcut):
    each output by pyGCO's alpha-beta swap on the CPU, partition after partition, including the blocks that blend
    two inputs 50/50 from the second outer iteration on. solver 'icm': the opt-in fast path on the device: every
    output's graph cut replaced by checkerboard ICM (`icm_grid`), hard labels only, the full partitions solved side
    by side as one batched problem; its gap to the graph cut is measured in benchmarks/fidelity.md. Both draw the
    Dirichlet prior and the random initial labels from the same generator calls. A partition's compatibility is
    normalised by its sum clamped at 1e-12 (theirs divides by 0, hence NaN costs, when all peaks coincide).
    """

    name = "comixup"
    cite = "Kim et al., Co-Mixup: Saliency guided joint mixup with supermodular diversity, ICLR 2021"
    alpha: float = 2.0  # mixup_alpha (Dirichlet prior), README
    part: int = 20  # m_part: inputs per joint problem, README
    block_num: int = 4  # m_block_num, README
    beta: float = 0.32  # m_beta, README
    gamma: float = 1.0  # m_gamma, README
    eta: float = 0.05  # m_eta, README
    thres: float = 0.83  # m_thres, README
    omega: float = 0.001  # m_omega: weight of the saliency-peak compatibility, README
    niter: int = 4  # m_niter, main.py default
    clean_lam: float = 1.0  # README
    prob: float = 1.0
    solver: str = "graphcut"  # 'graphcut': pyGCO swap on the CPU, as theirs; 'icm': batched ICM on the device
    sweeps: int = 10  # ICM sweeps per output update (solver='icm' only)

    def __post_init__(self):
        _check_common(self)
        U.check("comixup part", self.part, self.part >= 2, "an integer >= 2")
        U.check("comixup block_num", self.block_num, self.block_num >= 2, "an integer >= 2")
        U.check("comixup niter", self.niter, self.niter >= 1, "an integer >= 1")
        U.check("comixup solver", self.solver, self.solver in SOLVERS, f"one of {SOLVERS}")

    def problems(self, sal: torch.Tensor, generator) -> list[CoMixupProblem]:
        """The joint problems of a batch: the full partitions of `part` inputs side by side, then the remainder,
        each with its inputs and random draws (Dirichlet prior, then initial labels)."""
        b, h, w = sal.shape
        n, dev = self.block_num, sal.device
        pooled = F.avg_pool2d(sal, (h // n, w // n))  # (B, n, n) block saliency
        dist = saliency_compatibility(sal)
        full = b // self.part * self.part
        out = []
        for s, k, np_ in [(0, self.part, full // self.part)] * bool(full) + [(full, b - full, 1)] * (b > full):
            idx = torch.arange(s, s + k * np_, device=dev).view(np_, k)  # (P, k)
            d = dist[idx[:, :, None], idx[:, None, :]]  # (P, k, k)
            a_dist = d / d.flatten(1).sum(1).clamp_min(1e-12).view(-1, 1, 1) * k
            compat = (1 - self.omega) * torch.eye(k, device=dev, dtype=sal.dtype) + self.omega * a_dist
            prior = U.dirichlet(self.alpha, np_, k, generator, dev).to(sal.dtype)  # (P, k)
            init = U.randint(0, k, np_ * k * n * n, generator, dev).view(np_, k, n, n)  # random initialisation
            out.append(CoMixupProblem(idx, pooled[idx], prior, compat, init))
        return out

    def masks(self, p: CoMixupProblem) -> torch.Tensor:
        """(P, k_out, n, n, k_in) labeling masks of P joint problems by the configured solver."""
        cost = torch.stack([GC.comixup_cost(s, q, self.eta) for s, q in zip(p.sal_blocks, p.prior)])  # (P, k, n, n)
        if self.solver == "icm":
            labels = comixup_icm(cost, p.compat, p.init, self.beta, self.gamma, self.thres, self.niter, self.sweeps)
            return F.one_hot(labels, cost.shape[1]).to(cost.dtype)
        return torch.stack(
            [
                GC.comixup_graphcut(c.cpu(), a.cpu(), i.cpu(), self.beta, self.gamma, self.thres, self.niter)
                for c, a, i in zip(cost, p.compat, p.init)
            ]
        ).to(cost.device, cost.dtype)

    def mix_with(self, batch: Batch, sal: torch.Tensor, generator):
        onehot = batch.one_hot()
        outs, targets = [], []
        for p in self.problems(sal, generator):
            for r, mask in zip(p.rows, self.masks(p)):
                out, target = comixup_mix(mask, batch.x[r], onehot[r])
                outs.append(out)
                targets.append(target)
        return torch.cat(outs), torch.cat(targets)


# ---------------------------------------------------------------- Guided-AP (GuidedMixup)
def greedy_cycle_pairing(dist: torch.Tensor) -> torch.Tensor:
    """(B,) partner of each row: GuidedMixup's greedy one-cycle cover, starting at the most distant pair and
    always moving to the farthest unvisited row, closed into one cycle (pairing.pyx `onecycle_cover`)."""
    d = dist.detach().double().cpu().clone()
    b = d.shape[0]
    d.fill_diagonal_(float("-inf"))
    partner = torch.arange(b)
    row, col = divmod(int(d.argmax()), b)
    first = row
    partner[row] = col
    d[:, row] = float("-inf")
    for _ in range(b - 2):
        row = col
        col = int(d[row].argmax())
        partner[row] = col
        d[:, row] = float("-inf")
    partner[col] = first
    return partner.to(dist.device)


@register
@dataclass
class GuidedAP(_GradientSaliency):
    """Guided-AP, GuidedMixup (Kang & Kim, AAAI 2023): pixel-wise mixing ratio from the two images' saliency,
    M = s_i / (s_i + s_perm(i)), with pairs chosen to have distant saliency maps. Target weight = mean of M.

    Saliency: input gradient, Gaussian blur (7 px, sigma 3), normalised to sum 1. Pairing 'greedy': the greedy
    one-cycle cover of the L2 distances between saliency maps; 'random': a random permutation (Table 6 rows Greedy /
    Random). Defaults (3neutronstar/GuidedMixup README, Guided-AP CIFAR-100 command): mix_prob 0.8, clean_lam 0
    (their Tiny-ImageNet command: 1.0). A 1e-12 in the denominator keeps M finite where both maps are 0.
    """

    name = "guided-ap"
    cite = "Kang & Kim, GuidedMixup: An efficient mixup strategy guided by saliency maps, AAAI 2023"
    pairing: str = "greedy"  # README: --condition greedy
    prob: float = 0.8  # README: --mix_prob 0.8
    clean_lam: float = 0.0  # README CIFAR-100 command (Tiny-ImageNet: 1.0)
    blur: int = 7  # Gaussian kernel, guidedmixup_parser default
    blur_sigma: float = 3.0  # guidedmixup_parser default

    def __post_init__(self):
        _check_common(self)
        U.check("guided-ap pairing", self.pairing, self.pairing in ("greedy", "random"), "'greedy' or 'random'")
        U.check("guided-ap blur", self.blur, self.blur >= 1 and self.blur % 2 == 1, "an odd kernel size >= 1")

    def mix_with(self, batch: Batch, sal: torch.Tensor, generator):
        x = batch.x
        b, dev = x.shape[0], x.device
        if self.blur > 1 and min(sal.shape[-2:]) > self.blur // 2:
            sal = U.gaussian_blur(sal, self.blur, self.blur_sigma)
        sal = sal / sal.flatten(1).sum(1).clamp_min(1e-12).view(b, 1, 1)  # (B, H, W), sums to 1
        if self.pairing == "greedy":
            perm = greedy_cycle_pairing(torch.cdist(sal.flatten(1), sal.flatten(1)))
        else:
            perm = U.permutation(b, generator, dev)
        m = sal / (sal + sal[perm] + 1e-12)  # (B, H, W) weight of x_i
        ratio = m.flatten(1).mean(1)
        return m[:, None] * x + (1 - m[:, None]) * x[perm], U.pair_targets(batch.one_hot(), perm, ratio)


@register
@dataclass
class GuidedAPRandom(GuidedAP):
    """Guided-AP with random pairing (Table 6, 'Guided-AP (Random)'); everything else as `guided-ap`."""

    name = "guided-ap-random"
    pairing: str = "random"
