"""Uncertainty of the evaluation metrics (the paper's image AUROC and MVTec LOCO's AU-sPRO).

The paper reports point estimates only; with 120 good and 120 anomalous test images one standard
error of an image AUROC is still about 3 points, so the tables need intervals (95 % by default):

* **Stratified bootstrap over test images** (percentile interval, not bias-corrected; about 95 %
  coverage on 40 + 40 images in the tests): each of ``B`` = 2000 resamples draws, within every
  stratum (good / structural / logical, or 0 / 1), as many images as it holds with replacement,
  stored as multiplicities ``w [N]``; every metric has a *weighted* form (AU-sPRO: per-image statistics on a
  threshold grid), so all resamples are a few array operations.  Two methods on the SAME images get
  the SAME weights: the interval of the differences ``a - b`` is the paired interval.
* **Seeds**: :func:`aggregate_seeds`, Student-t ``mean +- t_{S-1} s / sqrt(S)``;
  :func:`seed_image_interval`, seeds and images by the law of total variance,
  ``Var(mean) ~= s^2_seed / S + Var_images(mean)`` (a normal interval).

Use: ``format_ci(image_auroc_ci_by_type(scores, label_names)["structural"])`` -> "76.9 [72.1, 81.4]";
``format_diff(paired_image_auroc_by_type(...)["logical"])`` -> "+3.2 [-1.0, 7.5]" (" *": excludes 0).
"""

from __future__ import annotations

# isort: off
from esad_lib.uncertainty.au_spro import (SproStats, au_spro_ci, au_spro_ci_by_type, pixel_order_for_ci,
                                          spro_statistics, weighted_au_spro)
from esad_lib.uncertainty.image_auroc import (auroc_by_type_resampled, check_paired, image_auroc_ci,
                                              image_auroc_ci_by_type, paired_image_auroc_by_type,
                                              weighted_auroc)
from esad_lib.uncertainty.resampling import (DEFAULT_N_BOOT, METHOD_BOOT, METHOD_PAIRED, category_seed,
                                             format_ci, format_diff, percentile_interval, resample_indices,
                                             resample_weights, type_summaries)
from esad_lib.uncertainty.seeds import aggregate_seeds, seed_image_interval
# isort: on

__all__ = [
    "DEFAULT_N_BOOT", "METHOD_BOOT", "METHOD_PAIRED", "SproStats", "aggregate_seeds", "category_seed",
    "auroc_by_type_resampled", "au_spro_ci", "au_spro_ci_by_type", "check_paired", "format_ci", "format_diff",
    "image_auroc_ci", "image_auroc_ci_by_type", "paired_image_auroc_by_type", "pixel_order_for_ci",
    "percentile_interval", "resample_indices", "resample_weights", "seed_image_interval", "spro_statistics",
    "type_summaries", "weighted_au_spro", "weighted_auroc",
]
