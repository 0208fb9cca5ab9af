"""Text of an interval for the tables: ``"76.9 [72.1, 81.4]"`` and ``"+3.2 [-1.0, 7.5] *"``."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def _unpack(value: Any, low: Any, high: Any) -> tuple[float, float, float]:
    if isinstance(value, Mapping):
        v = value["diff"] if "diff" in value else value["value"]
        return float(v), float(value["low"]), float(value["high"])
    return float(value), math.nan if low is None else float(low), math.nan if high is None else float(high)


def _text(v: float, lo: float, hi: float, scale: float, digits: int, sign: str) -> str:
    if math.isnan(v):
        return "n/a"
    s = f"{v * scale:{sign}.{digits}f}"
    return s if _open(lo, hi) else s + f" [{lo * scale:.{digits}f}, {hi * scale:.{digits}f}]"


def _open(lo: float, hi: float) -> bool:
    return math.isnan(lo) or math.isnan(hi)


def format_ci(
    value: Any, low: float | None = None, high: float | None = None, scale: float = 100.0, digits: int = 1
) -> str:
    """``"76.9 [72.1, 81.4]"`` (values x ``scale``; a dict with value/low/high works too).
    Without an interval (NaN bounds) just the value."""
    return _text(*_unpack(value, low, high), scale, digits, "")


def format_diff(
    value: Any, low: float | None = None, high: float | None = None, scale: float = 100.0, digits: int = 1,
    marker: str = "*",
) -> str:  # fmt: skip
    """``"+3.2 [-1.0, 7.5]"`` for a difference; ``marker`` appended when the interval excludes 0."""
    v, lo, hi = _unpack(value, low, high)
    s = _text(v, lo, hi, scale, digits, "+")
    return s + f" {marker}" if not (math.isnan(v) or _open(lo, hi)) and (lo > 0.0 or hi < 0.0) else s
