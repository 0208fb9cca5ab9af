"""Uncertainty of the evaluation metrics (the paper's image AUROC and MVTec LOCO's AU-sPRO).

The paper reports point estimates only.  With 40 good and 40 anomalous test images, one
standard error of a per-category image AUROC is about 5 points, so a difference between two
variants means little without an interval.  This module supplies the intervals; the tables
call it with per-image arrays and get small dicts back.

Layout: :mod:`.resampling` (the stratified resamples and the percentile interval),
:mod:`.image_auroc` (image AUROC, single and paired, per anomaly type), :mod:`.au_spro`
(AU-sPRO via sufficient statistics), :mod:`.seeds` (intervals over training seeds) and
:mod:`.formatting` (the text of an interval).  Every public name is importable from here.

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

from esad_lib.uncertainty.au_spro import (
    SproStats,
    au_spro_ci,
    au_spro_ci_by_type,
    pixel_order_for_ci,
    spro_statistics,
    weighted_au_spro,
)
from esad_lib.uncertainty.formatting import format_ci, format_diff
from esad_lib.uncertainty.image_auroc import (
    auroc_by_type_resampled,
    check_paired,
    image_auroc_ci,
    image_auroc_ci_by_type,
    paired_image_auroc_by_type,
    weighted_auroc,
)
from esad_lib.uncertainty.resampling import (
    ANOMALY_TYPES,
    DEFAULT_N_BOOT,
    METHOD_BOOT,
    METHOD_PAIRED,
    percentile_interval,
    resample_indices,
    resample_weights,
)
from esad_lib.uncertainty.seeds import aggregate_seeds, seed_image_interval

__all__ = [
    "ANOMALY_TYPES",
    "DEFAULT_N_BOOT",
    "METHOD_BOOT",
    "METHOD_PAIRED",
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
    "paired_image_auroc_by_type",
    "pixel_order_for_ci",
    "percentile_interval",
    "resample_indices",
    "resample_weights",
    "seed_image_interval",
    "spro_statistics",
    "weighted_au_spro",
    "weighted_auroc",
]
