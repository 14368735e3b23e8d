"""The rehearsal's bookkeeping: measured costs into the plan (`diffcore plan --costs`), the largest batch that fits
after an out-of-memory failure, the sizes it changes. The rehearsal itself (every paper job and page on stand-ins)
runs in `make test` as `make rehearse`, not here: it takes minutes."""

import dataclasses
import json
import math

import pytest
import torch

from diffcore import cli
from diffcore.estimate import PAPER_DISCARD, TRAIN_IMAGES
from diffcore.plan import jobs as J
from diffcore.rehearse import driver as R


@pytest.fixture(scope="module")
def plan():
    return J.jobs("paper", ["Table 4"])


def _costs(rows, failures=(), size="full", device="NVIDIA H200"):
    return {
        "kind": "diffcore-rehearsal",
        "size": size,
        "measured": list(rows),
        "failures": list(failures),
        "provenance": {"device": "cuda", "device_name": device},
    }


def _row(job, s_per_unit):
    return {**R.job_key(job), "seed": job.seed, "s_per_unit": s_per_unit}


def test_measured_seconds_become_the_paper_jobs_hours(plan):
    gen = next(j for j in plan if j.kind == "generate" and j.column == "CUB")
    mixup = next(j for j in plan if j.kind == "train" and j.column == "CUB" and j.row == "Mixup")
    d100 = next(j for j in plan if j.kind == "train" and j.column == "CUB" and j.row == "DiffCoRe-Mix-100")
    control = next(j for j in plan if j.kind == "train" and j.column == "CUB" and j.row == J.CONTROL)
    costs = _costs([_row(gen, 0.3), _row(mixup, 0.02), _row(d100, 0.02), _row(control, 0.02)])
    out = {(j.column, j.row): j for j in J.with_costs(plan, costs)}
    n = TRAIN_IMAGES["cub-200-2011"]  # 5,994 training images
    steps = 300 * math.ceil(n / 16)  # Mixup: every real image once per epoch, batch 16, 300 epochs
    assert out[("CUB", "Mixup")].gpu_hours == pytest.approx(0.02 * steps / 3600, rel=1e-12)
    assert out[("CUB", "DiffCoRe-Mix-100")].gpu_hours == pytest.approx(0.02 * 300 * math.ceil(2 * n / 16) / 3600)
    assert out[("CUB", J.CONTROL)].gpu_hours == out[("CUB", "DiffCoRe-Mix-100")].gpu_hours  # as many steps
    assert out[("CUB", "counterparts")].gpu_hours == pytest.approx(0.3 * n / (1 - PAPER_DISCARD) / 3600)
    assert out[("CUB", "Mixup")].hours_from == "measured on NVIDIA H200"
    unmeasured = out[("Cars", "Mixup")]
    assert unmeasured.hours_from == "estimated" and unmeasured.gpu_hours == J.train_hours(unmeasured.exp, 0.0)


def test_an_out_of_memory_job_is_reported_with_the_largest_batch_that_fits(plan):
    cutmix = next(j for j in plan if j.kind == "train" and j.column == "Caltech" and j.row == "CutMix")
    failure = {**R.job_key(cutmix), "error": "OutOfMemoryError: CUDA out of memory", "largest_batch_that_fits": 8}
    got = next(j for j in J.with_costs(plan, _costs([], [failure])) if j.row == "CutMix" and j.column == "Caltech")
    assert got.gpu_hours is None
    assert got.hours_from == "failed on NVIDIA H200: OutOfMemoryError: CUDA out of memory; largest batch that fits: 8"


def test_costs_from_a_tiny_rehearsal_or_not_a_rehearsal_are_refused(tmp_path):
    f = tmp_path / "costs.json"
    f.write_text(json.dumps(_costs([], size="tiny")))
    with pytest.raises(ValueError, match=r"a 'tiny' rehearsal, whose models are toy-sized"):
        J.read_costs(f)
    f.write_text('{"kind": "diffcore-rehearsal", "size": "full", "meas')
    with pytest.raises(ValueError, match=r"^costs=.*: not JSON"):
        J.read_costs(f)
    f.write_text("[]")
    with pytest.raises(ValueError, match=r"not a rehearsal's costs.json"):
        J.read_costs(f)
    with pytest.raises(FileNotFoundError, match=r"diffcore rehearse` writes <out>/costs.json"):
        J.read_costs(tmp_path / "none.json")


def test_plan_costs_from_the_command_line(plan, tmp_path, capsys):
    gen = next(j for j in plan if j.kind == "generate" and j.column == "CUB")
    f = tmp_path / "costs.json"
    f.write_text(json.dumps(_costs([_row(gen, 0.3)])))
    assert cli.main(["plan", "--profile", "paper", "--table", "4", "--costs", str(f)]) == 0
    text = capsys.readouterr().out
    assert "| generate | CUB | counterparts |  | 50 steps, w=12, 512 px, b32 | 0.56 | measured on NVIDIA H200 |" in text
    assert "1 of 39 measured on NVIDIA H200, the rest estimated for an H100" in text
    assert cli.main(["plan", "--profile", "paper", "--table", "4", "--costs", str(tmp_path / "no.json")]) == 2


def test_the_largest_batch_that_fits_is_found_by_halving(plan, tmp_path, monkeypatch):
    job = next(j for j in plan if j.kind == "train" and j.column == "CUB" and j.row == "Mixup")
    tried = []

    def run_job(trial, progress=False):
        tried.append((trial.exp.train.batch_size, trial.out))
        if trial.exp.train.batch_size > 4:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(J, "run_job", run_job)
    assert R.largest_batch(job, tmp_path / "probe", "cpu") == 4
    assert [b for b, _ in tried] == [8, 4]  # 16 failed in the real run
    assert all(str(tmp_path / "probe") in out for _, out in tried)  # never into the job's own result
    monkeypatch.setattr(J, "run_job", lambda trial, progress=False: (_ for _ in ()).throw(ValueError("bad")))
    with pytest.raises(ValueError, match="bad"):  # anything but out-of-memory is the job's own failure
        R.largest_batch(job, tmp_path / "probe", "cpu")


def test_a_rehearsal_changes_sizes_only(tmp_path):
    """What a rehearsal gives the paper code path beyond the paths a real run gives: sizes, nothing else."""
    sizes = {"steps", "size", "epochs", "image_size"}
    for size, s in R.SIZES.items():
        assert set(s["overrides"]) <= sizes, size
        assert set(s["edit"]) <= {"steps", "size"}, size
    (tmp_path / "w" / J.EDITOR).mkdir(parents=True)  # a weights folder with the editor: paper_paths finds it
    cfg = R.settings(tmp_path / "w", tmp_path / "d", "tiny")
    paths = J.paper_paths(str(tmp_path / "w"), str(tmp_path / "d"))
    assert {k: v for k, v in cfg["overrides"].items() if k not in sizes} == paths["overrides"]
    assert cfg["data_roots"] == paths["data_roots"] and cfg["edit"] == {**paths["edit"], "steps": 2, "size": 64}
    assert paths["edit"] == {"model": str(tmp_path / "w" / "instruct-pix2pix")}
    exp = J.jobs("paper", ["Table 7"], "/tmp/r", [0], cfg["data_roots"], cfg["overrides"], cfg["edit"])[1].exp
    paper = J.jobs("paper", ["Table 7"], "/tmp/r", [0], cfg["data_roots"], paths["overrides"])[1].exp
    for step in ("prompt", "filter", "counterparts"):
        assert getattr(exp, step) == getattr(paper, step), step
    assert dataclasses.replace(exp.train, epochs=300, image_size=224) == paper.train


def test_every_job_of_the_rehearsed_plan_shows_a_command_that_builds_its_experiment(tmp_path):
    """The command beside each job (book pages, `plan --json`) must rebuild what the job runs, also with an editor
    given and the rehearsal's sizes: `diffcore edit` with the editor's flags only, the others without them."""
    import shlex

    (tmp_path / "w" / J.EDITOR).mkdir(parents=True)
    (tmp_path / "w" / J.WRN_WEIGHTS).write_bytes(b"")  # TrainConfig checks that the file is there
    cfg = R.settings(tmp_path / "w", tmp_path / "d", "tiny")
    jobs = R.plan(tmp_path, cfg, None, "cpu")
    assert len(jobs) == 126 and not [j for j in jobs if j.refused]  # the editor and the WRN weights: all can run
    for job in jobs:
        argv = shlex.split(job.command())
        parsed = cli.experiment_of(cli.parser().parse_args(argv[3:]))
        if job.kind == "edit":
            assert parsed.edit == job.exp.edit and parsed.device == job.exp.device == "cpu", job.command()
            assert (parsed.dataset, parsed.data_root, parsed.few_shot) == (
                job.exp.dataset,
                job.exp.data_root,
                job.exp.few_shot,
            )
        else:
            mine, theirs = parsed.settings(), job.exp.settings()
            mine.pop("edit"), theirs.pop("edit")
            assert mine == theirs, job.command()
    pretrained = {j.table for j in jobs if j.kind == "train" and j.exp.train.pretrained}
    assert pretrained == {"Table 5"}  # the WRN weights fine-tune Table 5's columns, never another table's network


def test_plan_with_a_weights_folder_finds_table_5s_weights_and_the_editor(tmp_path, capsys):
    """`diffcore plan --weights W` (and reproduce --weights W) find wide_resnet101_2.pth and instruct-pix2pix/ in W,
    as the rehearsal's folder has them: nothing of the paper plan is then refused."""
    w = tmp_path / "w"
    assert cli.main(["plan", "--profile", "paper", "--weights", str(w), "--json"]) == 0
    refused = {r["row"] for r in json.loads(capsys.readouterr().out) if r["refused"]}
    assert {"edits", "DiffuseMix", "SnapMix"} <= refused  # no editor, no Table 5 weights: refused in one line each
    (w / J.EDITOR).mkdir(parents=True)
    (w / J.WRN_WEIGHTS).write_bytes(b"")
    assert cli.main(["plan", "--profile", "paper", "--weights", str(w), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert not [r for r in rows if r["refused"]] and len(rows) == 126
    edit = next(r for r in rows if r["kind"] == "edit")
    assert edit["settings"]["edit"]["model"] == str(w / "instruct-pix2pix")
