"""Rows "metrics": AU-sPRO and pixel AUROC on MVTec-LOCO-scale inputs (seconds, peak memory) and
the fast implementations against the brute-force ``*_reference`` ones on a subset; the synthetic
LOCO-like inputs they are timed on."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from benchmarks.memory import peak_memory
from benchmarks.timing import time_interleaved
from esad_lib import metrics
from esad_lib.data import DefectSpec
from tests.metric_references import au_spro_reference, pixel_auroc_reference


def synthetic_metric_inputs(
    n: int, size: tuple[int, int], seed: int = 0, good_fraction: float = 0.3
) -> tuple[list[np.ndarray], list[np.ndarray], list[DefectSpec]]:
    """``n`` anomaly maps with LOCO-like ground-truth channels, for metric timing.

    Per image: a smooth random background map (low-resolution noise upsampled bilinearly)
    plus per-pixel noise, ``float32 [H, W]``.  About ``good_fraction`` of the images are good
    (``channels`` of shape ``[0, H, W]``); each anomalous image has 1-3 channels (one per
    annotated defect, as LOCO's one-PNG-per-defect ground truth), each holding 1-3 elliptical
    blobs (radii 1-8 % of the image height, at least 2 px) at the pixel value of its defect
    type, where the map is raised by a random amount (some defects are found well, some poorly).

    Returns ``(maps, channels, defects)``; ``defects`` lists three ``DefectSpec`` with absolute
    and relative saturation thresholds, as in LOCO's ``defects_config.json``.
    """
    h, w = int(size[0]), int(size[1])
    rng = np.random.default_rng(seed)
    defects = [
        DefectSpec("missing_part", 255, 2000.0, False),
        DefectSpec("contamination", 254, 1.0, True),
        DefectSpec("scratch", 253, 0.5, True),
    ]
    lo_h, lo_w = max(h // 50, 2), max(w // 50, 2)
    low = torch.from_numpy(rng.standard_normal((n, 1, lo_h, lo_w), dtype=np.float32))
    smooth = torch.nn.functional.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)
    maps: list[np.ndarray] = []
    channels: list[np.ndarray] = []
    yy = np.arange(h, dtype=np.float32)[:, None]
    xx = np.arange(w, dtype=np.float32)[None, :]
    n_good = int(round(good_fraction * n))
    for i in range(n):
        m = smooth[i, 0].numpy().copy()
        m += 0.1 * rng.standard_normal((h, w), dtype=np.float32)
        if i < n_good:
            chans = np.zeros((0, h, w), dtype=np.uint8)
        else:
            c = int(rng.integers(1, 4))
            chans = np.zeros((c, h, w), dtype=np.uint8)
            for j in range(c):
                d = defects[int(rng.integers(len(defects)))]
                for _ in range(int(rng.integers(1, 4))):
                    ry, rx = np.maximum(rng.uniform(0.01, 0.08, size=2) * h, 2.0)
                    cy, cx = rng.uniform(0, h), rng.uniform(0, w)
                    y0, y1 = int(max(cy - ry, 0)), int(min(cy + ry + 1, h))
                    x0, x1 = int(max(cx - rx, 0)), int(min(cx + rx + 1, w))
                    if y1 <= y0 or x1 <= x0:
                        continue
                    ell = ((yy[y0:y1] - cy) / ry) ** 2 + ((xx[:, x0:x1] - cx) / rx) ** 2 <= 1.0
                    chans[j, y0:y1, x0:x1][ell] = d.pixel_value
                    m[y0:y1, x0:x1][ell] += float(rng.uniform(0.0, 2.5))
        maps.append(m)
        channels.append(chans)
    return maps, channels, defects


def metric_call(name: str, maps, channels, defects) -> Callable[[], float]:
    """A zero-argument call of the metric ``name`` (fast or ``*_reference``) on the inputs."""
    masks = [(c > 0).any(0) if c.shape[0] else np.zeros(c.shape[1:], dtype=bool) for c in channels]
    if name == "au_spro":
        return lambda: float(metrics.au_spro(maps, channels, defects))
    if name == "au_spro_reference":
        return lambda: float(au_spro_reference(maps, channels, defects))
    if name == "pixel_auroc":
        return lambda: float(metrics.pixel_auroc(maps, masks))
    if name == "pixel_auroc_reference":
        return lambda: float(pixel_auroc_reference(maps, masks))
    raise ValueError(f"unknown metric {name!r}")


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
