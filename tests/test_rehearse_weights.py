"""The rehearsal's stand-in weights: every file is read by the kit's real loaders (diffusers' own, unpatched
from_single_file for the CosXL file) and holds exactly the seeded weights it was written from."""

import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from diffcore.generate import COSXL_SCHEDULER, GenerateConfig, generate_images, load_pipeline
from diffcore.rehearse import weights as W

CPU = torch.device("cpu")
SIZE = 32  # px: SDXL latents 4x4, through its 3 UNet levels


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """The tiny stand-ins, written once for the module: (paths, progress lines)."""
    lines = []
    paths = W.write_weights(tmp_path_factory.mktemp("weights"), "tiny", seed=0, progress=lines.append)
    return paths, lines


def cosxl_config(paths) -> GenerateConfig:
    """The paper's generation settings on the tiny CosXL file (2 steps, 32 px)."""
    files = dict(model=str(paths["cosxl"]), config_dir=str(paths["sdxl_config"]), vae=None)
    return GenerateConfig(
        **files, scheduler="edm-euler-vpred", steps=2, guidance_scale=12.0, size=SIZE, batch_size=2, dtype="float32"
    )


@pytest.fixture(scope="module")
def two_pipelines(written, tmp_path_factory):
    """The same weights loaded twice through load_pipeline: from cosxl.safetensors (diffusers' from_single_file, the
    paper path) and from a diffusers folder saved from build_sdxl_components."""
    from diffusers import StableDiffusionXLPipeline

    paths, _ = written
    folder = tmp_path_factory.mktemp("sdxl-folder")
    StableDiffusionXLPipeline(**W.build_sdxl_components("tiny", seed=0)).save_pretrained(
        folder, safe_serialization=True
    )
    cfg = cosxl_config(paths)
    single = load_pipeline(cfg, CPU, torch.float32)
    return single, load_pipeline(GenerateConfig(**{**cfg.__dict__, "model": str(folder)}), CPU, torch.float32), cfg


def test_every_file_is_written_once_in_place_and_a_folder_of_another_size_is_refused(written):
    paths, lines = written
    assert set(paths) == set(W.FILES) and all(p.exists() for p in paths.values())
    assert [line.split()[2] for line in lines] == list(W.FILES.values()) and all("wrote" in x for x in lines)
    root = paths["cosxl"].parent
    assert not list(root.glob(".*partial"))  # each file was renamed into place
    assert json.loads((root / W.MANIFEST).read_text())["size"] == "tiny"
    before = {n: p.stat().st_mtime_ns for n, p in paths.items()}
    again = []
    assert W.write_weights(root, "tiny", seed=0, progress=again.append) == paths
    assert all("kept" in x for x in again) and before == {n: p.stat().st_mtime_ns for n, p in paths.items()}
    with pytest.raises(ValueError, match="size='tiny' seed=0, not size='full' seed=0"):
        W.write_weights(root, "full")
    with pytest.raises(ValueError, match="seed=0, not size='tiny' seed=1"):
        W.write_weights(root, "tiny", seed=1)
    with pytest.raises(ValueError, match="size='huge'"):
        W.write_weights(root, "huge")


def test_cosxl_file_has_the_original_sgm_layout_of_the_modules_it_came_from(written):
    from safetensors.torch import load_file

    sd = load_file(str(written[0]["cosxl"]))
    m = W.build_sdxl_components("tiny", seed=0)
    prefixes = {"model.diffusion_model.", "first_stage_model.", "conditioner.embedders.0.transformer.text_model."}
    prefixes |= {"conditioner.embedders.1.model.", "edm_vpred."}
    assert all(any(k.startswith(p) for p in prefixes) for k in sd)
    assert {v.dtype for k, v in sd.items() if not k.startswith("edm_") and "position_ids" not in k} == {torch.float16}
    assert {k: v.item() for k, v in sd.items() if k.startswith("edm_")} == pytest.approx(W.COSXL_EDM_VPRED)
    unet, g = "model.diffusion_model.", "conditioner.embedders.1.model."
    # input_blocks: conv_in, then 2 resnets (+transformer) and a downsampler per level; the up-sampler of a level
    # with attention sits in slot 2 of its last output block
    assert torch.equal(sd[unet + "input_blocks.3.0.op.weight"], m["unet"].down_blocks[0].downsamplers[0].conv.weight)
    attention = m["unet"].down_blocks[2].attentions[0]  # level 2, layer 0: input block 1 + 2 * 3 + 0
    assert torch.equal(sd[unet + "input_blocks.7.1.proj_in.weight"], attention.proj_in.weight)
    k = attention.transformer_blocks[2].attn2.to_k.weight  # the third of level 2's three transformer layers
    assert torch.equal(sd[unet + "input_blocks.7.1.transformer_blocks.2.attn2.to_k.weight"], k)
    assert torch.equal(sd[unet + "output_blocks.2.2.conv.weight"], m["unet"].up_blocks[0].upsamplers[0].conv.weight)
    assert torch.equal(sd[unet + "label_emb.0.2.weight"], m["unet"].add_embedding.linear_2.weight)
    assert unet + "output_blocks.8.2.conv.weight" not in sd  # the last level has no upsampler
    # the VAE decoder's levels in the original, reversed order; attention projections as 1x1 convolutions
    vae = m["vae"]
    assert torch.equal(
        sd["first_stage_model.decoder.up.3.block.2.conv2.weight"], vae.decoder.up_blocks[0].resnets[2].conv2.weight
    )
    assert sd["first_stage_model.decoder.up.3.upsample.conv.weight"].shape == (64, 64, 3, 3)
    assert "first_stage_model.decoder.up.0.upsample.conv.weight" not in sd
    q = sd["first_stage_model.encoder.mid.attn_1.q.weight"]
    assert q.shape == (64, 64, 1, 1) and torch.equal(q[:, :, 0, 0], vae.encoder.mid_block.attentions[0].to_q.weight)
    # OpenCLIP: q, k, v stacked into in_proj; text_projection is x @ P, the transposed Linear weight
    te2 = m["text_encoder_2"]
    attn = te2.text_model.encoder.layers[1].self_attn
    qkv = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight])
    assert torch.equal(sd[g + "transformer.resblocks.1.attn.in_proj_weight"], qkv)
    assert torch.equal(sd[g + "text_projection"], te2.text_projection.weight.T)
    assert torch.equal(sd[g + "transformer.resblocks.0.mlp.c_fc.bias"], te2.text_model.encoder.layers[0].mlp.fc1.bias)


def test_the_paper_single_file_path_loads_the_same_tensors_and_images_as_a_diffusers_folder(two_pipelines):
    single, folder, cfg = two_pipelines
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        a, b = getattr(single, name).state_dict(), getattr(folder, name).state_dict()
        assert a.keys() == b.keys(), name
        assert all(a[k].device.type == "cpu" and a[k].dtype == torch.float32 for k in a), name  # none left on meta
        assert [k for k in a if not torch.equal(a[k], b[k])] == [], name
    assert type(single.scheduler).__name__ == "EDMEulerScheduler"
    assert {k: single.scheduler.config[k] for k in COSXL_SCHEDULER} == COSXL_SCHEDULER
    prompts, negatives = ["a photo of a bird, snowy", "a car!"], ["sky, road"] * 2
    images = generate_images(single, prompts, negatives, [1, 2], cfg)
    assert images.shape == (2, SIZE, SIZE, 3) and images.std() > 1  # not blank
    assert np.array_equal(images, generate_images(folder, prompts, negatives, [1, 2], cfg))


def test_single_file_needs_a_local_config_folder_and_is_read_offline_with_the_authors_scheduler(written):
    paths, _ = written
    with pytest.raises(ValueError, match="pass config_dir="):
        load_pipeline(GenerateConfig(model=str(paths["cosxl"])), CPU, torch.float32)
    assert os.environ["HF_HUB_OFFLINE"] == "1"  # conftest: the load below cannot have reached for the network
    cfg = GenerateConfig(model=str(paths["cosxl"]), config_dir=str(paths["sdxl_config"]), size=SIZE, dtype="float32")
    pipe = load_pipeline(cfg, CPU, torch.float32)  # scheduler="auto": a single file gets the authors' scheduler
    sc = pipe.scheduler.config
    assert type(pipe.scheduler).__name__ == "EDMEulerScheduler" and sc.prediction_type == "v_prediction"
    assert (sc.sigma_min, sc.sigma_max, sc.sigma_data, sc.sigma_schedule) == (0.002, 120.0, 1.0, "exponential")
    assert type(pipe.text_encoder_2).__name__ == "CLIPTextModelWithProjection" and pipe.tokenizer_2.pad_token == "!"


def test_the_paper_profiles_weights_folder_loads_with_the_fp16_fix_vae(written):
    from safetensors.torch import load_file

    from diffcore.plan.jobs import paper_paths

    paths, _ = written
    over = paper_paths(str(paths["cosxl"].parent), None)
    assert over["pretrained"] == str(paths["wide_resnet101_2"])
    assert over["overrides"]["clip_pretrained"] == str(paths["clip"])
    gen = {k: v for k, v in over["overrides"].items() if k in ("model", "config_dir", "vae")}
    assert gen == dict(model=str(paths["cosxl"]), config_dir=str(paths["sdxl_config"]), vae=str(paths["vae_fp16_fix"]))
    cfg = GenerateConfig(**gen, steps=2, size=SIZE, batch_size=2, dtype="float32")
    pipe = load_pipeline(cfg, CPU, torch.float32)
    assert pipe.vae.config.force_upcast is False
    fix = load_file(str(paths["vae_fp16_fix"] / "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(v, fix[k]) for k, v in pipe.vae.state_dict().items())
    assert not torch.equal(pipe.vae.decoder.conv_out.weight, W.build_sdxl_components()["vae"].decoder.conv_out.weight)
    assert generate_images(pipe, ["a bird"], ["sky"], [3], cfg).std() > 1


PROMPTS = [
    "a photo of a Black-footed Albatross, a bird",
    "it's 2 o'clock: don't (really) panic... 3.5 km/h, 100% sure; A-B_C",
    " ".join(f"word{k}" for k in range(120)),  # > 77 tokens: truncated, the last one <|endoftext|>
]


def test_the_tokenizers_give_open_clips_ids(written, tmp_path):
    import open_clip
    from transformers import CLIPTokenizer

    folder = written[0]["sdxl_config"]
    ref = open_clip.get_tokenizer("ViT-B-32")(PROMPTS)  # (3, 77), padded with 0 after <|endoftext|> (49407)
    kw = dict(padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    t1 = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    t2 = CLIPTokenizer.from_pretrained(folder / "tokenizer_2")
    assert len(t1) == len(t2) == 49408 and t1.model_max_length == t2.model_max_length == 77
    padded = ref.clone()
    padded[(ref == 0) & (torch.arange(77) > ref.argmax(1, keepdim=True))] = 49407  # tokenizer pads with <|endoftext|>
    assert torch.equal(t1(PROMPTS, **kw).input_ids, padded)
    assert torch.equal(t2(PROMPTS, **kw).input_ids, ref)  # tokenizer_2 pads with "!" (id 0), as open_clip
    assert ref[2, -1] == 49407 and (ref[2] != 0).all()
    # SDXL's tokenizer_2 also reads a "!" in a prompt as its pad token (diffusers#4153); open_clip does not
    assert t2("a car!").input_ids == [49406, 320, 1615, 0, 49407] != t1("a car!").input_ids
    # the hub folders' files alone (vocab.json, merges.txt, tokenizer_config.json) give the same tokenizer
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        shutil.copy(folder / "tokenizer_2" / name, tmp_path / name)
    assert torch.equal(CLIPTokenizer.from_pretrained(tmp_path)(PROMPTS, **kw).input_ids, ref)


def test_the_clip_file_loads_as_openais_vit_b_32_with_quickgelu_and_the_written_weights(written):
    from safetensors.torch import load_file

    from diffcore.filter import FilterConfig, load_clip

    path = written[0]["clip"]
    enc = load_clip(FilterConfig(clip_model="ViT-B-32-quickgelu", clip_pretrained=str(path)), CPU)  # require_pretrained
    state, model = load_file(str(path)), enc.model.state_dict()
    assert state.keys() == model.keys() and {v.dtype for v in state.values()} == {torch.float16}
    assert all(torch.equal(model[k], v.float()) for k, v in state.items())
    assert sum(v.numel() for v in state.values()) == 151_277_313  # open_clip's ViT-B-32
    assert type(enc.model.visual.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"
    images = [Image.new("RGB", (40, 30), (200, 30, 30)), Image.new("RGB", (30, 40), (30, 30, 200))]
    e = enc.embed(images)
    assert e.shape == (2, 512) and torch.allclose(e.norm(dim=1), torch.ones(2))


def test_the_wide_resnet_file_loads_into_build_model_with_its_classifier_skipped(written):
    from diffcore.models import build_model, load_weights

    path = written[0]["wide_resnet101_2"]
    state = load_weights(path)
    assert state["fc.weight"].shape == (1000, 2048) and state["conv1.weight"].dtype == torch.float16
    model = build_model("wide_resnet101_2", 5, pretrained=path)
    assert model.fc.out_features == 5
    own = model.state_dict()
    assert all(torch.equal(own[k], v.to(own[k].dtype)) for k, v in state.items() if not k.startswith("fc."))


def test_the_instruct_pix2pix_folder_loads_in_load_editor_and_edits(written):
    from diffcore.edit import EditConfig, edit_images, load_editor

    cfg = EditConfig(model=str(written[0]["instruct_pix2pix"]), steps=2, size=64, batch_size=2, dtype="float32")
    pipe = load_editor(cfg, CPU, torch.float32)
    assert pipe.unet.config.in_channels == 8 and pipe.safety_checker is None
    assert type(pipe.scheduler).__name__ == "EulerAncestralDiscreteScheduler"
    want = W.build_edit_components("tiny", seed=0)["unet"].state_dict()
    assert all(torch.equal(v, want[k]) for k, v in pipe.unet.state_dict().items())
    rng = np.random.default_rng(0)
    sources = [Image.fromarray(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)) for _ in range(2)]
    edits, invalid = edit_images(pipe, sources, ["snowy", "Autumn"], [5, 6], cfg)
    assert edits.shape == (2, 64, 64, 3) and edits.dtype == np.uint8 and not invalid.any()


def test_seeded_weights_repeat_differ_by_seed_and_leave_the_callers_rng_alone():
    with torch.random.fork_rng(devices=[]):  # this test's own seeding stays here too
        torch.manual_seed(123)
        expected = torch.rand(3)
        torch.manual_seed(123)
        a = W.build_edit_components("tiny", seed=0)["unet"].conv_in.weight
        assert torch.equal(torch.rand(3), expected) and torch.get_default_dtype() == torch.float32
    assert torch.equal(a, W.build_edit_components("tiny", seed=0)["unet"].conv_in.weight)
    assert not torch.equal(a, W.build_edit_components("tiny", seed=1)["unet"].conv_in.weight)


def test_full_size_configs_have_the_real_parameter_counts_and_diffusers_reads_their_layout_back():
    """On the meta device (no memory): SDXL base's published counts, and diffusers' own converters map the full
    CosXL layout back onto every parameter; diffusers also recognises the file as SDXL base."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders import single_file_utils as S

    full = W.SIZES["full"]
    with torch.device("meta"):
        m = dict(
            unet=UNet2DConditionModel(**full["unet"]),
            vae=AutoencoderKL(**full["vae"]),
            text_encoder=W.text_encoder(full["text_encoder"]),
            text_encoder_2=W.text_encoder(full["text_encoder_2"], projection=True),
            edit_unet=UNet2DConditionModel(**full["edit_unet"]),
        )
    counts = {k: sum(p.numel() for p in v.parameters()) for k, v in m.items()}
    assert counts == dict(
        unet=2_567_463_684, vae=83_653_863, text_encoder=123_060_480, text_encoder_2=694_659_840, edit_unet=859_532_484
    )
    sd = W.cosxl_state_dict(m)
    assert S.infer_diffusers_model_type(sd) == "xl_base"  # diffusers' own detection (resblocks.9 of text encoder 2)
    assert sd["model.diffusion_model.input_blocks.8.1.transformer_blocks.9.attn2.to_k.weight"].shape == (1280, 2048)
    assert sd["model.diffusion_model.label_emb.0.0.weight"].shape == (1280, 2816)
    assert sd["conditioner.embedders.1.model.transformer.resblocks.31.attn.in_proj_weight"].shape == (3840, 1280)
    shapes = lambda d: {k: tuple(v.shape) for k, v in d.items()}
    unet, vae = m["unet"], m["vae"]
    assert shapes(S.convert_ldm_unet_checkpoint(sd, dict(unet.config))) == shapes(unet.state_dict())
    assert shapes(S.convert_ldm_vae_checkpoint(sd, dict(vae.config))) == shapes(vae.state_dict())
    te2 = S.convert_open_clip_checkpoint(m["text_encoder_2"], sd, prefix="conditioner.embedders.1.model.")
    assert shapes(te2) == shapes(m["text_encoder_2"].state_dict())
    te1 = {k.removeprefix("text_model."): v for k, v in S.convert_ldm_clip_checkpoint(sd).items()}
    assert shapes(te1) == {**shapes(m["text_encoder"].state_dict()), "embeddings.position_ids": (1, 77)}
