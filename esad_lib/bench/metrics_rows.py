"""Rows "metrics": AU-sPRO and pixel AUROC on MVTec-LOCO-scale inputs (seconds, peak memory) and
the fast implementations against the brute-force ``*_reference`` ones on a subset."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

import torch

from esad_lib.bench.memory import peak_memory
from esad_lib.bench.metric_inputs import metric_call, synthetic_metric_inputs
from esad_lib.perf.timing import time_interleaved


def section_metrics(st: dict, device: torch.device, log: Callable[[str], None]) -> dict[str, Any]:
    """AU-sPRO and pixel AUROC at LOCO scale (time, memory) and fast == reference on a subset.

    The metrics run on the CPU whatever ``device`` is (they are numpy code)."""
    out: dict[str, Any] = {}
    n, size = st["metric_n"], st["metric_size"]
    t0 = time.perf_counter()
    maps, channels, defects = synthetic_metric_inputs(n, size, seed=0)
    out["inputs"] = {
        "n": n,
        "size": list(size),
        "anomalous": sum(c.shape[0] > 0 for c in channels),
        "channels": int(sum(c.shape[0] for c in channels)),
        "map_dtype": str(maps[0].dtype),
        "generate_s": time.perf_counter() - t0,
    }
    full = {m: metric_call(m, maps, channels, defects) for m in ("au_spro", "pixel_auroc")}
    values = {m: fn() for m, fn in full.items()}  # the warm-up call also yields the values
    out["full"] = time_interleaved(full, st["metric_repeats"], 0, torch.device("cpu"))
    for m in full:
        out["full"][m]["value"] = values[m]
    del full, maps, channels
    gc.collect()
    log("metrics: timed the full-scale metrics")
    for m in ("au_spro", "pixel_auroc"):
        out["full"][m]["memory"] = peak_memory(
            {
                "kind": "metric",
                "metric": m,
                "n": n,
                "size": list(size),
                "seed": 0,
                "warmup": False,
                "threads": 1,
            },
            torch.device("cpu"),
        )
    log("metrics: measured peak memory")

    rn, rsize = st["metric_ref_n"], st["metric_ref_size"]
    maps, channels, defects = synthetic_metric_inputs(rn, rsize, seed=1, good_fraction=0.2)
    out["subset"] = {"n": rn, "size": list(rsize)}
    fns = {
        m: metric_call(m, maps, channels, defects)
        for m in ("au_spro", "au_spro_reference", "pixel_auroc", "pixel_auroc_reference")
    }
    vals = {m: fn() for m, fn in fns.items()}
    out["subset"]["timing"] = time_interleaved(fns, st["metric_repeats"], 0, torch.device("cpu"))
    for m in fns:
        out["subset"]["timing"][m]["value"] = vals[m]
    out["subset"]["diff"] = {
        "au_spro": abs(vals["au_spro"] - vals["au_spro_reference"]),
        "pixel_auroc": abs(vals["pixel_auroc"] - vals["pixel_auroc_reference"]),
    }
    log("metrics: compared with the references")
    return out
