"""Image AUROC (the paper's metric) with its stratified-bootstrap interval: one run, a paired comparison
of two runs on the same test images, and the per-anomaly-type (LOCO: structural / logical) versions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from esad_lib.metrics import ANOMALY_TYPES, type_groups, type_mean
from esad_lib.uncertainty.resampling import (
    DEFAULT_N_BOOT,
    METHOD_BOOT,
    _summary,
    resample_indices,
    resample_weights,
    type_summaries,
)


def _binary_labels(labels: Any) -> np.ndarray:
    lab = np.asarray(labels).ravel()
    if lab.size and not set(np.unique(lab).tolist()) <= {0, 1}:
        got = sorted(set(lab.tolist()))[:5]
        raise ValueError(f"labels must be 0 (good) / 1 (anomalous), got values {got}")
    lab = lab.astype(bool)
    if not lab.any() or lab.all():
        raise ValueError("labels: image AUROC needs both good (0) and anomalous (1) images")
    return lab


def weighted_auroc(scores: Sequence[float], labels: Sequence[int], weights: np.ndarray) -> np.ndarray:
    """Image AUROC of every resample at once (weighted Mann-Whitney), ``float64 [B]`` from scores ``[N]``,
    labels ``[N]`` (1 anomalous) and weights ``[B, N]`` (multiplicities; 1-D: one resample): equals
    ``metrics.image_auroc`` on the images repeated w times, in O(B (N + K)) for K distinct scores;
    integer weights are summed in int64 (exact) and divided once."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    pos = _binary_labels(labels)
    w = np.atleast_2d(np.asarray(weights))
    if s.shape != pos.shape or w.ndim != 2 or w.shape[1] != s.size:
        raise ValueError(f"scores {s.shape}, labels {pos.shape}, weights {w.shape}: must be [N], [N], [B, N]")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinite values")
    integer = np.issubdtype(w.dtype, np.integer)
    w = w if integer else w.astype(np.float64)
    b = w.shape[0]
    uniq, inv = np.unique(s, return_inverse=True)
    k = uniq.size
    # negative weight per distinct score and resample: wn[b, k] = sum_{g: s_g = u_k} w_bg
    flat = (inv[~pos][None, :] + (np.arange(b) * k)[:, None]).ravel()
    wn = np.bincount(flat, weights=w[:, ~pos].ravel(), minlength=b * k).reshape(b, k)
    if integer:
        wn = np.rint(wn).astype(np.int64)  # bincount sums in float64: exact for counts < 2**53
    # below[b, k] = sum of negative weights at scores < u_k  (exclusive cumulative sum)
    below = np.cumsum(wn, axis=1) - wn
    # AUROC_b = sum_{p pos} w_bp [sum_{g neg} w_bg (1[s_g < s_p] + 0.5 1[s_g = s_p])] / (sum w_bp sum w_bg)
    # 2 * sum_p w_p (#below + 0.5 #equal) = sum_p w_p (2 below + equal)
    wp, pos_idx = w[:, pos], inv[pos]
    num2 = np.sum(wp * (2 * below[:, pos_idx] + wn[:, pos_idx]), axis=1)
    den2 = 2 * wp.sum(axis=1) * w[:, ~pos].sum(axis=1)
    return num2 / den2


def _with_resamples(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> tuple[float, np.ndarray]:
    """(image AUROC of the images, of each resample ``[B]``) from multiplicities ``[B, N]``."""
    ones = np.ones(weights.shape[1], dtype=np.int64)
    return float(weighted_auroc(scores, labels, ones)[0]), weighted_auroc(scores, labels, weights)


def image_auroc_ci(
    scores: Sequence[float], labels: Sequence[int], n_boot: int = DEFAULT_N_BOOT, seed: int = 0,
    level: float = 0.95, return_samples: bool = False,
) -> dict[str, Any]:
    """Image AUROC (``value`` == ``metrics.image_auroc``) with its stratified-bootstrap percentile
    interval: value, low, high, se, level, n_boot, method, n_good, n_anomalous (+ samples [B])."""
    lab = _binary_labels(labels)
    value, boot = _with_resamples(scores, lab, resample_weights(resample_indices(lab, n_boot, seed)))
    out = _summary(value, boot, level, METHOD_BOOT, n_good=int((~lab).sum()), n_anomalous=int(lab.sum()))
    if return_samples:
        out["samples"] = boot
    return out


def check_paired(
    labels_a: Sequence[Any], labels_b: Sequence[Any], ids_a: Sequence[Any] | None = None,
    ids_b: Sequence[Any] | None = None, what: str = "the two methods",
) -> None:
    """Raise ``ValueError`` unless both sides hold the same images (ids) in the same order with
    the same labels -- the precondition of a paired comparison."""
    la, lb = np.asarray(labels_a).ravel(), np.asarray(labels_b).ravel()
    pre = f"paired comparison of {what}:"
    if la.size != lb.size:
        raise ValueError(f"{pre} {la.size} vs {lb.size} images; score the same test set")
    if (ids_a is None) != (ids_b is None):
        raise ValueError(f"{pre} pass image ids for both sides or for neither")
    if ids_a is not None:
        ia, ib = [str(x) for x in ids_a], [str(x) for x in ids_b]
        if len(ia) != la.size or len(ib) != lb.size:
            raise ValueError(f"{pre} ids and labels differ in length")
        if ia != ib and sorted(ia) == sorted(ib):
            raise ValueError(f"{pre} same images in a different order; sort both alike")
        if ia != ib:
            first = next(i for i, (x, y) in enumerate(zip(ia, ib)) if x != y)
            raise ValueError(f"{pre} different images (first difference at row {first}: {ia[first]!r} vs "
                             f"{ib[first]!r}); both must be scored on the same test images")
    differ = np.flatnonzero(la.astype(str) != lb.astype(str))
    if differ.size:
        first = int(differ[0])
        raise ValueError(f"{pre} labels differ at row {first} ({la[first]!r} vs {lb[first]!r})")


def auroc_by_type_resampled(
    scores: np.ndarray, names: np.ndarray, weights: np.ndarray
) -> tuple[dict[str, float | None], dict[str, np.ndarray | None]]:
    """Image AUROC of good vs each anomaly type (``metrics.type_groups``) and their mean (per resample),
    ``({type: value}, {type: samples [B]})`` (None: no images) from scores ``[N]``, names ``[N]``
    ("good" / "structural" / "logical") and weights ``[B, N]``; shared ``weights`` pair two methods."""
    has_good = bool((names == "good").any())
    values: dict[str, float | None] = {}
    samples: dict[str, np.ndarray | None] = {}
    for kind, idx in type_groups(names).items():
        values[kind] = samples[kind] = None
        if idx is not None and has_good:
            lab = (names[idx] == kind).astype(int)
            values[kind], samples[kind] = _with_resamples(scores[idx], lab, weights[:, idx])
    values["mean"], samples["mean"] = type_mean(values), type_mean(samples)
    return values, samples


def _check_names(label_names: Sequence[str], arg: str = "label_names") -> np.ndarray:
    names = np.asarray([str(n) for n in label_names])
    bad = sorted(set(names.tolist()) - {"good", *ANOMALY_TYPES})
    if bad:
        raise ValueError(f"{arg}: unknown label(s) {bad}; expected 'good', 'structural', 'logical'")
    return names


def image_auroc_ci_by_type(
    scores: Sequence[float], label_names: Sequence[str], n_boot: int = DEFAULT_N_BOOT, seed: int = 0,
    level: float = 0.95, return_samples: bool = False,
) -> dict[str, dict[str, Any] | None]:
    """``metrics.image_auroc_by_type`` with intervals: ``{"structural", "logical", "mean"}``; one
    stratified resample serves all three (``mean``: per resample); a type without images: None."""
    return _by_type(_check_names(label_names), [scores], n_boot, seed, level, return_samples)


def paired_image_auroc_by_type(
    scores_a: Sequence[float], names_a: Sequence[str], scores_b: Sequence[float], names_b: Sequence[str],
    ids_a: Sequence[Any] | None = None, ids_b: Sequence[Any] | None = None, n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0, level: float = 0.95, return_samples: bool = False,
) -> dict[str, dict[str, Any] | None]:
    """Paired differences ``a - b`` of ``image_auroc_ci_by_type``'s three AUROCs."""
    check_paired(names_a, names_b, ids_a, ids_b)
    names = _check_names(names_a, "names_a")
    return _by_type(names, [scores_a, scores_b], n_boot, seed, level, return_samples)


def _by_type(
    names: np.ndarray, sides: list, n_boot: int, seed: int, level: float, return_samples: bool
) -> dict[str, dict[str, Any] | None]:
    """The intervals of one side's scores, or of the differences of two sides on the same resamples."""
    scores = [np.asarray(s, dtype=np.float64).ravel() for s in sides]
    if any(s.size != names.size for s in scores):
        raise ValueError(f"got {' / '.join(str(s.size) for s in scores)} scores but {names.size} label names")
    w = resample_weights(resample_indices(names, n_boot, seed))
    n = {k: {"n_images": int(names.size)} for k in (*ANOMALY_TYPES, "mean")}
    a, *b = [auroc_by_type_resampled(s, names, w) for s in scores]
    return type_summaries(a, b[0] if b else None, level, return_samples, n)
