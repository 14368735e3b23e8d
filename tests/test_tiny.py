"""The shipped tiny models (diffcore/assets): they load offline through the libraries' own entry points,
tokenize any English prompt, fit the size budget, and their recorded quality meets the targets."""

import json

import numpy as np
import pytest
import torch

from diffcore import tiny
from diffcore.prompts import AUTHORS_NEGATIVE_PROMPT, PAPER_TEMPLATE

PAPER_PROMPT = PAPER_TEMPLATE.format(label="seven", dataset_type=tiny.DIGITS_DATASET_TYPE)


@pytest.fixture(scope="module")
def pipe():
    from diffusers import StableDiffusionPipeline

    p = StableDiffusionPipeline.from_pretrained(tiny.TINY_T2I_DIR, local_files_only=True)
    p.set_progress_bar_config(disable=True)
    return p


def _draw(pipe, negative, seed=0):
    return pipe(
        PAPER_PROMPT,
        negative_prompt=negative,
        num_inference_steps=2,
        guidance_scale=4.0,
        generator=torch.Generator().manual_seed(seed),
        output_type="np",
    ).images  # (1, H, W, 3)


def test_pipeline_loads_offline_and_draws_32px_with_a_negative_prompt(pipe):
    from diffusers import DiffusionPipeline

    assert type(DiffusionPipeline.from_pretrained(tiny.TINY_T2I_DIR, local_files_only=True)) is type(pipe)
    image = pipe(
        PAPER_PROMPT,
        negative_prompt=tiny.DIGITS_NEGATIVE_PROMPT,
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(0),
    ).images[0]  # default size, PIL
    assert image.size == (32, 32)
    assert pipe.safety_checker is None and pipe.feature_extractor is None
    assert pipe.vae.config.scaling_factor != 0.18215  # measured on the digits latents, not SD's constant


def test_negative_prompt_acts_and_seed_repeats(pipe):
    a, b = _draw(pipe, tiny.DIGITS_NEGATIVE_PROMPT), _draw(pipe, tiny.DIGITS_NEGATIVE_PROMPT)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - _draw(pipe, "bold, bright")).max() > 1e-3
    assert np.abs(a - _draw(pipe, tiny.DIGITS_NEGATIVE_PROMPT, seed=1)).max() > 1e-3


def test_tokenizer_is_clip_bpe_and_knows_every_word_of_the_authors_negative_prompt(pipe):
    from open_clip.tokenizer import SimpleTokenizer

    tok = pipe.tokenizer
    assert len(tok) == 49408 and tok.model_max_length == 77
    for text in (AUTHORS_NEGATIVE_PROMPT, PAPER_PROMPT, tiny.DIGITS_NEGATIVE_PROMPT):
        ids = tok(text).input_ids
        assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
        assert tok.unk_token_id not in ids[1:-1]  # unk is <|endoftext|> in CLIP: none inside the text
        assert ids[1:-1] == SimpleTokenizer().encode(text)  # the very ids open_clip / OpenAI CLIP give
        decoded = tok.decode(ids, skip_special_tokens=True)  # CLIP decodes "car," as "car ,"
        assert decoded.replace(" ", "") == text.lower().replace(" ", "")
    padded = tok(AUTHORS_NEGATIVE_PROMPT, padding="max_length", max_length=77, truncation=True).input_ids
    assert len(padded) == 77 and padded.count(tok.eos_token_id) > 1  # fits; the rest is <|endoftext|> padding


def test_tiny_clip_loads_through_open_clip_and_embeds():
    import open_clip

    from diffcore.data import digits

    open_clip.add_model_config(tiny.TINY_CLIP_CONFIG)
    model, _, preprocess = open_clip.create_model_and_transforms(
        tiny.TINY_CLIP_NAME, pretrained=str(tiny.TINY_CLIP_WEIGHTS)
    )
    tokenizer = open_clip.get_tokenizer(tiny.TINY_CLIP_NAME)
    dim = json.loads(tiny.TINY_CLIP_CONFIG.read_text())["embed_dim"]
    ds = digits("test")
    with torch.no_grad():
        img = model.eval().encode_image(torch.stack([preprocess(ds.load(i)) for i in range(2)]))  # (2, D)
        txt = model.encode_text(tokenizer([AUTHORS_NEGATIVE_PROMPT, "a handwritten digit seven"]))  # (2, D)
    for e in (img, txt):
        assert e.shape == (2, dim) and torch.isfinite(e).all() and (e.norm(dim=-1) > 1e-3).all()
        torch.testing.assert_close(torch.nn.functional.normalize(e, dim=-1).norm(dim=-1), torch.ones(2))
    m2, _, t2 = tiny.load_tiny_clip()
    with torch.no_grad():
        torch.testing.assert_close(m2.encode_text(t2(["a handwritten digit seven"])), txt[1:])


def test_assets_fit_the_budget_and_weights_are_safetensors_only():
    files = [p for p in tiny.ASSETS.rglob("*") if p.is_file()]
    total_mb = sum(p.stat().st_size for p in files) / 1e6
    assert total_mb <= tiny.MAX_ASSET_MB, f"diffcore/assets holds {total_mb:.1f} MB"
    assert not [p for p in files if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl")]
    assert len([p for p in files if p.suffix == ".safetensors"]) == 4  # unet, vae, text encoder, CLIP


def test_recorded_quality_meets_the_targets():
    q = json.loads(tiny.QUALITY_JSON.read_text())
    assert q["generated"]["contextual"]["accuracy"] >= 0.8
    assert q["generated"]["contextual"]["negative_prompt"] == tiny.DIGITS_NEGATIVE_PROMPT
    assert q["generated"]["contextual"]["prompt"] == PAPER_TEMPLATE
    assert q["clip_zero_shot"]["accuracy"] >= 0.8
    with_neg, without = q["generated"]["contextual"]["style"], q["generated"]["contextual_without_negative"]["style"]
    assert with_neg["ink_area"] > without["ink_area"] and with_neg["ink_brightness"] > without["ink_brightness"]
    assert q["checker"]["real_test_accuracy"] >= 0.9  # a checker that cannot read real digits would prove nothing
    assert q["torch"] and q["date_utc"] and q["command"].startswith("python -m diffcore.tiny check")


def test_captions_use_the_templates_and_only_measured_style_words():
    assert tiny.DIGITS_TEMPLATES[0] == PAPER_TEMPLATE == "Generate heavy snow to the {label}, a {dataset_type} object"
    rng = np.random.default_rng(0)
    caps = [tiny.caption("seven", ["thin", "faint"], rng) for _ in range(2000)]
    assert PAPER_PROMPT in caps and "" in caps and "thin, faint" in caps
    assert 0.05 < caps.count("") / len(caps) < 0.15  # caption dropout for classifier-free guidance
    words = {w for c in caps for w in c.replace(",", " ").split()}
    assert not words & {"bold", "bright", "blurry", "broken", "small", "large"}
    plain = [tiny.caption("seven", [], rng, dropout=0.0) for _ in range(300)]
    assert all("seven" in c for c in plain)  # no style words: never a style-only caption


def test_style_words_are_relative_to_the_class():
    gray = np.zeros((9, 32, 32), np.float32)
    for i in range(9):
        gray[i, 8:24, 14 - i // 3 : 18 + i // 3] = 1.0  # one bar, three widths
    words = tiny.style_words(gray, np.zeros(9, np.int64))
    assert all("thin" in w for w in words[:3]) and all("bold" in w for w in words[6:])
    assert not any("thin" in w or "bold" in w for w in words[3:6])


def test_recipe_trains_saves_and_reloads_through_the_libraries_in_a_few_steps(tmp_path):
    """The whole recipe (VAE -> UNet + text encoder -> CLIP) at 2 steps each, into a scratch folder: the folders it
    writes load with from_pretrained / open_clip and draw through diffcore.generate; same seed, same weights."""
    from safetensors.torch import load_file

    from diffcore.generate import GenerateConfig, generate_images, load_pipeline

    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        tiny.train_vae(tiny.VaeTrainConfig(steps=2, batch_size=8), out, device="cpu")
    vae_file = "tiny-t2i/vae/diffusion_pytorch_model.safetensors"
    wa, wb = load_file(str(a / vae_file)), load_file(str(b / vae_file))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    tiny.train_t2i(tiny.T2ITrainConfig(steps=2, batch_size=4, warmup=1), a, device="cpu")
    tiny.train_clip(tiny.ClipTrainConfig(steps=2, batch_size=8), a, device="cpu")
    log = json.loads((a / "tiny-training.json").read_text())
    assert sorted(log) == ["clip", "t2i", "vae"] and all(log[k]["device"] == "cpu" for k in log)

    gen = GenerateConfig(model=str(a / "tiny-t2i"), steps=2, guidance_scale=4.0, size=32, batch_size=2, dtype="float32")
    pipe = load_pipeline(gen, torch.device("cpu"), torch.float32)
    images = generate_images(pipe, [PAPER_PROMPT] * 2, ["blurry"] * 2, [1, 2], gen)
    assert images.shape == (2, 32, 32, 3) and images.dtype == np.uint8
    model, preprocess, tokenizer = tiny.load_tiny_clip(
        "cpu", a / "tiny-clip" / tiny.TINY_CLIP_CONFIG.name, a / "tiny-clip" / tiny.TINY_CLIP_WEIGHTS.name
    )
    with torch.no_grad():
        emb = model.encode_text(tokenizer(["a handwritten digit seven"]))
    assert emb.shape == (1, 64) and torch.isfinite(emb).all()
