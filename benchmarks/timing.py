"""Medians of contenders timed side by side (``esad_lib.perf.speed.interleaved_samples``)."""

from __future__ import annotations

import statistics
from collections.abc import Callable

import torch

from esad_lib.perf.speed import interleaved_samples


def time_interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int,
                     device: torch.device) -> dict[str, dict[str, float]]:
    """Median/min/max seconds of each callable, run round-robin (``interleaved_samples``)."""
    times = interleaved_samples(fns, repeats, warmup, device)
    return {n: {"median_s": statistics.median(t), "min_s": min(t), "max_s": max(t), "repeats": len(t)}
            for n, t in times.items()}


def time_scoring_batch(fns: dict[str, Callable[[], object]], st: dict, batch: int,
                       device: torch.device) -> dict[str, dict[str, float]]:
    """``time_interleaved`` of scoring callables at one batch size (batch > 1: the settings'
    ``heavy_`` repeats and warmup), each row with its ``images_per_s``."""
    heavy = "heavy_" if batch > 1 else ""
    res = time_interleaved(fns, st[f"{heavy}repeats"], st[f"{heavy}warmup"], device)
    for v in res.values():
        v["images_per_s"] = batch / v["median_s"]
    return res
