"""The steps of a grid run: train a model, evaluate it with a variant's test-time fields, or fit
and evaluate a variant's detector.

:func:`esad_lib.ablation.grid.run_grid` calls them through this module (``steps.train_model``),
so a test can replace them with fakes by monkeypatching ``esad_lib.ablation.steps``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from esad_lib.ablation.results import SCORES_FILE
from esad_lib.ablation.specs import model_finished
from esad_lib.config import ESADConfig, resolve_device
from esad_lib.detectors import EsadDetector
from esad_lib.evaluation import evaluate, scores_csv
from esad_lib.paths import atomic_write_text
from esad_lib.run_io import file_lock, load_run
from esad_lib.scoring import fit_detector


def model_started(model_dir: Path) -> bool:
    return (Path(model_dir) / "checkpoint.pt").exists()


def train_model(cfg: ESADConfig, model_dir: Path, resume: bool) -> None:
    """Train (or resume training of) the model for ``cfg`` into ``model_dir``."""
    from esad_lib import training

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
    ``(metrics, ScoreResult)`` of :func:`esad_lib.evaluation.evaluate`."""
    return evaluate(EsadDetector(cfg, model, progress=progress), cfg, progress=progress)


def evaluate_model(cfg: ESADConfig, model_dir: Path, run_dir: Path) -> dict[str, Any]:
    """Evaluate the trained model in ``model_dir`` with ``cfg``'s scoring fields; writes
    ``run_dir/scores.csv`` and returns the metrics (the grid writes ``metrics.json`` last)."""
    model, _ = load_run(model_dir)
    metrics, result = evaluate_variant(model.to(resolve_device(cfg.device)), cfg)
    atomic_write_text(Path(run_dir) / SCORES_FILE, scores_csv(result))
    return metrics


def evaluate_detector(factory: Callable[[ESADConfig], Any], cfg: ESADConfig, run_dir: Path) -> dict[str, Any]:
    """Fit ``factory(cfg)`` on train/good and evaluate it; writes ``run_dir/scores.csv``."""
    detector = fit_detector(factory(cfg), cfg)
    metrics, result = evaluate(detector, cfg, progress=False)
    atomic_write_text(Path(run_dir) / SCORES_FILE, scores_csv(result))
    return metrics
