"""ESAD (and RIAD: ``EsadDetector(riad_config(cfg))``) behind the detector interface: ``fit`` is
``training.train_or_load(cfg)``, ``anomaly_maps`` is ``scoring.anomaly_maps`` (README "3. Key Algorithms")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from esad_lib.config import ESADConfig
from esad_lib.method.anomaly_map import MapStats
from esad_lib.scoring import anomaly_maps, build_scoring_extractor, normalization_stats, prepare_scoring
from esad_lib.training import train_or_load


class EsadDetector:
    """A trained ESAD / RIAD model scored with ``cfg``'s test-time fields (``model=None``: fit first)."""

    def __init__(self, cfg: ESADConfig, model: torch.nn.Module | None = None, root: str | Path | None = None,
                 progress: bool = True) -> None:
        self.cfg, self.root, self.progress, self.name = cfg, root, progress, cfg.method
        self.batch_size = int(cfg.eval_batch_size) if cfg.fast_scoring else 1
        self.model: torch.nn.Module | None = None
        self.extractor: torch.nn.Module | None = None
        self.stats: MapStats | None = None
        self.n_params = 0
        if model is not None:
            self._use(model)

    def fit(self, images: torch.Tensor | None = None) -> EsadDetector:
        """Train (or load from the cache) the model of ``cfg``; ``images`` are not used."""
        return self._use(train_or_load(self.cfg, progress=self.progress))

    def _use(self, model: torch.nn.Module) -> EsadDetector:
        """Score with ``model``: its feature extractor, prepared copies, normalisation statistics."""
        self.n_params = sum(p.numel() for p in model.parameters())
        model = model.eval()
        extractor = build_scoring_extractor(model, self.cfg) if self.cfg.score_map == "feature" else None
        if self.cfg.fast_scoring:  # fold BatchNorm / channels_last once, not per batch
            model, extractor = prepare_scoring(model, extractor)
        self.model, self.extractor, self.stats = model, extractor, None
        if self.cfg.map_normalization != "none":
            c = self.cfg
            self.stats = normalization_stats(self, c, c.map_normalization, self.root, self.progress)
        return self

    def anomaly_maps(self, images: torch.Tensor) -> torch.Tensor:
        """``[B,3,H,W]`` in [-1, 1] -> ``[B,H,W]`` (``esad_lib.scoring.anomaly_maps``)."""
        if self.model is None:
            raise RuntimeError("EsadDetector is not fitted: call fit() or pass a trained model")
        return anomaly_maps(self.model, images, self.cfg, self.extractor, self.stats)

    def info(self) -> dict[str, Any]:
        c = self.cfg
        out = {k: getattr(c, k) for k in ("score_map", "smoothing", "map_normalization", "feature_extractor")}
        return {**out, "config_key": c.key(), "config": c.to_dict(), "n_params": self.n_params}
