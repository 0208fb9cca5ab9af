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
#: scalar field types: converter and what the error says was expected.
_SCALARS: dict[type, tuple[Any, str]] = {int: (int, "an integer"), float: (float, "a number"),
                                         str: (str, "text")}


def _convert_optional(name: str, text: str, tp: Any, args: tuple) -> Any:
    if text.strip().lower() in ("none", "null") and type(None) in args:
        return None
    non_none = [a for a in args if a is not type(None)]
    if len(non_none) != 1:
        raise ValueError(f"--set {name}: unsupported field type {tp}")
    return convert_value(name, text, non_none[0])


def _convert_tuple(name: str, text: str, args: tuple) -> tuple:
    items = [t.strip() for t in text.strip().strip("()[]").split(",") if t.strip()]
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(convert_value(name, t, args[0]) for t in items)
    if len(items) != len(args):
        raise ValueError(f"--set {name}: expected {len(args)} comma-separated values, got {text!r}")
    return tuple(convert_value(name, t, a) for t, a in zip(items, args))


def _convert_choice(name: str, text: str, allowed: tuple[str, ...]) -> str:
    value = text.strip()
    if value not in allowed:
        close = difflib.get_close_matches(value, allowed, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ValueError(f"--set {name}: {value!r} is not one of: {', '.join(allowed)}{hint}")
    return value


def convert_value(name: str, text: str, tp: Any) -> Any:
    """``text`` converted to the type ``tp`` of config field ``name`` (clear error otherwise)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return _convert_optional(name, text, tp, args)
    if origin is tuple:
        return _convert_tuple(name, text, args)
    if origin is typing.Literal:
        return _convert_choice(name, text, args)
    if tp is bool:
        if text.strip().lower() not in _BOOLS:
            raise ValueError(f"--set {name}: expected true/false, got {text!r}")
        return _BOOLS[text.strip().lower()]
    if tp not in _SCALARS:
        raise ValueError(f"--set {name}: unsupported field type {tp}")
    conv, what = _SCALARS[tp]
    try:
        return conv(text)
    except ValueError:
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
            close = difflib.get_close_matches(key, list(types_), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ValueError(f"--set: unknown config field {key!r}{hint}")
        out[key] = convert_value(key, text, types_[key])
    return out
