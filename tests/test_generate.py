"""Generation: Eq. (4) equals the pipeline call, seeds are per image, the paper's SDXL/CosXL path runs."""

import numpy as np
import pytest
import torch
from conftest import char_tokenizer, tiny_text_encoder, tiny_vae

from diffcore.generate import COSXL_SCHEDULER, GenerateConfig, generate_images, load_pipeline

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


def test_single_file_model_is_loaded_with_local_config_and_authors_scheduler(sdxl_dirs, tmp_path, monkeypatch):
    from diffusers import StableDiffusionXLPipeline

    ckpt = tmp_path / "cosxl.safetensors"
    ckpt.write_bytes(b"stand-in: from_single_file is replaced below")
    calls = {}

    def fake_from_single_file(path, **kw):
        calls.update(kw, path=path)
        return tiny_sdxl_pipeline()

    monkeypatch.setattr(StableDiffusionXLPipeline, "from_single_file", staticmethod(fake_from_single_file))
    with pytest.raises(ValueError, match="pass config_dir="):
        load_pipeline(GenerateConfig(model=str(ckpt)), CPU, torch.float32)
    cfg = GenerateConfig(model=str(ckpt), config_dir=str(sdxl_dirs / "pipe"), size=16)
    pipe = load_pipeline(cfg, CPU, torch.float32)
    assert calls["path"] == str(ckpt) and calls["config"] == str(sdxl_dirs / "pipe")
    assert calls["local_files_only"] is True
    assert type(pipe.scheduler).__name__ == "EDMEulerScheduler"
    assert pipe.scheduler.config.prediction_type == "v_prediction"


def test_missing_model_and_bad_settings_fail_before_loading(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        load_pipeline(GenerateConfig(model=str(tmp_path / "nope")), CPU, torch.float32)
    with pytest.raises(FileNotFoundError, match="could not load it from local files"):
        load_pipeline(GenerateConfig(model="someone/not-in-the-cache"), CPU, torch.float32)
    with pytest.raises(ValueError, match="size=500"):
        GenerateConfig(size=500)
    with pytest.raises(ValueError, match="steps=0"):
        GenerateConfig(steps=0)
