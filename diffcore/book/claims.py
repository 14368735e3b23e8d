"""The paper's claims, each with the verdict of the profile that built the book: supported, not supported, or not
measurable on this profile, and a link to the evidence page.

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
from ..plan.paper import CONTROL, paper_wide, resolve, uses_set
from . import tables as T

SUPPORTED, NOT_SUPPORTED, NOT_MEASURABLE = "supported", "not supported", "not measurable on this profile"


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
        method, fraction, _ = resolve(label)
        if method is None or ours.empty:
            continue
        sel = ours[(ours.method == method) & (ours.control == (label == CONTROL))]
        if fraction is not None and uses_set(method):
            sel = sel[np.isclose(sel.fraction.astype(float), fraction)]
        v = sel[metric].to_numpy(float)
        if len(v) and not np.isnan(v).all():
            out[label] = float(np.nanmean(v))
    return out


OURS = ("DiffCoRe-Mix-50", "DiffCoRe-Mix-100")


def _comparisons(table: str) -> list[str]:
    return [x for x in paper_wide(table).index if x not in OURS and resolve(x)[0] not in (None, "vanilla")]


def beats_all(ev: Evidence, table: str, variants=OURS, metric: str = "top1") -> tuple[str, str]:
    """Each variant above every comparison method of the table, in every column of ours that has them all run."""
    lines, ok, measured = [], True, False
    for column, ours in ev.results[table].items():
        m = means(ours, list(variants) + _comparisons(table), metric)
        others = {k: v for k, v in m.items() if k not in OURS}
        if not others or any(v not in m for v in variants):
            lines.append(f"{column}: not every row run")
            continue
        measured = True
        best = max(others, key=others.get)
        for v in variants:
            ok &= m[v] > others[best]
            lines.append(f"{column}: {v} {m[v]:.2f} vs best other ({best}) {others[best]:.2f}")
    return (SUPPORTED if ok else NOT_SUPPORTED) if measured else NOT_MEASURABLE, "; ".join(lines)


def ordered(ev: Evidence, table: str, better: str, worse: list[str], metric: str = "top1") -> tuple[str, str]:
    """Row `better` above every row of `worse`, in every column of ours."""
    lines, ok, measured = [], True, False
    for column, ours in ev.results[table].items():
        m = means(ours, [better, *worse], metric)
        if better not in m or not all(w in m for w in worse):
            continue
        measured = True
        ok &= all(m[better] > m[w] for w in worse)
        lines.append(f"{column}: {better} {m[better]:.2f} vs " + ", ".join(f"{w} {m[w]:.2f}" for w in worse))
    return (SUPPORTED if ok else NOT_SUPPORTED) if measured else NOT_MEASURABLE, "; ".join(lines) or "not run"


def on_paper_data(ev: Evidence, table: str, dataset: str, check: Callable[[dict], tuple[bool, str]]) -> tuple[str, str]:
    """A claim about a number on one of the paper's datasets: measurable only where that dataset was run."""
    for column, ours in ev.results[table].items():
        if ev.datasets[table][column] == dataset:
            m = means(ours, list(paper_wide(table).index))
            if not m:
                return NOT_MEASURABLE, f"{column}: no result yet"
            ok, detail = check(m)
            return (SUPPORTED if ok else NOT_SUPPORTED), f"{column}: {detail}"
    return NOT_MEASURABLE, f"{dataset} is not run on the {ev.profile} profile"


def gain_up_to_3(ev: Evidence) -> tuple[str, str]:
    """Abstract: 'up to ~3% absolute gain for top-1 accuracy over the state-of-the-art methods'."""
    gains = []
    for table in ("Table 2", "Table 3", "Table 4", "Table 5"):
        for column, ours in ev.results[table].items():
            if ev.datasets[table][column] == "digits":
                continue
            m = means(ours, ["DiffCoRe-Mix-100", *_comparisons(table)], "test_top1" if table == "Table 2" else "top1")
            others = [v for k, v in m.items() if k != "DiffCoRe-Mix-100"]
            if "DiffCoRe-Mix-100" in m and others:
                gains.append((m["DiffCoRe-Mix-100"] - max(others), f"{table} {column}"))
    if not gains:
        return NOT_MEASURABLE, "no paper dataset run on this profile"
    best = max(gains)
    return (SUPPORTED if best[0] >= 2.0 else NOT_SUPPORTED), f"largest gain {best[0]:+.2f} points ({best[1]})"


def discard_consistent(ev: Evidence) -> tuple[str, str]:
    """Fig. 7: the discarded share stays within about a point across the augmentation fractions."""
    if ev.fig7.empty:
        return NOT_MEASURABLE, "the Fig. 7 page has not run"
    d = ev.fig7["discarded %"]
    spread = float(d.max() - d.min())
    return (SUPPORTED if spread <= 1.0 else NOT_SUPPORTED), (
        f"discarded {d.min():.1f}-{d.max():.1f}% over fractions {list(ev.fig7['fraction %'])} (spread {spread:.1f})"
    )


def discard_in_band(ev: Evidence) -> tuple[str, str]:
    if ev.profile != "paper":
        return NOT_MEASURABLE, "the embedded profile's tiny models, not CosXL and CLIP ViT-B/32"
    if ev.fig7.empty:
        return NOT_MEASURABLE, "the Fig. 7 page has not run"
    d = ev.fig7["discarded %"]
    return (SUPPORTED if d.between(10.1, 11.1).all() else NOT_SUPPORTED), f"{d.min():.1f}-{d.max():.1f}% discarded"


def cost_linear(ev: Evidence) -> tuple[str, str]:
    """Fig. 7: generation time grows linearly with the fraction (R^2 of a line >= 0.95)."""
    if len(ev.fig7) < 3:
        return NOT_MEASURABLE, "fewer than 3 fractions generated on the Fig. 7 page"
    x, y = ev.fig7["fraction %"].to_numpy(float), ev.fig7["seconds"].to_numpy(float)
    fit = np.polyval(np.polyfit(x, y, 1), x)
    r2 = 1 - ((y - fit) ** 2).sum() / ((y - y.mean()) ** 2).sum()
    return (SUPPORTED if r2 >= 0.95 else NOT_SUPPORTED), f"R² of a line through seconds vs fraction: {r2:.3f}"


def overhead_below(ev: Evidence, batch: int = 16) -> tuple[str, str]:
    """Sec. 5: DiffCoRe-Mix's overhead 'significantly lower than Co-Mixup and SaliencyMix' (Fig. 4, batch 16)."""
    rows = {r["method"]: r["overhead_pct"] for r in ev.overhead if r["batch_size"] == batch}
    if not {"diffcore", "comixup", "saliencymix"} <= set(rows):
        return NOT_MEASURABLE, "the Table 6 page has not timed these methods"
    ok = rows["diffcore"] < min(rows["comixup"], rows["saliencymix"])
    return (SUPPORTED if ok else NOT_SUPPORTED), (
        f"per step at batch {batch}: DiffCoRe-Mix {rows['diffcore']:+.1f}%, "
        f"Co-Mixup {rows['comixup']:+.1f}%, SaliencyMix {rows['saliencymix']:+.1f}%"
    )


def scales_better(ev: Evidence) -> tuple[str, str]:
    """Fig. 6: 'our method scales more effectively with batch size compared to Mixup' (time per batch, 16 -> 64)."""
    t = {(r["method"], r["batch_size"]): r["ms_per_batch"] for r in ev.overhead}
    sizes = sorted({b for _, b in t})
    if len(sizes) < 2 or not all((m, b) in t for m in ("diffcore", "mixup") for b in (sizes[0], sizes[-1])):
        return NOT_MEASURABLE, "the Table 6 page has not timed Mixup and DiffCoRe-Mix at two batch sizes"
    grow = {m: t[(m, sizes[-1])] / t[(m, sizes[0])] for m in ("diffcore", "mixup")}
    return (SUPPORTED if grow["diffcore"] < grow["mixup"] else NOT_SUPPORTED), (
        f"ms per batch x{grow['diffcore']:.2f} (DiffCoRe-Mix) vs x{grow['mixup']:.2f} (Mixup) from batch "
        f"{sizes[0]} to {sizes[-1]}"
    )


def saliency_on_object(ev: Evidence) -> tuple[str, str]:
    """Fig. 5: DiffCoRe-Mix's saliency lies more on the object than the other methods'."""
    if ev.cam.empty or "DiffCoRe-Mix-100" not in set(ev.cam.model):
        return NOT_MEASURABLE, "the Fig. 5 page has not measured it"
    share = dict(zip(ev.cam.model, ev.cam["Grad-CAM mass on ink (%)"]))
    ours = share.pop("DiffCoRe-Mix-100")
    ok = all(ours > v for v in share.values())
    return (SUPPORTED if ok else NOT_SUPPORTED), (
        f"Grad-CAM mass on the object {ours:.1f}% vs " + ", ".join(f"{k} {v:.1f}%" for k, v in share.items())
    )


@dataclass(frozen=True)
class Claim:
    where: str  # the paper's section / table / figure
    text: str  # the claim, in the paper's words where possible
    page: str  # the evidence page (a notebook of the book)
    verdict: Callable[[Evidence], tuple[str, str]]


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
        lambda ev: on_paper_data(
            ev,
            "Table 3",
            "imagenet-1k",
            lambda m: (
                m.get("DiffCoRe-Mix-100", -1) - m.get("Co-Mixup", 1e9) >= 2.0,
                f"{m.get('DiffCoRe-Mix-100', float('nan')):.2f} vs Co-Mixup {m.get('Co-Mixup', float('nan')):.2f}",
            ),
        ),
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
    """One row per claim: where, the claim, the verdict, what was measured, the evidence page (a link)."""
    rows = []
    for c in CLAIMS:
        verdict, detail = c.verdict(ev)
        scope = " (on the digits stand-ins)" if ev.profile == "embedded" and verdict != NOT_MEASURABLE else ""
        rows.append(
            {
                "where": c.where,
                "claim": c.text,
                "verdict": verdict + scope,
                "measured": detail,
                "evidence": f'<a href="{c.page}.html">{c.page}</a>',
            }
        )
    return pd.DataFrame(rows)
