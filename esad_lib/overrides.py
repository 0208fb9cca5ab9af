"""Config overrides from text: ``--set key=value`` of ``esad train`` and ``esad ablate``.

Each value is converted with the type of its ``ESADConfig`` field (``int``, ``float``, ``bool`` as
true/false, tuples as comma-separated values with optional brackets, ``none`` for optional fields,
a text setting as one of its allowed values); anything else is a clear error naming the field.
"""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any

from esad_lib.config import ESADConfig

_BOOLS = {**dict.fromkeys(("true", "1", "yes", "on"), True),
          **dict.fromkeys(("false", "0", "no", "off"), False)}


def _did_you_mean(word: str, options: Any, n: int = 1) -> str:
    close = difflib.get_close_matches(word, list(options), n=n)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def _convert_tuple(name: str, text: str, args: tuple) -> tuple:
    items = [t.strip() for t in text.strip().strip("()[]").split(",") if t.strip()]
    if args[-1] is Ellipsis:
        args = (args[0],) * len(items)
    elif len(items) != len(args):
        raise ValueError(f"--set {name}: expected {len(args)} comma-separated values, got {text!r}")
    return tuple(convert_value(name, t, a) for t, a in zip(items, args))


def convert_value(name: str, text: str, tp: Any) -> Any:
    """``text`` converted to the type ``tp`` of config field ``name`` (clear error otherwise)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    word = text.strip()
    if origin in (typing.Union, types.UnionType):  # an optional field: ``X | None``
        if word.lower() in ("none", "null"):
            return None
        return convert_value(name, text, next(a for a in args if a is not type(None)))
    if origin is tuple:
        return _convert_tuple(name, text, args)
    if origin is typing.Literal:
        if word not in args:
            hint = _did_you_mean(word, args)
            raise ValueError(f"--set {name}: {word!r} is not one of: {', '.join(args)}{hint}")
        return word
    if tp is bool:
        if word.lower() not in _BOOLS:
            raise ValueError(f"--set {name}: expected true/false, got {text!r}")
        return _BOOLS[word.lower()]
    if tp is str:
        return text
    try:
        return tp(text)
    except ValueError:
        what = "an integer" if tp is int else "a number"
        raise ValueError(f"--set {name}: expected {what}, got {text!r}") from None


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["lr=1e-3", "cutout_sizes=2,4"]`` -> ``{"lr": 0.001, "cutout_sizes": (2, 4)}``."""
    types_ = typing.get_type_hints(ESADConfig)
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, text = item.split("=", 1)
        key = key.strip()
        if key not in types_:
            raise ValueError(f"--set: unknown config field {key!r}{_did_you_mean(key, types_, n=3)}")
        out[key] = convert_value(key, text, types_[key])
    return out
