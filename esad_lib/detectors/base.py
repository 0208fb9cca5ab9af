"""The one detector interface every method is scored, evaluated and tabulated through.

A detector has ``fit(train/good images float32 [N,3,H,W] in [-1, 1]) -> self`` and
``anomaly_maps([B,3,H,W]) -> [B,H,W]`` (higher = more anomalous); optional: ``name``,
``batch_size`` (default ``cfg.eval_batch_size``) and ``info()`` (merged into metrics.json).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class Detector(Protocol):
    """``fit(train images [N,3,H,W]) -> self``; ``anomaly_maps(images [B,3,H,W]) -> [B,H,W]``."""

    def fit(self, images: torch.Tensor) -> Any: ...

    def anomaly_maps(self, images: torch.Tensor) -> torch.Tensor: ...


def detector_name(detector: Any) -> str:
    """``detector.name`` or, without one, its class name in lower case."""
    return str(getattr(detector, "name", type(detector).__name__.lower()))
