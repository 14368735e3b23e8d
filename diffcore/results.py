"""Result files -> tables: each number with its 95% interval, each comparison of two rows with a paired test.

Uncertainty, as Bouthillier et al. (2021, "Accounting for variance in machine learning benchmarks") ask: a top-1 of
one run varies with the seed (initialisation, data order, mixing draws) and with the test set, a finite sample of
images. Every seed is evaluated on the same images, so an interval here resamples both together from the per-example
outcomes every result file stores (since 2026-12-08): one draw of the test images, shared by the seeds, and one draw
of the seeds (a crossed bootstrap; Davison & Hinkley 1997, "Bootstrap Methods and their Application", Sec. 3.8). A
row of one seed has the test set's interval only and says so. Two rows evaluated on the same images and seeds are
compared pairwise: the same resampling of the per-image differences, and McNemar's exact test on the images where
exactly one of the two is right (scipy.stats.binomtest). Older result files, without per-example predictions, get
Wilson's interval (one seed) or a nested bootstrap that takes the seeds' test sets as independent, and are compared
unpaired; the table says which.

Coverage of the 95% interval, by simulation (tests/test_stats.py; 150-200 simulated experiments each): 0.99 where
the test set's sampling dominates (3 seeds, 400 images: the two-way bootstrap counts the seed-by-image noise twice
and is conservative, Owen 2007, "The pigeonhole bootstrap"); 0.76 with 3 seeds and 0.89 with 5 where the seeds
dominate (5,000 images, a seed spread of ~3 points): few seeds give too narrow an interval there, and more seeds are
the remedy. Two equally good methods were called different (supported or contradicted) in 2% of 150 experiments.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

METHOD_LABELS = {
    "vanilla": "Vanilla",
    "genaug": "GenAug",
    "pixel": "Pixel-wise",
    "patch": "Patch-wise",
    "diffcore": "DiffCoRe-Mix",
}


def method_label(result: dict) -> str:
    """'DiffCoRe-Mix-50' for the diffcore method at fraction 0.5, and so on."""
    label = METHOD_LABELS.get(result["method"], result["method"])
    if result["method"] != "vanilla":
        label += f"-{round(100 * result['config'].get('fraction', 1.0))}"
    return label


def load_results(folder: str | Path) -> list[dict]:
    files = sorted(Path(folder).rglob("*.json"))
    out = [json.loads(f.read_text()) for f in files]
    return [r for r in out if r.get("kind") == "diffcore-train-result"]


def results_table(results: list[dict]) -> pd.DataFrame:
    """One row per method label (vanilla first): top-1/top-5 mean over seeds with its 95% interval (seeds and test
    images, see the module's docstring), seeds, pairs."""
    if not results:
        raise ValueError("no diffcore result files found")
    order = list(METHOD_LABELS)  # vanilla first, DiffCoRe-Mix last; within a method by fraction
    results = sorted(
        results,
        key=lambda r: (
            order.index(r["method"]) if r["method"] in order else len(order),
            r["method"],
            r["config"].get("fraction", 1.0),
            r["config"]["seed"],
        ),
    )
    rows = [
        {
            "method": method_label(r),
            "seed": r["config"]["seed"],
            "top1": r["metrics"]["top1"],
            "top5": r["metrics"]["top5"],
            "n": r["metrics"].get("n") or r["counts"]["test"],
            "pred": next(iter((r.get("predictions") or {}).values()), None),  # the evaluation split's, if stored
            "pairs": r["counts"]["pairs"],
            "wall_s": r["wall_time_s"],
        }
        for r in results
    ]
    df = pd.DataFrame(rows)
    out = []
    for method, g in df.groupby("method", sort=False):
        row = {"method": method}
        stored = list(g.pred)
        same = all(isinstance(x, dict) for x in stored) and len({x["ids_sha256"] for x in stored}) == 1
        for m, k in (("top1", 1), ("top5", 5)):
            iv = interval(g[m].to_list(), g.n.to_list(), [correct(x, k) for x in stored] if same else None)
            row |= {f"{m}_mean": iv.mean, f"{m}_lo": iv.lo, f"{m}_hi": iv.hi}
        row |= {"seeds": len(g), "pairs": g.pairs.iloc[0], "train_s_mean": g.wall_s.mean()}
        out.append(row)
    return pd.DataFrame(out)


def markdown(table: pd.DataFrame) -> str:
    lines = [
        "| method | top-1 (%) [95% interval] | top-5 (%) [95% interval] | seeds | pairs | train time (s) |",
        "|---|---|---|---|---|---|",
    ]
    for r in table.itertuples():
        lines.append(
            f"| {r.method} | {r.top1_mean:.2f} [{r.top1_lo:.2f}, {r.top1_hi:.2f}] | {r.top5_mean:.2f} "
            f"[{r.top5_lo:.2f}, {r.top5_hi:.2f}] | {r.seeds} | {r.pairs} | {r.train_s_mean:.1f} |"
        )
    return "\n".join(lines) + (
        "\n\nIntervals: 95%, over the seeds and the test images (a crossed bootstrap of the per-example predictions; "
        "one seed: the test set's Wilson interval); diffcore.results."
    )


# ---------------------------------------------------------------- per-example predictions, stored compactly
PREDICTIONS = "diffcore-predictions/1"


def ids_digest(ids: Sequence[str]) -> str:
    """sha256 of the evaluation images' ids in order: two prediction sets compare image by image only if equal."""
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


def encode_predictions(top: np.ndarray, labels: np.ndarray, ids: Sequence[str]) -> dict:
    """(n, k) top-k predicted classes (best first) and (n,) labels of an evaluation set, in its order, as the
    result file stores them: little-endian integers in base64 (ImageNet's 50,000 x 5: about 0.7 MB)."""
    top, labels = np.asarray(top), np.asarray(labels)
    dtype = "<u2" if max(int(top.max(initial=0)), int(labels.max(initial=0))) < 2**16 else "<i4"
    pack = lambda a: base64.b64encode(np.ascontiguousarray(a, dtype=dtype).tobytes()).decode("ascii")  # noqa: E731
    return {
        "format": PREDICTIONS,
        "n": int(top.shape[0]),
        "k": int(top.shape[1]),
        "dtype": dtype,
        "top": pack(top),
        "labels": pack(labels),
        "ids_sha256": ids_digest(ids),
    }


def decode_predictions(stored: dict) -> tuple[np.ndarray, np.ndarray]:
    """((n, k) top-k classes, (n,) labels) of encode_predictions' dict; a damaged one is a one-line error."""
    if not isinstance(stored, dict) or stored.get("format") != PREDICTIONS:
        raise ValueError(f"predictions: expected a {PREDICTIONS} entry of a result file")
    unpack = lambda text: np.frombuffer(base64.b64decode(text), dtype=stored["dtype"]).astype(np.int64)  # noqa: E731
    n, k = stored["n"], stored["k"]
    try:
        top, labels = unpack(stored["top"]), unpack(stored["labels"])
    except (ValueError, TypeError) as e:  # base64's binascii.Error is a ValueError
        raise ValueError(f"predictions: not the stored arrays ({e}); the file is damaged") from None
    if top.size != n * k or labels.size != n:
        raise ValueError(f"predictions: {top.size} and {labels.size} values for n={n}, k={k}; the file is damaged")
    return top.reshape(n, k), labels


def correct(stored: dict, k: int = 1) -> np.ndarray:
    """(n,) bool: the label among the top-k predictions, per evaluation image."""
    top, labels = decode_predictions(stored)
    return (top[:, :k] == labels[:, None]).any(1)


# ---------------------------------------------------------------- intervals and paired comparisons
LEVEL = 0.95
BOOTSTRAP = 4000  # replicates; an interval's ends move by < 0.1 point between resampling seeds at n = 3
BLOCK = 250  # replicates drawn at once: (BLOCK, images) counts in memory (ImageNet's 50,000 images: 100 MB)


@dataclass(frozen=True)
class Interval:
    mean: float  # percent
    lo: float
    hi: float
    seeds: int
    how: str  # which resampling made it (see `interval`)

    def text(self) -> str:
        one = ", test set only" if self.seeds == 1 else ""
        return f"{self.mean:.2f} [{self.lo:.2f}, {self.hi:.2f}] (n = {self.seeds}{one})"


def crossed_bootstrap(values: np.ndarray, level: float = LEVEL, seed: int = 0) -> tuple[float, float]:
    """The percentile interval of the mean of a (seeds, images) matrix, with seeds and images resampled together:
    one draw of images (with replacement) shared by every seed, since every seed is evaluated on the same test set,
    and a draw of seeds. Two-way ("crossed") resampling of the two sources of variance (Bouthillier et al. 2021;
    Davison & Hinkley 1997, Sec. 3.8)."""
    rng = np.random.default_rng(seed)
    s, n = values.shape
    stats = []
    for start in range(0, BOOTSTRAP, BLOCK):
        b = min(BLOCK, BOOTSTRAP - start)
        counts = rng.multinomial(n, np.full(n, 1 / n), size=b)  # (b, N): how often each image is drawn
        per_seed = counts @ values.T.astype(float) / n  # (b, S): each seed's mean on the drawn images
        pick = rng.integers(0, s, (b, s))  # (b, S): seeds drawn with replacement
        stats.append(np.take_along_axis(per_seed, pick, 1).mean(1))  # (b,)
    lo, hi = np.quantile(np.concatenate(stats), [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def interval(
    accs: Sequence[float], ns: Sequence[int], correct: Sequence[np.ndarray] | None = None, level: float = LEVEL
) -> Interval:
    """Mean over seeds of accuracies in percent (`accs`, each on `ns` test images) and its interval.

    One seed: Wilson's interval of the test set's sampling. Several, with `correct` (per seed, the (N,) bool
    per-example outcomes on the same images): seeds and images resampled together (crossed_bootstrap). Several
    without (result files written before per-example predictions were stored): each seed's images resampled apart
    (Binomial(N, p_s)), which takes the seeds' test sets as independent and so understates the test set's share."""
    from scipy.stats import binomtest

    p, n = np.asarray(accs, float) / 100, np.asarray(ns, int)
    if len(p) == 0:
        raise ValueError("interval of no run")
    if len(p) == 1:
        ci = binomtest(int(round(p[0] * n[0])), int(n[0])).proportion_ci(level, method="wilson")
        return Interval(100 * p[0], 100 * ci.low, 100 * ci.high, 1, "test images only (one seed, Wilson)")
    if correct is not None and len(correct) == len(p) and len({len(c) for c in correct}) == 1:
        lo, hi = crossed_bootstrap(np.stack([np.asarray(c, bool) for c in correct]), level)
        return Interval(100 * p.mean(), 100 * lo, 100 * hi, len(p), "seeds and test images (crossed bootstrap)")
    rng = np.random.default_rng(0)
    pick = rng.integers(0, len(p), (BOOTSTRAP, len(p)))  # (B, S): seeds drawn with replacement
    stats = (rng.binomial(n[pick], p[pick]) / n[pick]).mean(1)  # (B,): each drawn seed's images resampled apart
    lo, hi = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    how = "seeds and test images (nested bootstrap; no per-example predictions: test sets taken as independent)"
    return Interval(100 * p.mean(), 100 * lo, 100 * hi, len(p), how)


@dataclass(frozen=True)
class Difference:
    """a - b in percentage points with its 95% interval; paired: over the same images and seeds."""

    diff: float
    lo: float
    hi: float
    seeds: int
    paired: bool
    p_mcnemar: float | None  # exact McNemar test on the discordant images pooled over seeds (paired only)

    def text(self) -> str:
        test = "paired" if self.paired else "unpaired: no per-example predictions"
        test += "" if self.p_mcnemar is None else f", McNemar p = {self.p_mcnemar:.2g}"
        return f"{self.diff:+.2f} [{self.lo:+.2f}, {self.hi:+.2f}] (n = {self.seeds}, {test})"


def paired_difference(a: Sequence[np.ndarray], b: Sequence[np.ndarray], level: float = LEVEL) -> Difference:
    """Top-1 of a minus b in points, from per seed (N,) bool arrays of correct predictions on the same images: the
    crossed bootstrap of the per-image differences, and McNemar's exact test on the images where exactly one of the
    two is right, pooled over the seeds (a binomial test of those at 1/2, scipy.stats.binomtest)."""
    from scipy.stats import binomtest

    if not a or len(a) != len(b) or any(np.shape(x) != np.shape(y) for x, y in zip(a, b)):
        raise ValueError("paired_difference: the same seeds and images on both sides")
    a, b = np.stack([np.asarray(x, bool) for x in a]), np.stack([np.asarray(y, bool) for y in b])  # (S, N) each
    d = a.astype(np.int8) - b.astype(np.int8)  # (S, N): +1 a right and b wrong, -1 the reverse
    lo, hi = crossed_bootstrap(d, level)
    wins, losses = int((d > 0).sum()), int((d < 0).sum())
    p = binomtest(wins, wins + losses).pvalue if wins + losses else 1.0
    return Difference(100 * float(d.mean()), 100 * lo, 100 * hi, len(d), True, float(p))


def unpaired_difference(a_runs: tuple, b_runs: tuple, level: float = LEVEL) -> Difference:
    """a - b from per-seed accuracies only ((accs, ns) of each side): two independent nested bootstraps (result files
    without per-example predictions)."""
    rng = np.random.default_rng(0)

    def draws(accs, ns):
        p, n = np.asarray(accs, float) / 100, np.asarray(ns, int)
        pick = rng.integers(0, len(p), (BOOTSTRAP, len(p)))
        return (rng.binomial(n[pick], p[pick]) / n[pick]).mean(1)

    d = draws(*a_runs) - draws(*b_runs)
    lo, hi = np.quantile(d, [(1 - level) / 2, (1 + level) / 2])
    diff = float(np.mean(a_runs[0]) - np.mean(b_runs[0]))
    return Difference(diff, 100 * lo, 100 * hi, min(len(a_runs[0]), len(b_runs[0])), False, None)


SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive"


def verdict(d: Difference, margin: float = 0.0) -> str:
    """'supported' when the interval of a - b lies above `margin` (the claimed side), 'contradicted' when below,
    else 'inconclusive'."""
    if d.lo > margin:
        return SUPPORTED
    if d.hi < margin:
        return CONTRADICTED
    return INCONCLUSIVE
