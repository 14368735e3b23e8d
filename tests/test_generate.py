"""Generation: Eq. (4) equals the pipeline call, seeds are per image, the paper's SDXL/CosXL path runs."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import char_tokenizer, tiny_text_encoder, tiny_vae

from diffcore.generate import (
    COSXL_SCHEDULER,
    GenerateConfig,
    check_guidance,
    draw_images,
    generate_images,
    load_pipeline,
)

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def sd(tiny_sd_dir):
    cfg = GenerateConfig(model=str(tiny_sd_dir), steps=4, guidance_scale=3.0, size=16, batch_size=4, dtype="float32")
    return load_pipeline(cfg, CPU, torch.float32), cfg


def _embed(pipe, text):
    ids = pipe.tokenizer(
        [text], padding="max_length", max_length=pipe.tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    return pipe.text_encoder(ids)[0]  # (1, 77, D)


@torch.no_grad()
def test_pipeline_call_equals_hand_written_eq4_loop(sd):
    pipe, _ = sd
    gamma, steps = 2.0, 4
    pc, pn = "a bold handwritten digit seven", "thin, faint"
    got = pipe(
        prompt=pc,
        negative_prompt=pn,
        guidance_scale=1 + gamma,
        num_inference_steps=steps,
        height=16,
        width=16,
        generator=torch.Generator().manual_seed(0),
        output_type="latent",
    ).images
    e_c, e_n = _embed(pipe, pc), _embed(pipe, pn)
    sched = pipe.scheduler
    sched.set_timesteps(steps)
    x = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(0)) * sched.init_noise_sigma
    for t in sched.timesteps:
        xin = sched.scale_model_input(x, t)
        eps_c = pipe.unet(xin, t, encoder_hidden_states=e_c).sample
        eps_n = pipe.unet(xin, t, encoder_hidden_states=e_n).sample
        eps = (1 + gamma) * eps_c - gamma * eps_n  # Eq. (4)
        x = sched.step(eps, t, x).prev_sample
    torch.testing.assert_close(got, x, rtol=1e-5, atol=1e-5)


def test_negative_prompt_changes_the_image_and_guidance_one_is_refused(sd):
    pipe, cfg = sd
    a = generate_images(pipe, ["seven"], ["thin"], [11], cfg)
    b = generate_images(pipe, ["seven"], ["bold"], [11], cfg)
    c = generate_images(pipe, ["seven"], None, [11], cfg)
    assert not np.array_equal(a, b) and not np.array_equal(a, c)
    with pytest.raises(ValueError, match="negative prompt would be ignored"):
        generate_images(pipe, ["seven"], ["thin"], [11], GenerateConfig(**{**cfg.__dict__, "guidance_scale": 1.0}))


def test_same_seed_same_image_whatever_the_batch_size(sd):
    pipe, cfg = sd
    prompts, neg, seeds = ["one", "two", "three", "four", "five"], ["thin"] * 5, [5, 6, 7, 8, 9]
    one = generate_images(pipe, prompts, neg, seeds, GenerateConfig(**{**cfg.__dict__, "batch_size": 1}))
    many = generate_images(pipe, prompts, neg, seeds, GenerateConfig(**{**cfg.__dict__, "batch_size": 3}))
    assert one.shape == (5, 16, 16, 3) and one.dtype == np.uint8
    assert np.abs(one.astype(int) - many.astype(int)).max() <= 1  # batched CPU kernels may round differently
    alone = generate_images(pipe, ["three"], ["thin"], [7], cfg)
    assert np.abs(alone[0].astype(int) - one[2].astype(int)).max() <= 1
    assert not np.array_equal(one[0], generate_images(pipe, ["one"], ["thin"], [99], cfg)[0])


# ---------------------------------------------------------------- the paper's SDXL / CosXL path
def tiny_sdxl_pipeline():
    from diffusers import EDMEulerScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(16, 32),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=6 * 8 + 32,
        cross_attention_dim=64,
        norm_num_groups=8,
    ).eval()
    return StableDiffusionXLPipeline(
        vae=tiny_vae(),
        text_encoder=tiny_text_encoder(32),
        text_encoder_2=tiny_text_encoder(32, projection=True, seed=1),
        tokenizer=char_tokenizer(),
        tokenizer_2=char_tokenizer(),
        unet=unet,
        scheduler=EDMEulerScheduler(**COSXL_SCHEDULER),
    )


@pytest.fixture(scope="module")
def sdxl_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-sdxl")
    pipe = tiny_sdxl_pipeline()
    pipe.save_pretrained(root / "pipe", safe_serialization=True)
    pipe.vae.save_pretrained(root / "vae-fp16-fix", safe_serialization=True)
    return root


def test_sdxl_edm_euler_vprediction_path_runs_with_negative_prompt_and_vae_slot(sdxl_dirs):
    cfg = GenerateConfig(
        model=str(sdxl_dirs / "pipe"),
        vae=str(sdxl_dirs / "vae-fp16-fix"),
        scheduler="edm-euler-vpred",
        steps=3,
        guidance_scale=12.0,
        size=16,
        batch_size=2,
        dtype="float32",
    )
    pipe = load_pipeline(cfg, CPU, torch.float32)
    assert type(pipe).__name__ == "StableDiffusionXLPipeline"
    sc = pipe.scheduler.config
    assert type(pipe.scheduler).__name__ == "EDMEulerScheduler"
    assert (sc.prediction_type, sc.sigma_schedule, sc.sigma_min, sc.sigma_max, sc.sigma_data) == (
        "v_prediction",
        "exponential",
        0.002,
        120.0,
        1.0,
    )
    imgs = generate_images(pipe, ["a bird", "a car", "a cat"], ["sky, road"] * 3, [1, 2, 3], cfg)
    assert imgs.shape == (3, 16, 16, 3) and imgs.dtype == np.uint8
    again = generate_images(pipe, ["a car"], ["sky, road"], [2], cfg)
    assert np.abs(again[0].astype(int) - imgs[1].astype(int)).max() <= 1


def test_missing_model_and_bad_settings_fail_before_loading(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        load_pipeline(GenerateConfig(model=str(tmp_path / "nope")), CPU, torch.float32)
    with pytest.raises(FileNotFoundError, match="could not load it from local files"):
        load_pipeline(GenerateConfig(model="someone/not-in-the-cache"), CPU, torch.float32)
    with pytest.raises(ValueError, match="size=500"):
        GenerateConfig(size=500)
    with pytest.raises(ValueError, match="steps=0"):
        GenerateConfig(steps=0)


class RecordingPipe:
    """A stand-in diffusers pipeline that records each call and returns the images the test queued."""

    def __init__(self, images: list[torch.Tensor]):
        self.images, self.calls = list(images), []

    def __call__(self, **kw):
        self.calls.append({**kw, "seeds": [g.initial_seed() for g in kw["generator"]]})
        return SimpleNamespace(images=self.images.pop(0))


class RecordingFastPipe:
    """fastgen.FastGenerator's interface: call_pipeline(prompts, negatives, generators)."""

    def __init__(self, images: list[torch.Tensor]):
        self.images, self.calls = list(images), []

    def call_pipeline(self, prompts, negatives, generators):
        self.calls.append((list(prompts), list(negatives), [g.initial_seed() for g in generators]))
        return self.images.pop(0)


def test_draw_images_calls_the_pipeline_per_batch_with_eq4s_settings_and_one_generator_per_image():
    cfg = GenerateConfig(model="x", steps=7, guidance_scale=12.0, size=8, batch_size=2)
    batches = [torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(k)) for k in range(2)]
    batches.append(torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(2)))
    pipe = RecordingPipe(batches)
    images, invalid = draw_images(pipe, ["a", "b", "c", "d", "e"], ["n1", "n2", "n3", "n4", "n5"], [5, 6, 7, 8, 9], cfg)
    assert [c["prompt"] for c in pipe.calls] == [["a", "b"], ["c", "d"], ["e"]]
    assert [c["negative_prompt"] for c in pipe.calls] == [["n1", "n2"], ["n3", "n4"], ["n5"]]
    assert [c["seeds"] for c in pipe.calls] == [[5, 6], [7, 8], [9]]
    for c in pipe.calls:
        assert (c["num_inference_steps"], c["guidance_scale"], c["height"], c["width"]) == (7, 12.0, 8, 8)
        assert c["output_type"] == "pt" and all(g.device.type == "cpu" for g in c["generator"])
    want = (torch.cat(batches) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()  # (N, H, W, 3)
    assert images.dtype == np.uint8 and np.array_equal(images, want)
    assert invalid.dtype == bool and invalid.tolist() == [False] * 5


def test_no_negative_prompt_reaches_the_pipeline_as_none_and_guidance_one_is_refused_only_with_one():
    """'' for every image: negative_prompt=None (the pipeline's own unconditional embedding, Eq. 3); with a
    negative prompt, w <= 1 would switch Eq. (4) off and is refused before any call."""
    cfg = GenerateConfig(model="x", steps=1, guidance_scale=1.0, size=8, batch_size=4)
    pipe = RecordingPipe([torch.rand(2, 3, 8, 8)] * 3)
    draw_images(pipe, ["a", "b"], ["", ""], [1, 2], cfg)
    draw_images(pipe, ["a", "b"], None, [1, 2], cfg)
    assert [c["negative_prompt"] for c in pipe.calls] == [None, None]
    with pytest.raises(ValueError) as e:
        draw_images(pipe, ["a", "b"], ["", "thin"], [1, 2], cfg)
    assert str(e.value) == (
        "guidance_scale=1.0 <= 1 turns guidance off, so the negative prompt would be ignored "
        "(Eq. 4 needs w = 1 + gamma > 1; or pass --negative-prompt '')"
    )
    assert len(pipe.calls) == 2
    check_guidance("thin", GenerateConfig(guidance_scale=1.01))
    check_guidance("", GenerateConfig(guidance_scale=0.0))
    with pytest.raises(ValueError, match=r"^guidance_scale=0.5 <= 1 turns guidance off"):
        check_guidance("thin", GenerateConfig(guidance_scale=0.5))
    mixed = RecordingPipe([torch.rand(2, 3, 8, 8)])
    draw_images(mixed, ["a", "b"], ["", "thin"], [1, 2], GenerateConfig(model="x", size=8, guidance_scale=2.0))
    assert mixed.calls[0]["negative_prompt"] == ["", "thin"]


def test_nan_black_and_constant_images_are_flagged_and_written_as_clean_pixels():
    cfg = GenerateConfig(model="x", steps=1, size=8, batch_size=8)
    good = torch.rand(8, 8, generator=torch.Generator().manual_seed(0))
    nan_one = good.clone()
    nan_one[3, 4] = float("nan")
    faint, flat = torch.full((8, 8), 0.5), torch.full((8, 8), 0.5)
    faint[0, 0], flat[0, 0] = 0.5 + 2 / 255, 0.5 + 0.5 / 255  # two levels of 255 apart; half a level apart
    stack = [good, nan_one, torch.zeros(8, 8), torch.full((8, 8), 0.7), good * 2 - 0.5, faint, flat]
    x = torch.stack([s.expand(3, 8, 8) for s in stack])  # (7, 3, 8, 8)
    images, invalid = draw_images(RecordingPipe([x]), list("abcdefg"), None, list(range(7)), cfg)
    assert invalid.tolist() == [False, True, True, True, False, False, True]
    assert images[1, 3, 4].tolist() == [0, 0, 0]  # NaN written as 0
    assert images[4].min() == 0 and images[4].max() == 255  # values outside [0, 1] clipped
    assert np.array_equal(images[0, :, :, 0], (good * 255).round().to(torch.uint8).numpy())


def test_draw_images_with_the_fast_path_and_with_nothing_to_draw():
    cfg = GenerateConfig(model="x", size=8, batch_size=3)
    fast = RecordingFastPipe([torch.rand(3, 3, 8, 8), torch.rand(1, 3, 8, 8)])
    images, invalid = draw_images(fast, list("abcd"), None, [4, 3, 2, 1], cfg)
    assert fast.calls == [(["a", "b", "c"], [None, None, None], [4, 3, 2]), (["d"], [None], [1])]
    assert images.shape == (4, 8, 8, 3) and invalid.shape == (4,)
    fast = RecordingFastPipe([torch.rand(3, 3, 8, 8)])
    draw_images(fast, list("abc"), ["x", "y", "z"], [4, 3, 2], cfg)
    assert fast.calls == [(["a", "b", "c"], ["x", "y", "z"], [4, 3, 2])]
    images, invalid = draw_images(RecordingPipe([]), [], [], [], cfg)
    assert images.shape == (0, 8, 8, 3) and images.dtype == np.uint8 and invalid.shape == (0,) and invalid.dtype == bool
    with pytest.raises(ValueError, match=r"^2 prompts, 1 seeds and None negative prompts differ$"):
        draw_images(RecordingPipe([]), ["a", "b"], None, [1], cfg)
    with pytest.raises(ValueError, match=r"^2 prompts, 2 seeds and 1 negative prompts differ$"):
        draw_images(RecordingPipe([]), ["a", "b"], ["n"], [1, 2], cfg)
    assert np.array_equal(
        generate_images(RecordingPipe([torch.ones(1, 3, 8, 8)]), ["a"], None, [1], cfg), np.full((1, 8, 8, 3), 255)
    )
