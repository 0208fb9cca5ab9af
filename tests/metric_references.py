"""Brute-force twins of ``esad_lib.metrics`` (loops over every threshold, everything recounted):
what the tests and the metrics benchmark compare the fast implementations with."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from esad_lib.metrics import _channel_regions, _defect_lookup


def area_under_curve_reference(x: Sequence[float], y: Sequence[float], x_max: float) -> float:
    """Brute-force twin of ``area_under_curve``: walk the segments, clip the one crossing x_max."""
    area = 0.0
    for i in range(len(x) - 1):
        x0, x1, y0, y1 = float(x[i]), float(x[i + 1]), float(y[i]), float(y[i + 1])
        if x0 >= x_max:
            break
        if x1 > x_max:
            y1 = y0 + (y1 - y0) * (x_max - x0) / (x1 - x0)
            x1 = x_max
        area += (x1 - x0) * (y0 + y1) / 2.0
    return area / x_max


def roc_reference(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC area by looping over every distinct threshold (score >= t is positive)."""
    n_pos = int(positive.sum())
    n_neg = int((~positive).sum())
    xs, ys = [0.0], [0.0]
    for t in sorted(set(scores.tolist()), reverse=True):
        pred = scores >= t
        ys.append(float(np.sum(pred & positive)) / n_pos)
        xs.append(float(np.sum(pred & ~positive)) / n_neg)
    return area_under_curve_reference(xs, ys, 1.0)


def image_auroc_reference(scores, labels) -> float:
    """Brute-force image AUROC: ROC points at every distinct threshold, trapezoid rule."""
    return roc_reference(np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(bool))


def pixel_auroc_reference(maps: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> float:
    """Brute-force pixel AUROC: ROC points at every distinct threshold, trapezoid rule."""
    scores = np.concatenate([np.ravel(m) for m in maps]).astype(np.float64)
    positive = np.concatenate([np.ravel(g).astype(bool) for g in masks])
    return roc_reference(scores, positive)


def overlap_curve_reference(
    maps: list[np.ndarray], negatives: list[np.ndarray], regions: list[tuple[int, np.ndarray, float]]
) -> tuple[np.ndarray, np.ndarray]:
    """Brute force: for every distinct score t (descending) count everything again."""
    n_neg = sum(int(n.sum()) for n in negatives)
    xs, ys = [0.0], [0.0]
    for t in np.unique(np.concatenate([m.ravel() for m in maps]))[::-1]:
        fp = sum(int(np.sum((m >= t) & n)) for m, n in zip(maps, negatives))
        overlaps = [min(np.sum((maps[i] >= t) & mask) / sat, 1.0) for i, mask, sat in regions]
        xs.append(fp / n_neg)
        ys.append(float(np.mean(overlaps)))
    return np.asarray(xs), np.asarray(ys)


def au_pro_reference(maps, masks, fpr_limit: float = 0.3) -> float:
    """Brute-force AU-PRO: recount every region at every distinct threshold."""
    from scipy import ndimage

    regions = []
    for i, g in enumerate(masks):
        lab, n = ndimage.label(g, structure=np.ones((3, 3), int))
        regions += [(i, lab == k, float((lab == k).sum())) for k in range(1, n + 1)]
    fpr, pro = overlap_curve_reference(list(maps), [~g for g in masks], regions)
    return area_under_curve_reference(fpr, pro, fpr_limit)


def spro_curve_reference(
    maps: Sequence[np.ndarray],
    channels: Sequence[np.ndarray],
    defects: Any,
    defect_names: Iterable[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force sPRO curve: every distinct threshold, every channel recounted."""
    maps_l = [np.asarray(m) for m in maps]
    only = None if defect_names is None else set(defect_names)
    lookup, negatives, regions = _defect_lookup(defects), [], []
    for i, (m, ch) in enumerate(zip(maps_l, channels)):
        union, regs = _channel_regions(i, np.asarray(ch), m.shape, lookup)
        negatives.append(np.ones(m.shape, bool) if union is None else ~union)
        regions += [(i, mask, sat) for mask, sat, name in regs if only is None or name in only]
    return overlap_curve_reference(maps_l, negatives, regions)


def au_spro_reference(
    maps: Sequence[np.ndarray],
    channels: Sequence[np.ndarray],
    defects: Any,
    fpr_limit: float = 0.05,
    defect_names: Iterable[str] | None = None,
) -> float:
    """Brute-force AU-sPRO (reference for the tests and the benchmark)."""
    fpr, spro = spro_curve_reference(maps, channels, defects, defect_names)
    return area_under_curve_reference(fpr, spro, fpr_limit)


def image_defect_names(channels: np.ndarray, defects: Any) -> set[str]:
    """Names of the defects that image's non-empty channels ``uint8 [C,H,W]`` mark."""
    lookup = _defect_lookup(defects)
    ch = channels[None] if channels.ndim == 2 else channels
    return {lookup[v][0] for v in (int(c.max()) if c.size else 0 for c in ch) if v and v in lookup}
