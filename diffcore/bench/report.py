"""Markdown tables from a bench JSON file (the tables of benchmarks/README.md are this output)."""

from __future__ import annotations


# ---------------------------------------------------------------- Markdown tables from a bench JSON file
def report(bench: dict) -> str:
    """The Markdown tables of the sections a bench JSON holds (generation, host, optin, training, loader)."""
    parts = [
        table(bench[k])
        for k, table in (
            ("generation", md_generation),
            ("host", md_host),
            ("optin", md_optin),
            ("training", md_training),
            ("loader", md_loader),
        )
        if k in bench
    ]
    return "\n\n".join(parts)


def _md(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def md_generation(g: dict) -> str:
    rows = []
    for r in g["rows"]:
        stock = next(
            (
                x["s_per_image"]
                for x in g["rows"]
                if x["path"] == "stock pipeline" and x["batch_size"] == r["batch_size"]
            ),
            None,
        )
        ratio = "" if r["path"] == "stock pipeline" or stock is None else f"×{stock / r['s_per_image']:.2f}"
        change = f"{r['vs_stock_max_abs']}/255" if "vs_stock_max_abs" in r else ""
        peak = f"{r['peak_gb']:.1f}" if r.get("peak_gb") else ""
        compile_s = f"{r['compile_s']:.0f}" if r.get("compile_s") and g.get("arch") == "sdxl" else ""
        rows.append([r["path"], str(r["batch_size"]), f"{r['s_per_image']:.3f}", ratio, change, peak, compile_s])
    return _md(
        [
            "path",
            "batch",
            "s/img",
            "vs stock, same batch",
            "max pixel change vs stock",
            "peak GPU GB",
            "first batch incl. compile (s)",
        ],
        rows,
    )


def md_host(rows: list[dict]) -> str:
    gpu = rows[0]["simulated_gpu_s_per_image"]
    return _md(
        ["`--io-threads`", "host work on the critical path per image", f"on top of {gpu:.3f} s/img of GPU time"],
        [
            [
                f"{r['io_threads']}" + (" (in line)" if r["io_threads"] == 0 else ""),
                f"{r['host_ms_per_image']:.1f} ms",
                f"+{r['host_share_pct']:.1f}%",
            ]
            for r in rows
        ],
    )


def md_optin(res: dict) -> str:
    rows = []
    for r in res["rows"]:
        ms = r["s_per_image"] * 1e3
        speed = (
            f"({ms:.1f}, emulated)"
            if r["fp8"]
            else f"{ms:.1f}"
            if r["mode"] == "exact"
            else f"{ms:.1f} (×{r['speedup']:.2f})"
        )
        change = "0" if r["mean_abs_pixel_change"] == 0 else f"{r['mean_abs_pixel_change']:.2f}/255"
        rows.append([r["mode"], speed, f"{r['accepted_pct']:.1f}%", f"{r['clip_cos_to_exact']:.4f}", change])
    return _md(
        [
            "mode",
            "ms/img (speed-up)",
            "filter accepts (S > τ_k)",
            "CLIP cos to the exact image of the same seed",
            "mean pixel change",
        ],
        rows,
    )


def _pct(x: float | None) -> str:
    return "" if x is None else f"{x:+.1f}%".replace("-", "−")


def md_loader(rows: list[dict]) -> str:
    """Eq. 9 overhead of the mixing method over vanilla, per loader (rows: time_training_loader's)."""
    sizes = sorted({r["batch_size"] for r in rows})
    mixed = [r for r in rows if r["method"] != "vanilla"]
    kinds = list(dict.fromkeys(r["loader"] for r in mixed))
    pct = {(r["loader"], r["batch_size"]): r["overhead_pct"] for r in mixed}
    return _md(
        ["loader"] + [f"batch {b}" for b in sizes], [[k] + [_pct(pct.get((k, b))) for b in sizes] for k in kinds]
    )


def timed_name(row: dict) -> str:
    """A timed method's name: 'puzzlemix', or 'puzzlemix [solver=icm]' for an opt-in variant (bench.FAST_PATHS)."""
    return row["method"] + (f" [{row['variant']}]" if row.get("variant") else "")


def md_training(rows: list[dict]) -> str:
    """ms per step and Eq. 9 overhead per method, tensors already on the device (rows: time_training's)."""
    sizes = sorted({r["batch_size"] for r in rows})
    cell = {(timed_name(r), r["batch_size"]): f"{r['ms_per_batch']:.2f} ({_pct(r['overhead_pct'])})" for r in rows}
    methods = list(dict.fromkeys(timed_name(r) for r in rows))
    return _md(
        ["method"] + [f"batch {b}: ms (Eq. 9)" for b in sizes],
        [[m] + [cell.get((m, b), "") for b in sizes] for m in methods],
    )
