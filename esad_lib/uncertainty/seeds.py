"""Intervals over training seeds: a Student-t interval over seeds, and seeds combined with the
bootstrap over test images (law of total variance)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist
from typing import Any

import numpy as np

from esad_lib.uncertainty.resampling import METHOD_BOOT, _summary


def aggregate_seeds(values: Sequence[float], level: float = 0.95) -> dict[str, Any]:
    """Mean over training seeds and a Student-t interval across seeds (NaN for one seed): the spread
    due to training randomness on the fixed test set (see ``seed_image_interval`` for both)."""
    from scipy import stats as sps

    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=np.float64)
    if v.size == 0:
        raise ValueError("aggregate_seeds: no finite values")
    mean = float(v.mean())
    std = half = math.nan
    if v.size > 1:
        std = float(v.std(ddof=1))
        # low, high = mean -+ t_{S-1, (1+level)/2} * s / sqrt(S)  (s: sample std, ddof 1)
        half = float(sps.t.ppf(0.5 * (1.0 + level), v.size - 1)) * std / math.sqrt(v.size)
    one = "one seed: no interval across seeds"
    method = f"Student-t interval across {v.size} seeds" if v.size > 1 else one
    return {"value": mean, "low": mean - half, "high": mean + half, "std": std, "n_seeds": int(v.size),
            "level": level, "method": method}  # fmt: skip


def seed_image_interval(
    values: Sequence[float], samples: np.ndarray, level: float = 0.95,
    bounds: tuple[float, float] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Interval of the seed mean that covers both training seeds and test images.

    values ``[S]``: the metric of each seed; samples ``[S, B]``: each seed's bootstrap values from
    the SAME resamples (column b: one resample of the test set for all seeds).  With S = 1: the
    percentile interval of the images alone.  ``bounds``: the metric's range, e.g. (0, 1) for an
    AUROC; the normal interval is clipped to it (clipping only removes impossible values).
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    s = np.asarray(samples, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] != v.size:
        raise ValueError(f"samples must be [S, B] with S = {v.size} seeds, got {s.shape}")
    mean = float(v.mean())
    seed_mean_boot = s.mean(axis=0)
    if v.size == 1:
        return _summary(mean, seed_mean_boot, level, METHOD_BOOT + " (one seed)", n_seeds=1)
    img_var = float(np.nanvar(seed_mean_boot, ddof=1))
    seed_var = float(v.var(ddof=1))
    # se^2 = s^2_seed / S + Var_b(mean_s samples[s, b])  (law of total variance; the per-resample
    # seed mean keeps the correlation of seeds that share the test images)
    se = math.sqrt(seed_var / v.size + img_var)
    z = NormalDist().inv_cdf(0.5 * (1.0 + level))
    low, high = mean - z * se, mean + z * se
    if bounds is not None:
        low, high = max(low, float(bounds[0])), min(high, float(bounds[1]))
    method = f"normal interval, seed variance ({v.size} seeds) + bootstrap image variance"
    return {"value": mean, "low": low, "high": high, "se": se, "se_seed": math.sqrt(seed_var / v.size),
            "se_image": math.sqrt(img_var), "n_seeds": int(v.size), "n_boot": int(s.shape[1]),
            "level": level, "method": method}  # fmt: skip
