"""Prompts (P_c, P_n) and the command line's refusal of bad input before any heavy work."""

import pytest
import strict

from diffcore.cli import main
from diffcore.prompts import (
    AUTHORS_NEGATIVE_PROMPT,
    PAPER_TEMPLATE,
    PromptConfig,
    contextual_prompt,
    label_words,
    negative_prompt,
)


def test_default_prompt_is_the_papers_template_and_the_aircraft_negative_is_the_authors():
    cfg = PromptConfig(dataset_type="bird", negative_key="aircraft")
    assert cfg.template == "Generate heavy snow to the {label}, a {dataset_type} object"
    assert (
        contextual_prompt("001.Black_footed_Albatross", cfg)
        == "Generate heavy snow to the Black footed Albatross, a bird object"
    )
    assert negative_prompt(cfg) == AUTHORS_NEGATIVE_PROMPT
    assert AUTHORS_NEGATIVE_PROMPT.startswith("train, car, newspaper") and AUTHORS_NEGATIVE_PROMPT.endswith(
        "road lines, traffic lights"
    )
    assert negative_prompt(PromptConfig(negative_prompt="")) == ""


def test_templates_are_configurable_and_checked():
    assert contextual_prompt("seven", PromptConfig(template="a photo of a {label}")) == "a photo of a seven"
    assert label_words("n01443537") == "n01443537" and label_words("sea_anemone") == "sea anemone"
    with pytest.raises(ValueError, match="no {label} placeholder"):
        PromptConfig(template="a photo")
    with pytest.raises(ValueError, match="only {label} and {dataset_type}"):
        PromptConfig(template="{label} in {place}")
    assert PAPER_TEMPLATE.format(label="x", dataset_type="y")


@pytest.mark.parametrize(
    "argv,message",
    [
        (["generate", "--out", "X", "--fraction", "0"], "fraction=0.0: expected a value in (0, 1]"),
        (["generate", "--out", "X", "--dataset", "mnist"], "dataset='mnist': expected 'digits', 'folder' or one of"),
        (["generate", "--out", "X", "--dataset", "cifar100"], "dataset=cifar100 needs --data-root"),
        (["generate", "--out", "X", "--model", "/no/such/model"], "model=/no/such/model: no such file or folder"),
        (
            ["generate", "--out", "X", "--clip-pretrained", "/no/clip.safetensors"],
            "clip_pretrained=/no/clip.safetensors",
        ),
        (["generate", "--out", "X", "--guidance-scale", "-1"], "guidance_scale=-1.0"),
        (["train", "--out", "X", "--method", "diffcore"], "method='diffcore' needs a generated set"),
        (["train", "--out", "X", "--epochs", "0"], "epochs=0"),
        (["run", "--profile", "laptop"], "profile='laptop': expected one of"),
        (["run", "--out", "X", "--arch", "vgg16"], "model='vgg16': expected one of"),
        (["run", "--out", "X", "--pretrained", "/no/w.pt"], "pretrained=/no/w.pt: no such weights file"),
    ],
)
def test_bad_input_fails_in_one_line_before_heavy_work(argv, message, capsys, tmp_path):
    argv = [a if a != "X" else str(tmp_path / "out") for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("diffcore: error: ") and message in err and len(err.splitlines()) == 1


def test_run_end_to_end_on_tiny_random_components(tiny_sd_dir, tiny_clip_files, tmp_path, capsys):
    """The main job's whole path: generate, filter, train vanilla and -50/-100, table; re-run skips finished work."""
    out = tmp_path / "run"
    argv = [
        "run",
        "--out",
        str(out),
        "--model",
        str(tiny_sd_dir),
        "--size",
        "16",
        "--steps",
        "2",
        "--clip-model",
        "test-tiny-clip",
        "--clip-config",
        str(tiny_clip_files[0]),
        "--clip-pretrained",
        str(tiny_clip_files[1]),
        "--few-shot",
        "3",
        "--epochs",
        "1",
        "--seeds",
        "0",
    ]
    assert main(argv) == 0
    table = (out / "table.md").read_text()
    for label in ("Vanilla", "DiffCoRe-Mix-50", "DiffCoRe-Mix-100"):
        assert f"| {label} |" in table
    assert sorted(p.name for p in (out / "results").glob("*.json")) == [
        "diffcore-100-seed0.json",
        "diffcore-50-seed0.json",
        "vanilla-seed0.json",
    ]
    assert len(list((out / "results").glob("*.ckpt.pt"))) == 3  # each run's final checkpoint, beside its result
    assert (out / "generated" / "manifest.csv").is_file()
    from PIL import Image

    with Image.open(out / "generated" / "preview.png") as im:  # real | kept | rejected grid, from the manifest
        assert im.format == "PNG" and im.width > 100
    assert strict.check_lines(capsys.readouterr().out) == 3  # one JSON line per run, strict JSON
    read = strict.check_tree(out)  # every JSON file written, read by a parser that refuses NaN and Infinity
    assert {"generated/run.json", "results/vanilla-seed0.json", "results/diffcore-50-seed0.json"} <= set(read)
    assert any(name.startswith("generated/logs/") for name in read)
    assert main(argv) == 0
    assert capsys.readouterr().out.count("exists, skipped") == 3


def _class_tree(root, classes, n=2):
    from PIL import Image

    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(root / c / f"{i}.png")


def test_evaluation_split_is_checked_before_generation(tmp_path, capsys):
    """A flat folder has nothing to evaluate on; a test split with other classes would mislabel: both fail at once,
    before the (hours-long) generation, and write nothing."""
    from diffcore.data import eval_split

    flat, split = tmp_path / "flat", tmp_path / "split"
    _class_tree(flat, ["cat", "dog"])
    _class_tree(split / "train", ["cat", "dog"])
    _class_tree(split / "test", ["cat", "fox"])
    out = tmp_path / "out"
    assert main(["run", "--dataset", "folder", "--data-root", str(flat), "--out", str(out)]) == 2
    assert "evaluation needs <root>/test" in capsys.readouterr().err
    assert main(["run", "--dataset", "folder", "--data-root", str(split), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "the test split's classes differ from train's" in err and "'dog'" in err and "'fox'" in err
    assert not out.exists()
    assert eval_split("tiny-imagenet-200", None) == "val" and eval_split("flowers102", None) == "test"
    assert eval_split("cub-200-2011", None, "train") == "train"  # an explicit --test-split wins
    (split / "test").rename(split / "val")
    assert eval_split("folder", str(split)) == "val" and eval_split("digits", None) == "test"
