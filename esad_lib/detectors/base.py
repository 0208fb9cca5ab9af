"""The one detector interface: every method the project compares (ESAD, RIAD, the PatchCore-style
reference, the naive baseline, a reader's own) is scored, evaluated and tabulated through it.

A detector needs two methods::

    class MyDetector:
        name = "blur"                       # column / variant name (default: the class name)
        def fit(self, images):              # images: float32 [N,3,H,W] in [-1, 1], train/good
            ...                             #   at the network input size (cfg.image_size)
            return self
        def anomaly_maps(self, images):     # [B,3,H,W] in [-1, 1] -> [B,H,W], higher = more anomalous
            ...

That is all ``esad_lib.evaluation.evaluate`` (metrics.json), ``esad_lib.demo.compare_methods``
(tables, 95 % intervals, paired differences) and ``esad_lib.ablation.run_grid`` use.  Optional:
``batch_size`` (images per ``anomaly_maps`` call, default ``cfg.eval_batch_size``) and ``info()``,
a dict merged into metrics.json (``score_map``, ``config_key``: the cache key, ...).  The image
score is always the maximum of the map upsampled to the image's original size (MVTec's definition).
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
