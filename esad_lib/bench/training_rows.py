"""Rows "one training step": ESAD vs RIAD at the profile's batch (time and peak memory).

One step = forward over the K masks with the train fill, ``ESADLoss``, backward, Adam
(``workloads.make_train_step``).
"""

from __future__ import annotations

import gc
import statistics
from collections.abc import Callable
from typing import Any

import torch

from esad_lib.bench.memory import peak_memory
from esad_lib.bench.settings import cfg_for
from esad_lib.bench.workloads import make_train_step
from esad_lib.perf.timing import time_interleaved


def section_train(st: dict, device: torch.device, log: Callable[[str], None]) -> dict[str, Any]:
    """One training step of ESAD vs RIAD: time and peak memory.

    CPU: each step runs in a fresh subprocess (its wall time and the peak resident memory of
    that one call), the contenders alternating, ``train_repeats`` times each -- the first step
    of a process, one-time set-up included; a step that runs out of memory is reported as
    failed.  CUDA: in-process, interleaved after a warm-up step, memory from the allocator.
    Batch: the profile's ``batch_size`` unless ``train_batch`` overrides it.
    """
    methods = ("esad", "riad")
    cfgs = {m: cfg_for(st["profile"], m, str(device)) for m in methods}
    if st.get("train_batch"):
        cfgs = {m: c.replace(batch_size=int(st["train_batch"])) for m, c in cfgs.items()}
    out: dict[str, Any] = {"batch": cfgs["esad"].batch_size, "memory": {}}
    if device.type == "cuda":
        steps = {m: make_train_step(cfgs[m], device) for m in methods}
        out["train_step"] = time_interleaved(steps, st["heavy_repeats"], 1, device)
        del steps
        gc.collect()
        for m in methods:
            spec = {"kind": "train_step", "cfg": cfgs[m].to_dict()}
            out["memory"][m] = peak_memory(spec, device)
        log("train: done")
        return out
    runs: dict[str, list[dict]] = {m: [] for m in methods}
    for _ in range(st["train_repeats"]):
        for m in methods:
            spec = {"kind": "train_step", "cfg": cfgs[m].to_dict(), "threads": torch.get_num_threads()}
            runs[m].append(peak_memory({**spec, "warmup": False}, device))
            log(f"train: {m} step done ({runs[m][-1].get('status', 'ok')})")
    out["train_step"] = {}
    for m in methods:
        ok = [r for r in runs[m] if "seconds" in r]
        t = [r["seconds"] for r in ok]
        out["train_step"][m] = {
            "median_s": statistics.median(t) if t else None,
            "min_s": min(t) if t else None,
            "max_s": max(t) if t else None,
            "repeats": len(t),
            "note": "first step of a fresh process",
        }
        out["memory"][m] = max(ok, key=lambda r: r["peak_mib"]) if ok else runs[m][0]
    return out
