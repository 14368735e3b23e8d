"""Settings that can be trusted and JSON that any parser reads: the one check every config runs first.

NaN passes every range check written as a comparison (`x <= 1`, `x < 0` and `x > 0` are all False), and infinity
passes `x > 0`: `guidance_scale=nan` once generated a whole set with guidance off, `lr=inf` trained to NaN and wrote
results. So each config's `__post_init__` calls `check_fields(self)` before its own range checks: every number
finite, every value of its field's type, or one line that names the field and the value.

The files diffcore writes are strict JSON (RFC 8259 has no NaN or Infinity, which Python's json writes by
default and most other parsers refuse): `json_text` writes a number that is not finite (a diverged training loss)
as null.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import numbers
import types
import typing
from functools import cache


def is_number(value) -> bool:
    """int or float (numpy's too), not bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


# The largest float32: the models and optimizers compute in float32 or narrower, so a setting beyond it is infinite
# there (lr = 1e39: "value cannot be converted to type float without overflow" at the first optimizer step).
FLOAT32_MAX = 3.4028234663852886e38


def check_finite(name: str, value) -> None:
    """Refuse NaN and +-inf in `value` (numbers inside tuples, lists and dicts too), and a float beyond float32's
    range, naming `name` and the value."""
    if is_number(value) and not math.isfinite(value):
        raise ValueError(f"{name}={float(value)}: expected a finite number (NaN and infinity pass range checks)")
    if is_number(value) and not isinstance(value, numbers.Integral) and abs(value) > FLOAT32_MAX:
        raise ValueError(f"{name}={float(value)}: expected a finite number within float32's +-3.4e38")
    if isinstance(value, dict):
        for key, item in value.items():
            check_finite(f"{name}.{key}", item)
    elif isinstance(value, (list, tuple)):
        for k, item in enumerate(value):
            check_finite(f"{name}[{k}]", item)


@cache
def _hints(cls: type) -> dict:
    return typing.get_type_hints(cls)


def _expected(hint) -> str | None:
    """What a value of `hint` must be, in words; None where this check leaves it to the config (nested configs)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        inner = _expected(args[0]) if len(args) == 1 else None
        return None if inner is None else f"{inner} or None"
    if hint is float:
        return "a number"
    if hint is int:
        return "an integer"
    if hint is bool:
        return "True or False"
    if hint is str:
        return "a string"
    if typing.get_origin(hint) is tuple and len(args) == 2 and args[1] is Ellipsis:
        inner = _expected(args[0])
        return None if inner is None else f"a tuple of {inner.split(' ', 1)[1]}s"
    if hint is dict or typing.get_origin(hint) is dict:
        return "a dict"
    if dataclasses.is_dataclass(hint):
        return f"a {hint.__name__}"
    return None


def _fits(value, hint) -> bool:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return (value is None and type(None) in typing.get_args(hint)) or any(_fits(value, a) for a in args)
    if hint is float:
        return is_number(value)
    if hint is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if hint is bool:
        return isinstance(value, bool) or type(value).__name__ == "bool_"  # numpy's bool too
    if hint is str:
        return isinstance(value, str)
    if typing.get_origin(hint) is tuple:
        return isinstance(value, (tuple, list)) and all(_fits(v, args[0]) for v in value)
    if hint is dict or typing.get_origin(hint) is dict:
        return isinstance(value, dict)
    if dataclasses.is_dataclass(hint):
        return isinstance(value, hint)  # a nested config (TrainConfig.mix) checked itself when it was built
    return True


def check_fields(cfg) -> None:
    """Every field of the dataclass `cfg`: of its annotated type (a number where a number is expected, ...) and,
    where it holds numbers, finite; text on one line (a setting is printed in one-line errors and logs; no path,
    prompt or name holds a line break or a NUL); dict keys names (`method_args`: keyword arguments). Raises
    ValueError in one line naming the field and its value. A nested config (TrainConfig.mix) must be of its class;
    its own fields it checked when it was built."""
    hints = _hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value, hint = getattr(cfg, f.name), hints.get(f.name)
        what = _expected(hint)
        if what is not None and not _fits(value, hint):
            raise ValueError(f"{f.name}={value!r}: expected {what}")
        if not dataclasses.is_dataclass(value):
            check_finite(f.name, value)
        for text in value if isinstance(value, (tuple, list)) else [value]:
            if isinstance(text, str) and any(c in text for c in LINE_BREAKS):
                raise ValueError(f"{f.name}={value!r}: expected text on one line (no line break or NUL)")
        if isinstance(value, dict) and not all(isinstance(k, str) and k.isidentifier() for k in value):
            raise ValueError(f"{f.name}={value!r}: expected names as keys (keyword arguments such as alpha)")


# what str.splitlines breaks at, and NUL (no path holds one)
LINE_BREAKS = ("\n", "\r", "\x00", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029")


def finite_float(text: str) -> float:
    """argparse type for a float flag of a tool (bench, tiny): refuses 'nan', 'inf' and '-inf' at parsing."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a finite number")
    return value


# ---------------------------------------------------------------- strict JSON out
def finite_or_null(obj):
    """`obj` with every float that is not finite replaced by None (JSON null), in nested dicts, lists and tuples."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_null(v) for v in obj]
    return obj


def json_text(obj, **kw) -> str:
    """json.dumps for every JSON diffcore writes: strict (allow_nan=False), a non-finite float written as null
    (also inside what a `default=` function returns)."""
    if kw.get("default") is not None:
        default = kw.pop("default")
        kw["default"] = lambda o: finite_or_null(default(o))
    return json.dumps(finite_or_null(obj), allow_nan=False, **kw)
