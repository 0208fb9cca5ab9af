"""Timing of contenders side by side: device sync, interleaved samples and their medians."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from tqdm.auto import tqdm


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); a no-op on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_samples(fns: dict[str, Callable[[], object]], repeats: int, warmup: int, device: torch.device,
                        progress=None) -> dict[str, list[float]]:
    """Seconds of every call of each callable (``repeats`` each), round-robin with the first one
    rotating, so a slow period of the machine hits all alike.  ``progress``: a bar's title."""
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
            sync(device)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in tqdm(range(repeats), desc=progress, disable=progress is None, leave=False):
        order = names[r % len(names) :] + names[: r % len(names)]
        for n in order:
            sync(device)
            t0 = time.perf_counter()
            fns[n]()
            sync(device)
            times[n].append(time.perf_counter() - t0)
    return times


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
