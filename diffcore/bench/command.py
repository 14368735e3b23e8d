"""`python -m diffcore.bench` (also `diffcore bench`): what to time, from the command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from ..engine.checks import finite_float, json_text
from ..engine.runtime import provenance, resolve_device
from . import FAST_PATHS, bench_generation, opt_in_effect, report, time_host_loop, time_training, time_training_loader
from .models import ARCHS, flop_report
from .report import timed_name


# ---------------------------------------------------------------- command line
def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m diffcore.bench",
        description="generation, filtering and mixed training timed side by side, ratios printed",
    )
    # no `choices=`: Python 3.11's argparse checks an empty nargs="*" list against them and fails
    p.add_argument(
        "what",
        nargs="*",
        metavar="{generation,host,optin,training,loader,flops}",
        help="what to time (default: the first five); flops: the step cache's FLOP share and estimated "
        "speed-ups (meta device, no timing)",
    )
    p.add_argument("--arch", choices=sorted(ARCHS), help="default: sdxl on CUDA, tiny on CPU")
    p.add_argument("--device", default="auto")
    p.add_argument("--steps", type=int, help="denoising steps (default 50 on sdxl, 10 on tiny)")
    p.add_argument("--size", type=int, help="image side (default 512 on sdxl, 64 on tiny)")
    p.add_argument("--guidance", type=finite_float, default=12.0)
    p.add_argument("--gen-batch", type=int, nargs="+", help="default 16 32 on sdxl, 8 on tiny")
    p.add_argument("--one-at-a-time", type=int, default=2, help="images for the stock batch-1 baseline")
    p.add_argument("--fp8", action="store_true", help="also time the opt-in FP8 UNet (CUDA)")
    p.add_argument("--compile-mode", default="default")
    p.add_argument(
        "--regional",
        action="store_true",
        help="generation: also time the regional compile (transformer blocks only; CUDA)",
    )
    p.add_argument(
        "--loop-batches",
        type=int,
        default=3,
        help="generation: batches of the timed make_counterparts run (0: skip it)",
    )
    p.add_argument(
        "--step-cache",
        type=int,
        nargs="*",
        default=[],
        help="generation: also time these opt-in DeepCache intervals (e.g. 2 3)",
    )
    p.add_argument(
        "--optin-intervals",
        type=int,
        nargs="+",
        default=[2, 3, 5],
        help="optin: step-cache intervals whose effect on the filter is measured",
    )
    p.add_argument("--optin-sources", type=int, default=200, help="optin: digits generated per mode")
    p.add_argument(
        "--host-gpu-s",
        type=finite_float,
        default=0.346,
        help="host: simulated GPU s per image (default: diffcore's measured H100 figure at batch 32)",
    )
    p.add_argument("--host-batches", type=int, default=4, help="host: batches of 32 per variant")
    p.add_argument("--train-model", help="default resnet50 at 224 px on CUDA, digits-cnn at 32 px on CPU")
    p.add_argument("--train-batch", type=int, nargs="+", default=[16, 32, 64])
    p.add_argument("--methods", nargs="+", help="default: every registered method")
    p.add_argument(
        "--fast-paths",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="training: also time the opt-in device paths (bench.FAST_PATHS: ICM, OpenCV's saliency in torch)",
    )
    p.add_argument("--train-steps", type=int, default=20, help="timed steps per method and round")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is kept")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    p.add_argument("--amp", action="store_true", help="bf16 autocast + channels_last for training (CUDA)")
    p.add_argument("--out", help="write every measured number here (JSON)")
    p.add_argument(
        "--report",
        metavar="JSON",
        help="print the Markdown tables of a bench JSON file and exit "
        "(the tables in benchmarks/README.md are this output; a test checks they still match)",
    )
    a = p.parse_args(argv)
    if a.report:
        print(report(json.loads(Path(a.report).read_text())))
        return 0
    parts = ["generation", "host", "optin", "training", "loader"]
    if any(w not in parts + ["flops"] for w in a.what):
        p.error(f"what={a.what}: expected any of {parts + ['flops']}")
    if a.what == ["flops"]:
        print(json_text(flop_report(tuple(a.optin_intervals)), indent=2))
        return 0
    a.what = a.what or parts
    dev = resolve_device(a.device)
    gpu = dev.type == "cuda"
    arch = a.arch or ("sdxl" if gpu else "tiny")
    args = sys.argv[1:] if argv is None else argv
    out = {
        "provenance": provenance(dev),
        "command": "python -m diffcore.bench " + " ".join(args),
        "date": time.strftime("%Y-%m-%d"),
    }
    print(f"device: {out['provenance'].get('device', dev)}")

    def save(section=None, value=None):
        if section is not None:
            out[section] = value
        if a.out:
            Path(a.out).parent.mkdir(parents=True, exist_ok=True)
            Path(a.out).write_text(json_text(out, indent=2))

    if "generation" in a.what:
        out["generation"] = bench_generation(
            arch,
            dev,
            a.gen_batch or ([16, 32] if arch == "sdxl" else [8]),
            a.steps or (50 if arch == "sdxl" else 10),
            a.size or (512 if arch == "sdxl" else 64),
            a.guidance,
            a.one_at_a_time,
            a.fp8,
            a.compile_mode,
            on_row=lambda r: save("generation", r),
            step_caches=tuple(a.step_cache),
            production_batches=a.loop_batches,
            regional=a.regional,
        )
        print_generation(out["generation"])
    if "optin" in a.what:
        print(
            "\nopt-in modes (step cache, fp8, half the steps): their effect on what the filter keeps, "
            "embedded trained tiny models"
        )
        fig = None if a.out is None else Path(a.out).with_suffix(".optin.png")
        out["optin"] = opt_in_effect(tuple(a.optin_intervals), sources=a.optin_sources, figure=fig)
        save()
    if "host" in a.what:
        print("\ngeneration loop's host work, GPU simulated (make_counterparts: decode, CLIP preprocess, PNG, commit)")
        out["host"] = time_host_loop(a.host_gpu_s, batches=a.host_batches)
        save()
    model = a.train_model or ("resnet50" if gpu else "digits-cnn")
    size = 224 if model == "resnet50" else 32
    if "training" in a.what:
        from ..methods import REGISTRY

        methods = a.methods or [m for m, cls in REGISTRY.items() if cls.uses != "edits"]
        fast = tuple(v for v in FAST_PATHS if v[0] in methods) if a.fast_paths else ()
        out["training"] = time_training(
            methods,
            a.train_batch,
            model,
            size,
            steps=a.train_steps,
            rounds=a.rounds,
            device=a.device,
            amp=a.amp,
            channels_last=a.amp,
            variants=fast,
        )
        save()
        print_rows("training step, tensors on the device (Eq. 9 overhead vs vanilla)", out["training"])
    if "loader" in a.what:
        out["loader"] = time_training_loader(
            a.train_batch,
            model,
            size,
            steps=a.train_steps,
            device=a.device,
            workers=a.workers,
            amp=a.amp,
            channels_last=a.amp,
        )
        save()
        print_rows("training step with diffcore's loader (JPEG vs JPEG + generated PNG per sample)", out["loader"])
    save()
    return 0


def print_generation(g: dict) -> None:
    rows = g["rows"]
    one = next(r["s_per_image"] for r in rows if r["path"] == "stock pipeline" and r["batch_size"] == 1)
    print(
        f"\ngeneration ({g['arch']}, {g['size']} px, {g['steps']} steps): floor {g['floor_s_per_image']:.3f} s/img; "
        f"CLIP filter {g['clip_s_per_image'] * 1e3:.2f} ms/img"
    )
    for r in rows:
        stock = next(
            (s["s_per_image"] for s in rows if s["path"] == "stock pipeline" and s["batch_size"] == r["batch_size"]),
            None,
        )
        extra = (
            ""
            if r["path"] == "stock pipeline" or "vs_stock_max_abs" not in r
            else f"  x{one / r['s_per_image']:.1f} vs stock b1, x{stock / r['s_per_image']:.2f} vs stock same batch; "
            f"vs stock images: max|d| {r['vs_stock_max_abs']}, CLIP cos {r['vs_stock_clip_cos']:.4f}"
        )
        print(f"  {r['path']:<36} b{r['batch_size']:<3} {r['s_per_image']:.3f} s/img{extra}")


def print_rows(title: str, rows: list[dict]) -> None:
    print(f"\n{title}")
    for r in rows:
        print(
            f"  {r['model']} {r['image_size']}px b{r['batch_size']:<3} {timed_name(r):<12} {r['loader'][:18]:<18} "
            f"{r['ms_per_batch']:8.2f} ms/batch  overhead {r['overhead_pct']:+6.1f}%"
        )
