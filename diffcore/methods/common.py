"""Small pieces shared by the mixing methods: random draws from a passed-in generator, soft targets, boxes,
resized pastes, the model's feature / classifier layers and input-gradient saliency.

Every random draw takes `generator` (on the batch's device or on the CPU; small vectors are moved), never the
global RNG, so a seeded run mixes the same way on any device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..mix import beta as mix_beta


def gen_device(generator: torch.Generator | None, device: torch.device) -> torch.device:
    return generator.device if generator is not None else device


def uniform(n: int, generator, device, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """(n,) U(low, high) on `device`."""
    return (low + (high - low) * torch.rand(n, generator=generator, device=gen_device(generator, device))).to(device)


def beta(a: float, b: float, n: int, generator, device) -> torch.Tensor:
    """(n,) Beta(a, b) on `device` (diffcore.mix's sampler: torch's Beta takes no generator)."""
    return mix_beta(a, b, n, generator, gen_device(generator, device)).to(device)


def dirichlet(alpha: float, n: int, k: int, generator, device) -> torch.Tensor:
    """(n, k) rows ~ Dirichlet(alpha * 1_k), from gamma draws of `generator`."""
    g = torch._standard_gamma(
        torch.full((n, k), float(alpha), device=gen_device(generator, device)), generator=generator
    )
    return (g / g.sum(1, keepdim=True)).to(device)


def randint(low: int, high: int, n: int, generator, device) -> torch.Tensor:
    """(n,) integers in [low, high)."""
    return torch.randint(low, high, (n,), generator=generator, device=gen_device(generator, device)).to(device)


def permutation(n: int, generator, device) -> torch.Tensor:
    """(n,) a random permutation: row i is mixed with row perm[i] (identity for n = 1)."""
    return torch.randperm(n, generator=generator, device=gen_device(generator, device)).to(device)


def coin(p: float, generator, device) -> bool:
    """One Bernoulli(p) draw; always drawn, so the generator's stream does not depend on the outcome."""
    return bool(uniform(1, generator, device)[0] < p)


def pair_targets(
    onehot: torch.Tensor, perm: torch.Tensor, lam_a: torch.Tensor, lam_b: torch.Tensor | None = None
) -> torch.Tensor:
    """(B, K) soft targets lam_a * y + lam_b * y[perm]; lam_b defaults to 1 - lam_a (rows sum to 1)."""
    lam_a = lam_a.to(onehot.dtype).view(-1, 1)  # (B, 1)
    lam_b = 1 - lam_a if lam_b is None else lam_b.to(onehot.dtype).view(-1, 1)
    return lam_a * onehot + lam_b * onehot[perm]  # (B, K)


def check(name: str, value, ok: bool, allowed: str) -> None:
    """One-line error naming parameter, value and what is allowed (STYLE: fail loudly)."""
    if not ok:
        raise ValueError(f"{name}={value!r}: expected {allowed}")


# ---------------------------------------------------------------- boxes
def boxes_from_centres(
    cy: torch.Tensor, cx: torch.Tensor, cut_h: torch.Tensor, cut_w: torch.Tensor, height: int, width: int
) -> torch.Tensor:
    """(B, 4) int64 boxes (y1, x1, y2, x2), centred at (cy, cx) with side (cut_h, cut_w), clipped to the image.

    The CutMix / SaliencyMix `rand_bbox` convention: corners = centre -+ side // 2, then clipped.
    """
    y1 = (cy - cut_h // 2).clamp(0, height)
    y2 = (cy + cut_h // 2).clamp(0, height)
    x1 = (cx - cut_w // 2).clamp(0, width)
    x2 = (cx + cut_w // 2).clamp(0, width)
    return torch.stack([y1, x1, y2, x2], 1).long()  # (B, 4)


def cut_sides(lam: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Box sides for a pasted area of 1 - lam: side = int(size * sqrt(1 - lam)) (Yun et al. 2019, rand_bbox)."""
    rat = (1 - lam).clamp(0, 1).sqrt()
    return (height * rat).long(), (width * rat).long()


def box_mask(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, 1, H, W) bool, True inside each row's box (y1, x1, y2, x2)."""
    dev = boxes.device
    ys = torch.arange(height, device=dev)  # (H,)
    xs = torch.arange(width, device=dev)  # (W,)
    in_y = (ys[None] >= boxes[:, 0:1]) & (ys[None] < boxes[:, 2:3])  # (B, H)
    in_x = (xs[None] >= boxes[:, 1:2]) & (xs[None] < boxes[:, 3:4])  # (B, W)
    return (in_y[:, :, None] & in_x[:, None, :])[:, None]  # (B, 1, H, W)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """(B,) pixel count of each box."""
    return (boxes[:, 2] - boxes[:, 0]).clamp_min(0) * (boxes[:, 3] - boxes[:, 1]).clamp_min(0)


def paste_resized(
    dst: torch.Tensor, src: torch.Tensor, dst_boxes: torch.Tensor, src_boxes: torch.Tensor | None = None
) -> torch.Tensor:
    """Row i of `dst` with src[i]'s box `src_boxes[i]` (default: the whole image) resized into `dst_boxes[i]`.

    One bilinear grid_sample for the whole batch (boxes may differ per row), as F.interpolate with
    align_corners=False would resize each crop. Pixels outside dst's box are dst's exactly.
    """
    b, _, h, w = dst.shape
    dev, dt = dst.device, dst.dtype
    if src_boxes is None:
        src_boxes = torch.tensor([0, 0, src.shape[-2], src.shape[-1]], device=dev).expand(b, 4)
    d = dst_boxes.to(dev, dt)
    s = src_boxes.to(dev, dt)
    ys = torch.arange(h, device=dev, dtype=dt) + 0.5  # (H,) pixel centres
    xs = torch.arange(w, device=dev, dtype=dt) + 0.5  # (W,)
    u = (ys[None] - d[:, 0:1]) / (d[:, 2:3] - d[:, 0:1]).clamp_min(1)  # (B, H) position inside the dst box
    v = (xs[None] - d[:, 1:2]) / (d[:, 3:4] - d[:, 1:2]).clamp_min(1)  # (B, W)
    sy = s[:, 0:1] + u * (s[:, 2:3] - s[:, 0:1])  # (B, H) source coordinate in pixels
    sx = s[:, 1:2] + v * (s[:, 3:4] - s[:, 1:2])  # (B, W)
    gy = (2 * sy / src.shape[-2] - 1)[:, :, None].expand(b, h, w)  # (B, H, W) in grid_sample's [-1, 1]
    gx = (2 * sx / src.shape[-1] - 1)[:, None, :].expand(b, h, w)  # (B, H, W)
    grid = torch.stack([gx, gy], -1)  # (B, H, W, 2)
    sampled = F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return torch.where(box_mask(dst_boxes, h, w), sampled, dst)  # (B, C, H, W)


# ---------------------------------------------------------------- the model's layers
def find_layer(model: torch.nn.Module, names: tuple[str, ...], what: str, method: str) -> torch.nn.Module:
    """The first of `names` that is a submodule of `model`; a one-line error naming the candidates otherwise."""
    model = getattr(model, "module", model)  # under DDP, the wrapped model's layers
    for n in names:
        try:
            return model.get_submodule(n)
        except AttributeError:
            continue
    raise ValueError(f"method {method!r}: model {type(model).__name__} has no {what} named one of {list(names)}")


def feature_and_head(model: torch.nn.Module, method: str) -> tuple[torch.nn.Module, torch.nn.Linear]:
    """(last feature stage, final linear layer), by the names diffcore.models uses for Grad-CAM and fine-tuning."""
    from ..models import CLASSIFIER_LAYERS, SALIENCY_LAYERS

    feats = tuple(dict.fromkeys(n.split(".")[0] if n.startswith("features") else n for n in SALIENCY_LAYERS.values()))
    head = find_layer(model, tuple(dict.fromkeys(CLASSIFIER_LAYERS.values())), "final linear layer", method)
    if not isinstance(head, torch.nn.Linear):
        raise ValueError(f"method {method!r}: {type(head).__name__} is not a linear classifier layer")
    return find_layer(model, feats, "last feature stage", method), head


def features_of(model: torch.nn.Module, layer: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (B, K), the (B, C, h, w) output of `layer`) from one forward pass."""
    store = {}
    handle = layer.register_forward_hook(lambda m, i, o: store.__setitem__("out", o))
    try:
        logits = model(x)
    finally:
        handle.remove()
    return logits, store["out"]


def input_gradient_saliency(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, keep_graph: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """PuzzleMix / Co-Mixup / Guided-AP saliency: sqrt(mean_c (dCE/dx)^2), (B, H, W), and the clean logits.

    keep_graph=False (their clean_lam = 0): the model runs in eval mode, as in the reference code, and no graph is
    kept. keep_graph=True (clean_lam > 0): it runs in train mode and the clean logits are returned with their
    graph, so that the caller can add clean_lam * CE(clean) to the loss (the reference's clean input regulariser).
    """
    model = getattr(model, "module", model)  # under DDP, a forward that no DDP backward follows must skip DDP
    was_training = model.training
    xin = x.detach().requires_grad_(True)
    if not keep_graph:
        model.eval()
    try:
        with torch.enable_grad():
            logits = model(xin)  # (B, K)
            loss = F.cross_entropy(logits, y)
            (grad,) = torch.autograd.grad(loss, xin, retain_graph=keep_graph)
    finally:
        model.train(was_training)
    sal = grad.pow(2).mean(1).sqrt().detach()  # (B, H, W)
    return sal, (logits if keep_graph else None)


def with_clean_loss(
    logits_mix: torch.Tensor,
    target_mix: torch.Tensor,
    logits_clean: torch.Tensor | None,
    onehot: torch.Tensor,
    clean_lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and targets whose `mixed_loss` is exactly CE(mixed) + clean_lam * CE(clean).

    mixed_loss averages over rows, so stacking 2B rows halves each term; the weights 2 and 2 * clean_lam undo it.
    """
    if logits_clean is None:
        return logits_mix, target_mix
    return (
        torch.cat([logits_mix, logits_clean]),  # (2B, K)
        torch.cat([2 * target_mix, 2 * clean_lam * onehot]),
    )  # (2B, K)


def gaussian_blur(x: torch.Tensor, kernel: int, sigma: float) -> torch.Tensor:
    """(B, H, W) blurred with a separable Gaussian (torchvision's gaussian_blur kernel, reflect padding)."""
    half = (kernel - 1) / 2
    t = torch.linspace(-half, half, kernel, device=x.device, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    p = kernel // 2
    out = F.pad(x[:, None], (p, p, p, p), mode="reflect")  # (B, 1, H+2p, W+2p)
    out = F.conv2d(out, k.view(1, 1, 1, -1))  # (B, 1, H+2p, W)
    out = F.conv2d(out, k.view(1, 1, -1, 1))  # (B, 1, H, W)
    return out[:, 0]


def block_choices(height: int, width: int, options=(2, 4, 8, 16)) -> list[int]:
    """PuzzleMix's block counts 2^{1..4} that divide both sides of the image."""
    return [n for n in options if height % n == 0 and width % n == 0]


def grid_cost_matrix(n: int, device, dtype=torch.float32) -> torch.Tensor:
    """(n*n, n*n) squared distance between the cells of an n x n grid over (n - 1)^2 (PuzzleMix transport cost)."""
    idx = torch.arange(n * n, device=device)
    r, c = idx // n, idx % n
    d = (r[:, None] - r[None]) ** 2 + (c[:, None] - c[None]) ** 2
    return d.to(dtype) / max(1, (n - 1) ** 2)
