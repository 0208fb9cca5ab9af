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

import importlib
from typing import Any

#: the public names, by the module that defines them (imported on first use).
_EXPORTS = {
    "grid": "GridReport run_grid",
    "results": "ImageBootstrap collect_scores read_results seed_table summary_table",
    "steps": "evaluate_variant",
    "summary": "HEADLINE_METRICS compare_to_base interval_table",
    "variants": "BASE_VARIANT RunSpec Variant apply_variant config_key expand_grid model_finished parse_list "
    "register_variant train_key variant_names variant_registry",
    "verdict": "CONTRADICTS NOT_ENOUGH NO_CLAIM SIMILAR_TOLERANCE SUPPORTS claim_verdict grid_description "
    "verdict_reason verdict_sentence",
}
_HOME = {name: module for module, names in _EXPORTS.items() for name in names.split()}
__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
    if name in _EXPORTS:  # a submodule, e.g. ``ablation.steps`` (a test replaces its functions)
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__ + list(_EXPORTS)
