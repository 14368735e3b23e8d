"""FastGenerator is the stock pipeline call made fast: same images on CPU, prompts encoded once, fp8 opt-in only."""

import numpy as np
import pytest
import torch

from diffcore.bench import bench_generation, time_training
from diffcore.engine.fastgen import FastConfig, FastGenerator, clip_embed_on_device, to_fp8_linears
from diffcore.filter import FilterConfig, load_clip
from diffcore.generate import GenerateConfig, generate_images, load_pipeline

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def sd(tiny_sd_dir):
    cfg = GenerateConfig(model=str(tiny_sd_dir), steps=3, guidance_scale=3.0, size=16, batch_size=3, dtype="float32")
    return load_pipeline(cfg, CPU, torch.float32), cfg


def test_same_images_as_generate_images_and_each_prompt_encoded_once(sd):
    pipe, cfg = sd
    prompts, negs, seeds = ["one", "two", "one", "two", "one"], ["thin"] * 5, [5, 6, 7, 8, 9]
    stock = generate_images(pipe, prompts, negs, seeds, cfg)
    fast = FastGenerator(pipe, cfg, FastConfig(channels_last=False))
    calls = []
    encode = pipe.encode_prompt
    pipe.encode_prompt = lambda *a, **k: calls.append(k.get("prompt", a[0] if a else None)) or encode(*a, **k)
    try:
        out = fast(prompts, negs, seeds)
    finally:
        pipe.encode_prompt = encode
    assert np.array_equal(out, stock)
    # the text encoder ran for the two distinct (prompt, negative) pairs only; the pipeline's own calls get the
    # cached embeddings (prompt=None) and return them untouched
    assert sorted(c for c in calls if c is not None) == ["one", "two"]


def test_refuses_what_generate_images_refuses(sd):
    pipe, cfg = sd
    fast = FastGenerator(
        pipe, GenerateConfig(**{**cfg.__dict__, "guidance_scale": 1.0}), FastConfig(channels_last=False)
    )
    with pytest.raises(ValueError, match="guidance_scale=1.0"):
        fast(["one"], ["thin"], [1])
    with pytest.raises(ValueError, match="2 prompts, 1 seeds"):
        fast(["one", "two"], None, [1])
    with pytest.raises(ValueError, match="fp8=True"):
        FastGenerator(pipe, cfg, FastConfig(fp8=True))


def test_clip_on_device_matches_the_pil_preprocessing(tiny_clip_files):
    cfgf, weights = tiny_clip_files
    clip = load_clip(
        FilterConfig(clip_model="test-tiny-clip", clip_pretrained=str(weights), clip_config=str(cfgf)), CPU
    )
    from PIL import Image

    rng = np.random.default_rng(0)
    low = [rng.integers(0, 256, (4, 4, 3), dtype=np.uint8) for _ in range(3)]
    ims = [Image.fromarray(x).resize((64, 64), Image.BICUBIC) for x in low]
    ref = clip.embed(ims)
    x = torch.stack([torch.from_numpy(np.array(im)).permute(2, 0, 1) for im in ims]).float() / 255
    dev = clip_embed_on_device(clip, x)
    assert dev.shape == ref.shape
    assert torch.allclose(dev.norm(dim=1), torch.ones(3), atol=1e-5)
    assert (dev * ref).sum(1).min() > 0.98  # bicubic resize in torch vs PIL: near, not bit-equal


def test_fp8_swaps_only_attention_linears_with_multiple_of_16_shapes():
    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.attentions = torch.nn.ModuleList(
                [torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.Linear(64, 10))]
            )
            self.time = torch.nn.Linear(32, 32)

    b = Block()
    assert to_fp8_linears(b) == 1  # (32 -> 64) swapped; (64 -> 10) not a multiple of 16; time linear is not attention
    assert type(b.attentions[0][0]).__name__ == "Float8Linear" and isinstance(b.time, torch.nn.Linear)


def test_bench_runs_tiny_and_reports_side_by_side(tmp_path):
    g = bench_generation(
        "tiny",
        CPU,
        [2],
        steps=2,
        size=32,
        guidance=4.0,
        one_at_a_time=1,
        fp8=False,
        compile_mode="default",
        log=lambda *a: None,
    )
    paths = [(r["path"], r["batch_size"]) for r in g["rows"]]
    assert paths == [
        ("stock pipeline", 1),
        ("stock pipeline", 2),
        ("diffcore float32 + CLIP filter + PNG", 2),
        ("diffcore float32 make_counterparts (what runs)", 2),
    ]  # CPU: fp32
    assert g["rows"][2]["vs_stock_max_abs"] <= 1 and g["flops_per_image_step"] > 0
    loop = g["rows"][3]
    assert loop["images"] == 6 and 0 < loop["s_per_image"] <= loop["wall_s_per_image_incl_tau"] * 3
    rows = time_training(["diffcore"], [4], "digits-cnn", 16, steps=1, warmup=1, device="cpu", rounds=1)
    assert [r["method"] for r in rows] == ["vanilla", "diffcore"] and rows[0]["overhead_pct"] == 0.0


def test_draw_images_through_the_fast_path_gives_the_stock_images(sd):
    from diffcore.generate import draw_images

    pipe, cfg = sd
    prompts, seeds = ["one", "two", "one", "four"], [1, 2, 3, 4]
    stock, bad = draw_images(pipe, prompts, ["thin"] * 4, seeds, cfg)
    fast, bad_fast = draw_images(
        FastGenerator(pipe, cfg, FastConfig(channels_last=False)), prompts, ["thin"] * 4, seeds, cfg
    )
    assert np.array_equal(stock, fast) and np.array_equal(bad, bad_fast)
    nofneg, _ = draw_images(FastGenerator(pipe, cfg, FastConfig(channels_last=False)), prompts, None, seeds, cfg)
    assert np.array_equal(nofneg, draw_images(pipe, prompts, None, seeds, cfg)[0])


def test_bench_command_line_defaults_to_every_part(monkeypatch, tmp_path):
    import diffcore.bench.command as B

    seen = []
    monkeypatch.setattr(B, "bench_generation", lambda *a, **k: seen.append("generation") or {"rows": []})
    monkeypatch.setattr(B, "print_generation", lambda g: None)
    monkeypatch.setattr(B, "time_host_loop", lambda *a, **k: seen.append("host") or [])
    monkeypatch.setattr(B, "opt_in_effect", lambda *a, **k: seen.append("optin") or {})
    monkeypatch.setattr(B, "time_training", lambda *a, **k: seen.append("training") or [])
    monkeypatch.setattr(B, "time_training_loader", lambda *a, **k: seen.append("loader") or [])
    assert B.main(["--device", "cpu", "--out", str(tmp_path / "b.json")]) == 0
    assert seen == ["generation", "optin", "host", "training", "loader"] and (tmp_path / "b.json").is_file()


def test_host_loop_bench_times_the_real_loop_around_a_simulated_gpu():
    """Every variant runs make_counterparts to its end; cycle = GPU share + host share, by construction."""
    from diffcore.bench import time_host_loop

    rows = time_host_loop(s_per_image=0.01, batch_size=4, batches=3, size=64, io_threads=(0, 2), log=lambda m: None)
    assert [r["io_threads"] for r in rows] == [0, 2]
    for r in rows:
        assert r["images"] == 12 and r["cycle_s_per_image"] >= 0.01
        assert r["host_ms_per_image"] == pytest.approx((r["cycle_s_per_image"] - 0.01) * 1e3)


def test_step_cache_is_opt_in_installed_by_load_pipeline_and_reset_per_batch(tiny_sd_dir):
    """step_cache=n: the generator runs the full UNet ceil(steps/n) times per batch, every batch alike; the images
    move away from the exact ones (it is opt-in for that reason) and n=1 keeps them exactly."""
    from dataclasses import replace

    from diffcore.engine.stepcache import StepCache
    from diffcore.generate import draw_images

    cfg = GenerateConfig(model=str(tiny_sd_dir), steps=5, guidance_scale=3.0, size=16, batch_size=2, dtype="float32")
    args = (["one", "two", "one", "two"], ["thin"] * 4, [5, 6, 5, 6])
    exact, _ = draw_images(load_pipeline(cfg, CPU, torch.float32), *args, cfg)
    cached_cfg = replace(cfg, step_cache=2)
    fast = load_pipeline(cached_cfg, CPU, torch.float32)
    assert isinstance(fast, FastGenerator) and isinstance(fast.unet, StepCache) and fast.unet.interval == 2
    cached, _ = draw_images(fast, *args, cached_cfg)
    assert fast.unet.full_calls == 2 * 3 and fast.unet.shallow_calls == 2 * 2  # 2 batches x steps 0, 2, 4 full
    assert np.array_equal(cached[:2], cached[2:])  # same seeds in the next batch: the same images (reset per batch)
    assert not np.array_equal(cached, exact)
    assert np.abs(cached.astype(int) - exact.astype(int)).mean() < 8  # close to the exact images
    with pytest.raises(ValueError, match=r"step_cache=0: expected an int >= 1"):
        GenerateConfig(step_cache=0)
    with pytest.raises(ValueError, match=r"step_cache=2.5: expected an int >= 1"):
        FastConfig(step_cache=2.5)


def test_opt_in_effect_reports_the_filter_on_the_trained_stand_ins(tmp_path):
    from PIL import Image

    from diffcore.bench import opt_in_effect

    res = opt_in_effect(intervals=(3,), sources=6, log=lambda m: None, figure=tmp_path / "grid.png")
    assert [r["mode"] for r in res["rows"]] == ["exact", "step cache 3", "fp8", "10 steps"]
    exact, *changed = res["rows"]
    assert exact["mean_abs_pixel_change"] == 0.0 and exact["clip_cos_to_exact"] == pytest.approx(1.0, abs=1e-6)
    for r in changed:  # every opt-in mode changes the images, none beyond recognition
        assert r["mean_abs_pixel_change"] > 0 and 0.9 < r["clip_cos_to_exact"] < 1.0, r
    assert all(
        0 <= r["accepted_pct"] <= 100
        and r["accepted_pct"] * 6 / 100 == pytest.approx(round(r["accepted_pct"] * 6 / 100))
        for r in res["rows"]
    )  # a share of the 6 sources
    with Image.open(res["figure"]) as grid:  # four rows of 6 digits, 32 px shown at 96 px
        assert grid.size == (44 + 6 * (96 + 4), 4 * (96 + 4) + 4)


@pytest.mark.parametrize("scope,cached", [("regional", False), ("regional", True), ("full", True)])
def test_compile_unet_scopes_trace_without_breaks_and_keep_the_images(scope, cached):
    """What FastGenerator compiles on CUDA, traced here by dynamo with the eager backend: the same images, no graph
    break; regional: one graph per transformer-block shape, shared by every block of that shape."""
    from torch._dynamo.utils import counters

    from diffcore.bench import random_sdxl
    from diffcore.engine.fastgen import compile_unet
    from diffcore.engine.stepcache import install

    torch.manual_seed(0)
    pipe = random_sdxl("tiny", CPU, torch.float32)
    cache = install(pipe, 2) if cached else None
    kw = dict(
        prompt=["a", "b"],
        negative_prompt=["n", "n"],
        num_inference_steps=3,
        guidance_scale=4.0,
        height=32,
        width=32,
        output_type="pt",
    )

    def images():
        if cache is not None:
            cache.reset()
        return pipe(**kw, generator=[torch.Generator().manual_seed(s) for s in (1, 2)]).images

    plain = images()
    torch._dynamo.reset()
    counters.clear()
    compile_unet(pipe, scope, backend="eager")
    try:
        compiled = images()
        assert sum(counters["graph_break"].values()) == 0
        blocks = {m.norm1.normalized_shape for m in pipe.unet.modules() if type(m).__name__ == "BasicTransformerBlock"}
        graphs = counters["stats"]["unique_graphs"]
        assert graphs == (len(blocks) if scope == "regional" else 3 if cached else 2)  # full: UNet (+shallow) + VAE
    finally:
        torch._dynamo.reset()
    assert torch.equal(plain, compiled)


def test_every_method_is_timed_on_a_finite_network(monkeypatch):
    """The overhead benchmark's batch holds valid pixels: no method's step makes NaN of the shared network (PixMix
    did on Gaussian tensors, and every method timed after it then ran on NaN weights)."""
    import diffcore.models as M
    from diffcore.methods import REGISTRY

    nets, build = [], M.build_model
    monkeypatch.setattr(M, "build_model", lambda *a, **k: nets.append(build(*a, **k)) or nets[-1])
    rows = time_training(sorted(REGISTRY), [4], "digits-cnn", 16, steps=2, warmup=1, device="cpu", rounds=1)
    assert len(rows) == len(REGISTRY) and len(nets) == 1
    assert all(torch.isfinite(p).all() for p in nets[0].parameters())
