"""The naive per-pixel z-score baseline (``esad_lib.baselines``; not in the paper) as a detector:
z(p) = max_c |x_c(p) - mu_c(p)| / max(sigma_c(p), sigma_min), grey levels 0..255, network size."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from esad_lib.baselines import network_image_255, zscore_maps, zscore_stats
from esad_lib.config import ESADConfig


class NaiveDetector:
    """Per-pixel z-score of a network input against the train/good statistics."""

    name = "naive"

    def __init__(self, cfg: ESADConfig, sigma_min: float = 1.0) -> None:
        self.cfg, self.sigma_min = cfg, float(sigma_min)
        self.batch_size = cfg.eval_batch_size
        self.mu: np.ndarray | None = None  # float32 [H,W,3]
        self.sigma: np.ndarray | None = None  # float32 [H,W,3]

    def fit(self, images: torch.Tensor) -> NaiveDetector:
        self.mu, self.sigma = zscore_stats(np.stack([network_image_255(x) for x in images]), self.sigma_min)
        return self

    def anomaly_maps(self, images: torch.Tensor) -> torch.Tensor:
        if self.mu is None:
            raise RuntimeError("NaiveDetector is not fitted: call fit(train images) first")
        test = np.stack([network_image_255(x) for x in images.cpu()])
        return torch.from_numpy(zscore_maps(test, self.mu, self.sigma))

    def info(self) -> dict[str, Any]:
        return {"score_map": "naive z-score", "config_key": self.cfg.key(), "config": self.cfg.to_dict()}
