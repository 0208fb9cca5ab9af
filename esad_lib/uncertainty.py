"""Uncertainty of the evaluation metrics (paper Sec. 4's image AUROC and MVTec LOCO's AU-sPRO).

The paper reports point estimates only.  With 40 good and 40 anomalous test images, one
standard error of a per-category image AUROC is about 5 points, so a difference between two
variants means little without an interval.  This module supplies the intervals; the tables
call it with per-image arrays and get small dicts back.

Methods (all 95 % by default, ``level``):

* **Stratified bootstrap over test images.**  The test images are the sampling unit.  Each
  resample draws, *within every stratum* (label: good / structural / logical, or 0 / 1), as
  many images as the stratum holds, uniformly with replacement; the stratum sizes are therefore
  the same in every resample (AUROC is always defined).  A resample is stored as a vector of
  multiplicities ``w [N]`` (how often each image was drawn), and every metric is computed in
  its *weighted* form, so that all ``B`` resamples (default 2000) are a few array operations.
  The interval is the **percentile interval**: the (1-level)/2 and (1+level)/2 quantiles of the
  ``B`` bootstrap values (``numpy.percentile``, linear interpolation).  It stays inside [0, 1]
  and is transformation-respecting; it is not bias-corrected.  BCa is not implemented (its
  acceleration needs a jackknife per stratum; on 40 + 40 images the percentile interval's
  coverage is checked in the tests instead: about 95 % on a synthetic problem).
* **Paired comparison.**  Two methods scored on the SAME test images get the SAME resample
  weights; the interval of the per-resample differences ``a - b`` is the paired interval (much
  narrower than two independent intervals: image difficulty is shared).  The inputs must hold
  the same images in the same order with the same labels, or a ``ValueError`` says what differs.
* **AU-sPRO** (``esad_lib.metrics.au_spro`` semantics) via per-image sufficient statistics on a
  fixed threshold grid (see :func:`spro_statistics`): per-region saturated overlap ``[R, T]``
  and per-image false-positive counts ``[N, T]``; a resampled curve is a weighted average, i.e.
  two matrix products, integrated up to the FPR limit with ``metrics.area_under_curve``'s rule.
* **Seeds.**  :func:`aggregate_seeds`: mean over training seeds and a Student-t interval
  ``mean +- t_{S-1, (1+level)/2} s / sqrt(S)`` (S >= 2; none with one seed).  It describes
  training randomness on this fixed test set only.  :func:`seed_image_interval` combines seeds
  and test images: all seeds are scored on the same test images, so their bootstrap resamples
  (same ``seed`` argument) are paired and the image variance of the seed mean is the variance of
  the per-resample seed means; by the law of total variance
  ``Var(mean) ~= s^2_seed / S + Var_images(mean)``, and the interval is the normal one
  ``mean +- z se``.  (An approximation: it assumes the seed mean is roughly normal.)

Use (every function takes per-image arrays and returns a small dict: value, low, high, se, ...)::

    ci = image_auroc_ci_by_type(result.scores, result.label_names)   # {"structural": {...}, ...}
    format_ci(ci["structural"])                                       # "76.9 [72.1, 81.4]"
    d = paired_image_auroc_by_type(a.scores, a.label_names, b.scores, b.label_names, a.paths, b.paths)
    format_diff(d["structural"])                  # "+3.2 [-1.0, 7.5]" (+ " *" when it excludes 0)
    au_spro_ci_by_type(full_res_maps, result.channels, result.label_names, defects)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

from esad_lib.metrics import _as_list, _iter_channels, _score_dtype

__all__ = [
    "DEFAULT_N_BOOT",
    "SproStats",
    "aggregate_seeds",
    "auroc_by_type_resampled",
    "au_spro_ci",
    "au_spro_ci_by_type",
    "check_paired",
    "format_ci",
    "format_diff",
    "image_auroc_ci",
    "image_auroc_ci_by_type",
    "paired_au_spro",
    "paired_image_auroc",
    "paired_image_auroc_by_type",
    "percentile_interval",
    "resample_indices",
    "resample_weights",
    "seed_image_interval",
    "spro_statistics",
    "weighted_au_spro",
    "weighted_auroc",
]

DEFAULT_N_BOOT = 2000
ANOMALY_TYPES = ("structural", "logical")
METHOD_BOOT = "stratified bootstrap over test images, percentile interval"
METHOD_PAIRED = "paired stratified bootstrap over test images, percentile interval"


# ---- resampling ------------------------------------------------------------------------------
def resample_indices(strata: Sequence[Hashable], n_boot: int = DEFAULT_N_BOOT, seed: int = 0) -> np.ndarray:
    """Stratified bootstrap resamples as image indices: ``int64 [B, N]``.

    Row b is one resample: position i holds an image drawn uniformly with replacement from the
    images of the same stratum as image i, so ``strata[idx[b]] == strata`` for every row (the
    stratum counts are those of the data).  Deterministic in ``(strata, n_boot, seed)``
    (``numpy.random.default_rng(seed)``; strata are drawn in sorted order of their values).
    """
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


def resample_weights(indices: np.ndarray, n: int | None = None) -> np.ndarray:
    """Multiplicities of each image per resample: ``int64 [B, N]`` from indices ``[B, N]``.

    w[b, i] = #{j : indices[b, j] == i}  (each row sums to N).
    """
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
    out = {
        "value": float(value),
        "low": lo,
        "high": hi,
        "se": float(np.std(finite, ddof=1)) if finite.size > 1 else math.nan,
        "level": float(level),
        "n_boot": int(samples.size),
        "method": method,
    }
    if finite.size < samples.size:
        out["n_undefined"] = int(samples.size - finite.size)
    out.update(extra)
    return out


def _diff_summary(a: float, b: float, samples: np.ndarray, level: float, **extra: Any) -> dict[str, Any]:
    out = _summary(a - b, samples, level, METHOD_PAIRED, **extra)
    out["diff"] = out["value"]
    out["a"], out["b"] = float(a), float(b)
    out["excludes_zero"] = bool(out["low"] > 0.0 or out["high"] < 0.0)
    return out


# ---- image AUROC --------------------------------------------------------------------------------
def _binary_labels(labels: Any, name: str = "labels") -> np.ndarray:
    lab = np.asarray(labels).ravel()
    if lab.size and not set(np.unique(lab).tolist()) <= {0, 1}:
        raise ValueError(
            f"{name} must be 0 (good) / 1 (anomalous), got values {sorted(set(lab.tolist()))[:5]}"
        )
    lab = lab.astype(bool)
    if not lab.any() or lab.all():
        raise ValueError(f"{name}: image AUROC needs both good (0) and anomalous (1) images")
    return lab


def weighted_auroc(scores: Sequence[float], labels: Sequence[int], weights: np.ndarray) -> np.ndarray:
    """Image AUROC of every resample at once (weighted Mann-Whitney): ``float64 [B]``.

    scores ``[N]``, labels ``[N]`` (1 anomalous), weights ``[B, N]`` (multiplicities; a 1-D
    weight vector is one resample).  With multiplicities w, the AUROC of the resampled set is
        AUROC_b = sum_{p pos} w_bp [ sum_{g neg} w_bg (1[s_g < s_p] + 0.5 1[s_g = s_p]) ]
                  / (sum_p w_bp * sum_g w_bg),
    i.e. ``metrics.image_auroc`` (and scikit-learn's ``roc_auc_score``) on the images repeated
    w times.  The inner sum is a cumulative sum of the negatives' weights over the sorted
    distinct scores, so the cost is O(B (N + K)) for K distinct scores, not O(B N+ N-).
    Integer weights are summed in int64 (exact) and divided once.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    pos = _binary_labels(labels)
    w = np.asarray(weights)
    if w.ndim == 1:
        w = w[None]
    if s.shape != pos.shape or w.ndim != 2 or w.shape[1] != s.size:
        raise ValueError(
            f"scores {s.shape}, labels {pos.shape} and weights {w.shape} must be [N], [N], [B, N]"
        )
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinite values")
    if not np.issubdtype(w.dtype, np.integer):
        w = w.astype(np.float64)
    b = w.shape[0]
    uniq, inv = np.unique(s, return_inverse=True)
    k = uniq.size
    neg_idx, pos_idx = inv[~pos], inv[pos]
    # negative weight per distinct score and resample: wn[b, k] = sum_{g: s_g = u_k} w_bg
    flat = (neg_idx[None, :] + (np.arange(b) * k)[:, None]).ravel()
    wn = np.bincount(flat, weights=w[:, ~pos].ravel(), minlength=b * k).reshape(b, k)
    if np.issubdtype(w.dtype, np.integer):
        wn = np.rint(wn).astype(np.int64)  # bincount sums in float64: exact for counts < 2**53
    # below[b, k] = sum of negative weights at scores < u_k  (exclusive cumulative sum)
    below = np.cumsum(wn, axis=1) - wn
    # 2 * sum_p w_p (#below + 0.5 #equal) = sum_p w_p (2 below + equal)
    wp = w[:, pos]
    num2 = np.sum(wp * (2 * below[:, pos_idx] + wn[:, pos_idx]), axis=1)
    den2 = 2 * wp.sum(axis=1) * w[:, ~pos].sum(axis=1)
    return num2 / den2


def image_auroc_ci(
    scores: Sequence[float],
    labels: Sequence[int],
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    level: float = 0.95,
    return_samples: bool = False,
) -> dict[str, Any]:
    """Image AUROC with its stratified-bootstrap percentile interval.

    Returns ``{"value", "low", "high", "se", "level", "n_boot", "method", "n_good",
    "n_anomalous"}`` (+ ``"samples"`` [B] with ``return_samples``).  ``value`` is the AUROC of
    the data themselves (== ``metrics.image_auroc``).
    """
    lab = _binary_labels(labels)
    w = resample_weights(resample_indices(lab, n_boot, seed))
    boot = weighted_auroc(scores, lab, w)
    value = float(weighted_auroc(scores, lab, np.ones(lab.size, dtype=np.int64))[0])
    out = _summary(value, boot, level, METHOD_BOOT, n_good=int((~lab).sum()), n_anomalous=int(lab.sum()))
    if return_samples:
        out["samples"] = boot
    return out


def check_paired(
    labels_a: Sequence[Any],
    labels_b: Sequence[Any],
    ids_a: Sequence[Any] | None = None,
    ids_b: Sequence[Any] | None = None,
    what: str = "the two methods",
) -> None:
    """Raise ``ValueError`` unless both sides hold the same images (ids) in the same order with
    the same labels -- the precondition of a paired comparison."""
    la, lb = np.asarray(labels_a).ravel(), np.asarray(labels_b).ravel()
    if la.size != lb.size:
        raise ValueError(
            f"paired comparison of {what}: {la.size} vs {lb.size} images; score the same test set"
        )
    if (ids_a is None) != (ids_b is None):
        raise ValueError(f"paired comparison of {what}: pass image ids for both sides or for neither")
    if ids_a is not None:
        ia, ib = [str(x) for x in ids_a], [str(x) for x in ids_b]
        if len(ia) != la.size or len(ib) != lb.size:
            raise ValueError(f"paired comparison of {what}: ids and labels differ in length")
        if ia != ib:
            if sorted(ia) == sorted(ib):
                raise ValueError(
                    f"paired comparison of {what}: same images in a different order; sort both alike"
                )
            first = next(i for i, (x, y) in enumerate(zip(ia, ib)) if x != y) if len(ia) == len(ib) else 0
            raise ValueError(
                f"paired comparison of {what}: different images (first difference at row {first}: "
                f"{ia[first]!r} vs {ib[first]!r}); both must be scored on the same test images"
            )
    if not np.array_equal(la.astype(str), lb.astype(str)):
        first = int(np.flatnonzero(la.astype(str) != lb.astype(str))[0])
        raise ValueError(
            f"paired comparison of {what}: labels differ at row {first} ({la[first]!r} vs {lb[first]!r})"
        )


def paired_image_auroc(
    scores_a: Sequence[float],
    labels_a: Sequence[int],
    scores_b: Sequence[float],
    labels_b: Sequence[int],
    ids_a: Sequence[Any] | None = None,
    ids_b: Sequence[Any] | None = None,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    level: float = 0.95,
    return_samples: bool = False,
) -> dict[str, Any]:
    """Difference of image AUROCs ``a - b`` of two methods on the same images, paired bootstrap.

    The same resample weights are applied to both score vectors.  Returns the ``_summary``
    keys plus ``"diff"`` (== ``"value"``), ``"a"``, ``"b"`` and ``"excludes_zero"`` (the
    interval lies entirely above or below 0).
    """
    check_paired(labels_a, labels_b, ids_a, ids_b)
    lab = _binary_labels(labels_a, "labels_a")
    w = resample_weights(resample_indices(lab, n_boot, seed))
    one = np.ones(lab.size, dtype=np.int64)
    a = float(weighted_auroc(scores_a, lab, one)[0])
    b = float(weighted_auroc(scores_b, lab, one)[0])
    boot = weighted_auroc(scores_a, lab, w) - weighted_auroc(scores_b, lab, w)
    out = _diff_summary(a, b, boot, level, n_good=int((~lab).sum()), n_anomalous=int(lab.sum()))
    if return_samples:
        out["samples"] = boot
    return out


def auroc_by_type_resampled(
    scores: np.ndarray, names: np.ndarray, weights: np.ndarray
) -> tuple[dict[str, float | None], dict[str, np.ndarray | None]]:
    """Image AUROC of good vs each anomaly type and their mean, on the data and per resample.

    scores ``[N]``, names ``[N]`` ("good" / "structural" / "logical"), weights ``[B, N]``
    (e.g. ``resample_weights(resample_indices(names, B, seed))``).  Returns
    ``({type: value}, {type: samples [B]})`` with types structural, logical, mean (None where
    a type has no images); ``mean`` is the per-resample mean of the types present.  Sharing
    ``weights`` between two methods gives paired samples.
    """
    good = names == "good"
    values: dict[str, float | None] = {}
    samples: dict[str, np.ndarray | None] = {}
    for kind in ANOMALY_TYPES:
        sel = good | (names == kind)
        if not (names == kind).any() or not good.any():
            values[kind], samples[kind] = None, None
            continue
        lab = (names[sel] == kind).astype(int)
        values[kind] = float(weighted_auroc(scores[sel], lab, np.ones(int(sel.sum()), dtype=np.int64))[0])
        samples[kind] = weighted_auroc(scores[sel], lab, weights[:, sel])
    present = [k for k in ANOMALY_TYPES if samples[k] is not None]
    if present:
        values["mean"] = float(np.mean([values[k] for k in present]))
        samples["mean"] = np.mean([samples[k] for k in present], axis=0)
    else:
        values["mean"], samples["mean"] = None, None
    return values, samples


def _check_names(label_names: Sequence[str], arg: str = "label_names") -> np.ndarray:
    names = np.asarray([str(n) for n in label_names])
    bad = sorted(set(names.tolist()) - {"good", *ANOMALY_TYPES})
    if bad:
        raise ValueError(f"{arg}: unknown label(s) {bad}; expected 'good', 'structural', 'logical'")
    return names


def image_auroc_ci_by_type(
    scores: Sequence[float],
    label_names: Sequence[str],
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    level: float = 0.95,
    return_samples: bool = False,
) -> dict[str, dict[str, Any] | None]:
    """``metrics.image_auroc_by_type`` with intervals: ``{"structural", "logical", "mean"}``.

    One stratified resample (strata = label names) serves all three, so the good images drawn
    are shared by the structural and the logical AUROC of a resample, and ``mean`` is the mean
    of the two per resample.  A type without images gives None.
    """
    names = _check_names(label_names)
    s = np.asarray(scores, dtype=np.float64).ravel()
    if s.size != names.size:
        raise ValueError(f"got {s.size} scores but {names.size} label names")
    w = resample_weights(resample_indices(names, n_boot, seed))
    values, samples = auroc_by_type_resampled(s, names, w)
    out: dict[str, dict[str, Any] | None] = {}
    for k in (*ANOMALY_TYPES, "mean"):
        if samples[k] is None:
            out[k] = None
            continue
        out[k] = _summary(values[k], samples[k], level, METHOD_BOOT, n_images=int(names.size))
        if return_samples:
            out[k]["samples"] = samples[k]
    return out


def paired_image_auroc_by_type(
    scores_a: Sequence[float],
    names_a: Sequence[str],
    scores_b: Sequence[float],
    names_b: Sequence[str],
    ids_a: Sequence[Any] | None = None,
    ids_b: Sequence[Any] | None = None,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    level: float = 0.95,
    return_samples: bool = False,
) -> dict[str, dict[str, Any] | None]:
    """Paired differences ``a - b`` of ``image_auroc_ci_by_type``'s three AUROCs."""
    check_paired(names_a, names_b, ids_a, ids_b)
    names = _check_names(names_a, "names_a")
    sa = np.asarray(scores_a, dtype=np.float64).ravel()
    sb = np.asarray(scores_b, dtype=np.float64).ravel()
    if sa.size != names.size or sb.size != names.size:
        raise ValueError(f"got {sa.size} / {sb.size} scores but {names.size} label names")
    w = resample_weights(resample_indices(names, n_boot, seed))
    va, boot_a = auroc_by_type_resampled(sa, names, w)
    vb, boot_b = auroc_by_type_resampled(sb, names, w)
    out: dict[str, dict[str, Any] | None] = {}
    for k in (*ANOMALY_TYPES, "mean"):
        if boot_a[k] is None:
            out[k] = None
            continue
        d = boot_a[k] - boot_b[k]
        out[k] = _diff_summary(va[k], vb[k], d, level, n_images=int(names.size))
        if return_samples:
            out[k]["samples"] = d
    return out


# ---- AU-sPRO ------------------------------------------------------------------------------------
@dataclass
class SproStats:
    """Per-image sufficient statistics of the sPRO curve on a fixed threshold grid.

    thresholds ``[T]`` descending (a pixel is positive when its score >= t); fp ``int64 [N, T]``
    negatives of image i with score >= t_k; n_neg ``int64 [N]`` negatives of image i (pixels
    outside every defect channel of the image; all pixels of a good image); overlap
    ``float64 [R, T]`` = min(#{pixels of channel r >= t_k} / a_r, 1) (saturated overlap, a_r
    from defects_config); region_image ``int64 [R]`` the image of channel r.  ``fpr_limit`` is
    the integration limit the grid was built for.
    """

    thresholds: np.ndarray
    fp: np.ndarray
    n_neg: np.ndarray
    overlap: np.ndarray
    region_image: np.ndarray
    fpr_limit: float

    @property
    def n_images(self) -> int:
        return int(self.n_neg.size)

    def save(self, path: str | Path) -> None:
        """Write the statistics to ``path`` (numpy ``.npz``, compressed): a run can keep them
        instead of its maps, and a later summary bootstraps AU-sPRO from them."""
        np.savez_compressed(
            path,
            thresholds=self.thresholds,
            fp=self.fp,
            n_neg=self.n_neg,
            overlap=self.overlap,
            region_image=self.region_image,
            fpr_limit=np.float64(self.fpr_limit),
        )

    @classmethod
    def load(cls, path: str | Path) -> SproStats:
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"{p} not found; write it with SproStats.save")
        with np.load(p) as z:
            missing = {f.name for f in dataclasses.fields(cls)} - set(z.files)
            if missing:
                raise ValueError(f"{p} is not a saved SproStats (missing {sorted(missing)})")
            return cls(
                z["thresholds"], z["fp"], z["n_neg"], z["overlap"], z["region_image"], float(z["fpr_limit"])
            )


def _count_ge(values: np.ndarray, t_asc: np.ndarray) -> np.ndarray:
    """#{v >= t} for every threshold of ``t_asc`` (ascending), returned for ascending order.

    j = searchsorted(t_asc, v, 'right') is the number of thresholds <= v, so v counts for the
    thresholds t_asc[0..j-1]: #{v >= t_asc[k]} = #{v : j_v > k} (a reverse cumulative sum).
    """
    j = np.searchsorted(t_asc, values.ravel(), side="right")
    hist = np.bincount(j, minlength=t_asc.size + 1)
    return np.cumsum(hist[::-1])[::-1][1:].astype(np.int64)


def spro_statistics(
    maps: Sequence[np.ndarray],
    channels: Sequence[np.ndarray],
    defects: Any,
    fpr_limit: float = 0.05,
    grid: int | str = 2000,
    dense_factor: float = 3.0,
    tail: int = 32,
    max_sample: int = 4_000_000,
) -> SproStats:
    """Precompute :class:`SproStats` of ``maps [H, W]`` and ``channels uint8 [C, H, W]``.

    Semantics are ``esad_lib.metrics.spro_curve``'s: one region per non-empty channel, with
    saturation area from ``defects`` (absolute: min(thr, |c|), relative: thr * |c|); negatives
    are the pixels outside every channel of their image, pooled over ALL images passed
    (anomalous images' defect-free pixels included), so pass one anomaly type's images together
    with the good ones, as ``au_spro`` expects.

    Threshold grid (``grid``):

    * an int T: T thresholds at the pooled negatives' order statistics whose FPR levels are
      evenly spaced in (0, dense_factor * fpr_limit] (from a strided sample of at most
      ``max_sample`` negatives, so the spacing is approximate but every threshold is an actual
      score), plus the largest negative score, ``tail`` thresholds evenly spaced in FPR beyond,
      and the smallest score of all pixels (FPR 1, sPRO 1: every resampled curve reaches the
      limit).  Every grid point lies ON the exact curve; between two consecutive grid points the
      exact curve is monotone, so the trapezoid chord errs by at most half the box
      dFPR * dsPRO; :func:`weighted_au_spro` reports that bound (normalised by the limit).  With
      T = 2000 and the default limit 0.05 the grid step is 7.5e-5 in FPR at the data's own
      weights (on 120 synthetic 256x160 maps: bound 5e-4, actual error 7e-6).
    * ``"exact"``: every distinct score is a threshold; the curve is then ``metrics.spro_curve``'s
      exact polyline (cost O(N pixels x distinct scores) memory for ``fp``: small maps only).
    """
    maps_l = _as_list(maps, "maps")
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    dt = _score_dtype(maps_l)
    negs: list[np.ndarray] = []
    regions: list[tuple[int, np.ndarray, float]] = []
    for i, neg_mask, regs in _iter_channels(maps_l, channels, defects):
        m = maps_l[i].astype(dt, copy=False)
        negs.append(m.ravel() if neg_mask is None else m[neg_mask])
        regions.extend((i, m[mask], sat) for mask, sat in regs)
    n_neg = np.array([v.size for v in negs], dtype=np.int64)
    total_neg = int(n_neg.sum())
    if total_neg == 0:
        raise ValueError("no normal (negative) pixels: the FPR is undefined")
    if not regions:
        raise ValueError("no anomalous regions (non-empty defect channels): the sPRO curve is undefined")
    lowest = min(float(m.min()) for m in maps_l)
    if grid == "exact":
        t = np.unique(np.concatenate([m.ravel() for m in maps_l]).astype(dt))[::-1]
    elif isinstance(grid, (int, np.integer)) and not isinstance(grid, bool) and int(grid) >= 2:
        stride = max(1, total_neg // max_sample)
        sample = np.sort(np.concatenate([v[::stride] for v in negs]))[::-1]  # descending
        n_s = sample.size
        f_dense = min(1.0, dense_factor * fpr_limit)
        levels = np.r_[np.linspace(0.0, f_dense, int(grid) + 1)[1:], np.linspace(f_dense, 1.0, tail + 1)[1:]]
        # the k-th largest sampled negative has FPR ~ k / n_s
        ranks = np.clip(np.ceil(levels * n_s).astype(np.int64) - 1, 0, n_s - 1)
        t = np.unique(np.r_[sample[0], sample[ranks], np.asarray(lowest, dtype=dt)].astype(dt))[::-1]
    else:
        raise ValueError(f"grid must be an int >= 2 (number of thresholds) or 'exact', got {grid!r}")
    t_asc = t[::-1]
    fp = np.stack([_count_ge(v, t_asc)[::-1] for v in negs])
    overlap = np.empty((len(regions), t.size))
    for r, (_, vals, sat) in enumerate(regions):
        # overlap_r(t) = min(#{s >= t} / a_r, 1)
        overlap[r] = np.minimum(_count_ge(vals, t_asc)[::-1] / sat, 1.0)
    region_image = np.array([i for i, _, _ in regions], dtype=np.int64)
    return SproStats(t, fp, n_neg, overlap, region_image, float(fpr_limit))


def _area_to_limit(x: np.ndarray, y: np.ndarray, limit: float) -> tuple[np.ndarray, np.ndarray]:
    """``metrics.area_under_curve`` for B curves at once (rows of x, y ``[B, K]``, x non-decreasing).

    Returns (area [B], chord error bound [B]); NaN where a curve ends before ``limit``.
    A = (1/limit) [ sum_{k: x_{k+1} <= limit} (x_{k+1} - x_k)(y_k + y_{k+1})/2
                    + (limit - x_j)(y_j + y_end)/2 ],  j = last k with x_k <= limit,
    y_end = y_j + (y_{j+1} - y_j)(limit - x_j)/(x_{j+1} - x_j).
    Bound = (1/limit) sum over segments starting below limit of (x_{k+1} - x_k)(y_{k+1} - y_k)/2.
    """
    b, k = x.shape
    rows = np.arange(b)
    ins = np.sum(x <= limit, axis=1)  # first index with x > limit (x[:, 0] = 0 <= limit)
    dx = np.diff(x, axis=1)
    seg = dx * (y[:, 1:] + y[:, :-1]) * 0.5
    full = np.arange(k - 1)[None, :] < (ins - 1)[:, None]
    area = np.sum(np.where(full, seg, 0.0), axis=1)
    j = ins - 1
    xj, yj = x[rows, j], y[rows, j]
    has_next = ins < k
    jn = np.minimum(j + 1, k - 1)
    xn, yn = x[rows, jn], y[rows, jn]
    need = has_next & (xj < limit)
    with np.errstate(invalid="ignore", divide="ignore"):
        y_end = yj + (yn - yj) * (limit - xj) / (xn - xj)
    area = area + np.where(need, 0.5 * (yj + y_end) * (limit - xj), 0.0)
    area = np.where(~has_next & (xj < limit), np.nan, area)
    started = x[:, :-1] < limit
    bound = np.sum(np.where(started, dx * np.diff(y, axis=1) * 0.5, 0.0), axis=1)
    return area / limit, bound / limit


def weighted_au_spro(
    stats: SproStats, weights: np.ndarray, fpr_limit: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """AU-sPRO of every resample: (values [B], grid error bounds [B]) from weights ``[B, N]``.

    With image multiplicities w (a resample repeats image i w_i times, duplicating its
    regions and its negatives):
        FPR_b(t)  = sum_i w_bi fp_i(t) / sum_i w_bi n_neg_i,
        sPRO_b(t) = sum_r w_b,img(r) overlap_r(t) / sum_r w_b,img(r),
    two matrix products over the grid; the curve starts at (0, 0) like ``metrics.spro_curve``
    and is integrated up to the limit with ``metrics.area_under_curve``'s rule.  NaN where a
    resample has no region (all its anomalous images without defect pixels).
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim == 1:
        w = w[None]
    if w.shape[1] != stats.n_images:
        raise ValueError(f"weights {w.shape} do not match the {stats.n_images} images of the sPRO statistics")
    limit = stats.fpr_limit if fpr_limit is None else float(fpr_limit)
    # FPR_b(t) = (W fp)(t) / (W n_neg)
    fpr = (w @ stats.fp.astype(np.float64)) / (w @ stats.n_neg.astype(np.float64))[:, None]
    wr = w[:, stats.region_image]
    with np.errstate(invalid="ignore", divide="ignore"):
        # sPRO_b(t) = (W_r overlap)(t) / sum_r W_r
        spro = (wr @ stats.overlap) / wr.sum(axis=1)[:, None]
    zeros = np.zeros((w.shape[0], 1))
    area, bound = _area_to_limit(np.hstack([zeros, fpr]), np.hstack([zeros, spro]), limit)
    return area, bound


def au_spro_ci(
    maps: Sequence[np.ndarray],
    channels: Sequence[np.ndarray],
    strata: Sequence[Hashable],
    defects: Any,
    fpr_limit: float = 0.05,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    level: float = 0.95,
    grid: int | str = 2000,
    return_samples: bool = False,
) -> dict[str, Any]:
    """AU-sPRO of the images passed (one anomaly type + the good ones) with its bootstrap interval.

    ``strata``: per-image label (e.g. "good" / "structural", or 0 / 1) to resample within.
    ``value`` is the grid curve's AU-sPRO at the data's own weights; ``grid_error`` the largest
    chord bound over the point estimate and the resamples (how far the grid may be from the
    exact curve, in AU-sPRO units).
    """
    stats = spro_statistics(maps, channels, defects, fpr_limit, grid)
    w = resample_weights(resample_indices(strata, n_boot, seed), stats.n_images)
    boot, bound_b = weighted_au_spro(stats, w)
    value, bound = weighted_au_spro(stats, np.ones(stats.n_images))
    out = _summary(
        float(value[0]),
        boot,
        level,
        METHOD_BOOT,
        grid_error=float(max(bound[0], np.nanmax(bound_b))),
        n_images=stats.n_images,
        n_regions=int(stats.region_image.size),
    )
    if return_samples:
        out["samples"] = boot
    return out


def paired_au_spro(
    maps_a: Sequence[np.ndarray],
    maps_b: Sequence[np.ndarray],
    channels: Sequence[np.ndarray],
    strata: Sequence[Hashable],
    defects: Any,
    fpr_limit: float = 0.05,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    level: float = 0.95,
    grid: int | str = 2000,
    return_samples: bool = False,
) -> dict[str, Any]:
    """Paired AU-sPRO difference ``a - b`` of two methods' maps of the SAME images (same order,
    same ground truth ``channels``); each method keeps its own threshold grid, the resample
    weights are shared."""
    la, lb = _as_list(maps_a, "maps_a"), _as_list(maps_b, "maps_b")
    if len(la) != len(lb) or any(x.shape != y.shape for x, y in zip(la, lb)):
        raise ValueError(
            "paired AU-sPRO: maps_a and maps_b must hold the same images in the same order "
            f"(got {len(la)} and {len(lb)} maps, or differing shapes)"
        )
    sa = spro_statistics(la, channels, defects, fpr_limit, grid)
    sb = spro_statistics(lb, channels, defects, fpr_limit, grid)
    w = resample_weights(resample_indices(strata, n_boot, seed), sa.n_images)
    ba, bnd_a = weighted_au_spro(sa, w)
    bb, bnd_b = weighted_au_spro(sb, w)
    one = np.ones(sa.n_images)
    (va,), (e_a,) = weighted_au_spro(sa, one)
    (vb,), (e_b,) = weighted_au_spro(sb, one)
    out = _diff_summary(
        float(va),
        float(vb),
        ba - bb,
        level,
        grid_error=float(max(e_a, e_b, np.nanmax(bnd_a), np.nanmax(bnd_b))),
        n_images=sa.n_images,
    )
    if return_samples:
        out["samples"] = ba - bb
    return out


def au_spro_ci_by_type(
    maps: Sequence[np.ndarray],
    channels: Sequence[np.ndarray],
    label_names: Sequence[str],
    defects: Any,
    fpr_limit: float = 0.05,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    level: float = 0.95,
    grid: int | str = 2000,
    maps_b: Sequence[np.ndarray] | None = None,
) -> dict[str, dict[str, Any] | None]:
    """``metrics.au_spro_by_type`` with intervals (or, with ``maps_b``, paired differences a - b).

    One stratified resample of all images (strata = label names) serves both types; each type's
    group is its images plus all good images, and ``mean`` is the per-resample mean of the types.
    """
    names = _check_names(label_names)
    maps_l = _as_list(maps, "maps")
    chans_l = _as_list(channels, "channels")
    if not (len(maps_l) == len(chans_l) == names.size):
        raise ValueError(
            f"got {len(maps_l)} maps, {len(chans_l)} channel stacks and {names.size} label names"
        )
    sides = [maps_l] if maps_b is None else [maps_l, _as_list(maps_b, "maps_b")]
    if len(sides) == 2 and (
        len(sides[1]) != len(maps_l) or any(x.shape != y.shape for x, y in zip(maps_l, sides[1]))
    ):
        raise ValueError("paired AU-sPRO: maps_b must hold the same images in the same order as maps")
    w_all = resample_weights(resample_indices(names, n_boot, seed))
    vals: dict[str, list[float]] = {}
    boots: dict[str, list[np.ndarray]] = {}
    errs: dict[str, float] = {}
    for kind in ANOMALY_TYPES:
        idx = np.flatnonzero((names == "good") | (names == kind))
        if not (names == kind).any():
            continue
        vals[kind], boots[kind], errs[kind] = [], [], 0.0
        for side in sides:
            st = spro_statistics([side[i] for i in idx], [chans_l[i] for i in idx], defects, fpr_limit, grid)
            bt, bnd = weighted_au_spro(st, w_all[:, idx])
            (v,), (e,) = weighted_au_spro(st, np.ones(idx.size))
            vals[kind].append(float(v))
            boots[kind].append(bt)
            errs[kind] = max(errs[kind], float(e), float(np.nanmax(bnd)))
    out: dict[str, dict[str, Any] | None] = {k: None for k in (*ANOMALY_TYPES, "mean")}
    present = list(vals)
    if present:
        vals["mean"] = [float(np.mean([vals[k][s] for k in present])) for s in range(len(sides))]
        boots["mean"] = [np.mean([boots[k][s] for k in present], axis=0) for s in range(len(sides))]
        errs["mean"] = max(errs[k] for k in present)
    for k in vals:
        if len(sides) == 1:
            out[k] = _summary(vals[k][0], boots[k][0], level, METHOD_BOOT, grid_error=errs[k])
        else:
            out[k] = _diff_summary(
                vals[k][0], vals[k][1], boots[k][0] - boots[k][1], level, grid_error=errs[k]
            )
    return out


# ---- seeds --------------------------------------------------------------------------------------
def aggregate_seeds(values: Sequence[float], level: float = 0.95) -> dict[str, Any]:
    """Mean over training seeds and a Student-t interval across seeds.

    low, high = mean -+ t_{S-1, (1+level)/2} * s / sqrt(S)  (s: sample std, ddof 1), S >= 2;
    with one seed there is no seed interval (NaN).  This is the spread due to training
    randomness on the fixed test set, not the test-set uncertainty (see ``seed_image_interval``).
    """
    from scipy import stats as sps

    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=np.float64)
    if v.size == 0:
        raise ValueError("aggregate_seeds: no finite values")
    mean = float(v.mean())
    if v.size == 1:
        return {
            "value": mean,
            "low": math.nan,
            "high": math.nan,
            "std": math.nan,
            "n_seeds": 1,
            "level": level,
            "method": "one seed: no interval across seeds",
        }
    std = float(v.std(ddof=1))
    half = float(sps.t.ppf(0.5 * (1.0 + level), v.size - 1)) * std / math.sqrt(v.size)
    return {
        "value": mean,
        "low": mean - half,
        "high": mean + half,
        "std": std,
        "n_seeds": int(v.size),
        "level": level,
        "method": f"Student-t interval across {v.size} seeds",
    }


def seed_image_interval(
    values: Sequence[float],
    samples: np.ndarray,
    level: float = 0.95,
    bounds: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """Interval of the seed mean that covers both training seeds and test images.

    values ``[S]``: the metric of each seed; samples ``[S, B]``: each seed's bootstrap values
    from the SAME resamples (same ``seed`` argument and test images), so column b is one
    resample of the test set for all seeds.
        se^2 = s^2_seed / S + Var_b( mean_s samples[s, b] ),   low, high = mean -+ z_{(1+level)/2} se
    (law of total variance; the image part uses the per-resample seed mean, which keeps the
    correlation between seeds that share the test images).  With S = 1 it is the percentile
    interval of the images alone.  ``bounds``: the metric's range (e.g. (0, 1) for an AUROC,
    (-1, 1) for a difference of two); the normal interval is clipped to it (a normal interval
    ignores the range; clipping only removes impossible values).
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
    se = math.sqrt(seed_var / v.size + img_var)
    z = NormalDist().inv_cdf(0.5 * (1.0 + level))
    low, high = mean - z * se, mean + z * se
    if bounds is not None:
        low, high = max(low, float(bounds[0])), min(high, float(bounds[1]))
    return {
        "value": mean,
        "low": low,
        "high": high,
        "se": se,
        "se_seed": math.sqrt(seed_var / v.size),
        "se_image": math.sqrt(img_var),
        "n_seeds": int(v.size),
        "n_boot": int(s.shape[1]),
        "level": level,
        "method": f"normal interval, seed variance ({v.size} seeds) + bootstrap image variance",
    }


# ---- formatting ---------------------------------------------------------------------------------
def _unpack(value: Any, low: Any, high: Any) -> tuple[float, float, float]:
    if isinstance(value, Mapping):
        v = value["diff"] if "diff" in value else value["value"]
        return float(v), float(value["low"]), float(value["high"])
    return float(value), math.nan if low is None else float(low), math.nan if high is None else float(high)


def format_ci(
    value: Any, low: float | None = None, high: float | None = None, scale: float = 100.0, digits: int = 1
) -> str:
    """``"76.9 [72.1, 81.4]"`` (values x ``scale``; a dict with value/low/high works too).
    Without an interval (NaN bounds) just the value."""
    v, lo, hi = _unpack(value, low, high)
    if math.isnan(v):
        return "n/a"
    s = f"{v * scale:.{digits}f}"
    if not (math.isnan(lo) or math.isnan(hi)):
        s += f" [{lo * scale:.{digits}f}, {hi * scale:.{digits}f}]"
    return s


def format_diff(
    value: Any,
    low: float | None = None,
    high: float | None = None,
    scale: float = 100.0,
    digits: int = 1,
    marker: str = "*",
) -> str:
    """``"+3.2 [-1.0, 7.5]"`` for a difference; ``marker`` appended when the interval excludes 0."""
    v, lo, hi = _unpack(value, low, high)
    if math.isnan(v):
        return "n/a"
    s = f"{v * scale:+.{digits}f}"
    if not (math.isnan(lo) or math.isnan(hi)):
        s += f" [{lo * scale:.{digits}f}, {hi * scale:.{digits}f}]"
        if lo > 0.0 or hi < 0.0:
            s += f" {marker}"
    return s
