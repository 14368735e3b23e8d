"""Generation timed side by side: the stock pipeline vs diffcore's path, the loop's host work, and what the opt-in
modes do to what the filter keeps."""

from __future__ import annotations

import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .models import (
    NEGATIVE,
    PROMPT,
    matmul_tflops,
    peak_gb,
    peak_reset,
    random_clip,
    random_sdxl,
    sync,
    unet_flops_per_image_step,
)
from .training import synthetic_pairs


# ---------------------------------------------------------------- generation
def _write_pngs(pool: ThreadPoolExecutor, images: np.ndarray, folder: Path, start: int) -> list:
    from PIL import Image

    return [
        pool.submit(lambda im, p: Image.fromarray(im).save(p, compress_level=1), im, folder / f"{start + k}.png")
        for k, im in enumerate(images)
    ]


def bench_generation(
    arch: str,
    device: torch.device,
    batch_sizes: list[int],
    steps: int,
    size: int,
    guidance: float,
    one_at_a_time: int,
    fp8: bool,
    compile_mode: str,
    log=print,
    on_row=lambda res: None,
    production_batches: int = 3,
    step_caches: tuple[int, ...] = (),
    regional: bool = False,
) -> dict:
    """Stock pipeline (batch 1 and each batch size) vs FastGenerator (each batch size), s per image; and
    `make_counterparts` itself (the code `diffcore generate` runs) over `production_batches` batches; and the
    opt-in variants (fp8, each DeepCache interval of `step_caches`), each compared with the stock images."""
    from ..engine.fastgen import FastConfig, FastGenerator, clip_embed_on_device, to_uint8
    from ..generate import GenerateConfig, generate_images

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(0)  # every later variant rebuilds the same weights
        pipe = random_sdxl(arch, device, dtype)
    clip = random_clip(arch, device, dtype)
    n_params = sum(p.numel() for p in pipe.unet.parameters())
    flops = unet_flops_per_image_step(pipe, size)
    peak = matmul_tflops(device)
    res = {
        "arch": arch,
        "unet_params": n_params,
        "size": size,
        "steps": steps,
        "guidance": guidance,
        "flops_per_image_step": flops,
        "matmul_tflops": peak,
        "floor_s_per_image": flops * steps / (peak * 1e12),
        "rows": [],
    }
    log(
        f"UNet {n_params / 1e6:.1f}M params, {flops / 1e9:.2f} GFLOP per image-step, bf16 matmul {peak:.1f} TFLOP/s "
        f"-> floor {res['floor_s_per_image']:.3f} s/img at {steps} steps"
    )
    labels = ["n02123045 tabby cat", "n01440764 tench"]

    def prompts(n):
        return [PROMPT.format(labels[i % 2]) for i in range(n)], [NEGATIVE] * n, list(range(1000, 1000 + n))

    def timed(fn, n, name, bs):
        sync(device), peak_reset(device)
        t = time.perf_counter()
        out = fn(n)
        sync(device)
        dt = (time.perf_counter() - t) / n
        row = {"path": name, "batch_size": bs, "images": n, "s_per_image": dt, "peak_gb": peak_gb(device)}
        res["rows"].append(row)
        on_row(res)  # written as it goes: a run cut short keeps what it measured
        log(
            f"  {name:<34} batch {bs:>3}: {dt:7.3f} s/img"
            + (f", peak {row['peak_gb']:.1f} GB" if row["peak_gb"] else "")
        )
        return out

    def timed_loop(pipe, clip, cfg, batches, name):
        row = time_make_counterparts(pipe, clip, cfg, batches)
        res["rows"].append({"path": name, **row, "peak_gb": peak_gb(device)})
        on_row(res)
        log(
            f"  {name:<34} batch {cfg.batch_size:>3}: {row['s_per_image']:7.3f} s/img (median batch cycle of the "
            f"real loop: generate, CLIP filter, PNG, commit)"
        )

    warm = GenerateConfig(steps=2, guidance_scale=guidance, size=size, batch_size=1)
    generate_images(pipe, *prompts(1), warm)  # cuDNN/cuBLAS warm-up, not timed
    cfg1 = GenerateConfig(steps=steps, guidance_scale=guidance, size=size, batch_size=1)
    timed(lambda n: generate_images(pipe, *prompts(n), cfg1), one_at_a_time, "stock pipeline", 1)
    stock_imgs = {}
    for bs in batch_sizes:
        cfg = GenerateConfig(steps=steps, guidance_scale=guidance, size=size, batch_size=bs)
        generate_images(pipe, *prompts(bs), GenerateConfig(steps=2, guidance_scale=guidance, size=size, batch_size=bs))
        stock_imgs[bs] = timed(lambda n: generate_images(pipe, *prompts(n), cfg), bs, "stock pipeline", bs)
    variants = [(f"diffcore {str(dtype).removeprefix('torch.')}", FastConfig(compile_mode=compile_mode))]
    if fp8 and device.type == "cuda":
        variants.append(("diffcore fp8 (opt-in)", FastConfig(compile_mode=compile_mode, fp8=True)))
    if regional:
        variants.append(("diffcore regional compile", FastConfig(compile_mode=compile_mode, compile_scope="regional")))
    variants += [
        (f"diffcore step-cache {n} (opt-in)", FastConfig(compile_mode=compile_mode, step_cache=n)) for n in step_caches
    ]
    for k, (name, fast) in enumerate(variants):
        if k > 0:  # a fresh copy with the same weights: the variant before compiled or wrapped the UNet in place
            del pipe
            if device.type == "cuda":
                torch.cuda.empty_cache()
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(0)
                pipe = random_sdxl(arch, device, dtype)
        gen = None
        for bs in batch_sizes:
            cfg = GenerateConfig(steps=steps, guidance_scale=guidance, size=size, batch_size=bs)
            if gen is None:
                gen = FastGenerator(pipe, cfg, fast)
            gen.cfg = cfg
            t0 = time.perf_counter()
            gen.images(*prompts(bs))  # compiles for this batch shape
            compile_s = time.perf_counter() - t0
            with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(4) as pool:

                def run(n):
                    x = gen.images(*prompts(n))  # (n, 3, H, W) on the device
                    emb = clip_embed_on_device(clip, x)  # (n, D)
                    keep = (emb * emb.roll(1, 0)).sum(1) > 0.0  # S > tau on the device (stand-in sources/tau)
                    u8 = to_uint8(x).permute(0, 2, 3, 1).cpu().numpy()  # (n, H, W, 3)
                    futures = _write_pngs(pool, u8[keep.cpu().numpy()], Path(tmp), 0)
                    return u8, futures

                u8, futures = timed(run, bs, f"{name} + CLIP filter + PNG", bs)
                [f.result() for f in futures]
            row = res["rows"][-1]
            row["compile_s"] = compile_s
            ref = stock_imgs[bs]
            d = np.abs(u8.astype(np.int16) - ref.astype(np.int16))
            row["vs_stock_max_abs"], row["vs_stock_mean_abs"] = int(d.max()), float(d.mean())
            e_ref, e_new = (
                clip_embed_on_device(clip, torch.from_numpy(a).to(device).permute(0, 3, 1, 2).float() / 255)
                for a in (ref, u8)
            )
            row["vs_stock_clip_cos"] = float((e_ref * e_new).sum(1).mean())
            if production_batches and k == 0:
                timed_loop(gen, clip, cfg, production_batches, f"{name} make_counterparts (what runs)")
        gen = None  # the variant's compiled copy is freed before the next one is built
    # CLIP filtering alone, per image, on the device
    x = torch.rand(max(batch_sizes), 3, size, size, device=device)
    clip_embed_on_device(clip, x)
    sync(device)
    t = time.perf_counter()
    for _ in range(5):
        clip_embed_on_device(clip, x)
    sync(device)
    res["clip_s_per_image"] = (time.perf_counter() - t) / (5 * len(x))
    return res


class _Stamped:
    """A FastGenerator (or SimulatedGPU) that notes when each batch starts: the loop's cycle time per batch."""

    def __init__(self, pipe):
        self.pipe, self.starts = pipe, []

    def call_pipeline(self, *args, **kw):
        self.starts.append(time.perf_counter())
        return self.pipe.call_pipeline(*args, **kw)

    def __getattr__(self, name):
        if name == "pipe":
            raise AttributeError(name)
        return getattr(self.pipe, name)


def time_make_counterparts(pipe, clip, cfg, batches: int, io_threads: int = 4) -> dict:
    """`make_counterparts` with `pipe` over `batches` full batches of synthetic 500x375 JPEG sources.

    s_per_image: the median time from one batch's start to the next's, per image: generation, the CLIP filter
    (source decoding, preprocessing), PNG encoding and the durable commit as the loop overlaps them. One attempt
    per source, so every batch is full (a shorter batch would recompile a compiled UNet).
    """
    from .. import counterparts as C
    from .. import prompts as P
    from ..data import image_folder
    from ..filter import FilterConfig

    n = cfg.batch_size * batches
    with tempfile.TemporaryDirectory() as tmp:
        real, _ = synthetic_pairs(Path(tmp) / "data", n)
        stamped = _Stamped(pipe)
        t = time.perf_counter()
        C.make_counterparts(
            image_folder(real),
            stamped,
            clip,
            Path(tmp) / "out",
            P.PromptConfig(dataset_type="natural object"),
            cfg,
            FilterConfig(z_pairs=20, max_attempts=1),
            C.CounterpartConfig(),
            progress=False,
            io_threads=io_threads,
        )
        wall = time.perf_counter() - t
    cycles = np.diff(stamped.starts) / cfg.batch_size if len(stamped.starts) > 1 else [wall / n]
    return {
        "batch_size": cfg.batch_size,
        "images": n,
        "s_per_image": float(np.median(cycles)),
        "wall_s_per_image_incl_tau": wall / n,
        "io_threads": io_threads,
    }


# ---------------------------------------------------------------- what the opt-in modes change
def opt_in_effect(
    intervals: tuple[int, ...] = (2, 3, 5),
    fp8: bool = True,
    half_steps: bool = True,
    sources: int = 200,
    seed: int = 0,
    log=print,
    figure: str | Path | None = None,
) -> dict:
    """What each opt-in mode does to the images DiffCoRe-Mix keeps, with the embedded profile's TRAINED tiny models
    on the CPU: exact; the step cache at each interval of `intervals`; fp8 (the same Float8Linear swap as
    `--fp8`, run by torch's float8 matmul on the CPU); half the denoising steps.

    For `sources` digits (first attempt of each, the profile's seeds), per mode: s per image, the share the CLIP
    filter accepts (S > tau_k, Eq. 5, tau from the same profile), the CLIP cosine between each image and the exact
    image of its seed, and the mean pixel change. The tiny models are stand-ins: their numbers show the direction
    and size of each effect on this pipeline, not on CosXL/SDXL. The fp8 time is not a speed measurement (the CPU
    has no float8 units). `figure`: a PNG with the first 12 images of each mode in a row (same seed per column).
    """
    import copy
    from dataclasses import replace

    from .. import counterparts as C
    from .. import experiment as X
    from .. import prompts as P
    from ..engine.fastgen import FastConfig, FastGenerator, to_fp8_linears
    from ..engine.runtime import derive_seed
    from ..engine.stepcache import uninstall
    from ..filter import cosine, load_clip
    from ..generate import draw_images, load_pipeline

    exp, cpu = X.experiment("embedded"), torch.device("cpu")
    gen_cfg, filt, prompt_cfg = exp.generate, exp.filter, exp.prompt
    ds = X.train_set(exp)
    pick = np.random.default_rng(seed).permutation(len(ds))[:sources]
    pipe, clip = load_pipeline(gen_cfg, cpu, torch.float32), load_clip(filt, cpu)
    taus = C.thresholds(ds, clip, filt)
    labels = [ds.labels[i] for i in pick]
    texts = [P.contextual_prompt(ds.classes[k], prompt_cfg) for k in labels]
    negs = [P.negative_prompt(prompt_cfg)] * len(pick)
    seeds = [derive_seed(gen_cfg.run_seed, ds.ids[i], 0) for i in pick]
    src = clip.embed([ds.load(int(i)) for i in pick])  # (n, D)
    tau = torch.tensor([taus[k] for k in labels])  # (n,)
    modes = [("exact", gen_cfg, 1, False)] + [(f"step cache {n}", gen_cfg, n, False) for n in intervals]
    modes += [("fp8", gen_cfg, 1, True)] if fp8 else []
    modes += (
        [(f"{gen_cfg.steps // 2} steps", replace(gen_cfg, steps=gen_cfg.steps // 2), 1, False)] if half_steps else []
    )
    res = {"profile": "embedded (tiny trained stand-ins)", "sources": len(pick), "steps": gen_cfg.steps, "rows": []}
    exact, shown = None, []
    for name, cfg, n, fp in modes:
        unet = pipe.unet
        if fp:  # a float8 copy of the UNet, as FastGenerator(fp8=True) makes on a GPU
            pipe.unet = copy.deepcopy(unet)
            to_fp8_linears(pipe.unet)
        cfg = replace(cfg, step_cache=n)
        fast = FastGenerator(pipe, cfg, FastConfig(compile=False, channels_last=False, step_cache=n))
        draw_images(fast, texts[:8], negs[:8], seeds[:8], replace(cfg, batch_size=8))  # warm-up, not timed
        t = time.perf_counter()
        images, _ = draw_images(fast, texts, negs, seeds, cfg)  # (n, H, W, 3) uint8
        dt = (time.perf_counter() - t) / len(pick)
        uninstall(pipe)
        pipe.unet = unet
        emb = clip.embed([Image.fromarray(im) for im in images])  # (n, D)
        if exact is None:
            exact = (images, emb, dt)
        row = {
            "mode": name,
            "step_cache": n,
            "fp8": fp,
            "steps": cfg.steps,
            "s_per_image": dt,
            "speedup": None if fp else exact[2] / dt,
            "accepted_pct": float((cosine(src, emb) > tau).float().mean()) * 100,
            "clip_cos_to_exact": float((emb * exact[1]).sum(1).mean()),
            "mean_abs_pixel_change": float(np.abs(images.astype(np.int16) - exact[0].astype(np.int16)).mean()),
        }
        res["rows"].append(row)
        shown.append(images[:12])
        speed = "time not a speed (no float8 units on a CPU)" if fp else f"x{row['speedup']:.2f}"
        log(
            f"  {name:<13} {dt * 1e3:7.1f} ms/img ({speed}), filter accepts {row['accepted_pct']:.1f}%, "
            f"CLIP cos to exact {row['clip_cos_to_exact']:.4f}, mean |d pixel| {row['mean_abs_pixel_change']:.2f}/255"
        )
    if figure is not None:
        res["figure"] = str(image_rows(shown, [m[0].replace("step cache ", "N=") for m in modes], figure))
    return res


def image_rows(rows: list[np.ndarray], labels: list[str], path: str | Path, scale: int = 3) -> Path:
    """A PNG: one row of (k, H, W, 3) uint8 images per entry, its label on the left, upscaled `scale` times."""
    from PIL import ImageDraw

    k, h, w, _ = rows[0].shape
    pad, left = 4, 44
    sheet = Image.new("RGB", (left + k * (w * scale + pad), len(rows) * (h * scale + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (images, label) in enumerate(zip(rows, labels)):
        y = pad + r * (h * scale + pad)
        draw.text((4, y + h * scale // 2 - 6), label, fill="black")
        for c, im in enumerate(images):
            sheet.paste(
                Image.fromarray(im).resize((w * scale, h * scale), Image.NEAREST), (left + c * (w * scale + pad), y)
            )
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return Path(path)


# ---------------------------------------------------------------- the generation loop's host work
class SimulatedGPU:
    """Stands in for a FastGenerator in `make_counterparts`: sleeps `s_per_image` per image (a GPU busy with the
    UNet leaves the CPU free, as a sleep does) and returns one of 16 smooth random `size` px images per seed,
    made once (so making them costs the loop nothing). The images come back on the CPU: draw_images' checks and
    uint8 conversion, GPU work in a real run, count as host time here (an upper bound)."""

    def __init__(self, size: int, s_per_image: float, bank: int = 16):
        g = torch.Generator().manual_seed(0)
        low = torch.rand(bank, 3, 8, 8, generator=g)  # (K, 3, 8, 8)
        x = torch.nn.functional.interpolate(low, size=(size, size), mode="bicubic")  # (K, 3, H, W)
        self.bank = (x + 0.03 * torch.rand(bank, 3, size, size, generator=g)).clamp(0, 1)  # photo grain
        self.s_per_image = s_per_image

    def call_pipeline(self, prompts, negatives, generators) -> torch.Tensor:
        """FastGenerator's batch call: (b, 3, H, W) in [0, 1] after `s_per_image` seconds per image."""
        time.sleep(self.s_per_image * len(prompts))
        pick = torch.tensor([int(g.initial_seed()) % len(self.bank) for g in generators])  # (b,)
        return self.bank[pick]  # (b, 3, H, W)


class _ClipOnGPU(torch.nn.Module):
    """encode_image at no host cost (on an H100 CLIP ViT-B/32 takes 0.03 ms per image): the host work timed is
    the preprocessing, the decoding and the writing, not a CPU running a ViT."""

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3)).repeat(1, 4)  # (b, 12)


def time_host_loop(
    s_per_image: float = 0.346,
    batch_size: int = 32,
    batches: int = 4,
    size: int = 512,
    io_threads: tuple[int, ...] = (0, 4),
    log=print,
) -> list[dict]:
    """Host time per image that `make_counterparts` adds to the GPU's, for each `io_threads` (0: in line).

    The real loop (source decoding, CLIP preprocessing, filtering, PNG encoding, fsync'd commits) around a
    simulated GPU that takes `s_per_image` (default: diffcore's measured 0.346 s on an H100 at batch 32). The
    cycle time between two pipeline calls minus the GPU's share is what the host adds on the critical path.
    """
    import open_clip

    from ..filter import ClipEncoder
    from ..generate import GenerateConfig

    preprocess = open_clip.image_transform(224, is_train=False)  # ViT-B/32's eval preprocessing
    clip = ClipEncoder(_ClipOnGPU(), preprocess, torch.device("cpu"))
    gen = GenerateConfig(model="simulated", steps=50, guidance_scale=12.0, size=size, batch_size=batch_size)
    rows = []
    for threads in io_threads:
        run = time_make_counterparts(SimulatedGPU(size, s_per_image), clip, gen, batches, io_threads=threads)
        host_ms = (run["s_per_image"] - s_per_image) * 1e3
        rows.append(
            {
                "io_threads": threads,
                "batch_size": batch_size,
                "images": run["images"],
                "size": size,
                "simulated_gpu_s_per_image": s_per_image,
                "cycle_s_per_image": run["s_per_image"],
                "host_ms_per_image": host_ms,
                "host_share_pct": host_ms / (s_per_image * 1e3) * 100,
            }
        )
        log(
            f"  io_threads {threads}: {host_ms:6.1f} ms/img of host work on the critical path "
            f"(+{rows[-1]['host_share_pct']:.1f}% over {s_per_image:.3f} s/img on the GPU)"
        )
    return rows
