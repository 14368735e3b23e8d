"""Eq. (6)-(8): pixel blend, box patch, Bernoulli(0.5) choice; labels are never touched by mixing."""

import pytest
import torch

from diffcore.mix import MixConfig, box_masks, diffcore_mix


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
