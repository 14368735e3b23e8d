"""The graph cuts PuzzleMix and Co-Mixup run by default (pyGCO's alpha-beta swap, `gco-wrapper`): what a swap
guarantees, checked exactly by exhaustive search on tiny grids whose energies pyGCO represents without rounding."""

import itertools
import subprocess
import sys

import numpy as np
import pytest
import torch

from diffcore.methods import Batch, build_method
from diffcore.methods import graphcut as GC
from diffcore.methods import saliency_guided as S


def grid_energy(lab, unary, pair, cv, ch) -> float:
    """sum_p unary[p, l_p] + sum_(p,q) w_pq * pair[l_p, l_q] on a 4-connected grid, in float64."""
    lab = np.asarray(lab).reshape(unary.shape[:2])
    e = np.take_along_axis(unary, lab[..., None], -1).sum()
    e += (cv * pair[lab[:-1], lab[1:]]).sum() + (ch * pair[lab[:, :-1], lab[:, 1:]]).sum()
    return float(e)


def test_two_labels_the_swap_is_the_exhaustive_optimum():
    """With two labels one swap move is an exact minimum cut: the global optimum, whatever the costs."""
    rng = np.random.default_rng(0)
    pair = np.array([[0, 1], [1, 0]], np.int32)
    for _ in range(25):
        unary = rng.integers(-20, 20, (3, 3, 2)).astype(np.int32)
        cv, ch = rng.integers(0, 12, (2, 3)).astype(np.int32), rng.integers(0, 12, (3, 2)).astype(np.int32)
        lab = GC.swap_grid(unary, pair, cv, ch)
        best = min(grid_energy(c, unary, pair, cv, ch) for c in itertools.product([0, 1], repeat=9))
        assert grid_energy(lab, unary, pair, cv, ch) == best


def test_three_labels_no_swap_move_improves():
    """PuzzleMix's three labels (pair cost (l - l')^2 / 4, float): the labeling is a local minimum with respect to
    every alpha-beta swap (each node labelled alpha or beta may take either), checked move by move."""
    rng = np.random.default_rng(1)
    pair = np.array([[(i - j) ** 2 / 4 for j in range(3)] for i in range(3)], np.float32)
    for _ in range(10):
        unary = rng.integers(0, 30, (3, 3, 3)).astype(np.float32)  # integers: pyGCO's x1e5 scaling is exact
        cv, ch = rng.integers(0, 20, (2, 3)).astype(np.float32), rng.integers(0, 20, (3, 2)).astype(np.float32)
        lab = GC.swap_grid(unary, pair, cv, ch).flatten()
        e = grid_energy(lab, unary, pair, cv, ch)
        for a, b in itertools.combinations(range(3), 2):
            nodes = np.flatnonzero((lab == a) | (lab == b))
            for choice in itertools.product([a, b], repeat=len(nodes)):
                moved = lab.copy()
                moved[nodes] = choice
                assert grid_energy(moved, unary, pair, cv, ch) >= e


def test_a_single_label_is_refused_in_python_not_by_an_abort():
    with pytest.raises(ValueError, match="at least 2"):
        GC.swap_grid(np.zeros((2, 2, 1), np.float32), np.zeros((1, 1), np.float32), np.ones((1, 2)), np.ones((2, 1)))


@pytest.mark.parametrize("lam", [0.0, 0.3, 0.5, 0.97])
def test_puzzle_prior_is_the_authors_formula_bit_for_bit(lam):
    eta, n, eps = 0.2, 4, 1e-8
    theirs = {
        2: np.array([-np.log(lam + eps), -np.log(1 - lam + eps)]),
        3: np.array([-np.log(lam**2 + eps), -np.log(2 * lam * (1 - lam) + eps), -np.log((1 - lam) ** 2 + eps)]),
        4: np.array(
            [
                -np.log(lam**3 + eps),
                -np.log(3 * lam**2 * (1 - lam) + eps),
                -np.log(3 * lam * (1 - lam) ** 2 + eps),
                -np.log((1 - lam) ** 3 + eps),
            ]
        ),
    }
    for nl, p in theirs.items():
        assert np.array_equal(GC.puzzle_prior(lam, eta, nl, n), eta * p / n**2)


def test_puzzlemix_graphcut_labels_are_swap_minima_of_the_integer_energy():
    """Each image's labels leave no single-node change that lowers the int32 energy pyGCO minimised."""
    torch.manual_seed(0)
    b, size, n = 3, 16, 4
    x = torch.rand(b, 3, size, size)
    sal = torch.rand(b, size, size)
    g = S.puzzle_graph(x, sal, torch.tensor([1, 2, 0]), n, 0.4, 1.2, 0.5, 0.2, 4, 3)
    lab = GC.puzzle_graphcut(g.own, g.partner, g.w_rows, g.w_cols, g.prior, 3).numpy()
    large = 1000 * n**2
    pair = np.array([[0, 0.25, 1], [0.25, 0, 0.25], [1, 0.25, 0]])
    for i in range(b):
        steps = np.linspace(0, 1, 3)
        unary = (
            large
            * np.stack(
                [(1 - s) * g.partner[i].numpy() + s * g.own[i].numpy() + g.prior[k] for k, s in enumerate(steps)], -1
            )
        ).astype(np.int32)
        cv = (large * g.w_rows[i].numpy()).astype(np.int32).astype(np.int64)
        ch = (large * g.w_cols[i].numpy()).astype(np.int32).astype(np.int64)
        scaled = (1e5 * unary.astype(np.float64), pair, 1e5 * cv, 1e5 * ch)  # pyGCO: unary x1e5, w x1e3, pair x1e2
        e = grid_energy(lab[i], *scaled)
        for r, c, label in itertools.product(range(n), range(n), range(3)):
            moved = lab[i].copy()
            moved[r, c] = label
            assert grid_energy(moved, *scaled) >= e


def test_comixup_outputs_without_diversity_are_each_the_exhaustive_optimum():
    """gamma = 0 and one outer iteration: each output of two inputs is one two-label cut, the global minimum of its
    unary + Potts energy (integer costs and beta' = 1, so pyGCO's scaling is exact)."""
    rng = np.random.default_rng(2)
    n = m = 3
    for _ in range(5):
        cost = torch.from_numpy(rng.integers(-5, 5, (2, n, m)).astype(np.float32))
        init = torch.from_numpy(rng.integers(0, 2, (2, n, m)))
        mask = GC.comixup_graphcut(cost, torch.eye(2), init, beta=n * m, gamma=0.0, thres=0.83, niter=1)
        lab = mask.argmax(-1).numpy()
        unary = cost.permute(1, 2, 0).numpy().astype(np.float64)
        pair, ones_v, ones_h = 1 - np.eye(2), np.ones((n - 1, m)), np.ones((n, m - 1))
        best = min(grid_energy(c, unary, pair, ones_v, ones_h) for c in itertools.product([0, 1], repeat=n * m))
        for out in lab:
            assert grid_energy(out, unary, pair, ones_v, ones_h) == best


def test_comixup_masks_are_hard_or_half_blends_and_sum_to_one():
    torch.manual_seed(3)
    cost = GC.comixup_cost(torch.rand(6, 4, 4), torch.distributions.Dirichlet(torch.full((6,), 2.0)).sample(), 0.05)
    mask = GC.comixup_graphcut(cost, torch.eye(6), torch.randint(0, 6, (6, 4, 4)), 0.32, 1.0, 0.83, 4)
    assert mask.shape == (6, 4, 4, 6)
    torch.testing.assert_close(mask.sum(-1), torch.ones(6, 4, 4))
    assert set(mask.unique().tolist()) <= {0.0, 0.5, 1.0}
    one = GC.comixup_graphcut(cost[:1], torch.eye(1), torch.zeros(1, 4, 4, dtype=torch.long), 0.32, 1.0, 0.83, 4)
    assert torch.equal(one, torch.ones(1, 4, 4, 1))  # a partition of one input: itself, no graph cut


@pytest.mark.parametrize("name", ["puzzlemix", "comixup"])
def test_graphcut_is_the_default_and_icm_the_opt_in(name):
    assert build_method(name).solver == "graphcut" and build_method(name, solver="icm").solver == "icm"
    with pytest.raises(ValueError, match="solver"):
        build_method(name, solver="exact")


def test_comixup_icm_and_graphcut_share_the_problems_and_their_draws():
    torch.manual_seed(4)
    b = 7
    x = torch.rand(b, 3, 16, 16) * 2 - 1
    sal = torch.rand(b, 16, 16)
    m = build_method("comixup", part=4)
    probs = m.problems(sal, torch.Generator().manual_seed(0))
    again = build_method("comixup", part=4, solver="icm").problems(sal, torch.Generator().manual_seed(0))
    assert [p.rows.shape for p in probs] == [(1, 4), (1, 3)]
    for p, q in zip(probs, again):
        assert all(torch.equal(u, v) for u, v in zip(p, q))
    for solver in ("graphcut", "icm"):
        out, t = build_method("comixup", part=4, solver=solver).mix_with(
            Batch(x, torch.arange(b), b), sal, torch.Generator().manual_seed(0)
        )
        assert out.shape == x.shape and torch.allclose(t.sum(1), torch.ones(b))


def test_puzzlemix_neighbourhood_follows_the_authors_per_input_size():
    m = build_method("puzzlemix")
    assert [m.neighbourhood(s) for s in (32, 64, 224, 448)] == [4, 4, 2, 2]
    assert build_method("puzzlemix", neigh_size=8).neighbourhood(224) == 8


def test_importing_diffcore_does_not_import_gco_or_patch_numpy():
    """pyGCO's import sets numpy.int & co. back; it happens only when a graph cut runs."""
    code = "import numpy, diffcore.methods, diffcore.train, sys; print('gco' in sys.modules, hasattr(numpy, 'int'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]  # numpy >= 1.24 (pyproject: >= 1.26) has no numpy.int of its own


def test_table6_times_the_default_solvers_and_the_fast_paths_as_extra_rows():
    from diffcore.bench import FAST_PATHS, time_training
    from diffcore.book.tables import overhead_table

    variants = tuple(v for v in FAST_PATHS if v[0] in ("puzzlemix", "saliencymix"))
    rows = time_training(
        ["puzzlemix", "saliencymix"],
        [4],
        "digits-cnn",
        16,
        steps=1,
        warmup=0,
        device="cpu",
        rounds=1,
        variants=variants,
    )
    assert [(r["method"], r["variant"]) for r in rows] == [
        ("vanilla", ""),
        ("puzzlemix", ""),
        ("saliencymix", ""),
        ("puzzlemix", "solver=icm"),
        ("saliencymix", "saliency=torch"),
    ]
    labels = list(overhead_table(rows)["method (paper row)"])
    assert "PuzzleMix" in labels and "PuzzleMix [opt-in solver=icm]" in labels
    from diffcore.bench.report import md_training

    md = md_training(rows)
    assert "| puzzlemix |" in md and "| puzzlemix [solver=icm] |" in md and "| saliencymix [saliency=torch] |" in md
