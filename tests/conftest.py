"""Tiny, seeded, random-weight components built inside the test session (no files from the network).

They have the real architectures (UNet2DConditionModel with cross-attention, AutoencoderKL, CLIPTextModel,
open_clip CLIP) at toy widths, so the real loading and generation code paths run in seconds on a CPU.
"""

from __future__ import annotations

import json
import os
import string

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a test must never reach for the network
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Batched CPU kernels round differently with another thread count, and with more than one thread also when the
# other images of a batch change; torchrun workers default to one thread. Byte-identity tests (resume, 1 vs N
# processes) compare like with like only at a fixed count, so the suite and the processes it starts use one thread.
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)

# Under mutmut (`make mutants`, which runs each mutant's tests with -x) the files whose tests take milliseconds run
# before those that load models or train: a mutant that a fast test kills then costs a second, not twenty.
MUTANT_TEST_ORDER = [
    "test_genset.py",
    "test_departures.py",
    "test_mix.py",
    "test_filter.py",
    "test_plan.py",
    "test_reliability.py",
    "test_generate.py",
    "test_train.py",
    "test_counterparts.py",
    "test_checkpoint.py",
    "test_prompts_cli.py",
]


def pytest_collection_modifyitems(config, items):
    if os.environ.get("MUTANT_UNDER_TEST"):  # set by mutmut in the processes that test a mutant
        rank = {name: k for k, name in enumerate(MUTANT_TEST_ORDER)}
        items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file's order is kept


def char_tokenizer():
    """A CLIP BPE tokenizer over single characters: distinct prompts give distinct tokens, no vocab files."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in string.ascii_lowercase + string.digits + ",.-'":
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def tiny_text_encoder(hidden=32, projection=False, seed=0):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    cfg = CLIPTextConfig(
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        hidden_size=hidden,
        intermediate_size=37,
        layer_norm_eps=1e-5,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=100,
        projection_dim=hidden,
        hidden_act="gelu",
    )
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(cfg).eval()


def tiny_vae(seed=0):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        block_out_channels=[8, 16],
        in_channels=3,
        out_channels=3,
        norm_num_groups=8,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        latent_channels=4,
        sample_size=16,
    ).eval()


def tiny_sd_components(seed=0):
    from diffusers import DDIMScheduler, UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(16, 32),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=8,
        attention_head_dim=4,
    ).eval()
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return dict(
        unet=unet,
        vae=tiny_vae(seed),
        text_encoder=tiny_text_encoder(seed=seed),
        tokenizer=char_tokenizer(),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory):
    """A saved diffusers StableDiffusionPipeline folder with random toy weights (16x16 images)."""
    from diffusers import StableDiffusionPipeline

    path = tmp_path_factory.mktemp("tiny-sd")
    StableDiffusionPipeline(**tiny_sd_components()).save_pretrained(path, safe_serialization=True)
    return path


TINY_CLIP_CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 16, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="session")
def tiny_clip_files(tmp_path_factory):
    """(config json, weights.safetensors) of a random open_clip model registered as 'test-tiny-clip'."""
    import open_clip
    from safetensors.torch import save_file

    d = tmp_path_factory.mktemp("tiny-clip")
    cfg = d / "test-tiny-clip.json"
    cfg.write_text(json.dumps(TINY_CLIP_CONFIG))
    open_clip.add_model_config(cfg)
    torch.manual_seed(0)
    model = open_clip.create_model("test-tiny-clip", pretrained=None)
    weights = d / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, weights)
    return cfg, weights
