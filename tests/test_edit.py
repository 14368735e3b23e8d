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
from diffcore.engine.genset import kept_by_source, source_of, variant_key
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


def test_every_image_is_edited_with_every_prompt_seeded_recorded_and_resumable(standin, tmp_path):
    ds = digits("train").subset(range(5))
    info = make_edits(ds, standin, tmp_path, FAST, progress=False)
    rows = read_manifest(tmp_path / "manifest.csv")
    n_p = len(FAST.prompts)
    keys = [variant_key(sid, k) for sid in ds.ids for k in range(n_p)]
    assert n_p == 2 and [r["source_id"] for r in rows] == keys and info["summary"]["kept"] == 5 * n_p
    for r, (i, k) in zip(rows, [(i, k) for i in range(5) for k in range(n_p)]):
        assert int(r["seed"]) == derive_seed(FAST.run_seed, variant_key(ds.ids[i], k), 0) and r["status"] == "kept"
        assert (
            r["prompt"]
            == f"{ds.classes[ds.labels[i]]}, {FAST.prompts[k]}"
            == prompt_for(k, ds.classes[ds.labels[i]], FAST)
        )
    found = kept_counterparts(tmp_path)
    assert set(found) == set(keys)
    by_source = kept_by_source(tmp_path)
    assert set(by_source) == set(ds.ids) and all(len(v) == n_p for v in by_source.values())
    assert by_source[ds.ids[3]] == [found[variant_key(ds.ids[3], k)] for k in range(n_p)]  # in prompt order
    # any edit can be regenerated alone, at another batch size, from its recorded seed (to one grey level: a CPU
    # matmul rounds differently at another batch size)
    row = rows[2 * 3 + 1]
    again, bad = edit_images(standin, [ds.load(3)], [row["prompt"]], [int(row["seed"])], FAST)
    with Image.open(found[variant_key(ds.ids[3], 1)]) as im:
        assert np.abs(np.asarray(im.convert("RGB")).astype(int) - again[0]).max() <= 1 and not bad[0]
    make_edits(ds, standin, tmp_path, FAST, progress=False)  # resume: nothing left to do
    assert len(read_manifest(tmp_path / "manifest.csv")) == 5 * n_p
    with pytest.raises(ValueError, match="other settings"):
        make_edits(ds, standin, tmp_path, EditConfig(**{**PROFILES["embedded"]["edit"], "steps": 3}), progress=False)


def test_a_killed_edit_run_resumes_to_the_same_set(standin, tmp_path):
    """Killed after its first batch (a manifest with whole batches, a torn last line): the resumed run's set and
    manifest equal an uninterrupted run's, byte for byte."""
    ds = digits("train").subset(range(5))
    make_edits(ds, standin, tmp_path / "whole", FAST, progress=False)
    whole = (tmp_path / "whole" / "manifest.csv").read_bytes()
    cut = tmp_path / "cut"
    make_edits(ds, standin, cut, FAST, progress=False)
    lines = whole.split(b"\r\n")
    (cut / "manifest.csv").write_bytes(b"\r\n".join(lines[: 1 + FAST.batch_size]) + b"\r\n" + lines[6][:9])
    (cut / "run.json").unlink()  # as if the run never finished
    make_edits(ds, standin, cut, FAST, progress=False)
    assert (cut / "manifest.csv").read_bytes() == whole
    for key, path in kept_counterparts(tmp_path / "whole").items():
        assert (cut / path.relative_to(tmp_path / "whole")).read_bytes() == path.read_bytes(), key


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
    cfg = EditConfig(model="fake", prompts=("snowy",), size=8, steps=1, batch_size=2, max_attempts=2)
    seed = lambda i, a: derive_seed(cfg.run_seed, variant_key(ds.ids[i], 0), a)  # noqa: E731
    make_edits(ds, BlankFirst({seed(0, 0), seed(2, 0), seed(2, 1)}), tmp_path, cfg, progress=False)
    rows = read_manifest(tmp_path / "manifest.csv")
    status = {(source_of(r["source_id"]), int(r["attempt"])): r["status"] for r in rows}
    assert status == {
        (ds.ids[0], 0): "invalid",
        (ds.ids[1], 0): "kept",
        (ds.ids[2], 0): "invalid",
        (ds.ids[0], 1): "kept",
        (ds.ids[2], 1): "invalid-final",
    }
    assert set(kept_by_source(tmp_path)) == {ds.ids[0], ds.ids[1]}
    assert all(r["file"] == "" for r in rows if r["status"] != "kept")


def test_command_line_then_train_diffusemix_on_the_edits(tmp_path):
    from diffcore.train import TrainConfig, train

    out = tmp_path / "edits"
    assert cli(["edit", "--out", str(out), "--fraction", "0.01", "--steps", "1", "--prompts", "sunset,mosaic"]) == 0
    found = kept_by_source(out)
    rows = read_manifest(out / "manifest.csv")
    assert len(found) >= 8 and {r["model"] for r in rows} == {STANDIN}
    assert {r["prompt"].split(", ")[1] for r in rows} == {"sunset", "mosaic"}
    assert all(len(v) == 2 for v in found.values())  # every image with both prompts
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
    assert r["counts"]["pairs"] == 2 * len(found) and 0 <= r["metrics"]["top1"] <= 100  # an image per edit
    assert cli(["edit", "--out", str(tmp_path / "x"), "--prompts", " , "]) == 2  # one-line refusal, no traceback
