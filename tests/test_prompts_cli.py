"""Prompts (P_c, P_n) and the command line's refusal of bad input before any heavy work."""

import pytest
import strict

from diffcore.cli import main
from diffcore.prompts import (
    AUTHORS_NEGATIVE_PROMPT,
    NEGATIVE_PROMPTS,
    PAPER_TEMPLATE,
    PromptConfig,
    class_conflicts,
    contextual_prompt,
    final_negative,
    label_words,
    negative_key_for,
    negative_prompt,
    words,
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


def test_class_names_are_read_as_words():
    assert label_words("001.Black_footed_Albatross") == "Black footed Albatross"  # CUB's index prefix dropped
    assert label_words("200.Common_Yellowthroat") == "Common Yellowthroat"
    assert label_words("Audi  A4_Sedan 2012 ") == "Audi A4 Sedan 2012"  # spaces and underscores folded
    assert (
        label_words("2012.5") == "5" and label_words("12.5_mm") == "12.5 mm" and label_words("n01443537") == "n01443537"
    )
    assert label_words("007") == "007" and label_words("123ab.cd") == "123ab.cd"  # no index: kept as it is
    assert words("Traffic lights, Glass; cars-bus 9s") == {"traffic", "light", "glass", "car", "bus", "9s"}
    assert words("Pass  grass") == {"pass", "grass"} and words("") == set()


def test_a_negative_phrase_conflicts_with_a_class_or_the_dataset_type_by_any_word():
    classes = ["130.Tree_Sparrow", "Cars"]
    assert class_conflicts("trees,, big car , sparrow bird, birds, sky", classes, "bird") == [
        ("trees", "130.Tree_Sparrow"),
        ("big car", "Cars"),
        ("sparrow bird", "130.Tree_Sparrow"),  # a class named before the type word
        ("birds", "dataset type 'bird'"),
    ]
    assert class_conflicts("", classes) == [] and class_conflicts("sky", []) == []


def test_the_final_negative_prompt_drops_every_phrase_naming_a_class_and_refuses_a_given_one():
    cfg = PromptConfig(negative_key="bird", dataset_type="bird")
    text, dropped = final_negative(cfg, ["House_Wren", "Brown Creeper", "Scott Oriole"])  # the bird list names none
    assert (text, dropped) == (NEGATIVE_PROMPTS["bird"], [])
    text, dropped = final_negative(cfg, ["Cardinal", "Paper Birch", "City  building"])
    assert dropped == [("building", "City  building"), ("paper texture", "Paper Birch")]
    assert text == "people, human, car, bus, train, newspaper, cityscape, road, computer, text, watermark"
    given = PromptConfig(negative_prompt=" blurry ,, Paper texture,", dataset_type="bird")
    with pytest.raises(ValueError) as e:
        final_negative(given, ["Paper Birch", "City building"])
    assert str(e.value) == (
        "negative_prompt names 'Paper Birch' ('Paper texture'): through Eq. (4) it would steer that class away from "
        "itself; drop the word, or pass --allow-class-words if it is meant"
    )
    meant = PromptConfig(negative_prompt=" blurry ,, Paper texture,", dataset_type="bird", allow_class_words=True)
    assert final_negative(meant, ["Paper Birch"]) == (" blurry ,, Paper texture,", [])
    assert final_negative(PromptConfig(negative_prompt="blurry"), ["Paper Birch"]) == ("blurry", [])
    keys = {d: negative_key_for(d) for d in ("digits", "cub-200-2011", "flowers102", "stanford-cars", "cifar100", "x")}
    assert keys == {
        "digits": "digits",
        "cub-200-2011": "bird",
        "flowers102": "flower",
        "stanford-cars": "car",
        "cifar100": "natural",
        "x": "natural",
    }


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


def test_a_numbered_class_name_keeps_every_dot_after_its_number():
    from diffcore.prompts import label_words

    assert label_words("012.St. Bernard") == "St. Bernard"  # CUB-style "NNN." prefix, a dot in the name kept
    assert label_words("St. Bernard") == "St. Bernard"


def test_the_default_negative_prompt_also_loses_a_phrase_naming_the_dataset_type():
    from diffcore.prompts import PromptConfig, final_negative

    neg, dropped = final_negative(PromptConfig(dataset_type="car", negative_key="aircraft"), ["sedan", "coupe"])
    assert dropped == [("car", "dataset type 'car'")]
    assert "car" not in [p.strip() for p in neg.split(",")] and "bus" in neg
