"""Intervals over training seeds (a Student-t interval over seeds; seeds combined with the bootstrap
over test images by the law of total variance) and the test-set size a target interval needs.
The paper reports one training run per number; a seed is part of what a comparison of two methods
measures, so ``seed_image_interval`` covers both the seeds and the test images (docs/seeds.md)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
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
    mean, std, half, method = float(v.mean()), math.nan, math.nan, "one seed: no interval across seeds"
    if v.size > 1:
        std = float(v.std(ddof=1))
        # low, high = mean -+ t_{S-1, (1+level)/2} * s / sqrt(S)  (s: sample std, ddof 1)
        half = float(sps.t.ppf(0.5 * (1.0 + level), v.size - 1)) * std / math.sqrt(v.size)
        method = f"Student-t interval across {v.size} seeds"
    return {"value": mean, "low": mean - half, "high": mean + half, "std": std, "n_seeds": int(v.size),
            "level": level, "method": method}


def seed_image_interval(
    values: Sequence[float], samples: np.ndarray, level: float = 0.95,
    bounds: tuple[float, float] | None = None, satterthwaite: bool = False,
) -> dict[str, Any]:
    """Interval of the seed mean that covers both training seeds and test images from values ``[S]``
    (the metric of each seed) and samples ``[S, B]`` (each seed's bootstrap values from the SAME
    resamples: column b is one resample of the test set for all seeds).  With S = 1: the percentile
    interval of the images alone.  ``bounds``: the metric's range, e.g. (0, 1) for an AUROC; the
    interval is clipped to it (clipping only removes impossible values).  ``satterthwaite``: a
    Student-t quantile with Satterthwaite's degrees of freedom instead of the normal one (from S - 1
    when the seeds dominate to infinity when the images do; better coverage with few seeds, measured
    in benchmarks/seed_interval_coverage.py)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    s = np.asarray(samples, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] != v.size:
        raise ValueError(f"samples must be [S, B] with S = {v.size} seeds, got {s.shape}")
    mean = float(v.mean())
    seed_mean_boot = s.mean(axis=0)
    if v.size == 1:
        return _summary(mean, seed_mean_boot, level, METHOD_BOOT + " (one seed)", n_seeds=1)
    img_var, seed_var = float(np.nanvar(seed_mean_boot, ddof=1)), float(v.var(ddof=1))
    # se^2 = s^2_seed / S + Var_b(mean_s samples[s, b])  (law of total variance; the per-resample
    # seed mean keeps the correlation of seeds that share the test images)
    se = math.sqrt(seed_var / v.size + img_var)
    z, df = NormalDist().inv_cdf(0.5 * (1.0 + level)), math.inf
    method = f"normal interval, seed variance ({v.size} seeds) + bootstrap image variance"
    if satterthwaite and seed_var > 0.0:
        from scipy import stats as sps

        # df = se^4 / ((s^2_seed / S)^2 / (S - 1))  (the image part's df taken as infinite)
        df = se**4 / ((seed_var / v.size) ** 2 / (v.size - 1))
        z = float(sps.t.ppf(0.5 * (1.0 + level), df))
        method = method.replace("normal interval", f"Student-t interval (Satterthwaite df {df:.1f})")
    low, high = mean - z * se, mean + z * se
    if bounds is not None:
        low, high = max(low, float(bounds[0])), min(high, float(bounds[1]))
    return {"value": mean, "low": low, "high": high, "se": se, "se_seed": math.sqrt(seed_var / v.size),
            "se_image": math.sqrt(img_var), "n_seeds": int(v.size), "n_boot": int(s.shape[1]),
            "level": level, "df": df, "method": method}


def combine_seeds(
    per_seed: Sequence[Mapping[str, Mapping]], level: float = 0.95, bounds: tuple[float, float] = (-1.0, 1.0)
) -> dict[str, dict]:
    """Paired differences of several training seeds, one ``seed_image_interval`` (Satterthwaite's t) per
    key every seed has: ``per_seed[s][key]``, seed s's difference dict (``diff`` and its bootstrap
    ``samples [B]``, the SAME resamples for every seed; keys such as categories and ``"mean"``) ->
    ``{key: interval + diff, excludes_zero}``.  ``bounds``: the range of the difference ([-1, 1])."""
    out: dict[str, dict] = {}
    for k in [k for k in per_seed[0] if all(k in p for p in per_seed)]:
        samples = np.stack([p[k]["samples"] for p in per_seed])
        r = seed_image_interval([p[k]["diff"] for p in per_seed], samples, level, bounds, satterthwaite=True)
        out[k] = {**r, "diff": r["value"], "excludes_zero": bool(r["low"] > 0.0 or r["high"] < 0.0)}
    return out


def images_for_halfwidth(
    se_image: float, n_now: int, half_width: float, level: float = 0.95, se_seed: float = 0.0
) -> float:
    """Test images per type that bring the interval's half-width ``z * se`` down to ``half_width``.
    Model: the bootstrap SE over test images scales as 1/sqrt(n) with n images per type (good and
    anomalous alike), the seeds' part does not:  z^2 (se_seed^2 + se_image^2 n_now / n) <= h^2, so
    n = ceil(n_now se_image^2 / ((h / z)^2 - se_seed^2))  (= ceil(n_now (z se_image / h)^2) for one
    seed).  ``math.inf`` when the seeds' part alone is wider (more seeds are needed, not images)."""
    if se_image < 0 or se_seed < 0 or n_now < 1 or half_width <= 0:
        raise ValueError(f"need se >= 0, n_now >= 1, half_width > 0; got {se_image}, {n_now}, {half_width}")
    z = NormalDist().inv_cdf(0.5 * (1.0 + level))
    room = (half_width / z) ** 2 - se_seed**2
    if room <= 0:
        return math.inf
    return float(math.ceil(n_now * se_image**2 / room - 1e-9))
