"""The steps of a grid run: train a model, evaluate it with a variant's test-time fields, or fit
and evaluate a variant's detector.  ``run_grid`` calls them through this module, so a test can
replace them by monkeypatching ``esad_lib.ablation.steps``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from esad_lib import evaluation
from esad_lib.ablation.variants import model_finished
from esad_lib.config import ESADConfig, resolve_device
from esad_lib.evaluation import SCORES_FILE, evaluate, scores_csv
from esad_lib.paths import atomic_write_text
from esad_lib.run_io import file_lock, load_run
from esad_lib.scoring import fit_detector


def model_started(model_dir: Path) -> bool:
    return (Path(model_dir) / "checkpoint.pt").exists()


def train_model(cfg: ESADConfig, model_dir: Path, resume: bool) -> None:
    """Train (or resume training of) the model for ``cfg`` into ``model_dir``."""
    from esad_lib import training

    model_dir = Path(model_dir)
    # train_or_load's lock file: a notebook and a grid sharing the cache never train one model twice
    with file_lock(model_dir.parent / f"{model_dir.name}.lock"):
        if model_finished(model_dir):  # trained meanwhile by another process
            return
        # resume=True also starts fresh without a checkpoint (an interrupted first epoch: config.json only)
        training.train(cfg, model_dir, resume=resume or (model_dir / "config.json").exists())


def evaluate_variant(model: Any, cfg: ESADConfig, progress: bool = False) -> tuple[dict[str, Any], Any]:
    """``(metrics, ScoreResult)`` of a trained ``model`` scored with ``cfg``'s test-time fields (quiet)."""
    return evaluation.evaluate_model(model, cfg, progress=progress)


def evaluate_model(cfg: ESADConfig, model_dir: Path, run_dir: Path) -> dict[str, Any]:
    """Metrics of the model in ``model_dir`` scored with ``cfg``; writes ``run_dir/scores.csv``."""
    model, _ = load_run(model_dir)
    metrics, result = evaluate_variant(model.to(resolve_device(cfg.device)), cfg)
    atomic_write_text(Path(run_dir) / SCORES_FILE, scores_csv(result))
    return metrics


def evaluate_detector(factory: Callable[[ESADConfig], Any], cfg: ESADConfig, run_dir: Path) -> dict[str, Any]:
    """Fit ``factory(cfg)`` on train/good and evaluate it; writes ``run_dir/scores.csv``."""
    metrics, result = evaluate(fit_detector(factory(cfg), cfg), cfg, progress=False)
    atomic_write_text(Path(run_dir) / SCORES_FILE, scores_csv(result))
    return metrics
