"""The paper profile's plan against the paper's setup (plan/spec.py), field by field: a change that moves what runs
away from the paper fails here. Also: the plan answers in seconds without weights, data or GPU, every row says how
it stands to the paper, and the departures the plan fixed stay fixed (negative prompts, splits, fine-tuning)."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from diffcore import cli
from diffcore import experiment as X
from diffcore import prompts as P
from diffcore.data import digits, eval_split
from diffcore.plan import jobs as J
from diffcore.plan import paper, spec
from diffcore.train import AUGMENTS, TrainConfig, method_for, param_groups, train, transforms_for

CIFAR100 = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can castle "
    "caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin elephant "
    "flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster man "
    "maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree "
    "plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper "
    "snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger tractor train "
    "trout tulip turtle wardrobe whale willow_tree wolf woman worm"
).split()


@pytest.fixture(scope="module")
def plan():
    return J.jobs("paper", out_dir="runs/paper")


def _value(table: dict, column: dict, key: str):
    return (column.get(key) or table.get(key)).value


def test_every_training_run_of_the_paper_profile_matches_the_paper_setup(plan):
    recipe = {k: c.value for k, c in spec.PAPER_RECIPE.items()}
    for name, table in spec.TABLES.items():
        trains = [j for j in plan if j.table == name and j.kind == "train"]
        assert {j.column for j in trains} == set(table["columns"]), name
        for job in trains:
            column, t = table["columns"][job.column], job.exp.train
            where = (name, job.column, job.row)
            assert job.exp.dataset == column["dataset"].value, where
            assert t.model == _value(table, column, "network"), where
            assert t.image_size == _value(table, column, "input_size"), where
            assert t.augment == _value(table, column, "augment") and t.augment in AUGMENTS, where
            assert job.exp.few_shot == (column["few_shot"].value if "few_shot" in column else None), where
            splits = (eval_split(job.exp.dataset, None, job.exp.test_split), *job.exp.extra_splits)
            assert set(splits) == set(column["eval_splits"].value if "eval_splits" in column else splits[:1]), where
            epochs = t.epochs if job.row != paper.CONTROL else recipe["epochs"]
            assert (epochs, t.batch_size, t.lr, t.momentum, t.weight_decay, t.nesterov, t.lr_decay) == (
                recipe["epochs"],
                recipe["batch_size"],
                recipe["lr"],
                recipe["momentum"],
                recipe["weight_decay"],
                recipe["nesterov"],
                recipe["lr_decay"],
            ), where
            assert tuple(math.floor(m * t.epochs) for m in t.milestones) == recipe["lr_steps"], where
            pretrained = _value(table, column, "pretrained")
            if pretrained is False:
                assert t.pretrained is None and job.refused in (None, "no editor given"), where
            else:  # Table 5: ImageNet weights, fine-tuned with the backbone at a tenth of the lr
                assert job.refused == J.WRN_HINT and t.pretrained is None, where  # no weights here: refused
                assert t.pretrained_lr_scale == table["pretrained_lr_scale"].value, where
        metrics = {m for m in paper.paper_numbers(name).metric}
        assert metrics == set(table["metrics"].value), name


def test_each_comparison_method_runs_with_its_published_hyperparameters(plan):
    checked = 0
    for name, by_dataset in spec.METHODS.items():
        for job in (j for j in plan if j.table == name and j.kind == "train"):
            wanted = by_dataset.get(job.exp.dataset, {}).get(job.row)
            if wanted is None:
                continue
            built = method_for(job.exp.train)
            for param, cited in wanted.items():
                assert getattr(built, param) == cited.value, (name, job.column, job.row, param, cited.source)
                checked += 1
    assert checked > 100  # every table's rows, not a sample


def test_generation_is_the_authors_and_the_fractions_the_papers(plan):
    gens = [j for j in plan if j.kind == "generate"]
    assert gens
    for job in gens:
        g = job.exp.generate
        assert (g.scheduler, g.steps, g.guidance_scale, g.size) == tuple(
            spec.GENERATION[k].value for k in ("scheduler", "steps", "guidance_scale", "size")
        )
        assert "cosxl" in g.model and job.exp.prompt.template == spec.GENERATION["template"].value
        assert job.exp.counterparts.fraction == 1.0  # -50 trains on a subset of the -100 set
        assert job.exp.prompt.negative_key == P.negative_key_for(job.exp.dataset) != "aircraft"
    fractions = {j.exp.train.fraction for j in plan if j.row.startswith("DiffCoRe-Mix-")}
    assert fractions == set(spec.GENERATION["fractions"].value)


def test_every_row_says_how_it_stands_to_the_paper_and_what_blocks_it(plan):
    notes = {(j.table, j.row): j.note for j in plan if j.kind == "train"}
    assert all(n.split(":")[0] in ("as the paper", "approximated", "not run", "ours") for n in notes.values())
    assert notes[("Table 4", "DiffuseMix")].startswith("not run")  # no editor given
    assert notes[("Table 4", paper.CONTROL)].startswith("ours")
    assert notes[("Table 4", "DiffCoRe-Mix-100")] == "as the paper"
    table5 = next(j for j in plan if j.table == "Table 5" and j.kind == "train")
    with pytest.raises(ValueError, match="wide_resnet101_2"):
        J.run_job(table5)
    for name in J.CONTROL_TABLES:  # the equal-steps control in Tables 2-4, on both profiles
        assert any(j.row == paper.CONTROL for j in plan if j.table == name)
        assert any(j.row == paper.CONTROL for j in J.jobs("embedded", [name]))


def test_plan_answers_from_the_command_line_with_gpu_hours(capsys):
    assert cli.main(["plan", "--profile", "paper", "--table", "2"]) == 0
    text = capsys.readouterr().out
    assert "## Table 2:" in text and "GPU-hours" in text and "preactresnet34" in text
    assert cli.main(["plan", "--profile", "paper", "--table", "4", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["column"] for r in rows} == {"CUB", "Cars", "Caltech"}
    cub = next(r for r in rows if r["row"] == "Mixup" and r["column"] == "CUB")
    assert cub["settings"]["train"]["method_args"] == {"alpha": 0.2} and cub["gpu_hours"] > 0
    assert "--method-arg alpha=0.2" in cub["command"]
    assert cli.main(["plan", "--table", "9"]) == 2


# ---------------------------------------------------------------- the departures, fixed
def test_the_default_negative_prompt_never_names_a_class_of_the_dataset():
    authors = P.PromptConfig(negative_key="aircraft")
    text, dropped = P.final_negative(authors, CIFAR100)
    assert {p for p, _ in dropped} == {"train", "tree", "road", "bus", "road lines"}
    assert dropped[1] == ("tree", "maple_tree")
    assert not P.class_conflicts(text, CIFAR100) and "car" in text  # CIFAR-100 has no class named 'car'
    for dataset, key in (("stanford-cars", "car"), ("cub-200-2011", "bird"), ("flowers102", "flower")):
        exp = X.experiment("paper", dataset=dataset)
        assert exp.prompt.negative_key == key
        assert not P.class_conflicts(P.NEGATIVE_PROMPTS[key], [], exp.prompt.dataset_type)  # nor its type word
    birds = ["001.Black_footed_Albatross", "118.House_Sparrow", "130.Tree_Sparrow"]  # CUB class names
    assert P.final_negative(P.PromptConfig(negative_key="aircraft"), birds)[1] == [("tree", "130.Tree_Sparrow")]
    assert P.final_negative(P.PromptConfig(negative_key="bird", dataset_type="bird"), birds)[1] == []


def test_a_negative_prompt_naming_a_class_is_refused_unless_meant():
    named = P.PromptConfig(negative_prompt="people, car, blurry", dataset_type="car")
    with pytest.raises(ValueError, match=r"negative_prompt names .*'car'.*--allow-class-words"):
        P.final_negative(named, ["Audi A4 Sedan 2012"])
    meant = dataclasses.replace(named, allow_class_words=True)
    assert P.final_negative(meant, ["Audi A4 Sedan 2012"]) == ("people, car, blurry", [])


def test_the_embedded_profile_keeps_its_negative_prompt():
    exp = X.experiment("embedded")
    assert P.final_negative(exp.prompt, digits("train").classes) == (P.NEGATIVE_PROMPTS["digits"], [])


def test_a_run_can_be_evaluated_on_several_splits():
    small, test = digits("train").subset(range(40)), digits("test").subset(range(30))
    cfg = TrainConfig(
        method="vanilla", model="digits-cnn", epochs=1, batch_size=16, image_size=32, augment="digits", device="cpu"
    )
    r = train(cfg, small, test, progress=False, extra_tests={"val": test.subset(range(10))}).result
    assert list(r["metrics_by_split"]) == ["test", "val"] and r["metrics_by_split"]["test"] == r["metrics"]
    assert r["metrics_by_split"]["val"]["n"] == 10


def test_fine_tuning_puts_the_loaded_layers_at_a_tenth_of_the_lr(tmp_path):
    from safetensors.torch import save_file

    from diffcore.models import build_model

    save_file(build_model("digits-cnn", 5).state_dict(), str(tmp_path / "w.safetensors"))
    cfg = TrainConfig(
        model="digits-cnn",
        method="vanilla",
        lr=0.01,
        pretrained=str(tmp_path / "w.safetensors"),
        pretrained_lr_scale=0.1,
        image_size=32,
        augment="digits",
    )
    net = build_model("digits-cnn", 10, pretrained=cfg.pretrained)
    groups = param_groups(net, cfg)
    opt = torch.optim.SGD(groups, lr=cfg.lr)
    assert [g["lr"] for g in opt.param_groups] == [pytest.approx(0.001), 0.01]
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters()))
    assert len(param_groups(net, dataclasses.replace(cfg, pretrained_lr_scale=1.0))) == 1


def test_resize_crop_is_the_fgvc_recipe():
    cfg = TrainConfig(model="digits-cnn", image_size=224, augment="resize-crop")
    names = [type(t).__name__ for t in transforms_for(cfg, True).transforms]
    assert names[:3] == ["Resize", "RandomCrop", "RandomHorizontalFlip"]
    assert transforms_for(cfg, True).transforms[0].size == 256
    assert [type(t).__name__ for t in transforms_for(cfg, False).transforms][:2] == ["Resize", "CenterCrop"]


def test_the_control_trains_for_diffcore_mix_100s_steps(tmp_path):
    col = next(iter(J.columns("Table 2", "embedded", tmp_path, [0]).values()))
    job = J.train_job(col, paper.CONTROL, 0)
    (tmp_path / "g").mkdir()
    job = dataclasses.replace(job, needs=str(tmp_path / "g"))
    (tmp_path / "g" / "run.json").write_text(json.dumps({"summary": {"sources": 100, "kept": 80}}))
    assert J.control_epochs(job) == round(job.exp.train.epochs * 180 / 100)
    assert job.out.endswith("vanilla-equal-steps-seed0.json")
