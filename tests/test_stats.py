"""Every number with its interval, every claim with its test (diffcore.results, book.tables, book.claims): exact values
where a library gives them, coverage by simulation, verdicts on synthetic result files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import binomtest

from diffcore import results as R
from diffcore.book import claims as C
from diffcore.book import tables as T


def test_predictions_round_trip_compactly_and_name_their_images():
    rng = np.random.default_rng(0)
    top = rng.integers(0, 1000, (50, 5))
    labels = rng.integers(0, 1000, 50)
    stored = R.encode_predictions(top, labels, [f"img{i}" for i in range(50)])
    got_top, got_labels = R.decode_predictions(json.loads(json.dumps(stored)))
    assert np.array_equal(got_top, top) and np.array_equal(got_labels, labels) and stored["dtype"] == "<u2"
    assert np.array_equal(R.correct(stored, 1), top[:, 0] == labels)
    assert np.array_equal(R.correct(stored, 5), (top == labels[:, None]).any(1))
    assert stored["ids_sha256"] != R.encode_predictions(top, labels, [f"x{i}" for i in range(50)])["ids_sha256"]
    damaged = {**stored, "top": stored["top"][:-8]}
    with pytest.raises(ValueError, match="the file is damaged"):
        R.decode_predictions(damaged)


def test_one_seed_has_wilsons_interval_of_the_test_set_and_says_so():
    iv = R.interval([90.0], [200])
    ci = binomtest(180, 200).proportion_ci(0.95, method="wilson")
    assert (iv.lo, iv.hi) == pytest.approx((100 * ci.low, 100 * ci.high), abs=1e-12)
    assert iv.text() == f"90.00 [{100 * ci.low:.2f}, {100 * ci.high:.2f}] (n = 1, test set only)"
    assert "±" not in iv.text()


def _experiment(rng, seeds: int, images: int, p: float, seed_sd: float, shift: float = 0.0, shared: bool = True):
    """(seeds, images) 0/1 outcomes of two methods: a fresh test set from an image population of varying difficulty,
    a seed effect on the logit; the second better by `shift` on the logit, on the same images and seeds. shared: the
    two err together on an image as far as their logits allow (one uniform draw), else independently."""
    logit = np.log(p / (1 - p)) + rng.normal(0, 1.0, images)  # (N,) image difficulty
    effect = rng.normal(0, seed_sd, (seeds, 1))  # (S, 1)
    u = rng.random((seeds, images))
    a = u < 1 / (1 + np.exp(-(logit + effect)))
    b = (u if shared else rng.random((seeds, images))) < 1 / (1 + np.exp(-(logit + effect + shift)))
    return a, b


def _population_mean(rng, p: float, seed_sd: float, shift: float = 0.0) -> float:
    z = np.log(p / (1 - p)) + rng.normal(0, 1.0, 400_000) + rng.normal(0, seed_sd, 400_000) + shift
    return float(np.mean(1 / (1 + np.exp(-z))))


def test_the_interval_covers_the_true_accuracy_95_percent_of_the_time(monkeypatch):
    """Coverage by simulation where the test set's sampling dominates (3 seeds, 400 images, a small seed effect): of
    200 experiments, the 95% interval holds the population's accuracy in at least 0.90 of them (measured: 0.995; the
    two-way bootstrap counts the seed-by-image noise twice and is conservative, Owen 2007, "The pigeonhole
    bootstrap")."""
    monkeypatch.setattr(R, "BOOTSTRAP", 1000)
    rng = np.random.default_rng(1)
    truth = 100 * _population_mean(rng, 0.7, 0.05)
    hits = 0
    for _ in range(200):
        a, _ = _experiment(rng, 3, 400, 0.7, 0.05)
        iv = R.interval(100 * a.mean(1), [400] * 3, list(a))
        hits += iv.lo <= truth <= iv.hi
    assert hits / 200 >= 0.90, hits


def test_a_paired_difference_is_inconclusive_under_noise_supported_when_large_contradicted_when_reversed(monkeypatch):
    monkeypatch.setattr(R, "BOOTSTRAP", 1000)
    rng = np.random.default_rng(2)
    a, b = _experiment(rng, 3, 300, 0.7, 0.1, shift=0.02)  # b better by ~0.4 points: well inside the noise
    small = R.paired_difference(list(b), list(a))
    assert R.verdict(small) == R.INCONCLUSIVE and small.lo <= 0 <= small.hi
    a, b = _experiment(rng, 3, 300, 0.7, 0.1, shift=1.0)  # ~+18 points
    large = R.paired_difference(list(b), list(a))
    assert R.verdict(large) == R.SUPPORTED and large.p_mcnemar < 1e-6
    assert R.verdict(R.paired_difference(list(a), list(b))) == R.CONTRADICTED
    assert large.text().startswith(f"{large.diff:+.2f} [") and "paired, McNemar p" in large.text()


def test_no_real_difference_is_called_one_in_at_most_about_twenty_times(monkeypatch):
    """Two methods equal in truth, compared on 150 experiments: supported or contradicted in <= 8% of them."""
    monkeypatch.setattr(R, "BOOTSTRAP", 1000)
    rng = np.random.default_rng(3)
    called = 0
    for _ in range(150):
        a, b = _experiment(rng, 3, 300, 0.7, 0.05, shared=False)  # as good as each other, erring apart
        called += R.verdict(R.paired_difference(list(a), list(b))) != R.INCONCLUSIVE
    assert called / 150 <= 0.08, called


# ---------------------------------------------------------------- the book's cells and the claims' verdicts
def _result_rows(method: str, outcomes: np.ndarray, fraction=None, with_predictions: bool = True) -> list[dict]:
    """our_results rows of one method: a seed per row of `outcomes` ((S, N) bool correct on the same N images)."""
    rows = []
    for seed, ok in enumerate(outcomes):
        labels = np.zeros(len(ok), int)
        top = np.where(ok[:, None], np.arange(5)[None, :], np.arange(1, 6)[None, :])  # right: label first
        preds = R.encode_predictions(top, labels, [f"test/{i}" for i in range(len(ok))]) if with_predictions else None
        rows.append(
            {
                "method": method,
                "control": False,
                "fraction": fraction,
                "seed": seed,
                "top1": 100 * ok.mean(),
                "top5": 100.0,
                "test_top1": 100 * ok.mean(),
                "valid_top1": np.nan,
                "n_test": len(ok),
                "n_valid": None,
                "pred_test": preds,
                "pred_valid": None,
            }
        )
    return rows


def _evidence(ours) -> C.Evidence:
    import pandas as pd

    results = {t: {} for t in C.J.TABLES}
    results["Table 7"] = {"Stanford Cars": ours}
    datasets = {t: {} for t in C.J.TABLES}
    datasets["Table 7"] = {"Stanford Cars": "stanford-cars"}
    return C.Evidence("paper", results, datasets, [], pd.DataFrame(), pd.DataFrame())


def test_claims_read_paired_differences_from_result_files(monkeypatch):
    """Table 7's 'GenAug alone gains over the baseline' on synthetic result files: supported when GenAug is far
    better, contradicted when worse, inconclusive when the gap is noise; unpaired (and said) without predictions."""
    import pandas as pd

    monkeypatch.setattr(R, "BOOTSTRAP", 1000)
    rng = np.random.default_rng(4)
    claim = next(c for c in C.CLAIMS if c.text.startswith("generative augmentation alone"))
    for shift, expected in ((1.5, R.SUPPORTED), (-1.5, R.CONTRADICTED), (0.0, R.INCONCLUSIVE)):
        base, gen = _experiment(rng, 3, 200, 0.6, 0.05, shift=shift)
        if shift == 0.0:
            gen = np.where(rng.random(base.shape) < 0.1, ~base, base)
        ours = pd.DataFrame(_result_rows("vanilla", base) + _result_rows("genaug", gen, fraction=1.0))
        found = claim.verdict(_evidence(ours))
        assert found.verdict == expected, (shift, found)
        assert found.test == "crossed bootstrap, paired over the same images and seeds"
        assert "R50 + GenAug − ResNet-50" in found.detail
    old = pd.DataFrame(_result_rows("vanilla", base, with_predictions=False) + _result_rows("genaug", gen, 1.0, False))
    found = claim.verdict(_evidence(old))
    assert found.test == "crossed bootstrap, unpaired (no per-example predictions)"
    assert "unpaired: no per-example predictions" in found.difference
    cell = T._ours_for(old, "ResNet-50", "top1")[0]
    assert cell.endswith("(n = 3)") and "[" in cell  # old files still give an interval (independent test sets)
    assert T.interval_of(T.runs_of(old, "ResNet-50"), "top1").how.startswith("seeds and test images (nested")


def test_a_claim_of_several_comparisons_needs_every_one(monkeypatch):
    """Intersection-union: one inconclusive comparison makes the claim inconclusive, one contradicted contradicts."""
    monkeypatch.setattr(R, "BOOTSTRAP", 1000)
    d = lambda lo, hi: R.Difference((lo + hi) / 2, lo, hi, 3, True, 0.5)  # noqa: E731
    assert C._decide([("a", d(1, 3)), ("b", d(0.5, 2))]).verdict == R.SUPPORTED
    mixed = C._decide([("a", d(1, 3)), ("b", d(-0.5, 2))])
    assert mixed.verdict == R.INCONCLUSIVE and mixed.detail.startswith("b;") and "1 of 2" in mixed.detail
    assert C._decide([("a", d(1, 3)), ("b", d(-2, -0.5))]).verdict == R.CONTRADICTED


def test_the_overhead_claim_pairs_the_timing_rounds():
    """Table 6's claim from bench rows with their interleaved rounds: a t interval over the rounds' paired overhead
    differences; far apart: supported; rounds that disagree: inconclusive; rows without rounds: a point, said."""
    import pandas as pd

    def rows(diffcore, comixup, saliencymix):
        ms = {"vanilla": [10.0, 10.2, 9.9], "diffcore": diffcore, "comixup": comixup, "saliencymix": saliencymix}
        return [
            {"method": m, "variant": "", "batch_size": 16, "ms_rounds": r, "overhead_pct": 100 * (r[1] - 10.2) / 10.2}
            for m, r in ms.items()
        ]

    ev = lambda overhead: C.Evidence("embedded", {}, {}, overhead, pd.DataFrame(), pd.DataFrame())  # noqa: E731
    far = C.overhead_below(ev(rows([10.5, 10.7, 10.4], [30.0, 31.0, 29.5], [20.0, 20.5, 19.8])))
    assert far.verdict == R.SUPPORTED and far.test == "t interval over timing rounds"
    assert far.difference.endswith("(n = 3, paired)")
    noisy = C.overhead_below(ev(rows([10.5, 14.0, 10.4], [12.0, 10.9, 12.5], [20.0, 20.5, 19.8])))
    assert noisy.verdict == R.INCONCLUSIVE
    old = [{k: v for k, v in r.items() if k != "ms_rounds"} for r in rows([10.5] * 3, [30.0] * 3, [20.0] * 3)]
    point = C.overhead_below(ev(old))
    assert point.verdict == R.SUPPORTED and point.test == C.NO_INTERVAL
    assert point.detail.endswith("(timed before rounds were stored)")


@pytest.mark.parametrize("profile", ["embedded", "paper"])
def test_every_claim_answers_with_a_finding_when_nothing_was_measured(profile):
    """Each claim on a build whose pages wrote nothing (or one batch size, one fraction): a Finding, not measurable,
    on either profile (the rehearsal found a claim that answered with a bare tuple on the paper profile)."""
    import pandas as pd

    ev = C.Evidence(
        profile,
        {t: {} for t in C.J.TABLES},
        {t: {} for t in C.J.TABLES},
        [{"method": "vanilla", "variant": "", "batch_size": 16, "ms_per_batch": 1.0, "overhead_pct": 0.0}],
        pd.DataFrame({"fraction %": [50], "seconds": [1.0], "discarded %": [10.0], "attempts": [10], "kept": [9]}),
        pd.DataFrame(),
    )
    table = C.verdicts(ev)
    assert len(table) == len(C.CLAIMS)
    for claim in C.CLAIMS:
        found = claim.verdict(ev)
        assert isinstance(found, C.Finding) and found.verdict in (
            R.SUPPORTED, R.CONTRADICTED, R.INCONCLUSIVE, C.NOT_MEASURABLE
        ), claim.text  # fmt: skip
