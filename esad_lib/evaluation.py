"""Evaluation on the MVTec LOCO AD protocol (the paper's experiments: the authors' README "5. result").

Everything that writes or reads ``metrics.json`` lives here: ``evaluate(detector, cfg)`` scores a category's
test split with ANY detector (``esad_lib.detectors``) through ``scoring.score_dataset``, ``write_metrics``
is the one writer, ``evaluate_run(RUN)`` does it for a trained run and ``metrics_from_maps`` computes
everything from full-resolution maps alone (``esad score-maps``).  Metrics (``esad_lib.metrics``):
``image_auroc.{structural,logical,mean}`` (good vs each type); ``pixel_auroc``; ``au_pro`` (FPR 0.3);
``au_spro.{structural,logical,mean}`` (MVTec LOCO's saturated PRO up to FPR 0.05, rules from
``defects_config.json``), ``au_spro_limits`` and ``au_spro_by_defect`` at MVTec's limits; ``ci``: 95 %
stratified-bootstrap intervals (``esad_lib.uncertainty``); ``timing``.  A missing anomaly type is ``None``
everywhere.  Maps are upsampled bilinearly to the ORIGINAL image size and the image score is their max
(MVTec's definition).
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from esad_lib.config import RUNTIME_FIELDS, TEST_TIME_FIELDS, ESADConfig, resolve_device
from esad_lib.data import dataset_root, input_size, load_defects_config
from esad_lib.maps_io import export_maps, read_maps
from esad_lib.metrics import ANOMALY_TYPES, image_auroc_by_type, map_metrics
from esad_lib.paths import atomic_write_text
from esad_lib.uncertainty import (
    DEFAULT_N_BOOT,
    METHOD_BOOT,
    au_spro_ci_by_type,
    image_auroc_ci_by_type,
    pixel_order_for_ci,
)

if TYPE_CHECKING:  # torch is loaded only when a model scores (score_maps needs none of it)
    from esad_lib.scoring import ScoreResult

METRICS_FILE, SCORES_FILE = "metrics.json", "scores.csv"
#: bootstrap resamples and seed of the intervals in metrics.json.
CI_N_BOOT, CI_SEED = DEFAULT_N_BOOT, 0
#: version of the metrics.json layout (bump when keys change).
METRICS_SCHEMA = 3


def json_safe(x: Any) -> Any:
    """NaN/inf -> None, numpy scalars -> float, recursively (metrics.json stays strict JSON)."""
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(float(x)) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def metrics_from_maps(maps: Sequence[np.ndarray], channels: Sequence[np.ndarray], label_names: Sequence[str],
                      defects: Sequence, ci: bool = True) -> dict[str, Any]:
    """Every metric of ``metrics.json`` from full-resolution maps ``[H0,W0]``; ``ci``: with 95 %
    bootstrap intervals of the image AUROC and AU-sPRO (FPR 0.05) per type and their mean."""
    scores = np.asarray([float(np.max(m)) for m in maps], dtype=np.float64)
    names = list(label_names)
    ci = ci and "good" in names
    has_regions = any(c.shape[0] > 0 and c.any() for c in channels)
    order = None  # one ordering of the pixels for the metrics and their intervals
    if ci and has_regions:
        order = pixel_order_for_ci(maps, channels, names, list(defects), components=True)
    out = {"image_auroc": image_auroc_by_type(scores, names)}
    out.update(map_metrics(maps, channels, names, defects, order=order))
    if ci:
        boot = {"n_boot": CI_N_BOOT, "seed": CI_SEED}
        intervals = {"image_auroc": image_auroc_ci_by_type(scores, names, **boot), "au_spro": None}
        if has_regions:
            intervals["au_spro"] = au_spro_ci_by_type(maps, channels, names, defects, order=order, **boot)
        out["ci"] = json_safe({**intervals, "method": METHOD_BOOT, **boot, "level": 0.95})
    return out


def metrics_from_result(result: ScoreResult, defects: Sequence) -> dict[str, Any]:
    """All metrics of one scored test split (maps upsampled to original size here, float32)."""
    if result.channels is None:
        raise ValueError("the ScoreResult has no ground-truth channels; score with keep_channels=True")
    full = [result.full_res_map(i, np.float32) for i in range(len(result))]
    return metrics_from_maps(full, result.channels, result.label_names, defects)


#: the keys every metrics.json has besides the metrics (None where one does not apply).
RUN_KEYS: tuple[str, ...] = (
    "schema", "category", "method", "profile", "dataset", "dataset_root", "image_size", "counts",
    "score_map", "smoothing", "map_normalization", "feature_extractor", "config_key", "config",
    "run_dir", "timing",
)


def _provenance(category: str, root: Path, label_names: Sequence[str]) -> dict[str, Any]:
    """Every ``RUN_KEYS`` entry, with the schema version, category, dataset root and counts filled."""
    keys = dict.fromkeys(RUN_KEYS)
    keys.update(schema=METRICS_SCHEMA, category=category, dataset_root=str(root))
    keys["counts"] = {k: sum(1 for n in label_names if n == k) for k in ("good", *ANOMALY_TYPES)}
    return keys


def write_metrics(out_dir: str | Path, metrics: dict[str, Any], result: ScoreResult | None = None) -> None:
    """THE writer of ``metrics.json`` (last, atomically) and, with ``result``, ``scores.csv``."""
    out_dir = Path(out_dir)
    if result is not None:
        atomic_write_text(out_dir / SCORES_FILE, scores_csv(result))
    atomic_write_text(out_dir / METRICS_FILE, json.dumps(json_safe(metrics), indent=2) + "\n")


def evaluate(detector, cfg: ESADConfig, out_dir: str | Path | None = None, root: str | Path | None = None,
             max_images: int | None = None, progress: bool = True,
             export_maps_dir: str | Path | None = None) -> tuple[dict[str, Any], ScoreResult]:
    """Score ``cfg.category``'s test split with a fitted ``detector``: ``(metrics, result)``.
    ``out_dir``: also write metrics.json and scores.csv; ``export_maps_dir``: the maps as TIFF."""
    from esad_lib.detectors.base import detector_name
    from esad_lib.scoring import score_dataset

    root = Path(root) if root is not None else dataset_root(cfg)
    defects = load_defects_config(root / cfg.category)
    result = score_dataset(detector, cfg, root=root, max_images=max_images, progress=progress)
    t0 = time.perf_counter()
    metrics = metrics_from_result(result, defects)
    timing = {
        "fit_seconds": getattr(detector, "fit_seconds", None), "train_seconds": None,
        "scoring_ms_per_image": result.ms_per_image, "scoring_seconds": result.seconds,
        "scoring_wall_seconds": result.wall_seconds, "metric_seconds": time.perf_counter() - t0,
        "fast_scoring": bool(cfg.fast_scoring),
    }
    metrics.update(_provenance(cfg.category, root, result.label_names))
    metrics.update(
        method=detector_name(detector), profile=cfg.profile, dataset=cfg.dataset,
        image_size=list(input_size(cfg, root)), config=cfg.to_dict(),
        run_dir=None if out_dir is None else str(out_dir), timing=timing,
    )
    metrics.update(detector.info() if hasattr(detector, "info") else {})
    if export_maps_dir is not None:
        export_maps(result, cfg.category, export_maps_dir, progress=progress)
        metrics["exported_maps"] = str(Path(export_maps_dir) / cfg.category)
    if out_dir is not None:
        write_metrics(out_dir, metrics, result)
    return metrics, result


def evaluate_model(model, cfg: ESADConfig, root: str | Path | None = None, max_images: int | None = None,
                   progress: bool = True) -> tuple[dict[str, Any], ScoreResult]:
    """``evaluate`` of a trained ESAD / RIAD ``model`` scored with ``cfg``'s test-time fields."""
    from esad_lib.detectors.esad import EsadDetector

    return evaluate(EsadDetector(cfg, model, root, progress), cfg, None, root, max_images, progress)


def _read_json(p: Path, fix: str) -> dict[str, Any]:
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{p} is not valid JSON ({e}); {fix}") from e


def scores_csv(result: ScoreResult) -> str:
    """Per-image scores as CSV text (path, label, anomalous, score)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["path", "label", "anomalous", "score"], lineterminator="\n")
    w.writeheader()
    w.writerows(result.to_rows())
    return buf.getvalue()


def evaluate_run(run_dir: str | Path, max_images: int | None = None, progress: bool = True,
                 save_scores: bool = True, overrides: dict[str, Any] | None = None,
                 root: str | Path | None = None, export_maps_dir: str | Path | None = None) -> dict[str, Any]:
    """Evaluate the trained run in ``run_dir``; write ``run_dir/metrics.json`` (and scores.csv).
    ``overrides``: scoring fields of the run's config only (e.g. ``{"score_map": "pixel"}``)."""
    from esad_lib.detectors.esad import EsadDetector
    from esad_lib.run_io import load_run

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} not found; train it: `esad train --out {run_dir}`")
    model, cfg = load_run(run_dir)
    if overrides:
        allowed = set(TEST_TIME_FIELDS) | set(RUNTIME_FIELDS) | {"feature_weights"}
        if bad := set(overrides) - allowed:
            raise ValueError(f"cannot override {sorted(bad)} at evaluation (only scoring: {sorted(allowed)})")
        cfg = cfg.replace(**overrides)
        if "device" in overrides:
            model = model.to(resolve_device(cfg.device))
    det = EsadDetector(cfg, model, root, progress)
    metrics, result = evaluate(det, cfg, None, root, max_images, progress, export_maps_dir)
    summary = run_dir / "train_summary.json"  # the training wall time, when the run has one
    trained = _read_json(summary, "re-run `esad train` for this run") if summary.exists() else {}
    seconds = trained.get("train_seconds")
    metrics["timing"]["train_seconds"] = None if seconds is None else float(seconds)
    metrics["run_dir"] = str(run_dir)
    write_metrics(run_dir, metrics, result if save_scores else None)
    return metrics


def score_maps(maps_dir: str | Path, root: str | Path, categories: Sequence[str],
               out: str | Path | None = None, method: str = "external",
               progress: bool = True) -> dict[str, dict[str, Any]]:
    """``{category: metrics}`` of maps on disk; reads every category before writing ``out/<category>``."""
    maps_dir, root = Path(maps_dir), Path(root)
    loaded = [read_maps(maps_dir, root, c, progress) for c in categories]
    results: dict[str, dict[str, Any]] = {}
    for lm in loaded:
        m = metrics_from_maps(lm.maps, lm.channels, lm.label_names, load_defects_config(root / lm.category))
        m.update(_provenance(lm.category, root, lm.label_names))
        m.update({"method": method, "maps_dir": str(maps_dir), "skipped_labels": lm.skipped_labels})
        results[lm.category] = m
    if out is not None:
        for cat, m in results.items():
            write_metrics(Path(out) / cat, m)
    return results


def load_metrics(run_dir: str | Path) -> dict[str, Any]:
    """Read ``RUN/metrics.json`` (clear error when the run was not evaluated yet)."""
    p = Path(run_dir)
    p = p if p.name == METRICS_FILE else p / METRICS_FILE
    if not p.exists():
        raise FileNotFoundError(f"{p} not found; run `esad evaluate {p.parent}` first")
    return _read_json(p, f"re-run `esad evaluate {p.parent}`")
