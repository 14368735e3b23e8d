"""DiffuseMix's edited set: the InstructPix2Pix stand-in, seeds, manifest, retries, resume, CLI, and training on it."""

import numpy as np
import pytest
import strict
import torch
from PIL import Image

from diffcore.cli import main as cli
from diffcore.counterparts import kept_counterparts, read_manifest
from diffcore.data import digits
from diffcore.edit import STANDIN, EditConfig, edit_images, load_editor, make_edits, prompt_for, widen_conv_in
from diffcore.engine.runtime import derive_seed
from diffcore.profiles import PROFILES, TINY_T2I_DIR

FAST = EditConfig(**{**PROFILES["embedded"]["edit"], "steps": 2, "batch_size": 4})


@pytest.fixture(scope="module")
def standin():
    return load_editor(FAST, torch.device("cpu"), torch.float32)


def test_widened_unet_ignores_the_new_channels_like_instructpix2pix_at_init():
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(TINY_T2I_DIR / "unet", local_files_only=True).eval()
    old_w = unet.conv_in.weight.detach().clone()
    latent, cond = torch.randn(2, 4, 8, 8), torch.randn(2, 77, unet.config.cross_attention_dim)
    with torch.no_grad():
        before = unet(latent, 10, encoder_hidden_states=cond).sample
        widen_conv_in(unet)
        after = unet(torch.cat([latent, torch.randn(2, 4, 8, 8)], 1), 10, encoder_hidden_states=cond).sample
    assert unet.config.in_channels == 8 and torch.equal(unet.conv_in.weight[:, :4], old_w)
    assert (unet.conv_in.weight[:, 4:] == 0).all()
    torch.testing.assert_close(after, before)


def test_edits_are_seeded_recorded_and_resumable(standin, tmp_path):
    ds = digits("train").subset(range(5))
    info = make_edits(ds, standin, tmp_path, FAST, progress=False)
    rows = read_manifest(tmp_path / "manifest.csv")
    assert [r["source_id"] for r in rows] == ds.ids and info["summary"]["kept"] == 5
    for r, i in zip(rows, range(5)):
        assert int(r["seed"]) == derive_seed(FAST.run_seed, ds.ids[i], 0) and r["status"] == "kept"
        style = r["prompt"].split(", ", 1)[1]
        assert r["prompt"] == f"{ds.classes[ds.labels[i]]}, {style}" and style in FAST.prompts
        assert r["prompt"] == prompt_for(ds.ids[i], ds.classes[ds.labels[i]], FAST)
    found = kept_counterparts(tmp_path)
    assert set(found) == set(ds.ids)
    # any edit can be regenerated alone, at another batch size, from its recorded seed
    again, bad = edit_images(standin, [ds.load(3)], [rows[3]["prompt"]], [int(rows[3]["seed"])], FAST)
    with Image.open(found[ds.ids[3]]) as im:
        assert np.array_equal(np.asarray(im.convert("RGB")), again[0]) and not bad[0]
    make_edits(ds, standin, tmp_path, FAST, progress=False)  # resume: nothing left to do
    assert len(read_manifest(tmp_path / "manifest.csv")) == 5
    with pytest.raises(ValueError, match="other settings"):
        make_edits(ds, standin, tmp_path, EditConfig(**{**PROFILES["embedded"]["edit"], "steps": 3}), progress=False)


class BlankFirst:
    """A fake editor: blank images for the seeds in `blank`, noise otherwise (no diffusers needed)."""

    device = torch.device("cpu")

    def __init__(self, blank):
        self.blank = set(blank)

    def __call__(self, prompt, image, generator, **kw):
        out = [
            torch.zeros(3, 8, 8) if g.initial_seed() in self.blank else torch.rand(3, 8, 8, generator=g)
            for g in generator
        ]
        return type("Out", (), {"images": torch.stack(out)})()


def test_blank_edits_are_retried_with_the_next_seed_then_given_up(tmp_path):
    ds = digits("train").subset(range(3))
    cfg = EditConfig(model="fake", size=8, steps=1, batch_size=2, max_attempts=2)
    seed = lambda i, a: derive_seed(cfg.run_seed, ds.ids[i], a)  # noqa: E731
    make_edits(ds, BlankFirst({seed(0, 0), seed(2, 0), seed(2, 1)}), tmp_path, cfg, progress=False)
    rows = read_manifest(tmp_path / "manifest.csv")
    status = {(r["source_id"], int(r["attempt"])): r["status"] for r in rows}
    assert status == {
        (ds.ids[0], 0): "invalid",
        (ds.ids[1], 0): "kept",
        (ds.ids[2], 0): "invalid",
        (ds.ids[0], 1): "kept",
        (ds.ids[2], 1): "invalid-final",
    }
    assert set(kept_counterparts(tmp_path)) == {ds.ids[0], ds.ids[1]}
    assert all(r["file"] == "" for r in rows if r["status"] != "kept")


def test_command_line_then_train_diffusemix_on_the_edits(tmp_path):
    from diffcore.train import TrainConfig, train

    out = tmp_path / "edits"
    assert cli(["edit", "--out", str(out), "--fraction", "0.01", "--steps", "1", "--prompts", "sunset,mosaic"]) == 0
    found = kept_counterparts(out)
    rows = read_manifest(out / "manifest.csv")
    assert len(found) >= 8 and {r["model"] for r in rows} == {STANDIN}
    assert {r["prompt"].split(", ")[1] for r in rows} <= {"sunset", "mosaic"}
    assert "run.json" in strict.check_tree(out)  # strict JSON: no NaN or Infinity
    ds = digits("train")
    small = ds.subset([i for i, sid in enumerate(ds.ids) if sid in found] + list(range(8)))
    cfg = TrainConfig(
        method="diffusemix",
        method_args={"fractals": 2},
        model="digits-cnn",
        epochs=1,
        batch_size=8,
        image_size=32,
        augment="digits",
        device="cpu",
    )
    r = train(cfg, small, digits("test").subset(range(16)), generated=out, progress=False).result
    assert r["counts"]["pairs"] == len(found) and 0 <= r["metrics"]["top1"] <= 100
    assert cli(["edit", "--out", str(tmp_path / "x"), "--prompts", " , "]) == 2  # one-line refusal, no traceback
