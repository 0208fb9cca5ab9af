"""Ablations as config diffs (or detectors), and a grid runner that trains each model once.

The paper (the authors' README: method and results table) argues for four design choices on top of
RIAD: the inpainting -> filling -> reconstruction pipeline with the test fill (``select = 1``), the
feature loss, feature-level anomaly discrimination and the lightweight U-Net.  Each ablation is a
named :class:`Variant`: ``ESADConfig`` fields applied with ``cfg.replace(**diff)``, or a detector
(fitted on train/good, no training); ``register_variant(Variant(...))`` adds a reader's own.

A grid is ``variants x categories x seeds``; variants that only change how a model is *scored*
share one trained model (``train_key`` hashes the training fields only)::

    DIR/models/<train_key>/                     one trained model
    DIR/runs/<variant>/<category>/seed<s>/      run.json, config.json, scores.csv, metrics.json (last)
    DIR/results.csv                             one row per run and metric, with the run's 95 % CI
    DIR/summary.md                              CIs per variant; paired CIs of Δ to ``esad`` vs claims

Re-running skips finished runs, resumes a model with a ``checkpoint.pt`` but no ``model.pt``, and
refuses to overwrite a run made with another configuration.  With several ``devices``: one worker
process per device; training finishes before evaluation starts.  Modules: :mod:`.variants`
(registry, keys, ``RunSpec``, ``expand_grid``), :mod:`.steps` (train, evaluate), :mod:`.grid`
(``run_grid``), :mod:`.results` (tables, ``ImageBootstrap``), :mod:`.summary` (``summary.md``,
``compare_to_base``) and :mod:`.verdict` (a claim against the CI of Δ).
"""

from __future__ import annotations

from esad_lib.ablation.grid import GridReport, run_grid
from esad_lib.ablation.results import (
    CI_N_BOOT,
    CI_SEED,
    KEY_COLUMNS,
    RESULT_COLUMNS,
    ImageBootstrap,
    collect_results,
    collect_scores,
    read_results,
    seed_table,
    summary_table,
)
from esad_lib.ablation.steps import (
    evaluate_model,
    evaluate_variant,
    train_model,
)
from esad_lib.ablation.summary import (
    COMPARE_COLUMNS,
    HEADLINE_METRICS,
    INTERVAL_COLUMNS,
    compare_to_base,
    interval_table,
    seed_values,
    summary_markdown,
)
from esad_lib.ablation.variants import (
    BASE_VARIANT,
    RunSpec,
    Variant,
    apply_variant,
    config_key,
    expand_grid,
    get_variant,
    model_finished,
    parse_list,
    register_variant,
    train_key,
    training_config,
    variant_names,
    variant_registry,
)
from esad_lib.ablation.verdict import (
    CONTRADICTS,
    NO_CLAIM,
    NOT_ENOUGH,
    SIMILAR_TOLERANCE,
    SUPPORTS,
    claim_verdict,
    count_verdicts,
    grid_description,
    verdict_reason,
    verdict_sentence,
)
from esad_lib.evaluation import SCORES_FILE

# fmt: off
__all__ = [
    "BASE_VARIANT", "CI_N_BOOT", "CI_SEED", "COMPARE_COLUMNS", "CONTRADICTS", "HEADLINE_METRICS",
    "INTERVAL_COLUMNS", "KEY_COLUMNS", "NOT_ENOUGH", "NO_CLAIM", "RESULT_COLUMNS", "SCORES_FILE",
    "SIMILAR_TOLERANCE", "SUPPORTS", "GridReport", "ImageBootstrap", "RunSpec", "Variant",
    "apply_variant", "claim_verdict", "collect_results", "collect_scores", "compare_to_base",
    "config_key", "count_verdicts", "evaluate_model", "evaluate_variant", "expand_grid", "get_variant",
    "grid_description", "interval_table", "model_finished", "parse_list", "read_results",
    "register_variant", "run_grid", "seed_table", "seed_values", "summary_markdown", "summary_table",
    "train_key", "train_model", "training_config", "variant_names", "variant_registry", "verdict_reason",
    "verdict_sentence",
]
# fmt: on
