"""The paper's claims, each with the verdict of the profile that built the book and the test behind it: supported (the
95% interval of the claimed difference lies on the claimed side), contradicted (on the other side), inconclusive (it
straddles the line), or not measurable on this profile; with the measured difference, its interval and a link to the
evidence page. Accuracy claims compare rows pairwise over the same test images and seeds (diffcore.results); a claim
that a row beats several others is supported only if every one of those differences is (an intersection-union test,
Berger 1982: no correction for the number of comparisons is needed), contradicted if any one is contradicted.

A claim about a number on one of the paper's datasets is only measurable where that dataset was run (the paper
profile). A claim about an ordering (a method beats others, a variant beats another, the cost grows linearly) is
checked on whatever the profile ran: on the embedded profile that is the digits stand-ins, and the verdict says so.
The verdicts read what the other pages wrote (result files, overhead.json, fig7.json, fig5-cam.json), so this page
is built last.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..plan import jobs as J
from ..plan.paper import CONTROL, paper_wide, resolve
from ..results import CONTRADICTED, INCONCLUSIVE, SUPPORTED, Difference, verdict
from . import tables as T

NOT_MEASURABLE = "not measurable on this profile"
NO_INTERVAL = "one measurement, no interval"


@dataclass(frozen=True)
class Finding:
    """A claim's verdict, the difference it rests on (the decisive one of several) and what was measured."""

    verdict: str  # SUPPORTED | CONTRADICTED | INCONCLUSIVE | NOT_MEASURABLE
    detail: str
    difference: str = ""  # "+1.20 [-0.40, +2.80] (n = 3, paired, McNemar p = 0.12)", or a point measurement
    test: str = ""  # how the interval was made


def _point(ok: bool, detail: str, measured: str = "") -> Finding:
    """A claim checked on one measurement, which has no interval: supported or contradicted as measured."""
    return Finding(SUPPORTED if ok else CONTRADICTED, detail, measured, NO_INTERVAL)


def _decide(diffs: list[tuple[str, Difference]], margin: float = 0.0) -> Finding:
    """Every difference above `margin`: supported; any below: contradicted; else inconclusive. The decisive
    difference is shown: the lowest interval when supported or inconclusive, the highest when contradicted."""
    verdicts = [verdict(d, margin) for _, d in diffs]
    if CONTRADICTED in verdicts:
        name, d = min(diffs, key=lambda x: x[1].hi)
        outcome = CONTRADICTED
    else:
        name, d = min(diffs, key=lambda x: x[1].lo)
        outcome = SUPPORTED if all(v == SUPPORTED for v in verdicts) else INCONCLUSIVE
    tally = f"{verdicts.count(SUPPORTED)} of {len(diffs)} differences above {margin:g}"
    test = "paired over the same images and seeds" if d.paired else "unpaired (no per-example predictions)"
    return Finding(outcome, f"{name}; {tally}", d.text(), f"crossed bootstrap, {test}")


@dataclass
class Evidence:
    """What the pages of one build measured: our results per table and column, and the figures' numbers."""

    profile: str
    results: dict[str, dict[str, pd.DataFrame]]  # table -> our column -> our_results
    datasets: dict[str, dict[str, str]]  # table -> our column -> its dataset
    overhead: list[dict]  # bench.time_training rows (Table 6 page)
    fig7: pd.DataFrame  # generation cost per fraction (Fig. 7 page)
    cam: pd.DataFrame  # Grad-CAM mass on the object per model (Fig. 5 page)


def evidence(
    profile: str,
    out_dir: str | Path,
    seeds: list[int],
    data_roots: dict | None = None,
    overrides: dict | None = None,
    **settings,
) -> Evidence:
    """Read what the book's other pages wrote into `out_dir` (nothing is run here)."""
    out = Path(out_dir)
    results, datasets = {}, {}
    for table in J.TABLES:
        cols = J.columns(table, profile, out_dir, seeds, data_roots=data_roots, overrides=overrides, **settings)
        match = lambda c: {k: v for k, v in T.match_of(c).items() if k != "pretrained"}  # Table 5's page sets it
        results[table] = {k: T.our_results(c.results, match(c)) for k, c in cols.items()}
        datasets[table] = {k: c.exp.dataset for k, c in cols.items()}
    read = lambda name: json.loads((out / name).read_text()) if (out / name).is_file() else []
    return Evidence(
        profile,
        results,
        datasets,
        read("overhead.json"),
        pd.DataFrame(read("fig7.json")),
        pd.DataFrame(read("fig5-cam.json")),
    )


def means(ours: pd.DataFrame, labels, metric: str = "top1") -> dict[str, float]:
    """Paper row label -> our mean over seeds (rows without a result left out)."""
    out = {}
    for label in labels:
        v = T.runs_of(ours, label)[metric].to_numpy(float) if not ours.empty else np.zeros(0)
        if len(v) and not np.isnan(v).all():
            out[label] = float(np.nanmean(v))
    return out


OURS = ("DiffCoRe-Mix-50", "DiffCoRe-Mix-100")


def _comparisons(table: str) -> list[str]:
    return [x for x in paper_wide(table).index if x not in OURS and resolve(x)[0] not in (None, "vanilla")]


def _differences(ev: Evidence, table: str, better: list[str], worse: list[str], metric: str):
    """(name, a - b) for every row of `better` against every row of `worse`, in every column of ours that ran them
    all; and the columns that did not."""
    found, missing = [], []
    for column, ours in ev.results[table].items():
        m = means(ours, [*better, *worse], metric)
        if not all(x in m for x in [*better, *worse]):
            missing.append(column)
            continue
        for a in better:
            for b in worse:
                d = T.compare(ours, a, b, metric)
                if d is not None:
                    found.append((f"{column}: {a} − {b}", d))
    return found, missing


def beats_all(ev: Evidence, table: str, variants=OURS, metric: str = "top1") -> Finding:
    """Each variant above every comparison method of the table, in every column of ours that has them all run."""
    found, missing = _differences(ev, table, list(variants), _comparisons(table), metric)
    if not found:
        return Finding(NOT_MEASURABLE, "; ".join(f"{c}: not every row run" for c in missing) or "not run")
    return _decide(found)


def ordered(ev: Evidence, table: str, better: str, worse: list[str], metric: str = "top1") -> Finding:
    """Row `better` above every row of `worse`, in every column of ours."""
    found, _ = _differences(ev, table, [better], worse, metric)
    return _decide(found) if found else Finding(NOT_MEASURABLE, "not run")


def on_paper_data(ev: Evidence, table: str, dataset: str, a: str, b: str, margin: float) -> Finding:
    """A claim about a gap on one of the paper's datasets: measurable only where that dataset was run."""
    for column, ours in ev.results[table].items():
        if ev.datasets[table][column] == dataset:
            d = T.compare(ours, a, b)
            if d is None:
                return Finding(NOT_MEASURABLE, f"{column}: no result yet")
            return _decide([(f"{column}: {a} − {b}", d)], margin)
    return Finding(NOT_MEASURABLE, f"{dataset} is not run on the {ev.profile} profile")


def gain_up_to_3(ev: Evidence) -> Finding:
    """Abstract: 'up to ~3% absolute gain for top-1 accuracy over the state-of-the-art methods': the largest gain of
    DiffCoRe-Mix-100 over the best other method of a column, at least 2 points."""
    gains = []
    for table in ("Table 2", "Table 3", "Table 4", "Table 5"):
        metric = "test_top1" if table == "Table 2" else "top1"
        for column, ours in ev.results[table].items():
            if ev.datasets[table][column] == "digits":
                continue
            m = means(ours, ["DiffCoRe-Mix-100", *_comparisons(table)], metric)
            others = {k: v for k, v in m.items() if k != "DiffCoRe-Mix-100"}
            if "DiffCoRe-Mix-100" in m and others:
                best = max(others, key=others.get)
                d = T.compare(ours, "DiffCoRe-Mix-100", best, metric)
                if d is not None:
                    gains.append((f"{table} {column}: DiffCoRe-Mix-100 − {best}", d))
    if not gains:
        return Finding(NOT_MEASURABLE, "no paper dataset run on this profile")
    return _decide([max(gains, key=lambda g: g[1].diff)], margin=2.0)


def discard_consistent(ev: Evidence) -> Finding:
    """Fig. 7: the discarded share stays within about a point across the augmentation fractions."""
    if ev.fig7.empty:
        return Finding(NOT_MEASURABLE, "the Fig. 7 page has not run")
    d = ev.fig7["discarded %"]
    spread = float(d.max() - d.min())
    detail = f"discarded {d.min():.1f}-{d.max():.1f}% over fractions {list(ev.fig7['fraction %'])}"
    return _point(spread <= 1.0, detail, f"spread {spread:.1f} points (claimed: about 1)")


def discard_in_band(ev: Evidence) -> Finding:
    """Fig. 7: 10.1-11.1% discarded (CosXL, CUB): each fraction's share with its Wilson interval over its attempts;
    supported if every interval lies in the band, contradicted if one lies outside it."""
    from scipy.stats import binomtest

    if ev.profile != "paper":
        return Finding(NOT_MEASURABLE, "the embedded profile's tiny models, not CosXL and CLIP ViT-B/32")
    if ev.fig7.empty:
        return Finding(NOT_MEASURABLE, "the Fig. 7 page has not run")
    cis = []
    for r in ev.fig7.itertuples():
        attempts = int(r.attempts)
        ci = binomtest(int(round(attempts - r.kept)), attempts).proportion_ci(method="wilson")
        cis.append((100 * ci.low, 100 * ci.high))
    inside = all(10.1 <= lo and hi <= 11.1 for lo, hi in cis)
    outside = any(hi < 10.1 or lo > 11.1 for lo, hi in cis)
    outcome = SUPPORTED if inside else CONTRADICTED if outside else INCONCLUSIVE
    shown = ", ".join(f"[{lo:.1f}, {hi:.1f}]" for lo, hi in cis)
    return Finding(outcome, f"discarded % per fraction, 95% intervals {shown}", shown, "Wilson, over the attempts")


def cost_linear(ev: Evidence) -> Finding:
    """Fig. 7: generation time grows linearly with the fraction (R^2 of a line >= 0.95)."""
    if len(ev.fig7) < 3:
        return Finding(NOT_MEASURABLE, "fewer than 3 fractions generated on the Fig. 7 page")
    x, y = ev.fig7["fraction %"].to_numpy(float), ev.fig7["seconds"].to_numpy(float)
    fit = np.polyval(np.polyfit(x, y, 1), x)
    r2 = 1 - ((y - fit) ** 2).sum() / ((y - y.mean()) ** 2).sum()
    return _point(r2 >= 0.95, "R² of a line through seconds vs fraction", f"R² = {r2:.3f} (claimed: >= 0.95)")


def overhead_below(ev: Evidence, batch: int = 16) -> Finding:
    """Sec. 5: DiffCoRe-Mix's overhead 'significantly lower than Co-Mixup and SaliencyMix' (Fig. 4, batch 16):
    the differences of Eq. (9) overheads, paired by the interleaved timing rounds (a t interval over the rounds)."""
    rows = {r["method"]: r for r in ev.overhead if r["batch_size"] == batch and not r.get("variant")}
    if not {"vanilla", "diffcore", "comixup", "saliencymix"} <= set(rows):
        return Finding(NOT_MEASURABLE, "the Table 6 page has not timed these methods")
    detail = (
        f"per step at batch {batch}: DiffCoRe-Mix {rows['diffcore']['overhead_pct']:+.1f}%, "
        f"Co-Mixup {rows['comixup']['overhead_pct']:+.1f}%, SaliencyMix {rows['saliencymix']['overhead_pct']:+.1f}%"
    )
    if not all("ms_rounds" in rows[m] for m in rows):
        ok = rows["diffcore"]["overhead_pct"] < min(
            rows["comixup"]["overhead_pct"], rows["saliencymix"]["overhead_pct"]
        )
        return _point(ok, detail + " (timed before rounds were stored)")
    base = np.asarray(rows["vanilla"]["ms_rounds"], float)
    pct = lambda m: 100 * (np.asarray(rows[m]["ms_rounds"], float) - base) / base  # noqa: E731 - per round
    diffs = [(f"{m} − DiffCoRe-Mix (overhead points)", rounds_difference(pct(m) - pct("diffcore"))) for m in
             ("comixup", "saliencymix")]  # fmt: skip
    found = _decide(diffs)
    return Finding(found.verdict, detail + "; " + found.detail, found.difference, "t interval over timing rounds")


def rounds_difference(per_round: np.ndarray, level: float = 0.95) -> Difference:
    """The mean of per-round paired differences with Student's t interval over the rounds (scipy.stats.t)."""
    from scipy.stats import t

    x = np.asarray(per_round, float)
    half = t.ppf((1 + level) / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)) if len(x) > 1 else np.inf
    return Difference(float(x.mean()), float(x.mean() - half), float(x.mean() + half), len(x), True, None)


def scales_better(ev: Evidence) -> Finding:
    """Fig. 6: 'our method scales more effectively with batch size compared to Mixup' (time per batch, 16 -> 64)."""
    t = {(r["method"], r["batch_size"]): r["ms_per_batch"] for r in ev.overhead}
    sizes = sorted({b for _, b in t})
    if len(sizes) < 2 or not all((m, b) in t for m in ("diffcore", "mixup") for b in (sizes[0], sizes[-1])):
        return Finding(NOT_MEASURABLE, "the Table 6 page has not timed Mixup and DiffCoRe-Mix at two batch sizes")
    grow = {m: t[(m, sizes[-1])] / t[(m, sizes[0])] for m in ("diffcore", "mixup")}
    return _point(
        grow["diffcore"] < grow["mixup"],
        f"ms per batch from batch {sizes[0]} to {sizes[-1]}",
        f"x{grow['diffcore']:.2f} (DiffCoRe-Mix) vs x{grow['mixup']:.2f} (Mixup)",
    )


def saliency_on_object(ev: Evidence) -> Finding:
    """Fig. 5: DiffCoRe-Mix's saliency lies more on the object than the other methods'."""
    if ev.cam.empty or "DiffCoRe-Mix-100" not in set(ev.cam.model):
        return Finding(NOT_MEASURABLE, "the Fig. 5 page has not measured it")
    share = dict(zip(ev.cam.model, ev.cam["Grad-CAM mass on ink (%)"]))
    ours = share.pop("DiffCoRe-Mix-100")
    return _point(
        all(ours > v for v in share.values()),
        "Grad-CAM mass on the object, mean over the page's test images",
        f"{ours:.1f}% vs " + ", ".join(f"{k} {v:.1f}%" for k, v in share.items()),
    )


@dataclass(frozen=True)
class Claim:
    where: str  # the paper's section / table / figure
    text: str  # the claim, in the paper's words where possible
    page: str  # the evidence page (a notebook of the book)
    verdict: Callable[[Evidence], Finding]


CLAIMS = (
    Claim(
        "Abstract",
        "up to ~3% absolute gain for top-1 accuracy over the state-of-the-art methods",
        "02_table3_general",
        gain_up_to_3,
    ),
    Claim(
        "Sec. 5, Table 3",
        "for Top-1 accuracy, both variants clearly outperform all previous methods",
        "02_table3_general",
        lambda ev: beats_all(ev, "Table 3"),
    ),
    Claim(
        "Sec. 5, Table 3",
        "on ImageNet-1K, DiffCoRe-Mix-100 outperforms Co-Mixup by nearly 3% top-1",
        "02_table3_general",
        lambda ev: on_paper_data(ev, "Table 3", "imagenet-1k", "DiffCoRe-Mix-100", "Co-Mixup", margin=2.0),
    ),
    Claim(
        "Sec. 5, Table 4",
        "across the board improvements over the SOTA methods (fine-grained)",
        "03_table4_fine_grained",
        lambda ev: beats_all(ev, "Table 4", ("DiffCoRe-Mix-100",)),
    ),
    Claim(
        "Sec. 5, Table 2",
        "even DiffCoRe-Mix-50 comprehensively outperforms all existing methods (data scarcity)",
        "01_table2_data_scarcity",
        lambda ev: beats_all(ev, "Table 2", ("DiffCoRe-Mix-50",), "test_top1"),
    ),
    Claim(
        "Sec. 5, Table 5",
        "consistent improvements in fine-tuning over the baseline approaches",
        "04_table5_fine_tuning",
        lambda ev: beats_all(ev, "Table 5"),
    ),
    Claim(
        "Sec. 5-6",
        "DiffCoRe-Mix-100 is stronger than DiffCoRe-Mix-50",
        "03_table4_fine_grained",
        lambda ev: ordered(ev, "Table 4", "DiffCoRe-Mix-100", ["DiffCoRe-Mix-50"]),
    ),
    Claim(
        "Our control",
        "DiffCoRe-Mix-100 beats vanilla trained for as many SGD steps (not a claim of the paper: "
        "it tells how much of a gain is extra steps)",
        "03_table4_fine_grained",
        lambda ev: ordered(ev, "Table 4", "DiffCoRe-Mix-100", [CONTROL]),
    ),
    Claim(
        "Sec. 6, Table 7",
        "generative augmentation alone brings gains over the baseline",
        "05_table7_ablation",
        lambda ev: ordered(ev, "Table 7", "R50 + GenAug", ["ResNet-50"]),
    ),
    Claim(
        "Sec. 6, Table 7",
        "combining GenAug with pixel-wise mixing further improves: a synergistic effect",
        "05_table7_ablation",
        lambda ev: ordered(ev, "Table 7", "R50 + GenAug + Pixel-wise", ["R50 + GenAug", "R50 + Pixel-wise"]),
    ),
    Claim(
        "Sec. 6, Table 7",
        "a similar trend for patch-wise mixing with GenAug",
        "05_table7_ablation",
        lambda ev: ordered(ev, "Table 7", "R50 + GenAug + Patch-wise", ["R50 + GenAug", "R50 + Patch-wise"]),
    ),
    Claim(
        "Sec. 5, Fig. 4 / Table 6",
        "overhead significantly lower than Co-Mixup and SaliencyMix",
        "06_overhead_table6_fig4_fig6",
        overhead_below,
    ),
    Claim(
        "Sec. 5, Fig. 6",
        "our method scales more effectively with batch size compared to Mixup",
        "06_overhead_table6_fig4_fig6",
        scales_better,
    ),
    Claim(
        "Sec. 6, Fig. 7",
        "the discarded percentage remains consistent across augmentation fractions",
        "07_generation_cost_fig7",
        discard_consistent,
    ),
    Claim(
        "Sec. 6, Fig. 7",
        "the discarded percentage lies in [10.1, 11.1]% (CosXL, CUB)",
        "07_generation_cost_fig7",
        discard_in_band,
    ),
    Claim(
        "Sec. 6, Fig. 7",
        "linear generative inference complexity in the augmentation fraction",
        "07_generation_cost_fig7",
        cost_linear,
    ),
    Claim(
        "Sec. 5, Fig. 5",
        "saliency maps concentrate more on the foreground object than other methods'",
        "08_saliency_fig5",
        saliency_on_object,
    ),
)


def verdicts(ev: Evidence) -> pd.DataFrame:
    """One row per claim: where, the claim, the verdict, the difference it rests on with its 95% interval, how that
    interval was made, what was measured, the evidence page (a link)."""
    rows = []
    for c in CLAIMS:
        f = c.verdict(ev)
        scope = " (on the digits stand-ins)" if ev.profile == "embedded" and f.verdict != NOT_MEASURABLE else ""
        rows.append(
            {
                "where": c.where,
                "claim": c.text,
                "verdict": f.verdict + scope,
                "difference [95% interval]": f.difference or "—",
                "test": f.test or "—",
                "measured": f.detail,
                "evidence": f'<a href="{c.page}.html">{c.page}</a>',
            }
        )
    return pd.DataFrame(rows)
