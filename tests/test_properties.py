"""Property-based (hypothesis): any value of any setting, in a config built in code or as a flag of the command
line, is either accepted, and the cheap code that uses it runs, or refused in one line before any work; nothing in
between (no traceback, no run made with a value that means nothing, such as NaN).

Seeded (derandomize) and small: no model is loaded. Where the command line would start heavy work (loading a model,
generating, training), a sentinel stops it: reaching it means every check passed (the tripwire of
test_reliability.py, turned into "accepted").
"""

from __future__ import annotations

import dataclasses
import math
import os
import typing
from functools import cache

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import diffcore.data as D
import diffcore.experiment as X
import diffcore.train as T
from diffcore import cli
from diffcore.counterparts import CounterpartConfig
from diffcore.edit import EditConfig, prompt_for
from diffcore.engine.distributed import chunks
from diffcore.filter import FilterConfig, class_pairs
from diffcore.generate import GenerateConfig, check_guidance
from diffcore.mix import MixConfig, diffcore_mix
from diffcore.profiles import PROFILES
from diffcore.prompts import PromptConfig, contextual_prompt, negative_prompt

EXAMPLES = int(os.environ.get("DIFFCORE_PROPERTY_EXAMPLES", "120"))  # per test; more for a longer hunt
FAST = settings(
    max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)
CONFIGS = (PromptConfig, GenerateConfig, FilterConfig, CounterpartConfig, MixConfig, T.TrainConfig, EditConfig)
FIELDS = [(cls, f.name) for cls in CONFIGS for f in dataclasses.fields(cls)]

SPECIAL = [0.0, -0.0, 1e-320, 1e-38, 0.5, 1.0, 1.5, 1e38, 1e300, math.nan, math.inf, -math.inf]
NUMBERS = st.one_of(st.floats(), st.integers(), st.sampled_from(SPECIAL))  # floats() includes NaN and +-inf
TEXT = st.text(max_size=12)
# text that has broken things: format fields that index or reach into the label, line breaks, flags, paths
TRICKY = ["{label}{label[a]}", "{label}{dataset_type.y}", "{label}{0}", "{label} {", "", " ", "-x", "../x", "a\nb"]
ANY = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT, st.lists(NUMBERS, max_size=2))  # a value of any type


def known(cls: type, name: str) -> list:
    """The values a field takes in the defaults, the profiles and the CLI's choices: valid ones, so that accepted
    configs get exercised too."""
    step = next((s for s, c in X.STEPS.items() if c is cls), None)
    flat = X.RENAMED.get((step, name), name)
    out = [getattr(cls(), name)] + [p[step][name] for p in PROFILES.values() if name in p.get(step, {})]
    return out + list(cli.CHOICES.get(flat, []))


def typed(hint, cls: type, name: str):
    """A strategy for values of the annotation `hint` (NaN, infinities and extremes included)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if type(None) in typing.get_args(hint):
        return st.one_of(st.none(), typed(args[0], cls, name))
    if hint is float:
        return NUMBERS
    if hint is int:
        return st.one_of(st.integers(), st.integers(-3, 70))
    if hint is bool:
        return st.booleans()
    if hint is str:
        return st.one_of(TEXT, st.sampled_from(known(cls, name) + TRICKY))
    if typing.get_origin(hint) is tuple:
        return st.lists(typed(args[0], cls, name), max_size=3).map(tuple)
    if hint is dict:
        return st.dictionaries(st.one_of(TEXT, st.sampled_from(["alpha", "prob", "fractals"])), NUMBERS, max_size=2)
    return st.just(hint())  # a nested config: a valid one (a wrong type comes from ANY)


def value_for(cls: type, name: str):
    return st.one_of(typed(typing.get_type_hints(cls)[name], cls, name), ANY)


SMALL = D.ImageSet("toy", ["a", "b"], [f"t/{i}" for i in range(6)], [0, 0, 0, 1, 1, 1], loader=lambda i: None)


def use(cfg) -> None:
    """Run the cheap code that consumes an accepted config: it must not fail."""
    if isinstance(cfg, PromptConfig):
        assert isinstance(contextual_prompt("001.Black_footed_Albatross", cfg) + negative_prompt(cfg), str)
    elif isinstance(cfg, GenerateConfig):
        assert math.isfinite(cfg.gamma)
        check_guidance("", cfg)
    elif isinstance(cfg, FilterConfig):
        assert sum(len(p) for p in class_pairs(SMALL.labels, 2, cfg.z_pairs, cfg.tau_seed).values()) > 0
    elif isinstance(cfg, CounterpartConfig):
        assert len(D.choose_fraction(SMALL, cfg.fraction, cfg.selection_seed)) >= 2
        assert sum(chunks(range(10), cfg.chunk_size or 4), []) == list(range(10))
    elif isinstance(cfg, MixConfig):
        real, gen = torch.rand(4, 3, 8, 8), torch.rand(4, 3, 8, 8)
        out = diffcore_mix(real, gen, cfg, torch.Generator().manual_seed(0))
        assert torch.isfinite(out.images).all() and bool(((out.lam >= 0) & (out.lam <= 1)).all())
    elif isinstance(cfg, T.TrainConfig):
        T.method_for(cfg)
        T.transforms_for(cfg, True)
        net = torch.nn.Linear(2, 2)
        opt = torch.optim.SGD(
            net.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.nesterov
        )
        steps = [max(1, math.floor(m * cfg.epochs)) for m in cfg.milestones]
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=steps, gamma=cfg.lr_decay)
        net(torch.ones(1, 2)).sum().backward()
        opt.step()
        sched.step()
    elif isinstance(cfg, EditConfig):
        assert prompt_for(0, "one", cfg)
        assert sum(chunks(range(10), cfg.chunk_size or cfg.batch_size), []) == list(range(10))


@settings(FAST, max_examples=4 * EXAMPLES)  # ~1 ms each
@given(st.data())
def test_any_value_of_any_config_field_is_accepted_and_used_or_refused_in_one_line(data):
    cls, name = data.draw(st.sampled_from(FIELDS), label="field")
    value = data.draw(value_for(cls, name), label="value")
    try:
        cfg = cls(**{name: value})
    except (ValueError, FileNotFoundError) as e:
        msg = str(e)
        assert "\n" not in msg and "=" in msg, msg
        assert name in msg or "bad hyperparameters" in msg, msg  # the setting is named
        event("refused")
        return
    use(cfg)
    event("accepted")


# ---------------------------------------------------------------- the command line
class Accepted(Exception):
    """Raised where heavy work would start: every check passed."""


def _heavy(*args, **kw):
    raise Accepted


_DIGITS = D.digits


def _setting_flags(command: str) -> list:
    """The flags of a command that set an experiment's setting (the parser's own: derived, not listed)."""
    import argparse

    sub = next(a for a in cli.parser()._actions if isinstance(a, argparse._SubParsersAction))
    skip = {"help", "out", "generated", "profile", "dataset", "data_root", "force"}
    return [a for a in sub.choices[command]._actions if a.option_strings and a.dest not in skip]


NUMBER_TEXT = st.one_of(
    st.floats().map(repr),
    st.integers().map(str),
    st.sampled_from(["nan", "inf", "-inf", "NaN", "1e309", "-1e309", "1e-320", "0", "-0", "1_0", "", "x", "0x10"]),
)
FLAG_TEXT = st.one_of(NUMBER_TEXT, TEXT)


def flag_value(data, action) -> list[str]:
    """argv for one flag with a drawn value (any text; numbers, NaN and infinities more often)."""
    flag = action.option_strings[0]
    if action.nargs == 0:  # --x / --no-x
        return [data.draw(st.sampled_from(action.option_strings), label="flag")]
    if action.dest == "method_args":
        key = data.draw(st.sampled_from(["alpha", "prob", "fractals", "x"]), label="key")
        return [flag, f"{key}={data.draw(FLAG_TEXT, label='value')}"]
    if action.choices:
        return [flag, data.draw(st.one_of(st.sampled_from(list(action.choices)), TEXT), label="value")]
    if action.type in (int, float) or action.metavar == "A,B,...":
        items = st.lists(NUMBER_TEXT, min_size=1, max_size=3).map(",".join)
        return [flag, data.draw(items if action.metavar else NUMBER_TEXT, label="value")]
    return [flag, data.draw(FLAG_TEXT, label="value")]


@pytest.mark.parametrize("command", ["generate", "train", "edit"])
def test_any_flag_value_is_accepted_or_refused_in_one_line_before_any_work(command, tmp_path_factory):
    """One flag with any value on `generate`, `train` or `edit` (the others share their flags): exit 2 with one
    line, nothing written; or every check passes and the heavy work starts (the sentinel)."""
    actions = _setting_flags(command)
    out = tmp_path_factory.mktemp(command) / ("out.json" if command == "train" else "out")
    base = [command, "--out", str(out)] + (["--method", "vanilla"] if command == "train" else [])
    seen = {"accepted": 0, "refused": 0}

    @settings(FAST, max_examples=max(1, EXAMPLES // 2))  # each example parses a command line and opens the digits
    @given(st.data())
    def check(data):
        action = data.draw(st.sampled_from(actions), label="action")
        argv = base + flag_value(data, action)
        with pytest.MonkeyPatch.context() as mp, _stderr() as err:
            for module, name in ((X, "load_pipeline"), (X, "load_clip"), (X, "load_editor"), (T, "train")):
                mp.setattr(module, name, _heavy)
            mp.setattr(D, "digits", _cached_digits)  # the same dataset, read once: the examples stay fast
            try:
                code = cli.main(argv)
            except Accepted:
                seen["accepted"] += 1
                assert not out.exists(), argv  # checks only, so far: nothing written
                return
        lines = err.getvalue().strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("diffcore: error: "), (argv, lines)
        assert not out.exists(), argv
        seen["refused"] += 1

    check()
    assert seen["accepted"] and seen["refused"], seen  # both outcomes were exercised


@cache
def _cached_digits(split: str = "train", size: int = 32) -> D.ImageSet:
    return _DIGITS(split, size)


class _stderr:
    """sys.stderr captured (capsys does not reset between hypothesis examples)."""

    def __enter__(self):
        import io
        import sys

        self.old, sys.stderr = sys.stderr, io.StringIO()
        return sys.stderr

    def __exit__(self, *exc):
        import sys

        sys.stderr = self.old


def test_the_property_tests_cover_every_config_field():
    names = {(cls.__name__, name) for cls, name in FIELDS}
    assert ("GenerateConfig", "guidance_scale") in names and ("TrainConfig", "method_args") in names
    assert len(names) == sum(len(dataclasses.fields(c)) for c in CONFIGS)
