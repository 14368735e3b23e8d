"""Every JSON diffcore writes is strict JSON (RFC 8259: no NaN, Infinity, -Infinity), read here by a parser that
refuses them (tests/strict.py); so are the files of whole runs (test_prompts_cli, test_edit, test_hostile_data)."""

from __future__ import annotations

import ast
import json
import logging
from pathlib import Path

import pytest
import strict

import diffcore
from diffcore import cli
from diffcore.engine import distributed as D
from diffcore.engine import genset as G
from diffcore.engine.checks import finite_or_null, json_text


def test_every_json_writer_goes_through_json_text():
    """Read the source: json.dump is never called, json.dumps only to copy a value (json.loads(json.dumps(x))) or
    in engine/checks.py, so every file and every printed line is written by json_text (strict, NaN -> null)."""
    root = Path(diffcore.__file__).parent
    bad = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        copies = {
            id(arg)
            for node in ast.walk(tree)
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "json.loads"
            for arg in node.args
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and ast.unparse(node.func) in ("json.dump", "json.dumps"):
                if path.name != "checks.py" and id(node) not in copies:
                    bad.append(f"{path.relative_to(root)}:{node.lineno}")
    assert bad == []


def test_json_text_writes_non_finite_numbers_as_null():
    obj = {"loss": float("nan"), "h": [1.0, float("inf"), (float("-inf"), 2)], "ok": 0.5, "n": 3, "s": "NaN"}
    text = json_text(obj, indent=1)
    assert strict.loads(text) == {"loss": None, "h": [1.0, None, [None, 2]], "ok": 0.5, "n": 3, "s": "NaN"}
    assert finite_or_null(obj)["ok"] == 0.5
    with pytest.raises(ValueError, match="NaN is not JSON"):  # the reader the tests use refuses what json writes
        strict.loads(json.dumps(obj))


def test_a_diverged_training_writes_a_strict_result_and_says_it_diverged(tmp_path, caplog, capsys):
    """lr = 1e8 is finite and accepted; the loss becomes NaN. The result file holds null there, not a bare NaN,
    the printed line too, and a warning names the divergence."""
    out = tmp_path / "diverged.json"
    argv = ["train", "--method", "vanilla", "--few-shot", "2", "--epochs", "1", "--lr", "1e8", "--batch-size", "4"]
    with caplog.at_level(logging.WARNING):
        assert cli.main([*argv, "--momentum", "0", "--no-nesterov", "--out", str(out)]) == 0
    result = strict.loads(out.read_text())
    assert result["metrics"]["loss"] is None and result["history"][0]["train_loss"] is None
    assert strict.check_lines(capsys.readouterr().out) == 1
    assert any("training loss nan: the run diverged" in r.getMessage() for r in caplog.records)


def test_running_plan_and_log_files_are_strict_even_with_non_finite_values(tmp_path):
    """running.json and plan.json (publish_once), run.json (finish) and logs/*.jsonl, written while a set is made."""
    store = G.GeneratedSet(tmp_path / "s", {"w": 1.5}, {}, ["a", "b"], [0, 1], ["x", "y"], [0, 1], 1, 1, 1)
    store.claim()
    plan = store.plan(D.SINGLE, lambda: {"tau": [float("nan"), float("inf")]})
    assert plan["tau"] == [None, None]
    store.log(D.SINGLE, {"wall_s": float("nan")}, None)
    assert sorted(strict.check_tree(tmp_path / "s")) == [
        "logs/generate.rank-00000-of-00001.jsonl",
        "plan.json",
        "running.json",
    ]
    assert D.publish_once(tmp_path / "x.json", lambda: {"v": float("-inf")}) == {"v": None}


def test_info_prints_strict_json(capsys):
    assert cli.main(["info"]) == 0
    assert strict.loads(capsys.readouterr().out)["profile"] == "embedded"
