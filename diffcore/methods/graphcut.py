"""The graph cuts PuzzleMix and Co-Mixup minimise their energies with: pyGCO's alpha-beta swap (`gco-wrapper`,
`import gco`), on the CPU, one grid after the other, as the authors' code does (snu-mllab/PuzzleMix mixup.py
graphcut_multi, snu-mllab/Co-Mixup match.py graphcut_multi / graphcut_wrapper / get_onehot_matrix).

What a swap guarantees: with two labels one swap move is one exact minimum cut, so the labeling is a global
minimum of the (integer) energy; with more labels it is a local minimum with respect to every alpha-beta swap,
hence to every single-node change (tests/test_graphcut.py checks both on tiny grids by exhaustive search).

pyGCO works in integers: float energies are scaled (unary x 1e5, edge weights x 1e3, label costs x 1e2) and
truncated. PuzzleMix scales its terms to int32 itself first (x 1000 n^2); both conversions are reproduced here
operation for operation, so that the same inputs give the authors' labels exactly (benchmarks/fidelity.md).

`import gco` sets numpy.int, numpy.float and numpy.bool back to the builtins when they are missing (numpy >= 1.24),
a side effect on numpy; it is therefore imported only when a graph cut runs, never when diffcore is imported.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def gco_module():
    """pyGCO, imported on first use (see the module docstring); a one-line error naming the package otherwise."""
    try:
        import gco
    except ImportError as e:
        raise ImportError(
            f"the graph cut needs pyGCO: pip install gco-wrapper ({e}); or pass --method-arg solver=icm"
        ) from None
    return gco


def swap_grid(unary: np.ndarray, pair: np.ndarray, cost_v: np.ndarray, cost_h: np.ndarray) -> np.ndarray:
    """(n, m) labels from pyGCO's alpha-beta swap on an n x m grid (4-neighbourhood), run to convergence.

    unary (n, m, L); pair (L, L) label costs; cost_v (n-1, m) weights between vertical neighbours, cost_h (n, m-1)
    horizontal ones. int32 arrays are used as they are; float arrays are scaled and truncated by pyGCO.
    """
    n, m, nl = unary.shape
    if nl < 2:  # pyGCO aborts the whole process (an uncaught C++ exception) on a single label
        raise ValueError(f"swap_grid: {nl} label; expected at least 2 (a single label needs no graph cut)")
    labels = gco_module().cut_grid_graph(
        np.ascontiguousarray(unary), pair, cost_v, cost_h, algorithm="swap"
    )  # (n*m,) row-major
    return np.asarray(labels, dtype=np.int64).reshape(n, m)


# ---------------------------------------------------------------- PuzzleMix
def puzzle_prior(lam: float, eta: float, n_labels: int, n: int, eps: float = 1e-8) -> np.ndarray:
    """(L,) float64 prior of PuzzleMix's labels: -eta * log(P(l) + eps) / n^2, P binomial in lam.

    Label l keeps the own image with weight 1 - l / (L - 1), i.e. k = L - 1 - l of L - 1 shares; P(l) =
    C(L-1, k) lam^k (1 - lam)^(L-1-k), computed in the authors' order (graphcut_multi writes it out for L = 2, 3, 4:
    alpha**2, 2 * alpha * (1 - alpha), (1 - alpha)**2), so the floats are theirs bit for bit.
    """
    from math import comb

    p = [comb(n_labels - 1, k) * lam**k * (1 - lam) ** (n_labels - 1 - k) for k in range(n_labels - 1, -1, -1)]
    if n_labels == 2:  # their two-label line has no binomial factor and no power of 1
        p = [lam, 1 - lam]
    prior = np.array([-np.log(q + eps) for q in p])
    return eta * prior / n**2


def puzzle_graphcut(
    own: torch.Tensor,
    partner: torch.Tensor,
    w_rows: torch.Tensor,
    w_cols: torch.Tensor,
    prior: np.ndarray,
    n_labels: int,
) -> torch.Tensor:
    """(B, n, n) labels (0 = own image) minimising PuzzleMix's energy image by image with the alpha-beta swap.

    own, partner (B, n, n): the unary cost of the own / partner image's label, smoothness folded in (float32);
    w_rows (B, n-1, n), w_cols (B, n, n-1): edge weights, smoothness + beta' (float32); prior (L,) from
    `puzzle_prior`. Label l costs (1 - l/(L-1)) * partner + l/(L-1) * own + prior[l]; every term is scaled by
    1000 n^2 and truncated to int32, label pairs cost (l - l')^2 / (L - 1)^2, as in mixup.py graphcut_multi.
    """
    b, n, _ = own.shape
    large = 1000 * n**2
    steps = np.linspace(0, 1, n_labels)  # float64, as theirs
    pair = np.array([[(i - j) ** 2 / (n_labels - 1) ** 2 for j in range(n_labels)] for i in range(n_labels)])
    pair = pair.astype(np.float32)
    u_own, u_par = own.detach().cpu().numpy(), partner.detach().cpu().numpy()
    wr = (large * w_rows.detach().cpu().numpy()).astype(np.int32)  # float32 product, truncated as theirs
    wc = (large * w_cols.detach().cpu().numpy()).astype(np.int32)
    out = np.empty((b, n, n), dtype=np.int64)
    for i in range(b):  # one grid after the other, as their loop (or their process pool) does
        unary = np.stack([(1 - s) * u_par[i] + s * u_own[i] + prior[k] for k, s in enumerate(steps)], -1)
        out[i] = swap_grid((large * unary).astype(np.int32), pair, wr[i], wc[i])
    return torch.from_numpy(out).to(own.device)


# ---------------------------------------------------------------- Co-Mixup
def partition_objective(cost: torch.Tensor, mask: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    """Co-Mixup's objective (match.obj_fn) of one partition: cost (n_in, n, m), mask (n_out, n, m, n_in), soft or
    one-hot; beta and gamma already divided by the number of blocks."""
    counts = mask.flatten(1, 2).sum(1)  # (n_out, n_in)
    e = (cost.permute(1, 2, 0)[None] * mask).sum()
    e = e + beta / 2 * (((mask[:, :-1] - mask[:, 1:]) ** 2).sum() + ((mask[:, :, :-1] - mask[:, :, 1:]) ** 2).sum())
    return e + gamma * ((counts.sum(0) ** 2).sum() - (counts**2).sum())


def resolve_identical(used: torch.Tensor) -> torch.Tensor:
    """match.resolve_label: (n_out, n_in) extra cost that pushes apart outputs using the same set of inputs;
    used (n_out, n_in) is 1 where an output uses an input."""
    add = torch.zeros_like(used)
    dist = torch.minimum((used[:, None] - used[None]).abs().sum(-1), torch.tensor(1.0))
    for i1, i2 in torch.triu(1 - dist, diagonal=1).nonzero().tolist():
        nz = used[i1].nonzero().flatten()
        if len(nz) > 1:
            add[i1, nz[0]], add[i2, nz[1]] = 1.0, 1.0
    return add


# the blends a block may take from the second outer iteration on: half of each of two inputs (match.py)
_SOFT3 = torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.0, 0.5], [0.0, 0.5, 0.5]])  # (3 blends, 3 inputs)
_PAIR3 = np.array([[0.25, 0.25, 1], [0.25, 1, 0.25], [1, 0.25, 0.25]], dtype=np.float32)


def comixup_output(cost_pen: torch.Tensor, counts: torch.Tensor, beta: float, blends: bool) -> torch.Tensor:
    """One output's labeling (n, m, n_in), soft where a block blends two inputs (match.graphcut_wrapper).

    cost_pen (n, m, n_in) float32: unary cost with the diversity penalty; counts (n_in,): blocks the output took
    from each input before. blends (outer iteration > 0): with 2 inputs used, one extra label = their 50/50 blend,
    at cost mean - 5e-4; with 3 or more, the three most used give three extra 50/50 labels. Label costs: 1 between
    distinct labels, 0.25 between a blend and an input it contains (a Potts model otherwise).
    """
    n, m, n_in = cost_pen.shape
    used = counts > 0
    k = int(used.float().sum()) if blends else 0
    if k >= 3:
        used = torch.zeros_like(used)
        used[torch.topk(counts, k=3).indices] = True
    extra = (
        cost_pen[:, :, used].mean(-1, keepdim=True) if k == 2 else cost_pen[:, :, used] @ _SOFT3 if k >= 3 else None
    )  # (n, m, 1 | 3)
    unary = cost_pen if extra is None else torch.cat([cost_pen, extra - 5e-4], -1)  # (n, m, n_in + e)
    nl = unary.shape[-1]
    pair = np.ones((nl, nl), dtype=np.float32) - np.eye(nl, dtype=np.float32)
    idx = used.numpy()
    if k == 2:
        pair[-1, :-1][idx] = 0.25
        pair[:-1, -1][idx] = 0.25
    elif k >= 3:
        pair[-3:, :-3][:, idx] = _PAIR3
        pair[:-3, -3:][idx, :] = _PAIR3
    cost_v = beta * np.ones((n - 1, m), dtype=np.float32)
    cost_h = beta * np.ones((n, m - 1), dtype=np.float32)
    lab = torch.from_numpy(swap_grid(unary.numpy(), pair, cost_v, cost_h))  # (n, m)
    onehot = F.one_hot(lab, nl).to(cost_pen.dtype)  # (n, m, n_in + e)
    if extra is None:
        return onehot
    mix = torch.zeros(nl - n_in, n_in)
    mix[:, used] = 0.5 if k == 2 else _SOFT3
    return onehot[..., :n_in] + onehot[..., n_in:] @ mix  # (n, m, n_in)


def comixup_cost(sal_blocks: torch.Tensor, prior: torch.Tensor, eta: float) -> torch.Tensor:
    """(n_in, n, m) unary cost of one partition: -block saliency normalised to sum 1 per input, minus
    eta / (n m) * log(prior + 1e-8) (mixup.py and match.get_onehot_matrix; prior ~ Dirichlet(alpha), (n_in,)).
    The sum is clamped at 1e-12, so that an all-zero map costs 0 (theirs: NaN, which pyGCO casts to garbage)."""
    n_in, n, m = sal_blocks.shape
    cost = -(sal_blocks / sal_blocks.reshape(n_in, -1).sum(1).clamp_min(1e-12).reshape(n_in, 1, 1))  # 0 map: 0
    return cost - eta / n / m * torch.log(prior.reshape(n_in, 1, 1) + 1e-8)


def comixup_graphcut(
    cost: torch.Tensor,
    compat: torch.Tensor,
    init: torch.Tensor,
    beta: float,
    gamma: float,
    thres: float,
    niter: int,
    set_resolve: bool = True,
) -> torch.Tensor:
    """(n_out, n, m, n_in) labeling of one partition (match.get_onehot_matrix, thres_type 'hard'), on the CPU.

    cost (n_in, n, m) float32: -normalised block saliency - eta * log(prior), the prior already drawn; compat
    (n_in, n_in) the compatibility A; init (n_out, n, m) the random initial labels. beta, gamma, thres as the
    command line gives them (divided / multiplied by n*m here, as theirs). Outputs are updated one at a time
    by a graph cut against the others' counts, the supermodular term replaced by its hard-threshold modular bound;
    stops when the objective changes by less than 1e-6 (relative) over an outer iteration.

    Their modular penalty reads `2 * gamma * ((A @ p > thres).float() * A @ p)`; Python gives `*` and `@` one
    precedence, so it is ((1[A p > thres] * A) @ p): column j of A masked by input j's threshold, not row i's.
    That is what ran in their experiments, and what runs here.
    """
    n_in, n, m = cost.shape
    if n_in == 1:  # a partition of one input (a batch one larger than a multiple of `part`): nothing to mix
        return torch.ones(len(init), n, m, 1)
    size = n * m
    beta, gamma, thres = beta / size, gamma / size, thres * size
    cost = cost.float().cpu()
    mask = F.one_hot(init.cpu().long(), n_in).float()  # (n_out, n, m, n_in)
    prev = partition_objective(cost, mask, beta, gamma)
    penalty = mask.flatten(0, 2).sum(0)  # (n_in,) blocks of each input over all outputs
    add = None
    for it in range(niter):
        for i in range(len(mask)):
            counts = mask[i].flatten(0, 1).sum(0)  # (n_in,)
            penalty = penalty - counts
            over = (compat @ penalty > thres).float()  # (n_in,) inputs over the threshold
            modular = 2 * gamma * ((over * compat) @ penalty)  # their `over * A @ p` parses as (over * A) @ p
            pen = cost + modular.view(-1, 1, 1)
            if add is not None:
                pen = pen + gamma * add[i].view(-1, 1, 1)
            mask[i] = comixup_output(pen.permute(1, 2, 0), counts, beta, it > 0)
            penalty = penalty + mask[i].flatten(0, 1).sum(0)
        if it == niter - 2 and set_resolve:
            add = resolve_identical((mask.flatten(1, 2).sum(1) > 0).float())
        obj = partition_objective(cost, mask, beta, gamma)
        if (prev - obj).abs() / obj.abs() < 1e-6:
            break
        prev = obj
    return mask
