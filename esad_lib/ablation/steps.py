"""The two steps of a grid run: train a model, evaluate it with a variant's test-time fields.

:func:`esad_lib.ablation.grid.run_grid` calls :func:`train_model` and :func:`evaluate_model`
through this module (``steps.train_model``), so a test can replace them with fakes by
monkeypatching ``esad_lib.ablation.steps``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from esad_lib import training
from esad_lib.ablation.results import SCORES_FILE
from esad_lib.ablation.specs import model_finished
from esad_lib.config import ESADConfig, resolve_device
from esad_lib.evaluation import evaluate_model as _evaluate
from esad_lib.evaluation import scores_csv
from esad_lib.patchcore import REFERENCE_LAYERS, evaluate_patchcore
from esad_lib.paths import atomic_write_text
from esad_lib.run_io import file_lock
from esad_lib.training import load_run

#: methods that need no trained model (their evaluation fits what it needs itself).
TRAINING_FREE_METHODS = ("patchcore",)


def needs_training(cfg: ESADConfig) -> bool:
    """False for a training-free reference method (PatchCore-style: a memory bank, no training)."""
    return cfg.method not in TRAINING_FREE_METHODS


def model_started(model_dir: Path) -> bool:
    return (Path(model_dir) / "checkpoint.pt").exists()


def train_model(cfg: ESADConfig, model_dir: Path, resume: bool) -> None:
    """Train (or resume training of) the model for ``cfg`` into ``model_dir``."""

    model_dir = Path(model_dir)
    # the lock file train_or_load uses, so that a notebook and a grid sharing the model cache
    # never train the same model at once
    with file_lock(model_dir.parent / f"{model_dir.name}.lock"):
        if model_finished(model_dir):  # trained meanwhile by another process
            return
        # resume=True also starts fresh when there is no checkpoint yet, and accepts a folder
        # in which an interrupted first epoch left only config.json
        training.train(cfg, model_dir, resume=resume or (model_dir / "config.json").exists())


def evaluate_variant(model: Any, cfg: ESADConfig, progress: bool = False) -> tuple[dict[str, Any], Any]:
    """Metrics of a trained ``model`` scored with ``cfg``'s test-time fields (no retraining):
    scoring takes every test-time choice from ``cfg``.  Returns ``(metrics, ScoreResult)`` of
    :func:`esad_lib.evaluation.evaluate_model`.
    """
    return _evaluate(model, cfg, progress=progress)


def evaluate_model(cfg: ESADConfig, model_dir: Path, run_dir: Path) -> dict[str, Any]:
    """Evaluate the trained model in ``model_dir`` with ``cfg``'s scoring fields.

    Uses :func:`esad_lib.evaluation.evaluate_model` (the same protocol as ``esad evaluate``)
    and writes ``run_dir/scores.csv``.  Returns the metrics dict; the caller writes
    ``metrics.json`` (the marker of a finished run) last.
    """

    if cfg.method == "patchcore":  # training-free: fit the memory bank on train/good, score
        return evaluate_patchcore(
            cfg, run_dir, extractor=cfg.feature_extractor, progress=False, layers=REFERENCE_LAYERS
        )
    model, _ = load_run(model_dir)
    model = model.to(resolve_device(cfg.device))
    metrics, result = evaluate_variant(model, cfg)
    atomic_write_text(Path(run_dir) / SCORES_FILE, scores_csv(result))
    # parameter count of the trained nets (the lightweight-vs-standard ablation's other axis)
    metrics["n_params"] = sum(p.numel() for p in model.parameters())
    return metrics
