"""Ablations as config diffs (or detectors), and a grid runner that trains each model once.

The paper (the authors' README: method and results table) argues for four design choices on top of
RIAD: the inpainting -> filling -> reconstruction pipeline with the test fill (``select = 1``),
the feature loss, feature-level anomaly discrimination, and the lightweight U-Net.  Each
ablation here is a *named variant*: a dict of :class:`~esad_lib.config.ESADConfig` fields
applied to the profile's base config with ``cfg.replace(**diff)``, or a detector
(``esad_lib.detectors``: fitted on train/good, no training).  A reader adds a variant from a
notebook with ``register_variant(Variant(name, diff, group, description, claim, expect))`` (or
``Variant(..., detector=factory)``) and passes its name, or the ``Variant``, to ``run_grid``.

A grid is ``variants x categories x seeds``.  Many variants only change how a trained model
is *scored* (the test fill, its mixing weight ``fill_alpha``, pixel vs feature maps,
smoothing); they share one trained model.  The on-disk layout makes that explicit::

    DIR/models/<train_key>/          one trained model (esad_lib.training.train's out_dir)
    DIR/runs/<variant>/<category>/seed<s>/
        run.json                     variant, category, seed, profile, config_key, train_key
        config.json                  the full config of the run
        metrics.json                 written last: a run is finished when it exists
        scores.csv                   per-image scores (path, label, anomalous, score)
    DIR/results.csv                  tidy: variant, category, seed, metric, value, profile, config_key,
                                     ci_low, ci_high (the run's 95 % image-bootstrap CI where possible)
    DIR/summary.md                   per variant and metric: 95 % CIs (esad_lib.uncertainty) where the
                                     runs' scores.csv allow one, else mean +- std over seeds; paired
                                     CIs of each variant's difference to ``esad``

``train_key`` is the config key over the *training* fields only (test-time fields are reset
to the profile preset before hashing and before training), so ``alpha_0`` ... ``alpha_1``,
``pixel_map`` and ``train_fill_at_test`` reuse the ``esad`` model.  Re-running a grid skips
finished runs, resumes a model whose ``checkpoint.pt`` exists but whose ``model.pt`` does not,
and never overwrites a run made with a different configuration (it stops with an error).

With several devices (``devices=["cuda:0", "cuda:1"]``) the grid runs in worker processes,
one per device, each pinned to its device for its lifetime; jobs go to whichever worker is
free.  Training (one job per distinct model) finishes before evaluation starts, so two
workers never train the same model.  Without devices (or with one) the grid runs
sequentially in this process.

Layout: :mod:`.variants` (the registry of config diffs, ``apply_variant``, ``training_config``,
``train_key`` / ``config_key``), :mod:`.specs` (one grid cell and where its files live,
``expand_grid``), :mod:`.steps` (train a model, evaluate a variant: the two steps a run needs),
:mod:`.grid` (``run_grid`` and its worker processes), :mod:`.results` (``results.csv``, per-image
scores, seed and summary tables), :mod:`.bootstrap` (the paired image-bootstrap intervals),
:mod:`.summary` (``summary.md``, ``compare_to_base``, ``interval_table``) and :mod:`.verdict`
(supports / contradicts / not enough evidence: a claim against the CI of the measured difference).
Every public name is importable from here.
"""

from __future__ import annotations

from esad_lib.ablation.bootstrap import ImageBootstrap
from esad_lib.ablation.grid import GridReport, assign_devices, run_grid
from esad_lib.ablation.results import (
    CI_LEVEL,
    CI_METRICS,
    CI_N_BOOT,
    CI_SEED,
    KEY_COLUMNS,
    METRIC_NAMES,
    RESULT_COLUMNS,
    SCORES_FILE,
    collect_results,
    collect_scores,
    flatten_metrics,
    read_results,
    read_run_scores,
    seed_table,
    summary_table,
)
from esad_lib.ablation.specs import RunSpec, expand_grid, parse_list, run_finished
from esad_lib.ablation.steps import (
    evaluate_detector,
    evaluate_model,
    evaluate_variant,
    model_finished,
    model_started,
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
    Variant,
    apply_variant,
    config_key,
    get_variant,
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
    VERDICTS,
    claim_verdict,
    count_verdicts,
    grid_description,
    verdict_reason,
    verdict_sentence,
)
from esad_lib.config import TEST_TIME_FIELDS

__all__ = [
    "BASE_VARIANT",
    "CI_LEVEL",
    "CI_METRICS",
    "CI_N_BOOT",
    "CI_SEED",
    "COMPARE_COLUMNS",
    "CONTRADICTS",
    "HEADLINE_METRICS",
    "INTERVAL_COLUMNS",
    "KEY_COLUMNS",
    "METRIC_NAMES",
    "NOT_ENOUGH",
    "NO_CLAIM",
    "RESULT_COLUMNS",
    "SCORES_FILE",
    "SIMILAR_TOLERANCE",
    "SUPPORTS",
    "TEST_TIME_FIELDS",
    "VERDICTS",
    "GridReport",
    "ImageBootstrap",
    "RunSpec",
    "Variant",
    "apply_variant",
    "assign_devices",
    "claim_verdict",
    "collect_results",
    "collect_scores",
    "compare_to_base",
    "config_key",
    "count_verdicts",
    "evaluate_detector",
    "evaluate_model",
    "evaluate_variant",
    "expand_grid",
    "flatten_metrics",
    "get_variant",
    "grid_description",
    "interval_table",
    "model_finished",
    "model_started",
    "parse_list",
    "read_results",
    "read_run_scores",
    "register_variant",
    "run_finished",
    "run_grid",
    "seed_table",
    "seed_values",
    "summary_markdown",
    "summary_table",
    "train_key",
    "train_model",
    "training_config",
    "variant_names",
    "variant_registry",
    "verdict_reason",
    "verdict_sentence",
]
