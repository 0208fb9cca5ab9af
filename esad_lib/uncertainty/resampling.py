"""Stratified bootstrap resamples over test images, as multiplicity weights, the percentile interval
(the sampling scheme every interval of :mod:`esad_lib.uncertainty` shares) and its text for the
tables: ``"76.9 [72.1, 81.4]"`` and ``"+3.2 [-1.0, 7.5] *"``."""

from __future__ import annotations

import math
import zlib
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from esad_lib.metrics import ANOMALY_TYPES

DEFAULT_N_BOOT = 2000
METHOD_BOOT = "stratified bootstrap over test images, percentile interval"
METHOD_PAIRED = "paired stratified bootstrap over test images, percentile interval"


def resample_indices(strata: Sequence[Hashable], n_boot: int = DEFAULT_N_BOOT, seed: int = 0) -> np.ndarray:
    """Stratified bootstrap resamples as image indices ``int64 [B, N]``: position i of row b holds an
    image drawn with replacement from image i's stratum (``strata[idx[b]] == strata``).
    Deterministic in ``(strata, n_boot, seed)`` (strata drawn in sorted order)."""
    s = np.asarray(strata)
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"strata must be a non-empty 1-D sequence of labels, got shape {s.shape}")
    if int(n_boot) < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    idx = np.empty((int(n_boot), s.size), dtype=np.int64)
    for value in np.unique(s):
        members = np.flatnonzero(s == value)
        idx[:, members] = members[rng.integers(0, members.size, size=(int(n_boot), members.size))]
    return idx


def category_seed(seed: int, category: str) -> int:
    """The resampling seed of one category: ``seed`` in the high bits, the CRC-32 of the name in the low
    ones, so that categories with the same strata sizes draw independent resamples (one shared seed
    would correlate their bootstrap samples and distort the spread of a mean over categories)."""
    return (int(seed) << 32) | zlib.crc32(str(category).encode())


def resample_weights(indices: np.ndarray, n: int | None = None) -> np.ndarray:
    """Multiplicities of each image per resample: ``int64 [B, N]`` from indices ``[B, N]``."""
    # w[b, i] = #{j : indices[b, j] == i}  (each row sums to N)
    idx = np.asarray(indices, dtype=np.int64)
    b, m = idx.shape
    n = m if n is None else int(n)
    flat = (idx + (np.arange(b, dtype=np.int64) * n)[:, None]).ravel()
    return np.bincount(flat, minlength=b * n).reshape(b, n)


def percentile_interval(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """(low, high) = the (1-level)/2 and (1+level)/2 percentiles of the finite ``samples``."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    s = np.asarray(samples, dtype=np.float64)
    s = s[np.isfinite(s)]
    if s.size == 0:
        return math.nan, math.nan
    lo, hi = np.percentile(s, [50.0 * (1.0 - level), 50.0 * (1.0 + level)])
    return float(lo), float(hi)


def _summary(value: float, samples: np.ndarray, level: float, method: str, **extra: Any) -> dict[str, Any]:
    lo, hi = percentile_interval(samples, level)
    finite = samples[np.isfinite(samples)]
    se = float(np.std(finite, ddof=1)) if finite.size > 1 else math.nan
    out = {"value": float(value), "low": lo, "high": hi, "se": se, "level": float(level),
           "n_boot": int(samples.size), "method": method}
    if finite.size < samples.size:
        out["n_undefined"] = int(samples.size - finite.size)
    out.update(extra)
    return out


def type_summaries(
    a: tuple[dict, dict], b: tuple[dict, dict] | None = None, level: float = 0.95,
    return_samples: bool = False, extra: Mapping[str, dict] | None = None,
) -> dict[str, dict[str, Any] | None]:
    """``{type: interval}`` for each anomaly type and "mean" from ``a = ({type: value}, {type: samples
    [B]})`` (None: the type is absent); with ``b`` (the same resamples) the paired differences a - b
    (+ diff, a, b, excludes_zero).  ``extra[type]``: more entries of that type's interval."""
    out: dict[str, dict[str, Any] | None] = {}
    for k in (*ANOMALY_TYPES, "mean"):
        samples, more = a[1][k], (extra or {}).get(k, {})
        if samples is None:
            out[k] = None
        elif b is None:
            out[k] = _summary(a[0][k], samples, level, METHOD_BOOT, **more)
        else:
            samples = samples - b[1][k]
            d = _summary(a[0][k] - b[0][k], samples, level, METHOD_PAIRED, **more)
            out[k] = {**d, "diff": d["value"], "a": float(a[0][k]), "b": float(b[0][k]),
                      "excludes_zero": bool(d["low"] > 0.0 or d["high"] < 0.0)}
        if return_samples and out[k] is not None:
            out[k]["samples"] = samples
    return out


def _unpack(value: Any, low: Any, high: Any) -> tuple[float, float, float]:
    if isinstance(value, Mapping):
        v = value["diff"] if "diff" in value else value["value"]
        return float(v), float(value["low"]), float(value["high"])
    return float(value), math.nan if low is None else float(low), math.nan if high is None else float(high)


def _text(v: float, lo: float, hi: float, scale: float, digits: int, sign: str = "") -> str:
    if math.isnan(v):
        return "n/a"
    ci = "" if math.isnan(lo) or math.isnan(hi) else f" [{lo * scale:.{digits}f}, {hi * scale:.{digits}f}]"
    return f"{v * scale:{sign}.{digits}f}" + ci


def format_ci(
    value: Any, low: float | None = None, high: float | None = None, scale: float = 100.0, digits: int = 1
) -> str:
    """``"76.9 [72.1, 81.4]"`` (values x ``scale``; a dict with value/low/high works too).
    Without an interval (NaN bounds) just the value."""
    return _text(*_unpack(value, low, high), scale, digits)


def format_diff(
    value: Any, low: float | None = None, high: float | None = None, scale: float = 100.0, digits: int = 1
) -> str:
    """``"+3.2 [-1.0, 7.5]"`` for a difference (a dict with diff/low/high works too); `` *`` appended
    when the interval excludes 0."""
    v, lo, hi = _unpack(value, low, high)
    excludes_zero = not math.isnan(v) and (lo > 0.0 or hi < 0.0)  # NaN bounds compare False
    return _text(v, lo, hi, scale, digits, "+") + (" *" if excludes_zero else "")
