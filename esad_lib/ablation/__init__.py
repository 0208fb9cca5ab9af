"""Ablations as config diffs (or detectors), and a grid runner that trains each model once.

The paper (the authors' README: method and results table) argues for the inpainting -> filling ->
reconstruction pipeline with the test fill, the feature loss, feature-level discrimination and the
lightweight U-Net.  Each ablation is a named :class:`Variant` (``ESADConfig`` fields applied with
``cfg.replace(**diff)``, or a detector); ``register_variant`` adds a reader's own.  A grid is
``variants x categories x seeds``; variants that only change scoring share one trained model::

    DIR/models/<train_key>/                     one trained model
    DIR/runs/<variant>/<category>/seed<s>/      run.json, config.json, scores.csv, metrics.json (last)
    DIR/results.csv                             one row per run and metric, with the run's 95 % CI
    DIR/summary.md                              CIs per variant; paired CIs of Δ to ``esad`` vs claims

Re-running skips finished runs, resumes interrupted training and refuses to overwrite a run made
with another configuration; several ``devices``: one worker process per device.
"""

from __future__ import annotations

# isort: off
from esad_lib.ablation import steps
from esad_lib.ablation.grid import GRID_FILE, GridReport, run_grid
from esad_lib.ablation.results import ImageBootstrap, collect_scores, read_results, seed_table, summary_table
from esad_lib.ablation.steps import evaluate_variant
from esad_lib.ablation.summary import CLAIM_METRIC, HEADLINE_METRICS, compare_to_base, interval_table
from esad_lib.ablation.variants import (BASE_VARIANT, RunSpec, Variant, apply_variant, config_key,
                                        expand_grid, model_finished, parse_list, register_variant, train_key,
                                        variant_names, variant_registry)
from esad_lib.ablation.verdict import (CONTRADICTS, EQUIVALENT, NO_CLAIM, NOT_ENOUGH, SIMILAR_TOLERANCE,
                                       SUPPORTS, claim_verdict, grid_description, minimum_detectable_effect,
                                       verdict_reason, verdict_sentence)
# isort: on

__all__ = [
    "BASE_VARIANT", "CLAIM_METRIC", "CONTRADICTS", "EQUIVALENT", "GRID_FILE", "GridReport",
    "HEADLINE_METRICS", "ImageBootstrap", "NOT_ENOUGH", "NO_CLAIM", "RunSpec", "SIMILAR_TOLERANCE",
    "SUPPORTS", "Variant", "apply_variant", "claim_verdict", "collect_scores", "compare_to_base",
    "config_key", "evaluate_variant", "expand_grid", "grid_description", "interval_table",
    "minimum_detectable_effect", "model_finished", "parse_list", "read_results", "register_variant",
    "run_grid", "seed_table", "steps", "summary_table", "train_key", "variant_names",
    "variant_registry", "verdict_reason", "verdict_sentence",
]
