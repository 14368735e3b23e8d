"""The comparison methods behind one interface: the invariants that define each, on tiny tensors, and a training
step of every method through diffcore.train.train_step at an even and an odd batch size."""

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from diffcore.methods import REGISTRY, Batch, build_method, mixed_loss
from diffcore.methods import common as U
from diffcore.methods.augment import OPS, apply_ops, jensen_shannon
from diffcore.methods.diffusemix import seam_mask
from diffcore.methods.mixup import manifold_stages
from diffcore.methods.saliency_guided import (
    class_activation_maps,
    fine_grained_saliency,
    from_blocks,
    greedy_cycle_pairing,
    grid_energy,
    icm_grid,
    mask_transport,
    to_blocks,
    transport,
)
from diffcore.models import DigitsCNN
from diffcore.train import TrainConfig, train_step

K = 10
FAST = {"pixmix": {"fractals": 2}, "diffusemix": {"fractals": 2}}  # a tiny fractal set keeps the tests fast
PAPER_METHODS = {
    "mixup",
    "cutmix",
    "augmix",
    "manifold-mixup",
    "pixmix",
    "saliencymix",
    "snapmix",
    "resizemix",
    "puzzlemix",
    "comixup",
    "guided-ap",
    "guided-ap-random",
    "diffusemix",
    "genaug",
    "vanilla",
    "pixel",
    "patch",
    "diffcore",
}


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def constant_batch(b, size=16):
    """Row i is the constant image (i + 1) / (b + 1) in pixels, label i: every pixel names its source image."""
    v = torch.arange(1, b + 1, dtype=torch.float32) / (b + 1)
    x = v.view(b, 1, 1, 1).expand(b, 3, size, size).clone()
    return Batch(x * 2 - 1, torch.arange(b), K), v * 2 - 1  # x normalised with mean = std = 0.5


def source_share(out, values):
    """(B, B) share of each output's pixels equal to each input's constant value (to float rounding)."""
    return torch.stack([((out[:, 0] - v).abs() < 1e-5).flatten(1).float().mean(1) for v in values], 1)


# ---------------------------------------------------------------- the interface
def test_every_method_of_the_papers_tables_is_trainable_by_name():
    assert PAPER_METHODS <= set(REGISTRY)
    for name, cls in REGISTRY.items():
        assert cls.cite and cls.__doc__, name
        assert cls.uses in (None, "counterparts", "edits")
    assert REGISTRY["diffusemix"].uses == "edits" and REGISTRY["genaug"].uses == "counterparts"


@pytest.mark.parametrize(
    "name, bad, word",
    [
        ("mixup", {"alpha": 0}, "alpha"),
        ("cutmix", {"prob": 2}, "prob"),
        ("guided-ap", {"pairing": "best"}, "pairing"),
        ("augmix", {"depth": 0}, "depth"),
        ("mixup", {"beta": 1}, "hyperparam"),
    ],
)
def test_bad_hyperparameters_fail_loudly(name, bad, word):
    with pytest.raises(ValueError, match=word):
        build_method(name, **bad)


@pytest.mark.parametrize("b", [6, 5])
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_method_trains_a_step(name, b):
    torch.manual_seed(0)
    model = DigitsCNN(K)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    cfg = TrainConfig(
        method=name, method_args=FAST.get(name, {}), model="digits-cnn", image_size=32, augment="digits", device="cpu"
    )
    real = torch.rand(b, 3, 32, 32) * 2 - 1
    batch = (real, real.flip(-1), torch.arange(b) % K, torch.arange(b) % 2 == 0)  # half the rows have a pair
    before = [p.detach().clone() for p in model.parameters()]
    loss = train_step(model, opt, batch, cfg, build_method(name, **FAST.get(name, {})), K, gen(), "cpu")
    assert loss == loss and loss > 0  # finite, not NaN
    assert any(not torch.equal(p0, p) for p0, p in zip(before, model.parameters()))
    assert model.training


@pytest.mark.parametrize("b", [6, 5, 1])
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_targets_are_hard_labels_or_soft_weights(name, b):
    batch = Batch(
        torch.rand(b, 3, 16, 16) * 2 - 1,
        torch.arange(b) % K,
        K,
        gen=torch.rand(b, 3, 16, 16) * 2 - 1,
        is_pair=torch.ones(b, dtype=torch.bool),
    )
    m = build_method(name, **FAST.get(name, {}))
    logits, target = m.forward(DigitsCNN(K), batch, gen(1))
    # 2B: clean rows of a clean_lam method; 3B: AugMix's (clean, augmix, augmix) views for its JSD loss
    assert logits.shape[1] == K and logits.shape[0] in ((b, 2 * b, 3 * b) if name == "augmix" else (b, 2 * b))
    if target.dtype == torch.long:
        assert torch.equal(target, batch.y)
        assert torch.isfinite(m.loss(logits, target))
    else:
        assert target.shape == logits.shape and (target >= 0).all()
        if name not in ("snapmix", "comixup"):
            torch.testing.assert_close(target.sum(1), torch.ones(len(target)))


# ---------------------------------------------------------------- Mixup family
@pytest.mark.parametrize("per_sample", [False, True])
def test_mixup_is_one_convex_combination_of_images_and_labels(per_sample):
    b = 7
    batch = Batch(torch.randn(b, 3, 8, 8), torch.arange(b), K)
    x, t = build_method("mixup", per_sample=per_sample).mix(batch, gen(3))
    torch.testing.assert_close(t.sum(1), torch.ones(b))
    lam = t[torch.arange(b), batch.y]  # own weight (1 where paired with itself)
    partner = torch.where(lam < 1, (t - torch.eye(K)[:b] * lam[:, None]).argmax(1), torch.arange(b))
    torch.testing.assert_close(x, lam.view(b, 1, 1, 1) * batch.x + (1 - lam.view(b, 1, 1, 1)) * batch.x[partner])
    if not per_sample:
        assert len(set(lam[lam < 1].tolist())) <= 1  # one lam for the batch


@pytest.mark.parametrize(
    "name, kw",
    [
        ("cutmix", {}),
        ("cutmix", {"per_sample": True}),
        ("resizemix", {}),
        ("resizemix", {"per_sample": True}),
        ("saliencymix", {}),
    ],
)
@pytest.mark.parametrize("b", [6, 5])
def test_box_methods_label_weight_is_exactly_the_kept_area(name, kw, b):
    batch, values = constant_batch(b)
    for seed in range(5):
        x, t = build_method(name, **kw).mix(batch, gen(seed))
        share = source_share(x, values)  # (B, B) pixels from each source
        assert torch.allclose(share.sum(1), torch.ones(b))  # every pixel is one source's, unblended
        torch.testing.assert_close(t[:, :b], share)  # label weights == areas


def test_cutmix_box_follows_the_sqrt_rule():
    batch, values = constant_batch(4, size=32)
    p = build_method("cutmix").plan(batch, gen(5))
    rows, cols = p.mask[0, 0].any(1), p.mask[0, 0].any(0)
    assert rows.sum() <= 32 and (p.mask[0, 0] == (rows[:, None] & cols[None])).all()  # one rectangle


def test_resizemix_pastes_the_whole_partner_scaled_by_tau():
    batch = Batch(torch.linspace(-1, 1, 32).view(1, 1, 1, 32).expand(3, 3, 32, 32).clone(), torch.arange(3), K)
    m = build_method("resizemix", per_sample=True)
    perm, boxes = m.plan(batch, gen(2))
    side = (boxes[:, 2] - boxes[:, 0]).float() / 32
    assert ((side >= 0.1 - 1 / 32) & (side <= 0.8)).all()
    assert ((boxes[:, :2] >= 0) & (boxes[:, 2:] <= 32)).all()  # inside the image
    out, _ = m.mix(batch, gen(2))
    y1, x1, y2, x2 = boxes[0].tolist()
    patch = out[0, 0, y1:y2, x1:x2]
    assert patch[0, 0] < patch[0, -1]  # the partner's left-to-right ramp, shrunk


def test_manifold_mixup_mixes_hidden_states_and_leaves_no_hook():
    model = DigitsCNN(K).eval()
    same = Batch(torch.randn(1, 3, 32, 32).expand(5, 3, 32, 32).clone(), torch.arange(5), K)
    m = build_method("manifold-mixup")
    for seed in range(6):  # k = 0, 1, 2 all occur
        logits, t = m.forward(model, same, gen(seed))
        torch.testing.assert_close(logits, model(same.x))  # mixing identical states changes nothing
        torch.testing.assert_close(t.sum(1), torch.ones(5))
    assert all(not s._forward_hooks for s in manifold_stages(model))
    x = Batch(torch.randn(5, 3, 32, 32), torch.arange(5), K)
    outs = {tuple(m.forward(model, x, gen(s))[0][0].tolist()) for s in range(6)}
    assert len(outs) > 1


# ---------------------------------------------------------------- augmentation chains
def test_base_operations_keep_shape_and_range():
    p = torch.rand(9, 3, 16, 16)
    out = apply_ops(p, torch.arange(9), 10.0, gen())
    assert out.shape == p.shape and out.min() >= 0 and out.max() <= 1
    assert all(not torch.equal(out[k], p[k]) for k in range(9))  # every operation acts
    same = apply_ops(p, torch.full((9,), -1), 3.0, gen())
    assert torch.equal(same, p)  # op -1: untouched
    assert len(OPS) == 9


@pytest.mark.parametrize("name", ["augmix", "pixmix"])
def test_augmix_pixmix_keep_shape_range_and_labels(name):
    batch = Batch(torch.rand(6, 3, 16, 16) * 2 - 1, torch.arange(6), K)
    x, t = build_method(name, **FAST.get(name, {})).mix(batch, gen(4))
    p = batch.to_pixels(x)
    assert x.shape == batch.x.shape and p.min() >= -1e-6 and p.max() <= 1 + 1e-6
    assert torch.equal(t, batch.y)
    assert not torch.allclose(x, batch.x)


def test_augmix_jsd_loss_is_ce_plus_consistency():
    z = torch.randn(4, K)
    assert float(jensen_shannon(z, z, z)) == pytest.approx(0, abs=1e-6)
    assert float(jensen_shannon(z, z, -z)) > 0
    m = build_method("augmix", jsd=True)
    batch = Batch(torch.rand(4, 3, 16, 16) * 2 - 1, torch.arange(4), K)
    logits, y = m.forward(DigitsCNN(K), batch, gen())
    assert logits.shape == (12, K) and torch.equal(y, batch.y)
    c, a, b2 = logits.chunk(3)
    torch.testing.assert_close(m.loss(logits, y), nn.functional.cross_entropy(c, y) + 12 * jensen_shannon(c, a, b2))
    assert build_method("augmix", jsd=False).loss(logits[:4], y) == mixed_loss(logits[:4], y)


# ---------------------------------------------------------------- saliency-guided
def dot_batch(positions, size=32):
    x = torch.full((len(positions), 3, size, size), -1.0)
    for i, (r, c) in enumerate(positions):
        x[i, :, r, c] = 1.0
    return Batch(x, torch.arange(len(positions)), K)


@pytest.mark.parametrize("saliency", ["opencv", "opencv-float", "torch"])
def test_saliencymix_box_is_centred_on_the_partners_saliency_peak(saliency):
    pos = [(8, 9), (16, 16), (20, 12), (11, 24), (25, 5)]
    batch = dot_batch(pos)
    m = build_method("saliencymix", saliency=saliency)
    import cv2  # OpenCV's own map, quantised as SaliencyMix does, gives the peaks ('torch' is the same algorithm)

    detector = cv2.saliency.StaticSaliencyFineGrained_create()
    pix = (batch.to_pixels(batch.x) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    arrays = batch.x.permute(0, 2, 3, 1).numpy() if saliency == "opencv-float" else pix
    maps = [(detector.computeSaliency(np.ascontiguousarray(a))[1] * 255).astype("uint8") for a in arrays]
    peaks = [divmod(int(q.argmax()), 32) for q in maps]
    for seed in range(4):
        p = m.plan(batch, gen(seed))
        for i in range(5):
            cy, cx = peaks[int(p.perm[i])]
            assert tuple(p.peaks[i].tolist()) == (cy, cx)
            y1, x1, y2, x2 = p.boxes[i].tolist()
            # centred on the peak wherever the box is not clipped by the border, and containing it
            assert (y1 == 0 or y2 == 32 or cy - y1 == y2 - cy) and (x1 == 0 or x2 == 32 or cx - x1 == x2 - cx)
            assert y1 == y2 or x1 == x2 or (y1 <= cy < y2 and x1 <= cx < x2)


def test_saliencymix_opencv_map_is_cv2s_on_the_uint8_image():
    import cv2

    torch.manual_seed(0)
    pix = (torch.rand(3, 3, 24, 24) * 255).round() / 255
    batch = Batch(pix * 2 - 1, torch.arange(3), K)
    got = build_method("saliencymix").saliency_map(batch, batch.x)
    u8 = (pix * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    want = [
        (cv2.saliency.StaticSaliencyFineGrained_create().computeSaliency(a.copy())[1] * 255).astype("uint8") for a in u8
    ]
    assert got.dtype == torch.uint8 and np.array_equal(got.numpy(), np.stack(want))


class CamNet(nn.Module):
    """CAM = the image's first channel (ReLU), the same for every class: SnapMix's weights are geometry."""

    def __init__(self):
        super().__init__()
        self.features = nn.Conv2d(3, 1, 1, bias=False)
        self.head = nn.Linear(1, K)
        with torch.no_grad():
            self.features.weight.copy_(torch.tensor([1.0, 0, 0]).view(1, 3, 1, 1))
            self.head.weight.fill_(1.0)
            self.head.bias.zero_()

    def forward(self, x):
        return self.head(torch.relu(self.features(x)).mean((2, 3)))


def test_snapmix_label_weights_are_the_cam_mass_kept_and_taken():
    b, s = 5, 32
    x = torch.zeros(b, 3, s, s)
    squares = [(2, 2, 14, 14), (10, 10, 26, 26), (0, 16, 16, 32), (16, 0, 32, 16), (6, 6, 30, 30)]
    for i, (y1, x1, y2, x2) in enumerate(squares):
        x[i, 0, y1:y2, x1:x2] = 1.0
    batch = Batch(x, torch.arange(b), K, mean=(0, 0, 0), std=(1, 1, 1))
    model = CamNet()
    cam = class_activation_maps(model, x, batch.y, "snapmix")
    torch.testing.assert_close(cam.flatten(1).sum(1), torch.ones(b))
    m = build_method("snapmix", per_sample=True)
    for seed in range(4):
        g = gen(seed)
        U.coin(m.prob, g, "cpu")  # mix draws its prob coin first
        p = m.plan(batch, g, model)
        sq = U.box_mask(torch.tensor(squares), s, s)[:, 0].float()  # (B, H, W) the CAM's support
        dst, src = U.box_mask(p.dst_boxes, s, s)[:, 0].float(), U.box_mask(p.src_boxes, s, s)[:, 0].float()
        kept = 1 - (sq * dst).flatten(1).sum(1) / sq.flatten(1).sum(1)
        took = (sq[p.perm] * src).flatten(1).sum(1) / sq[p.perm].flatten(1).sum(1)
        torch.testing.assert_close(p.lam_a, torch.where(p.valid, kept, 1.0))
        torch.testing.assert_close(p.lam_b, torch.where(p.valid, took, 0.0))
        out, t = m.mix(batch, gen(seed), model)
        outside = ~U.box_mask(p.dst_boxes, s, s).expand_as(x)
        assert torch.equal(out[outside], x[outside])  # only the dst box changes
        torch.testing.assert_close(t.sum(1), p.lam_a + p.lam_b)  # need not sum to 1


def test_snapmix_flat_cam_falls_back_to_areas():
    model = CamNet()
    batch = Batch(torch.full((4, 3, 16, 16), -1.0), torch.arange(4), K)  # relu(-1) = 0: a flat CAM
    p = build_method("snapmix").plan(batch, gen(1), model)
    area = U.box_area(p.dst_boxes).float() / 256
    torch.testing.assert_close(p.lam_a, torch.where(p.valid, 1 - area, 1.0))
    torch.testing.assert_close(p.lam_b, torch.where(p.valid, area, 0.0))


def test_icm_reaches_a_local_minimum_that_never_beats_the_exact_one():
    torch.manual_seed(0)
    unary = torch.rand(3, 2, 2, 3)
    wr, wc = torch.rand(3, 1, 2), torch.rand(3, 2, 1)
    pair = (torch.arange(3.0)[:, None] - torch.arange(3.0)[None]) ** 2 / 4
    lab = icm_grid(unary, wr, wc, pair, sweeps=20)
    e = grid_energy(lab, unary, wr, wc, pair)
    assert (e <= grid_energy(unary.argmin(-1), unary, wr, wc, pair) + 1e-6).all()  # never worse than its start
    all_labs = torch.cartesian_prod(*[torch.arange(3)] * 4).view(-1, 2, 2)  # 81 labelings
    for i in range(3):
        energies = grid_energy(
            all_labs,
            unary[i : i + 1].expand(81, -1, -1, -1),
            wr[i : i + 1].expand(81, -1, -1),
            wc[i : i + 1].expand(81, -1, -1),
            pair,
        )
        assert e[i] >= energies.min() - 1e-6
        for node in range(4):  # no single-node move improves
            for label in range(3):
                moved = lab[i].clone().flatten()
                moved[node] = label
                e2 = grid_energy(moved.view(1, 2, 2), unary[i : i + 1], wr[i : i + 1], wc[i : i + 1], pair)
                assert e2 >= e[i] - 1e-6


def one_hot_transport(mask, sal, eps):
    """PuzzleMix's mask_transport written as the reference code does: (B, N, N) one-hot plans, each column's
    winner the first minimum of plan * cost (sources that did not claim it count 0)."""
    b, n2 = sal.shape
    z = (mask.reshape(b, n2) > 0).float()
    cost = eps * U.grid_cost_matrix(int(n2**0.5), "cpu")[None] - sal[:, :, None] * z[:, None, :]
    for _ in range(int(n2**0.5)):
        plan = torch.zeros_like(cost).scatter_(-1, cost.min(-1)[1].unsqueeze(-1), 1)
        win = torch.zeros_like(cost).scatter_(-2, (plan * cost).min(-2)[1].unsqueeze(-2), 1) * plan
        cost += (1 - win) * plan
    return win


def test_transport_plan_moves_whole_blocks_one_to_one():
    torch.manual_seed(1)
    mask = (torch.rand(2, 1, 4, 4) > 0.5).float()
    sal = torch.rand(2, 16).softmax(1)
    plan = mask_transport(mask, sal, eps=0.8)
    assert (plan.sum(1) <= 1).all() and (plan.sum(2) <= 1).all()  # a partial permutation
    assert torch.equal(plan, one_hot_transport(mask, sal, 0.8))
    mask8 = (torch.rand(3, 1, 8, 8) > 0.5).float()
    sal8 = torch.rand(3, 64).softmax(1)
    assert torch.equal(mask_transport(mask8, sal8, 0.8), one_hot_transport(mask8, sal8, 0.8))
    for eps, seed in [(0.8, 0), (0.01, 1), (5.0, 2)]:  # claims cheaper and dearer than 0: every column rule
        torch.manual_seed(seed)
        m16, s16 = (torch.rand(4, 1, 16, 16) > 0.3).float(), torch.rand(4, 256).softmax(1)
        assert torch.equal(mask_transport(m16, s16, eps), one_hot_transport(m16, s16, eps))
    img = torch.randn(2, 3, 16, 16)
    assert torch.equal(from_blocks(to_blocks(img, 4), 4), img)
    assert torch.equal(transport(img, torch.eye(16).expand(2, 16, 16), 4), img)


@pytest.mark.parametrize("b", [6, 5])
def test_puzzlemix_target_is_the_mask_mean(b):
    batch, values = constant_batch(b, size=32)
    model = DigitsCNN(K)
    x, t = build_method("puzzlemix", transport=False).mix(batch, gen(2), model)
    torch.testing.assert_close(t.sum(1), torch.ones(b))
    own = t[torch.arange(b), torch.arange(b)]  # labels are unique, so this is the mask mean
    other = t[:, :b].clone()
    other[torch.arange(b), torch.arange(b)] = 0
    partner = torch.where(own < 1, other.argmax(1), torch.arange(b))
    v_own, v_par = values.view(b, 1, 1), values[partner].view(b, 1, 1)
    m = torch.where(v_own == v_par, torch.ones_like(x[:, 0]), (x[:, 0] - v_par) / (v_own - v_par))
    assert ((m - 0).abs() < 1e-5).logical_or((m - 0.5).abs() < 1e-5).logical_or((m - 1).abs() < 1e-5).all()
    torch.testing.assert_close(m.flatten(1).mean(1), torch.where(partner == torch.arange(b), 1.0, own))


@pytest.mark.parametrize("b", [10, 5])
def test_comixup_outputs_are_block_labelings_with_matching_targets(b):
    batch, values = constant_batch(b, size=32)
    model = DigitsCNN(K)
    m = build_method("comixup", part=4)  # full partitions of 4, then the rest
    x, t = m.mix(batch, gen(3), model)
    share = source_share(x, values)  # (B, B)
    torch.testing.assert_close(share.sum(1), torch.ones(b))  # every pixel from exactly one input
    torch.testing.assert_close(t[:, :b], share)
    part = torch.arange(b) // 4
    assert (share[part[:, None] != part[None]] == 0).all()  # inputs mix only within their partition
    logits, target = m.forward(model, batch, gen(3))  # clean_lam = 1: CE(mix) + CE(clean)
    assert logits.shape == (2 * b, K)
    mix_l, clean_l = logits[:b], logits[b:]
    expected = mixed_loss(mix_l, target[:b] / 2) + nn.functional.cross_entropy(clean_l, batch.y)
    torch.testing.assert_close(mixed_loss(logits, target), expected)


def test_guided_ap_mixing_ratio_is_the_saliency_share():
    batch, values = constant_batch(6, size=16)
    x, t = build_method("guided-ap", prob=1.0).mix(batch, gen(1), DigitsCNN(K))
    own = t[torch.arange(6), torch.arange(6)]
    other = t[:, :6].clone()
    other[torch.arange(6), torch.arange(6)] = 0
    partner = other.argmax(1)
    assert sorted(partner.tolist()) == list(range(6)) and (partner != torch.arange(6)).all()
    m = (x[:, 0] - values[partner].view(6, 1, 1)) / (values.view(6, 1, 1) - values[partner].view(6, 1, 1))
    assert (m > -1e-5).all() and (m < 1 + 1e-5).all()
    torch.testing.assert_close(m.flatten(1).mean(1), own, atol=1e-5, rtol=0)


def test_greedy_pairing_is_one_cycle_starting_at_the_farthest_pair():
    pts = torch.tensor([[0.0], [1.0], [5.0], [2.0], [9.0]])
    partner = greedy_cycle_pairing(torch.cdist(pts, pts))
    assert int(partner[0]) == 4 or int(partner[4]) == 0  # 0 and 9 are the farthest pair
    seen, i = [], 0
    for _ in range(5):
        seen.append(i)
        i = int(partner[i])
    assert i == 0 and sorted(seen) == list(range(5))  # a single cycle through every row
    assert greedy_cycle_pairing(torch.zeros(1, 1)).tolist() == [0]


# ---------------------------------------------------------------- DiffuseMix
def test_diffusemix_concatenates_the_aligned_pair_then_blends_a_fractal():
    real, edit = Image.new("RGB", (40, 30), (0, 0, 0)), Image.new("RGB", (64, 64), (255, 255, 255))
    m = build_method("diffusemix", fractal_alpha=0.0, fractals=3, fractal_size=16)
    out = np.array(m.pair_image(real, edit, "img-a.png"))  # the real image is resized to the edit's size first
    assert out.shape == (64, 64, 3)
    vertical, k = m.draws("img-a.png")
    assert m.draws("img-a.png") == (vertical, k)  # fixed per pair, as the authors' blended files
    profile = (out[:, 0, 0] if vertical else out[0, :, 0]).astype(int)
    assert (profile[:22] == 0).all() and (profile[42:] == 255).all() and (np.diff(profile) >= 0).all()  # 20 px seam
    assert (out == (out[:, :1] if vertical else out[:1])).all()  # constant along the seam
    blended = np.array(build_method("diffusemix", fractals=3, fractal_size=16).pair_image(real, edit, "img-a.png"))
    frac = np.array(m.fractal_image(k).resize((64, 64)), dtype=np.float32)
    assert np.array_equal(blended, np.clip(0.8 * out.astype(np.float32) + 0.2 * frac, 0, 255).astype(np.uint8))
    draws = {m.draws(f"img-{i}.png") for i in range(40)}
    assert {v for v, _ in draws} == {True, False} and {f for _, f in draws} == {0, 1, 2}
    mask = seam_mask(512, 512, True, 20)[:, 0, 0]
    assert int(((mask > 0) & (mask < 1)).sum()) == 18 and mask[246] == 0 and mask[265] == 1  # 246, 20-px ramp, 246


def test_diffusemix_trains_on_the_composites_in_the_generated_slot():
    b = 6
    x, g = torch.rand(b, 3, 8, 8), torch.rand(b, 3, 8, 8)
    pair = torch.tensor([True, False, True, True, False, True])
    out, t = build_method("diffusemix").mix(Batch(x, torch.arange(b), K, gen=g, is_pair=pair), gen(0))
    assert torch.equal(out[pair], g[pair]) and torch.equal(out[~pair], x[~pair]) and torch.equal(t, torch.arange(b))
    with pytest.raises(ValueError, match="edited images"):
        build_method("diffusemix").mix(Batch(x, torch.arange(b), K), gen(0))


@pytest.mark.parametrize("size", [8, 32, 64, 224])
def test_fine_grained_saliency_in_torch_is_opencvs_map(size):
    """SaliencyMix's saliency='torch' path: OpenCV's algorithm rewritten in torch, pixel for pixel cv2's map."""
    import cv2

    from diffcore.data import digits

    g = torch.Generator().manual_seed(size)
    noise = (torch.rand(2, 3, size, size, generator=g) * 255).round().to(torch.uint8)
    ds = digits("train", size)
    real = torch.stack([torch.from_numpy(np.array(ds.load(i))).permute(2, 0, 1) for i in range(2)])
    u8 = torch.cat([noise, real])  # (4, 3, S, S)
    detector = cv2.saliency.StaticSaliencyFineGrained_create()
    arrays = u8.permute(0, 2, 3, 1).numpy()
    want = np.stack([(detector.computeSaliency(a.copy())[1] * 255).astype("uint8") for a in arrays])
    assert np.array_equal(fine_grained_saliency(u8).numpy(), want)
