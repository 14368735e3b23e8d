"""Eq. (5) thresholds and the accept rule."""

import math

import numpy as np
import pytest
import torch

from diffcore.filter import (
    FilterConfig,
    accept,
    class_pairs,
    class_thresholds,
    cosine,
    expected_pairs,
    pairs_needed,
    sample_pairs,
)


@pytest.mark.parametrize("n,z", [(2, 5), (7, 21), (7, 10), (50, 300), (1300, 1000)])
def test_sampled_pairs_are_distinct_and_never_self(n, z):
    p = sample_pairs(n, z, np.random.default_rng(0))
    assert len(p) == expected_pairs(n, z)
    assert (p[:, 0] < p[:, 1]).all()  # never (i, i), one orientation only
    assert p.min() >= 0 and p.max() < n
    assert len({tuple(x) for x in p}) == len(p)


def test_expected_pairs_counts_distinct_pairs_up_to_z():
    assert [expected_pairs(n, 4) for n in range(6)] == [0, 0, 1, 3, 4, 4]  # C(n, 2), at most z


def test_tau_equals_brute_force_mean_when_z_covers_all_pairs():
    g = torch.Generator().manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(30, 8, generator=g), dim=-1)
    labels = [0] * 12 + [1] * 18
    pairs = class_pairs(labels, 2, z=10_000, seed=0)
    taus = class_thresholds(pairs, lambda idx: emb[torch.as_tensor(idx)])
    for k, members in ((0, range(12)), (1, range(12, 30))):
        members = list(members)
        sims = [float(emb[i] @ emb[j]) for a, i in enumerate(members) for j in members[a + 1 :]]
        assert len(sims) == math.comb(len(members), 2)
        assert taus[k] == pytest.approx(np.mean(sims), abs=1e-6)


def test_sampled_tau_is_seeded_and_close_to_exact():
    g = torch.Generator().manual_seed(1)
    emb = torch.nn.functional.normalize(torch.randn(200, 4, generator=g) + 1.0, dim=-1)
    labels = [0] * 200
    exact = class_thresholds(class_pairs(labels, 1, z=10**6, seed=0), lambda i: emb[torch.as_tensor(i)])[0]
    a = class_thresholds(class_pairs(labels, 1, z=2000, seed=3), lambda i: emb[torch.as_tensor(i)])[0]
    b = class_thresholds(class_pairs(labels, 1, z=2000, seed=3), lambda i: emb[torch.as_tensor(i)])[0]
    assert a == b
    assert a == pytest.approx(exact, abs=0.02)


def test_class_with_one_image_gets_the_mean_of_the_others_and_none_is_an_error():
    emb = torch.nn.functional.normalize(torch.randn(7, 4, generator=torch.Generator().manual_seed(2)), dim=-1)
    labels = [0, 0, 0, 1, 1, 1, 2]  # class 2 has a single image
    taus = class_thresholds(class_pairs(labels, 3, z=100, seed=0), lambda i: emb[torch.as_tensor(i)])
    assert taus[2] == pytest.approx((taus[0] + taus[1]) / 2)
    with pytest.raises(ValueError) as e:
        class_thresholds(class_pairs([0, 1], 2, z=10, seed=0), lambda i: emb[torch.as_tensor(i)])
    assert str(e.value) == "no class has two or more real images: tau (Eq. 5) cannot be estimated"


def test_a_class_of_one_image_before_the_others_does_not_stop_their_thresholds():
    emb = torch.nn.functional.normalize(torch.randn(5, 4, generator=torch.Generator().manual_seed(3)), dim=-1)
    labels = [0, 1, 1, 2, 2]  # the single-image class comes first
    taus = class_thresholds(class_pairs(labels, 3, z=100, seed=0), lambda i: emb[torch.as_tensor(i)])
    assert taus[1] == pytest.approx(float(emb[1] @ emb[2]), abs=1e-6)
    assert taus[2] == pytest.approx(float(emb[3] @ emb[4]), abs=1e-6)
    assert taus[0] == pytest.approx((taus[1] + taus[2]) / 2, abs=1e-6)


@pytest.mark.parametrize("n", range(3, 12))
def test_every_pair_can_be_drawn_and_exactly_z_are(n):
    """z = C(n, 2) - 1: each draw has exactly z distinct pairs, and over seeds every pair of range(n) comes up."""
    total = math.comb(n, 2)
    seen = set()
    for seed in range(60):
        p = sample_pairs(n, total - 1, np.random.default_rng(seed))
        assert len({tuple(x) for x in p.tolist()}) == len(p) == total - 1
        seen |= {tuple(x) for x in p.tolist()}
    assert seen == {(i, j) for i in range(n) for j in range(i + 1, n)}


def test_pairs_are_integer_index_pairs_for_every_class_and_empty_ones_stay_empty():
    pairs = class_pairs([0, 1, 1, 1], 3, z=10, seed=0)  # class 0: one image; class 2: none
    assert {k: (p.shape, p.dtype) for k, p in pairs.items()} == {
        0: ((0, 2), np.dtype(np.int64)),
        1: ((3, 2), np.dtype(np.int64)),
        2: ((0, 2), np.dtype(np.int64)),
    }
    assert pairs_needed(pairs).tolist() == [1, 2, 3]
    none = pairs_needed({0: pairs[0], 2: pairs[2]})  # nothing to embed
    assert (none.shape, none.dtype) == ((0,), np.dtype(np.int64))


def test_accept_is_strictly_greater_than_tau():
    sims = cosine(
        torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    )
    tau = torch.tensor([0.5, 0.0, math.sqrt(0.5)])
    assert accept(sims, tau).tolist() == [True, False, False]  # sim == tau is rejected (S > tau)


def test_filter_config_rejects_bad_values():
    with pytest.raises(ValueError, match="z_pairs=0"):
        FilterConfig(z_pairs=0)
    with pytest.raises(ValueError, match="max_attempts=0"):
        FilterConfig(max_attempts=0)


def test_a_class_whose_pairs_are_all_taken_draws_nothing_from_the_generator():
    """C(n, 2) <= z: every pair, no draw; so the classes after it get the same sample as if it had two images."""
    z = 10
    five = class_pairs([0] * 5 + [1] * 30, 2, z=z, seed=0)  # C(5, 2) = 10 = z
    two = class_pairs([0] * 2 + [1] * 30, 2, z=z, seed=0)  # C(2, 2) = 1 < z
    assert len(five[0]) == math.comb(5, 2) and len(five[1]) == z
    assert (five[1] - 5).tolist() == (two[1] - 2).tolist()  # class 1's pairs, as positions within the class
