"""Evaluation metrics of the paper (authors' README "5. result"): image AUROC, pixel AUROC, AU-PRO, AU-sPRO.

One file because every metric sits beside its brute-force ``*_reference`` twin and the curve and
region helpers both use, so that the fast and the slow version cannot drift apart.

Every metric has a fast, vectorised implementation and a brute-force ``*_reference`` twin
(slow, simple, loops over thresholds) that the tests compare it with.

Conventions shared by all pixel metrics:

* A pixel is predicted anomalous at threshold t when its score is >= t.  The thresholds are
  *all distinct score values* (the exact curve, no coarse grid), plus a start point at
  (FPR 0, TPR/PRO/sPRO 0) for a threshold above every score.
* Inputs are lists of numpy arrays of the original image size: maps float [H, W]; masks bool
  [H, W]; channels uint8 [C, H, W] (one channel per ground-truth PNG, value = the defect's
  pixel value, C = 0 for good images).  Images may have different sizes.
* The area under a curve up to ``fpr_limit`` uses the trapezoid rule; when ``fpr_limit`` falls
  between two curve points, the end point is linearly interpolated; the area is divided by
  ``fpr_limit`` so that a perfect detector scores 1 (MVTec AD / MVTec LOCO AD convention).
* Connected regions (AU-PRO) use 8-connectivity (scipy.ndimage.label with a 3x3 structure).

Memory and time: the fast AU-PRO / AU-sPRO never copy or sort all pixels.  A strided sample
brackets the score at which the FPR passes ``fpr_limit``; only the negatives above it (a few
per cent for AU-sPRO's 0.05) are gathered, partitioned (linear time) and sorted, and only the
positive pixels are argsorted.  Pixel AUROC sorts one float copy of all scores.  Maps must
be finite (NaN/inf raise).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "au_pro",
    "au_pro_reference",
    "SPRO_LIMITS",
    "au_spro",
    "au_spro_at_limits",
    "au_spro_by_defect",
    "au_spro_by_type",
    "au_spro_reference",
    "area_under_curve",
    "area_under_curve_reference",
    "image_auroc",
    "image_auroc_by_type",
    "image_auroc_reference",
    "image_defect_names",
    "pixel_auroc",
    "pixel_auroc_reference",
    "pro_curve",
    "spro_curve",
    "spro_curve_reference",
]

_EIGHT_CONNECTED = np.ones((3, 3), dtype=int)
#: pixels sampled to bracket the FPR-limit score in the fast AU-PRO / AU-sPRO (speed only)
_SAMPLE_PIXELS = 4_000_000


# ---- helpers ----------------------------------------------------------------------------------
def _as_list(arrs: Any, name: str) -> list[np.ndarray]:
    if isinstance(arrs, np.ndarray):
        arrs = list(arrs)
    out = [np.asarray(a) for a in arrs]
    if not out:
        raise ValueError(f"{name}: empty input")
    return out


def _check_maps_masks(maps: Any, masks: Any) -> tuple[list[np.ndarray], list[np.ndarray]]:
    maps_l = _as_list(maps, "maps")
    masks_l = _as_list(masks, "masks")
    if len(maps_l) != len(masks_l):
        raise ValueError(f"got {len(maps_l)} maps but {len(masks_l)} masks")
    for i, (m, g) in enumerate(zip(maps_l, masks_l)):
        if m.shape != g.shape or m.ndim != 2:
            raise ValueError(f"image {i}: map shape {m.shape} and mask shape {g.shape} must be equal [H, W]")
    return maps_l, [g.astype(bool, copy=False) for g in masks_l]


def _score_dtype(maps: list[np.ndarray]) -> np.dtype:
    """Common float dtype of the maps (kept: float32 maps are not widened); checks finiteness."""
    for i, m in enumerate(maps):
        # min/max propagate NaN and expose +-inf without a boolean temporary
        if m.size and not (np.isfinite(m.min()) and np.isfinite(m.max())):
            raise ValueError(f"map {i} contains NaN or infinite scores; fix the scoring before evaluating")
    dt = np.result_type(*[m.dtype for m in maps])
    return dt if np.issubdtype(dt, np.floating) else np.dtype(np.float64)


def _check_fpr_limit(fpr_limit: float) -> None:
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")


def area_under_curve(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Normalised area under a curve (x non-decreasing) from x[0] to ``x_max``.

    A = (1/x_max) * [ sum_{i: x_{i+1} <= x_max} (x_{i+1} - x_i)(y_i + y_{i+1})/2
                      + (x_max - x_j)(y_j + y_end)/2 ],
    j = last index with x_j <= x_max, y_end = y interpolated linearly at x_max.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    ins = int(np.searchsorted(x, x_max, side="right"))  # first index with x > x_max
    if ins == 0:
        raise ValueError("the curve starts beyond x_max")
    xs, ys = x[:ins], y[:ins]
    area = float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) * 0.5))
    if ins < len(x) and xs[-1] < x_max:
        # y_end = y_j + (y_{j+1} - y_j) (x_max - x_j) / (x_{j+1} - x_j)
        y_end = ys[-1] + (y[ins] - ys[-1]) * (x_max - xs[-1]) / (x[ins] - xs[-1])
        area += 0.5 * (ys[-1] + y_end) * (x_max - xs[-1])
    elif ins == len(x) and xs[-1] < x_max:
        raise ValueError(f"the curve ends at x = {xs[-1]} < x_max = {x_max}; cannot integrate")
    return float(area / x_max)


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


# ---- image AUROC --------------------------------------------------------------------------------
def image_auroc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Area under the ROC curve of image scores (labels 1 = anomalous, 0 = good).

    AUROC = P(s_anomalous > s_good) + 0.5 P(s_anomalous = s_good)  (Mann-Whitney form)
          = (1 / (N+ N-)) sum_{p anomalous} [#{g good: s_g < s_p} + 0.5 #{g: s_g = s_p}],
    counted exactly with ``searchsorted`` on the sorted good scores (equal to scikit-learn's
    ``roc_auc_score``, which the tests check; importing scikit-learn costs seconds).
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).astype(int).ravel()
    if scores.shape != labels.shape:
        raise ValueError(f"got {scores.size} scores but {labels.size} labels")
    if len(np.unique(labels)) != 2 or not set(np.unique(labels)) <= {0, 1}:
        raise ValueError("image AUROC needs both good (0) and anomalous (1) images")
    pos = scores[labels == 1]
    neg = np.sort(scores[labels == 0])
    below = np.searchsorted(neg, pos, side="left").sum()
    below_or_eq = np.searchsorted(neg, pos, side="right").sum()
    # AUROC = (sum_p #{g < p} + sum_p #{g <= p}) / (2 N+ N-)
    return float((below + below_or_eq) / (2.0 * pos.size * neg.size))


def _roc_reference(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC area by looping over every distinct threshold (score >= t is positive)."""
    n_pos = int(positive.sum())
    n_neg = int((~positive).sum())
    xs, ys = [0.0], [0.0]
    for t in sorted(set(scores.tolist()), reverse=True):
        pred = scores >= t
        ys.append(float(np.sum(pred & positive)) / n_pos)
        xs.append(float(np.sum(pred & ~positive)) / n_neg)
    return area_under_curve_reference(xs, ys, 1.0)


def image_auroc_reference(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Brute-force image AUROC: ROC points at every distinct threshold, trapezoid rule."""
    return _roc_reference(np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(bool))


def image_auroc_by_type(scores: Sequence[float], label_names: Sequence[str]) -> dict[str, float]:
    """Image AUROC of good vs structural, good vs logical, and their mean.

    ``label_names`` are "good", "structural", "logical"; a type without images gives NaN and
    the mean is taken over the types present.
    """
    scores = np.asarray(scores, dtype=np.float64)
    names = np.asarray(label_names)
    good = names == "good"
    out: dict[str, float] = {}
    for kind in ("structural", "logical"):
        sel = good | (names == kind)
        out[kind] = (
            image_auroc(scores[sel], (names[sel] == kind).astype(int)) if (names == kind).any() else math.nan
        )
    present = [v for v in out.values() if not math.isnan(v)]
    out["mean"] = float(np.mean(present)) if present else math.nan
    return out


# ---- pixel AUROC --------------------------------------------------------------------------------
def pixel_auroc(maps: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> float:
    """Exact pixel-level AUROC over all pixels of all images (rank-based, ties count 1/2).

    AUROC = (1 / (N+ N-)) * sum_{p positive} [ #{n: s_n < s_p} + 0.5 #{n: s_n = s_p} ]
    All scores (map dtype kept) and the positive scores are copied into one array each and
    sorted; #{n < p} = #{all < p} - #{pos < p} (likewise for <=) come from ``searchsorted`` --
    no float64 copy and no per-threshold arrays, so 160 M pixels need about one extra copy of
    the maps.
    """
    maps_l, masks_l = _check_maps_masks(maps, masks)
    dt = _score_dtype(maps_l)
    n_pos = sum(int(g.sum()) for g in masks_l)
    n_tot = sum(g.size for g in masks_l)
    n_neg = n_tot - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("pixel AUROC needs both anomalous and normal pixels")
    # all scores in one buffer (a memcpy per image; boolean-gathering the negatives is slower)
    every = np.empty(n_tot, dtype=dt)
    pos = np.empty(n_pos, dtype=dt)
    i_a = i_p = 0
    for m, g in zip(maps_l, masks_l):
        every[i_a : i_a + m.size] = m.ravel()
        i_a += m.size
        p = m[g]
        pos[i_p : i_p + p.size] = p
        i_p += p.size
    every.sort()
    pos.sort()
    # #{n < p} = #{all < p} - #{pos < p} ;  #{n <= p} = #{all <= p} - #{pos <= p}
    below = int(np.searchsorted(every, pos, side="left").sum(dtype=np.int64)) - int(
        np.searchsorted(pos, pos, side="left").sum(dtype=np.int64)
    )
    below_or_eq = int(np.searchsorted(every, pos, side="right").sum(dtype=np.int64)) - int(
        np.searchsorted(pos, pos, side="right").sum(dtype=np.int64)
    )
    # AUROC = (sum_p #{n<p} + sum_p #{n<=p}) / (2 N+ N-)
    return float((below + below_or_eq) / (2.0 * n_pos * n_neg))


def pixel_auroc_reference(maps: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> float:
    """Brute-force pixel AUROC: ROC points at every distinct threshold, trapezoid rule."""
    maps_l, masks_l = _check_maps_masks(maps, masks)
    scores = np.concatenate([m.ravel() for m in maps_l]).astype(np.float64)
    positive = np.concatenate([g.ravel() for g in masks_l])
    return _roc_reference(scores, positive)


# ---- exact overlap curves (shared by PRO and sPRO) -----------------------------------------------
class _Regions:
    """Positive pixels grouped into regions, plus the pooled negative pixels.

    Per region r (a connected component for PRO, a defect channel for sPRO) with saturation
    area sat_r, only the pixels that raise y(t) = (1/R) sum_r min(#{r >= t} / sat_r, 1) are kept:
    the j-th highest pixel of r raises it by (min(j/sat_r, 1) - min((j-1)/sat_r, 1)) / R, which is
    0 once j > sat_r.  ``pos_scores``/``pos_inc`` hold (score, increment) of those pixels.
    ``neg_parts`` holds (map, negative mask or None = every pixel negative) per image.
    """

    def __init__(self, dtype: np.dtype):
        self.dtype = dtype
        self.pos_scores: list[np.ndarray] = []
        self.pos_inc: list[np.ndarray] = []  # un-normalised: divided by R at the end
        self.n_regions = 0
        self.neg_parts: list[tuple[np.ndarray, np.ndarray | None]] = []
        self.n_neg = 0

    def add_region(self, scores: np.ndarray, sat: float) -> None:
        # scores of the region, descending; rank j = 1, 2, ...
        top = np.sort(scores.astype(self.dtype, copy=False).ravel())[::-1]
        n_used = min(top.size, int(math.ceil(sat)))  # increments beyond ceil(sat) are 0
        j = np.arange(1, n_used + 1, dtype=np.float64)
        # increment of min(j / sat, 1) when the j-th pixel turns positive
        inc = np.minimum(j / sat, 1.0) - np.minimum((j - 1.0) / sat, 1.0)
        self.pos_scores.append(top[:n_used])
        self.pos_inc.append(inc)
        self.n_regions += 1

    def add_negatives(self, m: np.ndarray, neg_mask: np.ndarray | None) -> None:
        """``neg_mask`` None: every pixel of ``m`` is negative (a good image)."""
        self.neg_parts.append((m, neg_mask))
        self.n_neg += m.size if neg_mask is None else int(np.count_nonzero(neg_mask))

    def negatives(self) -> np.ndarray:
        """All negative scores (gathered; used when every threshold is needed)."""
        buf = np.empty(self.n_neg, dtype=self.dtype)
        off = 0
        for m, nm in self.neg_parts:
            v = m.ravel() if nm is None else m[nm]
            buf[off : off + v.size] = v
            off += v.size
        return buf

    def _sample(self, stride: int) -> np.ndarray:
        parts = []
        for m, nm in self.neg_parts:
            s = m.ravel()[::stride]
            parts.append(s if nm is None else s[nm.ravel()[::stride]])
        return np.concatenate(parts)

    def _at_least(self, t: Any) -> np.ndarray:
        parts = []
        for m, nm in self.neg_parts:
            hit = m >= t
            if nm is not None:
                hit &= nm
            parts.append(m[hit])
        return np.concatenate(parts)

    def top_negatives(self, k: int) -> np.ndarray | None:
        """All negative scores >= the k-th largest negative score, or None (then gather all).

        Avoids a copy of all 160 M scores: a strided sample (about 4 M pixels) gives a score
        t_low whose share of negatives above it is, with a wide safety margin, more than k / N-;
        the negatives >= t_low are gathered image by image (a few per cent of the pixels) and
        the exact k-th largest is found among them by ``np.partition``.  The margin is checked,
        not trusted: if fewer than k negatives are >= t_low the share is doubled and retried.
        """
        total = sum(m.size for m, _ in self.neg_parts)
        sample = self._sample(max(1, total // _SAMPLE_PIXELS))
        if sample.size == 0:
            return None
        share = k / self.n_neg
        while True:
            # sample share with margin: 1.5x the target plus 6 binomial standard deviations
            q = (
                1.5 * share
                + 6.0 * math.sqrt(share * (1.0 - min(share, 1.0)) / sample.size)
                + 1.0 / sample.size
            )
            if q >= 0.5:  # the candidates would be most of the pixels: gather everything instead
                return None
            j = int(math.ceil(q * sample.size))
            t_low = np.partition(sample, sample.size - j)[sample.size - j]
            cand = self._at_least(t_low)
            if cand.size >= k:
                break
            share *= 2.0
        kth = cand.size - k
        cand.partition(kth)
        t_cut = cand[kth]
        return cand[cand >= t_cut]


def _exact_overlap_curve(reg: _Regions, max_fpr: float) -> tuple[np.ndarray, np.ndarray]:
    """Exact (FPR, mean capped overlap) curve down to the first threshold with FPR > max_fpr.

    At threshold t:  FPR(t) = #{negatives >= t} / N-,
                     y(t)   = (1/R) sum_r min(#{pixels of r >= t} / sat_r, 1).
    y only changes at the scores of positive pixels with a non-zero increment (see
    ``_Regions``).  Between two consecutive such distinct scores u_{j-1} > u_j the curve runs
    horizontally at y_{j-1} to FPR #{neg > u_j} / N-, then one segment to
    (#{neg >= u_j} / N-, y_j) -- negatives tied with u_j switch together with the positives.
    So the curve through every distinct threshold is exactly the polyline
        (0, 0), ..., (#{neg > u_j}/N-, y_{j-1}), (#{neg >= u_j}/N-, y_j), ..., (#{neg >= t_end}/N-, y_end)
    (the points dropped lie on its horizontal pieces): only those positive scores are argsorted,
    the negatives are sorted once and counted with ``searchsorted``.

    Only thresholds down to the one where the FPR passes max_fpr matter; with k = floor(max_fpr
    N-) + 2, the negatives >= the k-th largest negative score t_cut (found by ``top_negatives``,
    linear time) are all that is needed, and positives below t_cut are dropped.
    """
    n_neg = reg.n_neg
    if n_neg == 0:
        raise ValueError("no normal (negative) pixels: the FPR is undefined")
    if reg.n_regions == 0:
        raise ValueError("no anomalous regions: the overlap curve is undefined")
    pos = np.concatenate(reg.pos_scores)
    inc = np.concatenate(reg.pos_inc)
    k = int(math.floor(max_fpr * n_neg)) + 2  # k - 1 negatives pass the limit; one spare for rounding
    neg = reg.top_negatives(k) if k <= n_neg else None
    if neg is None:
        neg = reg.negatives()
    else:
        # every negative >= t_cut is in ``neg`` (ties included); lower thresholds are not needed
        keep = pos >= neg.min()
        pos, inc = pos[keep], inc[keep]
    neg.sort()
    n_cand = neg.size
    order = np.argsort(pos)[::-1]  # descending scores (order among ties is irrelevant)
    pos = pos[order]
    # y after each pixel: cumulative increments / R, capped at 1 against rounding
    y_cum = np.minimum(np.cumsum(inc[order]) / reg.n_regions, 1.0)
    del order, inc
    # one y per distinct score u_j: the value after the last pixel of each run of ties
    ends = np.flatnonzero(np.r_[pos[1:] != pos[:-1], True]) if pos.size else np.empty(0, dtype=np.intp)
    u = pos[ends]
    y_j = y_cum[ends]
    y_prev = np.r_[0.0, y_j[:-1]]
    # #{neg > u} and #{neg >= u} from the sorted candidate negatives (u ascending for speed)
    u_up = u[::-1]
    n_gt = (n_cand - np.searchsorted(neg, u_up, side="right"))[::-1]
    n_ge = (n_cand - np.searchsorted(neg, u_up, side="left"))[::-1]
    x = np.empty(2 * u.size + 2)
    y = np.empty(2 * u.size + 2)
    x[0], y[0] = 0.0, 0.0
    x[1:-1:2], y[1:-1:2] = n_gt / n_neg, y_prev
    x[2:-1:2], y[2:-1:2] = n_ge / n_neg, y_j
    # end: the lowest threshold kept (t_cut, or the minimum score when nothing was cut)
    x[-1], y[-1] = n_cand / n_neg, (y_j[-1] if y_j.size else 0.0)
    keep = np.r_[True, (np.diff(x) != 0) | (np.diff(y) != 0)]
    return x[keep], y[keep]


def _overlap_curve_reference(
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


# ---- AU-PRO ---------------------------------------------------------------------------------------
def pro_curve(
    maps: Sequence[np.ndarray], masks: Sequence[np.ndarray], max_fpr: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Exact PRO curve (FPR, PRO) down to the first threshold with FPR > ``max_fpr``.

    PRO(t) = (1/R) sum_r |r intersect {s >= t}| / |r| over the connected ground-truth regions r
    (8-connectivity) of all images; FPR(t) = #{normal pixels >= t} / #normal pixels, normal =
    outside the masks, pooled over all images.
    """
    from scipy import ndimage

    maps_l, masks_l = _check_maps_masks(maps, masks)
    _check_fpr_limit(max_fpr)
    reg = _Regions(_score_dtype(maps_l))
    for m, g in zip(maps_l, masks_l):
        if not g.any():
            reg.add_negatives(m, None)
            continue
        reg.add_negatives(m, ~g)
        lab, _ = ndimage.label(g, structure=_EIGHT_CONNECTED)
        for k, box in enumerate(ndimage.find_objects(lab), start=1):
            region = lab[box] == k
            reg.add_region(m[box][region], sat=int(region.sum()))
    return _exact_overlap_curve(reg, max_fpr)


def au_pro(maps: Sequence[np.ndarray], masks: Sequence[np.ndarray], fpr_limit: float = 0.3) -> float:
    """Normalised area under the PRO curve up to ``fpr_limit`` (MVTec AD's AU-PRO, default 0.3).

    AU-PRO = (1/fpr_limit) * integral_0^fpr_limit PRO dFPR  (exact curve, trapezoid rule,
    interpolated end point).  See ``pro_curve`` for PRO and FPR.
    """
    fpr, pro = pro_curve(maps, masks, max_fpr=fpr_limit)
    return area_under_curve(fpr, pro, fpr_limit)


def au_pro_reference(
    maps: Sequence[np.ndarray], masks: Sequence[np.ndarray], fpr_limit: float = 0.3
) -> float:
    """Brute-force AU-PRO: recount every region at every distinct threshold."""
    from scipy import ndimage

    maps_l, masks_l = _check_maps_masks(maps, masks)
    regions = []
    for i, g in enumerate(masks_l):
        lab, n = ndimage.label(g, structure=_EIGHT_CONNECTED)
        for k in range(1, n + 1):
            region = lab == k
            regions.append((i, region, float(region.sum())))
    fpr, pro = _overlap_curve_reference(maps_l, [~g for g in masks_l], regions)
    return area_under_curve_reference(fpr, pro, fpr_limit)


# ---- AU-sPRO (MVTec LOCO AD) ----------------------------------------------------------------------
def _defect_lookup(defects: Any) -> dict[int, tuple[str, float, bool]]:
    """pixel value -> (name, saturation_threshold, relative_saturation) from DefectSpecs or dicts."""
    if isinstance(defects, Mapping):
        defects = list(defects.values())
    out = {}
    for d in defects:
        get = d.get if isinstance(d, Mapping) else lambda k, d=d: getattr(d, k)
        out[int(get("pixel_value"))] = (
            str(get("defect_name")),
            float(get("saturation_threshold")),
            bool(get("relative_saturation")),
        )
    return out


def _saturation_area(area: int, threshold: float, relative: bool) -> float:
    """Pixels of a region whose detection saturates its sPRO at 1 (MVTec LOCO AD's rule).

    MVTec's official evaluation truncates the relative product to whole pixels:
    relative: s = int(threshold * area); absolute: s = min(threshold, area).
    Guard (ours): a relative product below one pixel would make s = 0 (a division by zero), so
    s is at least 1 pixel.
    """
    if relative:
        # s = int(threshold * |c|)
        return float(max(1, int(threshold * area)))
    # s = min(threshold, |c|)
    return min(threshold, float(area))


def _iter_channels(
    maps_l: list[np.ndarray], channels: Any, defects: Any, defect_names: Iterable[str] | None = None
) -> Iterable[tuple[int, np.ndarray | None, list[tuple[np.ndarray, float]]]]:
    """Yield (image index, negative mask, [(channel mask, saturation area), ...]) per image.

    The negative mask is None when the image has no (non-empty) channel: every pixel negative.
    ``defect_names``: only channels of these defects become regions; the pixels of every other
    channel are still excluded from the negatives (they are not defect-free).
    """
    only = None if defect_names is None else set(defect_names)
    chans_l = _as_list(channels, "channels")
    if len(chans_l) != len(maps_l):
        raise ValueError(f"got {len(maps_l)} maps but {len(chans_l)} channel stacks")
    lookup = _defect_lookup(defects)
    for i, (m, ch) in enumerate(zip(maps_l, chans_l)):
        if ch.ndim == 2:
            ch = ch[None]
        if ch.ndim != 3 or ch.shape[1:] != m.shape:
            raise ValueError(
                f"image {i}: channels shape {ch.shape} must be [C, H, W] with [H, W] = {m.shape}"
            )
        union = None
        regions = []
        for c in range(ch.shape[0]):
            mask = ch[c] != 0
            area = int(np.count_nonzero(mask))
            if area == 0:
                continue  # an empty ground-truth PNG marks no defect pixels: nothing to find
            vals = ch[c][mask]
            vmin, vmax = int(vals.min()), int(vals.max())
            if vmin != vmax:
                raise ValueError(
                    f"image {i}, channel {c}: several pixel values ({vmin}..{vmax}) in one channel"
                )
            if vmax not in lookup:
                raise ValueError(
                    f"image {i}, channel {c}: pixel value {vmax} is not in the defects config "
                    f"(known values: {sorted(lookup)}); check defects_config.json of the category"
                )
            name, thr, rel = lookup[vmax]
            union = mask.copy() if union is None else (union | mask)
            if only is None or name in only:
                regions.append((mask, _saturation_area(area, thr, rel)))
        yield i, (None if union is None else ~union), regions


def spro_curve(
    maps: Sequence[np.ndarray],
    channels: Sequence[np.ndarray],
    defects: Any,
    max_fpr: float = 1.0,
    defect_names: Iterable[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact sPRO curve (FPR, sPRO) of MVTec LOCO AD down to the first threshold with FPR > ``max_fpr``.

    Per defect channel c (one ground-truth PNG of one image) and threshold t:
        sPRO_c(t) = min(|c intersect {s >= t}| / a_c, 1),
        a_c = min(saturation_threshold, |c|)   (absolute)   or   saturation_threshold * |c|   (relative),
    taken from the defect whose ``pixel_value`` the channel holds (``defects``: DefectSpecs or
    dicts with defect_name, pixel_value, saturation_threshold, relative_saturation).
    sPRO(t) = mean over all channels of all images; FPR(t) = false positives / negatives, where
    negatives are the pixels outside every channel of their image, pooled over all images
    passed (the anomaly type's images plus the good ones).  ``defect_names`` restricts the
    regions to those defects (per-defect AU-sPRO); other channels stay out of the negatives.
    """
    maps_l = _as_list(maps, "maps")
    _check_fpr_limit(max_fpr)
    reg = _Regions(_score_dtype(maps_l))
    for i, neg_mask, regions in _iter_channels(maps_l, channels, defects, defect_names):
        m = maps_l[i]
        reg.add_negatives(m, neg_mask)
        for mask, sat in regions:
            reg.add_region(m[mask], sat)
    return _exact_overlap_curve(reg, max_fpr)


def au_spro(
    maps: Sequence[np.ndarray], channels: Sequence[np.ndarray], defects: Any, fpr_limit: float = 0.05
) -> float:
    """Normalised area under the sPRO curve up to ``fpr_limit`` (MVTec LOCO AD's AU-sPRO, 0.05).

    AU-sPRO = (1/fpr_limit) * integral_0^fpr_limit sPRO dFPR  (exact curve from sorted scores,
    trapezoid rule, end point interpolated).  See ``spro_curve`` for sPRO and FPR.  Pass the
    images of one anomaly type together with the good images (``au_spro_by_type`` does that).
    """
    fpr, spro = spro_curve(maps, channels, defects, max_fpr=fpr_limit)
    return area_under_curve(fpr, spro, fpr_limit)


def spro_curve_reference(
    maps: Sequence[np.ndarray],
    channels: Sequence[np.ndarray],
    defects: Any,
    defect_names: Iterable[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force sPRO curve: every distinct threshold, every channel recounted."""
    maps_l = [np.asarray(m) for m in maps]
    negatives, regions = [], []
    for i, neg_mask, regs in _iter_channels(maps_l, channels, defects, defect_names):
        negatives.append(np.ones(maps_l[i].shape, bool) if neg_mask is None else neg_mask)
        regions.extend((i, mask, sat) for mask, sat in regs)
    return _overlap_curve_reference(maps_l, negatives, regions)


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


#: the integration limits MVTec LOCO AD's official evaluation reports AU-sPRO at.
SPRO_LIMITS: tuple[float, ...] = (0.01, 0.05, 0.1, 0.3, 1.0)


def au_spro_at_limits(
    maps: Sequence[np.ndarray],
    channels: Sequence[np.ndarray],
    defects: Any,
    limits: Sequence[float] = SPRO_LIMITS,
    defect_names: Iterable[str] | None = None,
) -> dict[float, float]:
    """AU-sPRO at several FPR limits from ONE exact sPRO curve: ``{limit: AU-sPRO}``.

    Equal to ``au_spro(..., fpr_limit=limit)`` for each limit (tested); the curve is built once,
    down to the largest limit.  With limit 1.0 every negative pixel is sorted (memory ~12 bytes a
    pixel), which the 0.05 default avoids.
    """
    limits = [float(x) for x in limits]
    fpr, spro = spro_curve(maps, channels, defects, max_fpr=max(limits), defect_names=defect_names)
    return {lim: area_under_curve(fpr, spro, lim) for lim in limits}


def image_defect_names(channels: np.ndarray, defects: Any) -> set[str]:
    """Names of the defects that image's non-empty channels ``uint8 [C,H,W]`` mark."""
    lookup = _defect_lookup(defects)
    ch = channels[None] if channels.ndim == 2 else channels
    names = set()
    for c in range(ch.shape[0]):
        v = int(ch[c].max()) if ch[c].size else 0
        if v and v in lookup:
            names.add(lookup[v][0])
    return names


def au_spro_by_defect(
    maps: Sequence[np.ndarray],
    channels: Sequence[np.ndarray],
    label_names: Sequence[str],
    defects: Any,
    limits: Sequence[float] = SPRO_LIMITS,
) -> dict[str, dict[float, float]]:
    """AU-sPRO of each defect name (``defects_config.json``) at every limit.

    For defect ``d`` the group is every good image plus every image that holds a channel of
    ``d``; the regions are the channels of ``d``; the pixels of an image's other channels are
    neither regions nor negatives.  Defects that no test image shows are left out.
    """
    maps_l = _as_list(maps, "maps")
    chans_l = _as_list(channels, "channels")
    names = list(label_names)
    shown = [image_defect_names(c, defects) for c in chans_l]
    out: dict[str, dict[float, float]] = {}
    for d in sorted({n for s in shown for n in s}):
        idx = [i for i, n in enumerate(names) if n == "good" or d in shown[i]]
        out[d] = au_spro_at_limits(
            [maps_l[i] for i in idx], [chans_l[i] for i in idx], defects, limits, defect_names=[d]
        )
    return out


def au_spro_by_type(
    maps: Sequence[np.ndarray],
    channels: Sequence[np.ndarray],
    label_names: Sequence[str],
    defects: Any,
    fpr_limit: float = 0.05,
) -> dict[str, float]:
    """AU-sPRO of the structural and logical groups (each with all good images) and their mean."""
    maps_l = _as_list(maps, "maps")
    chans_l = _as_list(channels, "channels")
    names = list(label_names)
    out: dict[str, float] = {}
    for kind in ("structural", "logical"):
        idx = [i for i, n in enumerate(names) if n in ("good", kind)]
        if not any(names[i] == kind for i in idx):
            out[kind] = math.nan
            continue
        out[kind] = au_spro([maps_l[i] for i in idx], [chans_l[i] for i in idx], defects, fpr_limit)
    present = [v for v in out.values() if not math.isnan(v)]
    out["mean"] = float(np.mean(present)) if present else math.nan
    return out
