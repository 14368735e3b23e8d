"""Eq. (6)-(8): pixel blend, box patch, Bernoulli(0.5) choice; labels are never touched by mixing."""

import pytest
import torch

from diffcore.mix import MixConfig, beta, box_masks, diffcore_mix


def _batch(b=64, c=3, h=16, w=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, c, h, w, generator=g), torch.rand(b, c, h, w, generator=g)


def test_pixel_rows_equal_lambda_blend():
    real, gen = _batch()
    out = diffcore_mix(real, gen, MixConfig(mode="pixel"), torch.Generator().manual_seed(1))
    assert out.eta.all()
    lam = out.lam.view(-1, 1, 1, 1)
    torch.testing.assert_close(out.images, lam * real + (1 - lam) * gen, rtol=0, atol=0)


def test_patch_rows_take_exactly_the_box_from_real_and_the_rest_from_generated():
    real, gen = _batch()
    out = diffcore_mix(real, gen, MixConfig(mode="patch"), torch.Generator().manual_seed(2))
    assert not out.eta.any()
    m = out.masks.expand_as(real)
    assert torch.equal(out.images[m], real[m])
    assert torch.equal(out.images[~m], gen[~m])
    # each mask is one axis-aligned box: its rows and columns are contiguous ranges
    for mask in out.masks[:, 0]:
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        if len(rows):
            assert mask[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()
            assert mask.sum() == len(rows) * len(cols)


def test_both_mode_splits_pixel_and_patch_about_half_and_half():
    real, gen = _batch(b=4000, h=4, w=4)
    out = diffcore_mix(real, gen, MixConfig(), torch.Generator().manual_seed(3))
    share = out.eta.float().mean().item()
    assert abs(share - 0.5) < 0.03  # 4000 Bernoulli(0.5) draws: std 0.008
    lam = out.lam.view(-1, 1, 1, 1)
    px = out.eta
    torch.testing.assert_close(out.images[px], (lam * real + (1 - lam) * gen)[px], rtol=0, atol=0)
    patch = torch.where(out.masks, real, gen)
    assert torch.equal(out.images[~px], patch[~px])


def test_non_pairs_pass_through_and_none_mode_returns_generated():
    real, gen = _batch(b=8)
    is_pair = torch.tensor([True, False] * 4)
    out = diffcore_mix(real, gen, MixConfig(), torch.Generator().manual_seed(4), is_pair=is_pair)
    assert torch.equal(out.images[~is_pair], real[~is_pair])
    genaug = diffcore_mix(real, gen, MixConfig(mode="none"), torch.Generator().manual_seed(4))
    assert torch.equal(genaug.images, gen)


def test_same_generator_seed_gives_same_mix_and_lambda_follows_beta():
    real, gen = _batch(b=16)
    a = diffcore_mix(real, gen, MixConfig(), torch.Generator().manual_seed(5))
    b = diffcore_mix(real, gen, MixConfig(), torch.Generator().manual_seed(5))
    assert torch.equal(a.images, b.images)
    real, gen = _batch(b=20000, h=2, w=2)
    lam = diffcore_mix(real, gen, MixConfig(lam_alpha=2.0, lam_beta=5.0), torch.Generator().manual_seed(6)).lam
    assert abs(lam.mean().item() - 2 / 7) < 0.01  # Beta(2, 5) mean


def test_box_area_follows_cutmix_convention():
    area = torch.full((2000,), 0.25)
    m = box_masks(2000, 64, 64, area, torch.Generator().manual_seed(7))
    # side = sqrt(0.25) * 64 = 32 before clipping; clipping at the borders only shrinks the box
    assert m.sum((1, 2, 3)).max().item() == 32 * 32
    assert m.float().mean().item() < 0.25


def test_bad_config_and_shape_mismatch_fail_with_a_clear_message():
    with pytest.raises(ValueError, match="mix mode='cut'"):
        MixConfig(mode="cut")
    with pytest.raises(ValueError, match="p_pixel=1.5"):
        MixConfig(p_pixel=1.5)
    with pytest.raises(ValueError, match="differ in shape"):
        diffcore_mix(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 5, 5))


def rand_bbox(height: int, width: int, area: float, cy: int, cx: int) -> torch.Tensor:
    """CutMix's box (timm's rand_bbox, with cut_rat = sqrt(area) and the centre given), as a (H, W) bool mask."""
    side = min(max(area, 0.0), 1.0) ** 0.5
    half_h, half_w = int(height * side) // 2, int(width * side) // 2
    y1, y2 = min(max(cy - half_h, 0), height), min(max(cy + half_h, 0), height)
    x1, x2 = min(max(cx - half_w, 0), width), min(max(cx + half_w, 0), width)
    mask = torch.zeros(height, width, dtype=torch.bool)
    mask[y1:y2, x1:x2] = True
    return mask


@pytest.mark.parametrize("height,width", [(16, 16), (7, 9), (4, 64), (64, 4)])
def test_each_box_is_cutmixs_box_around_a_centre_drawn_uniformly_over_the_image(height, width):
    """Box by box equal to CutMix's convention for the centre drawn (rows, then columns, from the generator);
    areas outside [0, 1] count as 1 and 0. Every centre of the image is drawn, none outside it."""
    n = 600
    area = torch.cat([torch.rand(n - 4, generator=torch.Generator().manual_seed(8)), torch.tensor([0, 1, 1.5, -0.5])])
    masks = box_masks(n, height, width, area, torch.Generator().manual_seed(9))
    assert masks.shape == (n, 1, height, width) and masks.dtype == torch.bool
    g = torch.Generator().manual_seed(9)
    cy, cx = torch.randint(0, height, (n,), generator=g), torch.randint(0, width, (n,), generator=g)
    for k in range(n):
        assert torch.equal(masks[k, 0], rand_bbox(height, width, float(area[k]), int(cy[k]), int(cx[k]))), k
    assert set(cy.tolist()) == set(range(height)) and set(cx.tolist()) == set(range(width))


def test_the_default_draws_are_the_generators_uniform_draws_in_a_fixed_order():
    """lambda ~ U(0, 1) = Beta(1, 1), the box's area ~ Beta(1, 1), then eta, then the box centres: a seed gives the
    same mix in every version of the kit (results are recorded with their seeds)."""
    real, gen = _batch(b=32)
    out = diffcore_mix(real, gen, MixConfig(), torch.Generator().manual_seed(10))
    g = torch.Generator().manual_seed(10)
    lam, area, eta = (torch.rand(32, generator=g) for _ in range(3))
    assert torch.equal(out.lam, lam) and torch.equal(out.eta, eta < 0.5)
    assert torch.equal(out.masks, box_masks(32, 16, 16, area, g))
    assert torch.equal(
        beta(1.0, 1.0, 5, torch.Generator().manual_seed(3), "cpu"),
        torch.rand(5, generator=torch.Generator().manual_seed(3)),
    )


@pytest.mark.parametrize("a,b", [(1.0, 3.0), (3.0, 1.0), (2.0, 5.0), (0.5, 0.5)])
def test_beta_draws_follow_beta_a_b_from_the_generator_alone(a, b):
    draws = beta(a, b, 40000, torch.Generator().manual_seed(11), "cpu")
    assert abs(draws.mean().item() - a / (a + b)) < 0.01  # std of the mean < 0.003
    assert abs(draws.var().item() - a * b / ((a + b) ** 2 * (a + b + 1))) < 0.01
    torch.manual_seed(0)  # the global generator plays no part
    again = beta(a, b, 40000, torch.Generator().manual_seed(11), "cpu")
    assert torch.equal(draws, again)


@pytest.mark.parametrize("cfg", [MixConfig(), MixConfig(lam_alpha=2.0, lam_beta=5.0, box_alpha=0.5, p_pixel=0.3)])
def test_draws_are_made_on_the_generators_device_and_the_mix_lands_on_the_batchs(cfg):
    """A batch on another device than its generator (here the meta device, which holds no values): every draw is
    made by the generator, exactly as for a batch on the CPU, and moved; without a generator, the draws are the
    batch device's own and the CPU's generator is left alone."""
    cpu, meta = _batch(b=8), [x.to("meta") for x in _batch(b=8)]
    g_cpu, g_meta = torch.Generator().manual_seed(12), torch.Generator().manual_seed(12)
    on_cpu, on_meta = diffcore_mix(*cpu, cfg, g_cpu), diffcore_mix(*meta, cfg, g_meta)
    assert torch.equal(g_meta.get_state(), g_cpu.get_state())  # the same draws, from the generator
    is_pair = torch.tensor([True, False] * 4)  # from the loader, on the CPU, while the batch is on the device
    for out in (on_meta, diffcore_mix(*meta, cfg), diffcore_mix(*meta, cfg, g_meta, is_pair)):
        assert {t.device.type for t in out} == {"meta"}
        assert [(t.shape, t.dtype) for t in out] == [(t.shape, t.dtype) for t in on_cpu]
    state = torch.get_rng_state()
    diffcore_mix(*meta, cfg)
    box_masks(8, 16, 16, torch.empty(8, device="meta"), None, "meta")
    beta(2.0, 5.0, 8, None, "meta")
    assert torch.equal(torch.get_rng_state(), state)


def test_a_half_precision_batch_is_mixed_in_its_own_precision():
    real, gen = (x.to(torch.bfloat16) for x in _batch(b=8))
    out = diffcore_mix(real, gen, MixConfig(mode="pixel"), torch.Generator().manual_seed(13))
    assert out.images.dtype == out.lam.dtype == torch.bfloat16
    lam = out.lam.view(-1, 1, 1, 1)
    assert torch.equal(out.images, lam * real + (1 - lam) * gen)


@pytest.mark.parametrize(
    "name,mode", [("pixel", "pixel"), ("patch", "patch"), ("genaug", "none"), ("diffcore", "both")]
)
def test_each_paired_method_mixes_in_its_own_mode_with_the_given_generator_and_leaves_unpaired_rows(name, mode):
    """Table 7's rows: the method's mode, not the config's; every draw from the generator it is given (the global
    RNG untouched: a resumed run replays the same mix); a row without a counterpart passes through unmixed."""
    from dataclasses import replace

    from diffcore.methods import Batch, build_method

    real, gen = _batch(b=8, seed=4)
    is_pair = torch.tensor([True, True, False, True, False, True, True, True])
    batch = Batch(x=real, y=torch.arange(8), num_classes=8, gen=gen, is_pair=is_pair)
    method = build_method(name)
    state = torch.get_rng_state()
    images, y = method.mix(batch, torch.Generator().manual_seed(5))
    assert torch.equal(torch.get_rng_state(), state)
    want = diffcore_mix(real, gen, replace(method.mix_config, mode=mode), torch.Generator().manual_seed(5), is_pair)
    assert torch.equal(images, want.images) and torch.equal(y, batch.y)
    assert torch.equal(images[~is_pair], real[~is_pair])
    if mode == "pixel":
        lam = want.lam.view(-1, 1, 1, 1)
        assert torch.allclose(images[is_pair], (lam * real + (1 - lam) * gen)[is_pair])
