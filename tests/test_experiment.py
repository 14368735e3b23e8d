"""The experiment API and the command line over it: one description of an experiment, flags derived from the
config fields, the command shown beside a number builds the very experiment it came from, and training hands
back the trained model."""

from __future__ import annotations

import dataclasses
import shlex

import pytest
import torch

from diffcore import cli
from diffcore import experiment as X
from diffcore.data import digits
from diffcore.train import EvalSet, evaluate, transforms_for


def _parse(argv: list[str]) -> X.Experiment:
    return cli.experiment_of(cli.parser().parse_args(argv))


def test_every_field_of_every_step_has_one_name_and_one_flag():
    for step in X.FLAT_STEPS:
        for f in dataclasses.fields(X.STEPS[step]):
            if (step, f.name) in X.NESTED:
                continue
            name = X.RENAMED.get((step, f.name), f.name)
            assert (step, f.name) in X.NAMES[name], (step, f.name)
    shared = {n for n, targets in X.NAMES.items() if len(targets) > 1}
    assert shared == set(X.SHARED)  # a name sets several fields only where it means one thing (seed, fraction, ...)
    flags = {a.dest for a in cli.parser()._subparsers._group_actions[0].choices["train"]._actions}
    assert set(X.NAMES) <= flags


def test_profile_defaults_and_overrides_land_in_the_right_step():
    exp = X.experiment(
        "embedded",
        steps=3,
        gen_batch_size=8,
        clip_batch_size=16,
        batch_size=4,
        arch="digits-cnn",
        seed=5,
        fraction=0.5,
        mix_mode="pixel",
        lam_alpha=2.0,
    )
    assert (exp.generate.steps, exp.generate.batch_size, exp.filter.batch_size, exp.train.batch_size) == (3, 8, 16, 4)
    assert exp.generate.run_seed == exp.train.seed == 5
    assert exp.counterparts.fraction == exp.train.fraction == 0.5
    assert exp.train.mix.mode == "pixel" and exp.train.mix.lam_alpha == 2.0
    assert exp.generate.size == 32 and exp.filter.clip_model == "diffcore-tiny-clip"  # the embedded profile's
    assert X.experiment("paper").generate.guidance_scale == 12.0 and X.experiment("paper").dataset == "cub-200-2011"


def test_the_dataset_decides_the_prompt_words_unless_they_are_given():
    cub = X.experiment("embedded").replace(dataset="cub-200-2011")
    assert (cub.prompt.dataset_type, cub.prompt.negative_key) == ("bird", "bird")
    assert X.experiment("embedded").prompt.negative_key == "digits"
    assert X.experiment("embedded", dataset="flowers102", dataset_type="plant").prompt.dataset_type == "plant"


def test_replace_keeps_earlier_overrides_and_none_restores_the_profile():
    exp = X.experiment("embedded", epochs=3, few_shot=10)
    again = exp.replace(method="mixup")
    assert (again.train.epochs, again.few_shot, again.train.method) == (3, 10, "mixup")
    assert again.replace(epochs=None).train.epochs == X.experiment("embedded").train.epochs


def test_a_bad_or_unknown_setting_fails_at_once_in_one_line():
    with pytest.raises(ValueError, match="steps=0"):
        X.experiment("embedded", steps=0)
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['stepz'\]"):
        X.experiment("embedded", stepz=3)
    with pytest.raises(ValueError, match="profile='laptop'"):
        X.experiment("laptop")
    with pytest.raises(ValueError, match=r"^data_root=/d/mine: the digits .* pass dataset='folder' \(--dataset folder"):
        X.experiment("embedded", data_root="/d/mine")  # a root the digits would silently ignore
    assert X.experiment("embedded", dataset="folder", data_root="/d/mine").data_root == "/d/mine"


def test_flags_build_the_same_experiment_as_the_api():
    argv = [
        "train",
        "--few-shot",
        "10",
        "--epochs",
        "3",
        "--gen-batch-size",
        "8",
        "--method",
        "mixup",
        "--method-arg",
        "alpha=0.2",
        "--no-compile",
        "--milestones",
        "0.4,0.8",
        "--seed",
        "2",
        "--out",
        "r.json",
    ]
    exp = X.experiment(
        "embedded",
        few_shot=10,
        epochs=3,
        gen_batch_size=8,
        method="mixup",
        method_args={"alpha": 0.2},
        compile=False,
        milestones=(0.4, 0.8),
        seed=2,
    )
    assert _parse(argv) == exp


@pytest.mark.parametrize(
    "over",
    [
        dict(few_shot=10, epochs=30),
        dict(dataset="flowers102", arch="preactresnet34", data_root="/d/flowers", lr=0.1, nesterov=False),
        dict(method="cutmix", method_args={"alpha": 1.0, "prob": 0.5}, fraction=0.5, step_cache=2, negative_prompt=""),
    ],
)
def test_the_command_shown_beside_a_number_builds_the_same_experiment(over):
    exp = X.experiment("embedded", **over)
    line = X.command_line(exp, "train", out="r.json")
    argv = shlex.split(line)
    assert argv[:4] == ["python", "-m", "diffcore", "train"]
    assert _parse(argv[3:]) == exp


def test_edit_flags_are_editconfig_fields():
    exp = _parse(["edit", "--out", "e", "--steps", "3", "--seed", "4", "--prompts", "sunset, mosaic"])
    assert (exp.edit.steps, exp.edit.run_seed, exp.edit.prompts) == (3, 4, ("sunset", "mosaic"))
    assert exp.generate == X.experiment("embedded").generate  # edit flags touch only the edit step
    assert _parse(shlex.split(X.command_line(exp, "edit", out="e"))[3:]) == exp


def test_help_of_every_command_comes_from_the_field_comments(capsys):
    for command in ("generate", "train", "run", "merge", "edit"):
        with pytest.raises(SystemExit) as done:
            cli.parser().parse_args([command, "--help"])
        assert done.value.code == 0
    text = capsys.readouterr().out
    assert "z in Eq. (5): random distinct real pairs per class" in text  # FilterConfig.z_pairs' comment
    assert "[generate.steps: 50; embedded: 20]" in text


def test_train_returns_the_trained_model_whose_metrics_it_reports(tmp_path):
    exp = X.experiment("embedded", method="vanilla", epochs=1, few_shot=2, device="cpu")
    test = digits("test").subset(range(40))
    run = X.train(exp, tmp_path / "r.json", data=(X.train_set(exp), test), progress=False)
    loader = torch.utils.data.DataLoader(EvalSet(test, transforms_for(exp.train, False)), batch_size=64)
    again = evaluate(run.model, loader, torch.device("cpu"))
    assert again == run.metrics and not run.model.training
    assert (tmp_path / "r.json").is_file()
