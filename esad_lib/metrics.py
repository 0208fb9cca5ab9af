"""Evaluation metrics of the paper (authors' README "5. result"): image AUROC, pixel AUROC, AU-PRO, AU-sPRO.

Conventions shared by all pixel metrics:

* A pixel is anomalous at threshold t when its score is >= t; the thresholds are *all distinct
  scores* (the exact curve), plus a start point (FPR 0, TPR/PRO/sPRO 0) above every score.
* Inputs: lists of numpy arrays of the original image size (sizes may differ): maps float [H, W]
  (finite); masks bool [H, W]; channels uint8 [C, H, W] (one channel per ground-truth PNG, value =
  the defect's pixel value, C = 0 for good images).
* The area under a curve up to ``fpr_limit``: trapezoid rule, end point linearly interpolated,
  divided by ``fpr_limit`` so that a perfect detector scores 1 (MVTec AD / LOCO AD convention).
* Connected regions (AU-PRO) use 8-connectivity (scipy.ndimage.label with a 3x3 structure).

One ordering of the pixels serves every metric (:class:`PixelOrder`; no copy of all pixels, images
on two threads).  The tests compare every metric with a brute-force twin (``tests/metric_references.py``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

_EIGHT_CONNECTED = np.ones((3, 3), dtype=int)
#: the integration limits MVTec LOCO AD's official evaluation reports AU-sPRO at.
SPRO_LIMITS: tuple[float, ...] = (0.01, 0.05, 0.1, 0.3, 1.0)
#: MVTec LOCO AD's anomaly types; each is evaluated on its own images plus the good ones.
ANOMALY_TYPES: tuple[str, ...] = ("structural", "logical")
#: threads that sort and count images (the evaluation machine has two cores)
WORKERS = 2
#: bootstrap threshold grid (``uncertainty.spro_statistics``): dense up to this x the FPR limit, then
#: this many thresholds beyond; at most this many sampled negatives place them.
_DENSE_FACTOR, _TAIL, _MAX_SAMPLE = 3.0, 32, 4_000_000


# ---- helpers ----------------------------------------------------------------------------------
def _as_list(arrs: Any, name: str) -> list[np.ndarray]:
    out = [np.asarray(a) for a in arrs]
    if not out:
        raise ValueError(f"{name}: empty input")
    return out


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
    j = last index with x_j <= x_max, y_end = y interpolated linearly at x_max."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
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


# ---- "good + one anomaly type" ------------------------------------------------------------------
def type_groups(label_names: Sequence[str]) -> dict[str, list[int] | None]:
    """THE grouping of every per-type metric and interval: per anomaly type, the indices (ascending) of
    its images and of every good image; None (everywhere, ``metrics.json`` included) if it has none."""
    names = [str(n) for n in label_names]
    return {kind: [i for i, n in enumerate(names) if n in ("good", kind)] if kind in names else None
            for kind in ANOMALY_TYPES}


def type_mean(by_type: Mapping[str, Any]) -> Any:
    """Mean over the anomaly types present (elementwise for bootstrap samples ``[B]``); None if none is."""
    present = [by_type[k] for k in ANOMALY_TYPES if by_type.get(k) is not None]
    if not present:
        return None
    mean = np.mean(present, axis=0)
    return float(mean) if np.ndim(mean) == 0 else mean


# ---- image AUROC --------------------------------------------------------------------------------
def image_auroc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Area under the ROC curve of image scores (labels 1 = anomalous, 0 = good), exactly
    scikit-learn's ``roc_auc_score`` (the tests check; importing scikit-learn costs seconds):
    AUROC = (1 / (N+ N-)) sum_{p anomalous} [#{g good: s_g < s_p} + 0.5 #{g: s_g = s_p}]."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).astype(int).ravel()
    if scores.shape != labels.shape:
        raise ValueError(f"got {scores.size} scores but {labels.size} labels")
    if set(np.unique(labels).tolist()) != {0, 1}:
        raise ValueError("image AUROC needs both good (0) and anomalous (1) images")
    pos = scores[labels == 1]
    neg = np.sort(scores[labels == 0])
    below = np.searchsorted(neg, pos, side="left").sum()
    below_or_eq = np.searchsorted(neg, pos, side="right").sum()
    # AUROC = (sum_p #{g < p} + sum_p #{g <= p}) / (2 N+ N-)
    return float((below + below_or_eq) / (2.0 * pos.size * neg.size))


def image_auroc_by_type(scores: Sequence[float], label_names: Sequence[str]) -> dict[str, float | None]:
    """Image AUROC of good vs each anomaly type (:func:`type_groups`) and their mean
    (:func:`type_mean`); None where the type or the good images are absent."""
    scores = np.asarray(scores, dtype=np.float64)
    names = np.asarray([str(n) for n in label_names])
    has_good = bool((names == "good").any())
    out: dict[str, float | None] = {}
    for kind, idx in type_groups(names).items():
        out[kind] = image_auroc(scores[idx], names[idx] == kind) if idx is not None and has_good else None
    out["mean"] = type_mean(out)
    return out


# ---- defects (MVTec LOCO AD's defects_config.json) ------------------------------------------------
def _defect_lookup(defects: Any) -> dict[int, tuple[str, float, bool]]:
    """pixel value -> (name, saturation_threshold, relative_saturation) from DefectSpecs or dicts."""
    out = {}
    for d in defects:
        get = d.get if isinstance(d, Mapping) else lambda k, d=d: getattr(d, k)
        out[int(get("pixel_value"))] = (str(get("defect_name")), float(get("saturation_threshold")),
                                        bool(get("relative_saturation")))
    return out


def _channel_regions(
    i: int, ch: np.ndarray, shape: tuple[int, ...], lookup: dict
) -> tuple[np.ndarray | None, list[tuple[np.ndarray, float, str]]]:
    """(union of the channels or None, [(channel mask, saturation area, defect name), ...]) of image
    i; empty channels (an empty ground-truth PNG) are skipped.  MVTec LOCO's saturation area a: a
    region's sPRO saturates at 1 once a of its pixels are detected."""
    ch = ch[None] if ch.ndim == 2 else ch
    if ch.ndim != 3 or ch.shape[1:] != shape:
        raise ValueError(f"image {i}: channels shape {ch.shape} must be [C, H, W] with [H, W] = {shape}")
    union, regions = None, []
    for c in range(ch.shape[0]):
        mask = ch[c] != 0
        area = int(np.count_nonzero(mask))
        if area == 0:
            continue
        vals = ch[c][mask]
        vmin, vmax = int(vals.min()), int(vals.max())
        if vmin != vmax:
            raise ValueError(f"image {i}, channel {c}: several pixel values ({vmin}..{vmax}) in one channel")
        if vmax not in lookup:
            raise ValueError(
                f"image {i}, channel {c}: pixel value {vmax} is not in the defects config "
                f"(known values: {sorted(lookup)}); check defects_config.json of the category"
            )
        name, thr, rel = lookup[vmax]
        # relative: a = int(threshold * |c|), truncated like MVTec's official evaluation, at least 1
        # pixel (ours: a product below one pixel would divide by zero); absolute: a = min(threshold, |c|)
        sat = float(max(1, int(thr * area))) if rel else min(thr, float(area))
        union = mask.copy() if union is None else (union | mask)
        regions.append((mask, sat, name))
    return union, regions


# ---- the single ordering --------------------------------------------------------------------------
def _counts_below(s: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(#{s < u_j}, #{s <= u_j}) for every u_j of ``u`` (distinct, ascending), ``s`` sorted ascending:
    one binary search per element of the shorter array (a second one only for ties)."""
    if u.size <= s.size:
        below = np.searchsorted(s, u, side="left")
        upto = below.copy()
        tie = np.flatnonzero(s[np.minimum(below, s.size - 1)] == u) if s.size else []
        upto[tie] = np.searchsorted(s, u[tie], side="right")
        return below, upto
    # j = #{u < s}; s == u_j adds one more u <= s.  #{s < u_j} = #{s : #{u <= s} <= j},
    # #{s <= u_j} = #{s : #{u < s} <= j}
    j = np.searchsorted(u, s, side="left")
    le = j + (u[np.minimum(j, u.size - 1)] == s)
    return (np.cumsum(np.bincount(le, minlength=u.size + 1))[:-1],
            np.cumsum(np.bincount(j, minlength=u.size + 1))[:-1])


@dataclass
class _Region:
    """One region of an image (a defect channel, or a connected component for AU-PRO)."""

    image: int
    defect: str | None  # None: a connected component
    sat: float  # saturation area a
    top: np.ndarray  # scores of its top ceil(a) pixels, descending (lower ones never raise y)


def _in_order(fn, n: int):
    """``fn(0), ..., fn(n - 1)`` on ``WORKERS`` threads (numpy releases the GIL), yielded in order."""
    with ThreadPoolExecutor(WORKERS) as pool:
        pending = [pool.submit(fn, i) for i in range(min(WORKERS, n))]
        for i in range(n):
            result = pending[i].result()
            pending[i] = None
            if i + WORKERS < n:
                pending.append(pool.submit(fn, i + WORKERS))
            yield result


def _rising(regs: list[_Region], chunk: int = 1 << 18) -> tuple[np.ndarray, np.ndarray]:
    """The distinct top scores u (descending) of ``regs`` and y(u) = (1/R) sum_r min(#{top_r >= u} / a_r, 1),
    summed pixel by pixel in descending order, ``chunk`` pixels at a time (no pixel-size float
    arrays); y(u) is the sum after the last pixel of each run of tied scores, capped at 1."""
    pos = np.concatenate([r.top for r in regs])
    order = np.argsort(pos)[::-1]  # descending scores (order among ties is irrelevant)
    pos = pos[order]
    ends = np.flatnonzero(np.r_[pos[1:] != pos[:-1], True])  # last pixel of each run of ties
    u = pos[ends]
    del pos
    offs = np.cumsum([0] + [r.top.size for r in regs])
    sats = np.array([r.sat for r in regs], dtype=np.float64)
    y = np.empty(ends.size)
    carry, done = 0.0, 0
    for c0 in range(0, order.size, chunk):
        idx = order[c0 : c0 + chunk]
        reg = np.searchsorted(offs, idx, side="right") - 1
        j = (idx - offs[reg] + 1).astype(np.float64)  # rank of the pixel in its region
        # the j-th highest pixel of region r adds min(j / a_r, 1) - min((j - 1) / a_r, 1)
        inc = np.minimum(j / sats[reg], 1.0) - np.minimum((j - 1.0) / sats[reg], 1.0)
        cum = np.cumsum(np.r_[carry, inc])[1:]  # continues the running sum exactly
        carry = cum[-1]
        stop = int(np.searchsorted(ends, c0 + idx.size))
        y[done:stop] = cum[ends[done:stop] - c0]
        done = stop
    y /= len(regs)
    return u, np.minimum(y, 1.0, out=y)


class PixelOrder:
    """Every pixel metric of a set of maps from one ordering of their pixels.

    maps ``[H, W]`` float; ``truth`` per image: a bool mask ``[H, W]`` (``defects`` None) or
    channels ``uint8 [C, H, W]`` (``defects``: DefectSpecs or dicts, see ``spro_curve``).
    ``label_names`` ("good" / "structural" / "logical") let groups be the types and defects;
    ``components`` also labels the connected regions of each mask (AU-PRO); ``stats_for``: groups
    whose bootstrap statistics (``uncertainty.spro_statistics``: its ``fpr_limit`` and threshold
    ``grid``) to collect while the pixels are sorted.

    Counting (negatives of image i sorted ascending as s; U = the distinct positive scores):
    each image adds below[j] = #{s < U_j} and upto[j] = #{s <= U_j} to the totals of its blocks
    (its label, each defect it shows).  A group (good + a type, good + a defect's images, all)
    sums its blocks: #{neg >= U_j} = N- - below[j], #{neg > U_j} = N- - upto[j]."""

    def __init__(
        self, maps: Sequence[np.ndarray], truth: Sequence[np.ndarray], defects: Any = None,
        label_names: Sequence[str] | None = None, components: bool = False, stats_for: Sequence[str] = (),
        fpr_limit: float = 0.05, grid: int | str = 2000,
    ):
        self.maps = _as_list(maps, "maps")
        self._truth = _as_list(truth, "channels" if defects is not None else "masks")
        if len(self._truth) != len(self.maps):
            raise ValueError(f"got {len(self.maps)} maps but {len(self._truth)} masks or channel stacks")
        self.dtype = _score_dtype(self.maps)
        self.names = ["all"] * len(self.maps) if label_names is None else [str(n) for n in label_names]
        if len(self.names) != len(self.maps):
            raise ValueError(f"got {len(self.maps)} maps but {len(self.names)} label names")
        self._lookup = None if defects is None else _defect_lookup(defects)
        found = list(_in_order(lambda i: self._regions_of(i, components), len(self.maps)))
        self.regions: list[_Region] = [r for regs, _, _ in found for r in regs]
        self.shows: list[set[str]] = [shows for _, shows, _ in found]
        self._neg_bits: list[np.ndarray | None] = [bits for _, _, bits in found]  # None: all negative
        self.n_neg = np.array([m.size if b is None else int(np.unpackbits(b).sum())
                               for m, b in zip(self.maps, self._neg_bits)], dtype=np.int64)
        self.components = components
        # U: the distinct scores of the regions' top pixels (where a curve can rise), ascending (leaner
        # than np.unique); u_count: the positive pixels at each (the components cover each one once)
        u = np.concatenate([r.top for r in self.regions] or [np.empty(0, self.dtype)])
        u.sort()
        self.u = u[np.r_[True, u[1:] != u[:-1]]] if u.size else u
        comp = np.sort(np.concatenate([r.top for r in self.regions if r.defect is None] or [self.u[:0]]))
        self.u_count = np.searchsorted(comp, self.u, "right") - np.searchsorted(comp, self.u, "left")
        del comp
        self.blocks: dict[str, list[int]] = {}
        for i, n in enumerate(self.names):
            self.blocks.setdefault(n, []).append(i)
            for d in self.shows[i] if n != "good" else ():
                self.blocks.setdefault("defect:" + d, []).append(i)
        samples = self._samples(stats_for) if grid != "exact" else {}
        self._stats = {g: self._stats_grid(g, samples.get(g), fpr_limit, grid) for g in stats_for}
        self.fp: dict[str, dict[int, np.ndarray]] = {g: {} for g in stats_for}
        # int32 counts: every group has fewer than 2**31 pixels
        self.below = {b: np.zeros(self.u.size, dtype=np.int32) for b in self.blocks}
        self.upto = {b: np.zeros(self.u.size, dtype=np.int32) for b in self.blocks}
        self._count_all()

    # -- pass 1: regions and positive scores, image by image
    def _regions_of(self, i: int, components: bool) -> tuple[list[_Region], set[str], np.ndarray | None]:
        """Regions of image i (its channels, and with ``components`` the connected parts of their
        union), the defects it shows, and its negative mask packed into bits."""
        from scipy import ndimage

        m, t = self.maps[i], self._truth[i]
        if self._lookup is not None:
            union, chans = _channel_regions(i, t, m.shape, self._lookup)
        elif t.shape != m.shape or m.ndim != 2:
            raise ValueError(f"image {i}: map shape {m.shape} and mask shape {t.shape} must be equal [H, W]")
        else:
            t = t.astype(bool, copy=False)
            union, chans = (t if t.any() else None), []
        regs = [self._region(i, name, m[mask], sat) for mask, sat, name in chans]
        if union is not None and components:
            lab, _ = ndimage.label(union, structure=_EIGHT_CONNECTED)
            for k, box in enumerate(ndimage.find_objects(lab), start=1):
                region = lab[box] == k
                regs.append(self._region(i, None, m[box][region], int(region.sum())))
        return regs, {name for _, _, name in chans}, None if union is None else np.packbits(~union)

    def _region(self, i: int, defect: str | None, scores: np.ndarray, sat: float) -> _Region:
        top = np.sort(scores.astype(self.dtype, copy=False))[::-1]
        return _Region(i, defect, sat, top[: min(top.size, int(math.ceil(sat)))])

    # -- pass 2: each image's negatives, sorted, counted below and up to each positive score
    def _negatives(self, i: int) -> np.ndarray:
        """Scores of image i's negative pixels in raster order."""
        m, bits = self.maps[i], self._neg_bits[i]
        if bits is None:
            return m.ravel().astype(self.dtype, copy=False)
        return m[np.unpackbits(bits, count=m.size).view(bool).reshape(m.shape)].astype(self.dtype, copy=False)

    def _count_image(self, i: int) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        s = np.sort(self._negatives(i))
        # fp_i(t_k) = #{s >= t_k} for each group's grid t (descending)
        fp = {g: s.size - np.searchsorted(s, st["t"], side="left")
              for g, st in self._stats.items() if i in st["members"]}
        return (*_counts_below(s, self.u), fp)

    def _count_all(self) -> None:
        member = {i: [b for b, imgs in self.blocks.items() if i in imgs] for i in range(len(self.maps))}
        for i, (below, upto, fp) in enumerate(_in_order(self._count_image, len(self.maps))):
            for b in member[i]:
                self.below[b] += below
                self.upto[b] += upto
            for g, row in fp.items():
                self.fp[g][i] = row

    # -- groups
    def group(self, name: str) -> list[str]:
        """Blocks of a group: "all", "structural" / "logical" (with the good images), "defect:<d>"
        (the images showing d, with the good images), or any block name."""
        if name == "all":
            return [b for b in self.blocks if not b.startswith("defect:")]
        extra = ["good"] if "good" in self.blocks and name != "good" else []
        return [*extra, name] if name in self.blocks else extra

    def images(self, name: str) -> list[int]:
        return sorted({i for b in self.group(name) for i in self.blocks[b]})

    def _negatives_at(self, name: str) -> tuple[np.ndarray, np.ndarray, int]:
        """(#{neg > U_j}, #{neg >= U_j}) for every j, and N- of the group."""
        blocks = self.group(name)
        n_neg = int(sum(self.n_neg[self.blocks[b]].sum() for b in blocks))
        upto = sum((self.upto[b] for b in blocks), np.zeros(self.u.size, np.int64))
        below = sum((self.below[b] for b in blocks), np.zeros(self.u.size, np.int64))
        return n_neg - upto, n_neg - below, n_neg

    def curve(self, name: str = "all", kind: str = "spro", defect_names: Iterable[str] | None = None):
        """Exact (FPR, y) curve of a group, y = sPRO (``kind`` "spro") or PRO ("pro").  At threshold t:
        FPR(t) = #{negatives >= t} / N-,  y(t) = (1/R) sum_r min(#{r >= t} / a_r, 1).
        At each distinct positive score u (descending) the curve goes from (#{neg > u}/N-, y_prev)
        to (#{neg >= u}/N-, y(u)); it is flat in between.  Points that repeat are dropped."""
        only = None if defect_names is None else set(defect_names)
        imgs = set(self.images(name))
        regs = [r for r in self.regions if r.image in imgs and (r.defect is None) == (kind == "pro")
                and (only is None or r.defect in only)]
        n_gt_all, n_ge_all, n_neg = self._negatives_at(name)
        if n_neg == 0:
            raise ValueError("no normal (negative) pixels: the FPR is undefined")
        if not regs:
            raise ValueError("no anomalous regions: the overlap curve is undefined")
        u, y_j = _rising(regs)
        k = np.searchsorted(self.u, u)
        x = np.empty(2 * u.size + 2)
        y = np.empty(2 * u.size + 2)
        x[0], y[0] = 0.0, 0.0
        x[1:-1:2], y[1:-1:2] = n_gt_all[k] / n_neg, np.r_[0.0, y_j[:-1]]
        x[2:-1:2], y[2:-1:2] = n_ge_all[k] / n_neg, y_j
        x[-1], y[-1] = 1.0, y_j[-1]  # the lowest threshold: every negative
        keep = np.r_[True, (np.diff(x) != 0) | (np.diff(y) != 0)]
        return x[keep], y[keep]

    def at_limits(
        self, name: str, limits: Sequence[float], kind: str = "spro", defect_names=None
    ) -> dict[float, float]:
        """Normalised area under the group's curve at each FPR limit: ``{limit: area}``."""
        for lim in limits:
            _check_fpr_limit(lim)
        x, y = self.curve(name, kind, defect_names)
        return {float(lim): area_under_curve(x, y, float(lim)) for lim in limits}

    def pixel_auroc(self) -> float:
        """Exact pixel AUROC over all images (rank-based, ties count 1/2):
        AUROC = (1 / (N+ N-)) sum_{p positive} [ #{n: s_n < s_p} + 0.5 #{n: s_n = s_p} ],
        summed over the distinct positive scores u with their multiplicities (integers, exact)."""
        if not self.components:
            raise ValueError("PixelOrder(..., components=True) is needed for the pixel AUROC")
        n_gt, n_ge, n_neg = self._negatives_at("all")
        n_pos = int(self.u_count.sum())
        if n_pos == 0 or n_neg == 0:
            raise ValueError("pixel AUROC needs both anomalous and normal pixels")
        # sum_p #{n < p} = sum_u count_u (N- - #{n >= u});  sum_p #{n <= p} = sum_u count_u (N- - #{n > u})
        below = int(np.dot(self.u_count, n_neg - n_ge))
        below_or_eq = int(np.dot(self.u_count, n_neg - n_gt))
        return float((below + below_or_eq) / (2.0 * n_pos * n_neg))

    # -- bootstrap statistics (esad_lib.uncertainty.spro_statistics) of a group on a grid
    def _samples(self, groups: Sequence[str]) -> dict[str, list[np.ndarray]]:
        """Per group, every ``stride``-th negative of each member image (raster order), stride =
        N- of the group // ``_MAX_SAMPLE``; one gather per image serves all groups."""
        members = {g: self.images(g) for g in groups}  # (_stats_grid refuses a group without negatives)
        stride = {g: max(1, int(self.n_neg[imgs].sum()) // _MAX_SAMPLE) for g, imgs in members.items()}

        def take(i: int) -> dict[str, np.ndarray]:
            v = self._negatives(i)
            return {g: v[:: stride[g]].copy() for g in groups if i in members[g]}

        got = list(_in_order(take, len(self.maps)))
        return {g: [smp[g] for smp in got if g in smp] for g in groups}

    def _stats_grid(self, name: str, samples, fpr_limit: float, grid):
        _check_fpr_limit(fpr_limit)
        members = self.images(name)
        if int(self.n_neg[members].sum()) == 0:
            raise ValueError("no normal (negative) pixels: the FPR is undefined")
        lowest = min(float(self.maps[i].min()) for i in members)
        dt = self.dtype
        if grid == "exact":
            t = np.unique(np.concatenate([self.maps[i].ravel() for i in members]).astype(dt))[::-1]
        elif isinstance(grid, (int, np.integer)) and not isinstance(grid, bool) and int(grid) >= 2:
            sample = np.sort(np.concatenate(samples))[::-1]  # the strided sample, descending
            n_s = sample.size
            f_dense = min(1.0, _DENSE_FACTOR * fpr_limit)
            dense, beyond = np.linspace(0.0, f_dense, int(grid) + 1), np.linspace(f_dense, 1.0, _TAIL + 1)
            levels = np.r_[dense[1:], beyond[1:]]
            # the k-th largest sampled negative has FPR ~ k / n_s
            ranks = np.clip(np.ceil(levels * n_s).astype(np.int64) - 1, 0, n_s - 1)
            t = np.unique(np.r_[sample[0], sample[ranks], np.asarray(lowest, dtype=dt)].astype(dt))[::-1]
        else:
            raise ValueError(f"grid must be an int >= 2 (number of thresholds) or 'exact', got {grid!r}")
        return {"members": set(members), "order": members, "t": t, "fpr_limit": float(fpr_limit)}

    def stats(self, name: str) -> dict[str, Any]:
        """thresholds [T] descending, fp [N, T], n_neg [N], overlap [R, T], region_image [R] (local
        image indices) of a group collected while counting (``stats_for``)."""
        st = self._stats[name]
        members = st["order"]
        local = {i: k for k, i in enumerate(members)}
        regs = [r for r in self.regions if r.image in st["members"] and r.defect is not None]
        if not regs:
            raise ValueError("no anomalous regions (non-empty defect channels): the sPRO curve is undefined")
        t_asc = st["t"][::-1]
        overlap = np.empty((len(regs), t_asc.size))
        for k, r in enumerate(regs):
            # overlap_r(t) = min(#{s >= t} / a_r, 1); pixels beyond the top ceil(a_r) change nothing
            n_ge = r.top.size - np.searchsorted(r.top[::-1], t_asc, side="left")
            overlap[k] = np.minimum(n_ge[::-1] / r.sat, 1.0)
        fp = np.stack([self.fp[name][i] for i in members]).astype(np.int64)
        region_image = np.array([local[r.image] for r in regs], dtype=np.int64)
        return {"thresholds": st["t"], "fp": fp, "n_neg": self.n_neg[members].copy(), "overlap": overlap,
                "region_image": region_image, "fpr_limit": st["fpr_limit"]}


# ---- public metrics on the ordering ----------------------------------------------------------------
def pixel_auroc(maps: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> float:
    """Exact pixel AUROC over all pixels of all images (see ``PixelOrder.pixel_auroc``)."""
    return PixelOrder(maps, masks, components=True).pixel_auroc()


def pro_curve(
    maps: Sequence[np.ndarray], masks: Sequence[np.ndarray], max_fpr: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Exact PRO curve (FPR, PRO) down to the first threshold with FPR > ``max_fpr``:
    PRO(t) = (1/R) sum_r |r intersect {s >= t}| / |r| over the connected regions r of all masks;
    FPR(t) = #{normal pixels >= t} / #normal pixels, pooled over all images."""
    _check_fpr_limit(max_fpr)
    x, y = PixelOrder(maps, masks, components=True).curve("all", "pro")
    return _cut(x, y, max_fpr)


def _cut(x: np.ndarray, y: np.ndarray, max_fpr: float) -> tuple[np.ndarray, np.ndarray]:
    end = int(np.searchsorted(x, max_fpr, side="right")) + 1  # keep the first point beyond
    return x[:end], y[:end]


def au_pro(maps: Sequence[np.ndarray], masks: Sequence[np.ndarray], fpr_limit: float = 0.3) -> float:
    """MVTec AD's AU-PRO = (1/fpr_limit) * integral_0^fpr_limit PRO dFPR (see ``pro_curve``)."""
    fpr, pro = pro_curve(maps, masks, max_fpr=fpr_limit)
    return area_under_curve(fpr, pro, fpr_limit)


def spro_curve(
    maps: Sequence[np.ndarray], channels: Sequence[np.ndarray], defects: Any, max_fpr: float = 1.0,
    defect_names: Iterable[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact sPRO curve (FPR, sPRO) of MVTec LOCO AD down to the first threshold with FPR > ``max_fpr``.

    Per defect channel c (one ground-truth PNG) and threshold t:
        sPRO_c(t) = min(|c intersect {s >= t}| / a_c, 1),
        a_c = min(saturation_threshold, |c|)   (absolute)   or   saturation_threshold * |c|   (relative),
    from the defect whose ``pixel_value`` the channel holds (``defects``: DefectSpecs or dicts).
    sPRO(t) = mean over all channels; FPR(t) = false positives / negatives (pixels outside every
    channel of their image), pooled over all images passed.  ``defect_names`` restricts the
    regions to those defects; other channels stay out of the negatives."""
    _check_fpr_limit(max_fpr)
    x, y = PixelOrder(maps, channels, defects).curve("all", "spro", defect_names)
    return _cut(x, y, max_fpr)


def au_spro(
    maps: Sequence[np.ndarray], channels: Sequence[np.ndarray], defects: Any, fpr_limit: float = 0.05
) -> float:
    """MVTec LOCO AD's AU-sPRO = (1/fpr_limit) * integral_0^fpr_limit sPRO dFPR (see ``spro_curve``);
    pass one anomaly type's images together with the good ones.  Several limits from one curve:
    ``PixelOrder(maps, channels, defects).at_limits("all", limits)``."""
    return PixelOrder(maps, channels, defects).at_limits("all", [fpr_limit])[float(fpr_limit)]


def au_spro_by_defect(
    maps: Sequence[np.ndarray], channels: Sequence[np.ndarray], label_names: Sequence[str], defects: Any,
    limits: Sequence[float] = SPRO_LIMITS, order: PixelOrder | None = None,
) -> dict[str, dict[float, float]]:
    """AU-sPRO of each defect name (``defects_config.json``) shown by a test image, at every limit.
    Defect d: the good images plus every image holding a channel of d; the regions are d's channels;
    the image's other channels are neither regions nor negatives.  ``order``: a ``PixelOrder`` to reuse."""
    order = order or PixelOrder(maps, channels, defects, label_names)
    names = sorted(b[len("defect:") :] for b in order.blocks if b.startswith("defect:"))
    return {d: order.at_limits("defect:" + d, limits, "spro", [d]) for d in names}


def map_metrics(
    maps: Sequence[np.ndarray], channels: Sequence[np.ndarray], label_names: Sequence[str], defects: Any,
    pro_fpr_limit: float = 0.3, spro_fpr_limit: float = 0.05, order: PixelOrder | None = None,
) -> dict[str, Any]:
    """Every pixel metric of ``metrics.json`` from one ``PixelOrder`` (built here unless given):
    ``pixel_auroc`` and ``au_pro`` pool all images; ``au_spro.<type>`` uses that type's images plus
    the good ones (MVTec LOCO's protocol); limits are JSON keys ``str(limit)``; missing is None."""
    order = order or PixelOrder(maps, channels, defects, label_names, components=True)
    has_pos = order.u.size > 0
    out: dict[str, Any] = {
        "pixel_auroc": order.pixel_auroc() if has_pos else None,
        "au_pro": order.at_limits("all", [pro_fpr_limit], "pro")[float(pro_fpr_limit)] if has_pos else None,
        "au_spro": dict.fromkeys(ANOMALY_TYPES),
        "au_spro_limits": dict.fromkeys(ANOMALY_TYPES),
    }
    limits = sorted({*SPRO_LIMITS, float(spro_fpr_limit)})
    for kind in [k for k, idx in type_groups(order.names).items() if idx is not None]:
        at = order.at_limits(kind, limits)
        out["au_spro"][kind] = at[float(spro_fpr_limit)]
        out["au_spro_limits"][kind] = {str(lim): at[lim] for lim in SPRO_LIMITS}
    out["au_spro"]["mean"] = type_mean(out["au_spro"])
    by_defect = au_spro_by_defect(maps, channels, label_names, defects, SPRO_LIMITS, order=order)
    out["au_spro_by_defect"] = {d: {str(lim): v for lim, v in at.items()} for d, at in by_defect.items()}
    return out
