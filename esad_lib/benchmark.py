"""Side-by-side speed benchmark: ESAD's lightweight U-Nets against the RIAD baseline (issue 7).

The paper (abstract; Sec. 3.3 "lightweight U-Net") introduces the lightweight U-Net "to meet
industrial requirements".  This module measures that claim and our own speed-ups in ONE
process run, with every group of contenders timed *interleaved* (round-robin, the order
rotated every repeat) after warm-up, reporting the median of several repeats -- so that the
ratios hold on a noisy, shared machine:

1. ``models``     ESAD (two lightweight U-Nets) vs RIAD (one classic U-Net) at the profile's
                  resolution and width: parameters, MACs, peak memory, one training step
                  (batch of the profile), full test-time scoring of one image (every cutout
                  size x every mask, the anomaly map included) at batch 1 and batched, each
                  through ``esad_lib.scoring.anomaly_maps`` with ``cfg.fast_scoring`` on and off.
2. ``masks``      the K masks of one cutout size as one batched forward vs a Python loop.
3. ``inference``  inference options, each as a speed-up over the plain eager model with the
                  outputs checked equal within a stated tolerance: ``torch.inference_mode``,
                  channels_last, ``torch.compile``, bf16/fp16 autocast (CUDA only), ONNX
                  Runtime on CPU (only when ``onnx`` and ``onnxruntime`` are installed).
4. ``metrics``    AU-sPRO and pixel AUROC on MVTec-LOCO-scale inputs (seconds, peak memory)
                  and against the brute-force ``*_reference`` implementations on a subset.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` in-process; on CPU each measurement
runs in its own subprocess (``python -m esad_lib.benchmark --probe SPEC``) which resets the
kernel's resident-set high-water mark (``/proc/self/clear_refs``) right before the measured
call and reads ``VmHWM`` after it (fallback: ``ru_maxrss``), because ``tracemalloc`` does not
see torch's allocations.

Rows that cannot run here (GPU rows without a GPU, ONNX without onnxruntime, a failing
``torch.compile``) are reported as ``skipped: why`` / ``failed: why``, never estimated.

Input images are random (uniform noise, seeded): the cost of dense convolutions does not
depend on the pixel values, and no dataset is needed.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as _dt
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from esad_lib.config import PRESETS, ESADConfig, resolve_device, riad_config, seed_everything
from esad_lib.models.fusion import fold_batchnorm  # noqa: F401 -- also part of this module's API
from esad_lib.paths import atomic_write_text

#: absolute tolerances (outputs are tanh images in [-1, 1]) for "same output" checks.
TOL_EXACT = 0.0
TOL_FP32 = 1e-4  # another float32 kernel order (channels_last, compile, ONNX Runtime, batching)
TOL_FP16 = 2e-2
TOL_BF16 = 6e-2
TOL_METRIC = 1e-6  # fast metric vs brute-force reference

#: the issue's targets (reported, not asserted).
TARGET_SCORING_SPEEDUP = 1.5
TARGET_PARAM_FRACTION = 0.25
TARGET_MASK_SPEEDUP = 1.3
TARGET_SPRO_SECONDS = 30.0
TARGET_SPRO_PEAK_GIB = 4.0


# --------------------------------------------------------------------------------------------
# settings of one run
# --------------------------------------------------------------------------------------------
def bench_settings(quick: bool, profile: str | None = None) -> dict[str, Any]:
    """Sizes and repeat counts.  ``quick``: seconds (the test suite); else the paper's scale."""
    if quick:
        return {
            "profile": profile or "smoke",
            "warmup": 1,
            "repeats": 2,
            "heavy_warmup": 1,
            "heavy_repeats": 2,
            "train_repeats": 1,
            "batched": 2,
            # one intra-op thread: the quick run checks that everything runs, it measures little,
            # and a 2-thread OpenMP pool on a busy 2-core machine is up to 60x slower for tiny ops
            "threads": 1,
            "metric_n": 6,
            "metric_size": (100, 160),
            "metric_ref_n": 3,
            "metric_ref_size": (24, 40),
            "metric_repeats": 2,
            "layer_repeats": 1,
            "compile": False,  # inductor needs minutes of C++ compilation on 2 cores
        }
    return {
        "profile": profile or "paper",
        # one scoring call at 256x256 is tens of seconds on a 2-core CPU: no separate warm-up
        # call (the median of 3 discards a slow first call); the training step (batch 8 x K
        # masks through both nets) takes minutes and runs once per contender (see section_models)
        "warmup": 0,
        "repeats": 3,
        "heavy_warmup": 0,
        "heavy_repeats": 2,
        "train_repeats": 1,
        "batched": 2,
        "threads": None,  # torch's default
        "metric_n": 100,
        "metric_size": (1000, 1600),  # H x W of a full-resolution MVTec LOCO image
        # the references recount every pixel at every distinct threshold: O(pixels^2)
        "metric_ref_n": 5,
        "metric_ref_size": (40, 64),
        "metric_repeats": 3,
        "layer_repeats": 2,
        "compile": True,
    }


def _cfg_for(profile: str, method: str, device: str) -> ESADConfig:
    """The profile's preset (``ESAD_PROFILE`` is ignored: the benchmark names its profile)."""
    if profile not in PRESETS:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PRESETS)}")
    cfg = PRESETS[profile].replace(device=device)
    if method == "riad":
        cfg = riad_config(cfg)
    elif method != "esad":
        raise ValueError(f"method must be 'esad' or 'riad', got {method!r}")
    return cfg


# --------------------------------------------------------------------------------------------
# timing and memory
# --------------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(
    fns: dict[str, Callable[[], object]], repeats: int, warmup: int, device: torch.device
) -> dict[str, dict[str, float]]:
    """Median/min/max seconds of each callable, the contenders run round-robin.

    Every repeat runs each contender once; the starting contender rotates, so none is always
    first (cache/thermal effects) and a slow period of the machine hits all of them alike.
    """
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
            _sync(device)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for n in order:
            _sync(device)
            t0 = time.perf_counter()
            fns[n]()
            _sync(device)
            times[n].append(time.perf_counter() - t0)
    return {
        n: {"median_s": statistics.median(t), "min_s": min(t), "max_s": max(t), "repeats": len(t)}
        for n, t in times.items()
    }


def _proc_status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _ru_maxrss_kib() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r // 1024 if sys.platform == "darwin" else r  # bytes on macOS, KiB on Linux


def measure_peak_rss(fn: Callable[[], object]) -> dict[str, float]:
    """Peak resident memory of one call of ``fn`` in THIS process (use a fresh subprocess).

    Returns ``peak_mib`` (the process's whole resident set at its highest during the call,
    inputs, model and interpreter included) and ``delta_mib`` (that peak minus the resident
    set just before the call: what the call itself needed).
    """
    gc.collect()
    reset = _reset_peak_rss()
    before = _proc_status_kib("VmRSS") if reset else _ru_maxrss_kib()
    t0 = time.perf_counter()
    fn()
    seconds = time.perf_counter() - t0
    peak = _proc_status_kib("VmHWM") if reset else _ru_maxrss_kib()
    if peak is None or before is None:
        peak, before = _ru_maxrss_kib(), 0
    return {
        "peak_mib": peak / 1024.0,
        "delta_mib": max(peak - before, 0) / 1024.0,
        "method": "VmHWM after clear_refs" if reset else "ru_maxrss (includes set-up)",
        "seconds": seconds,
    }


def peak_memory(spec: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Peak memory of the workload ``spec`` (see ``_build``): CUDA in-process, CPU in a subprocess."""
    if device.type == "cuda":
        fn = _build(spec, device)
        fn()  # warm-up (cuDNN autotuning, allocator caching)
        torch.cuda.synchronize(device)
        gc.collect()
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        del fn
        gc.collect()
        torch.cuda.empty_cache()
        return {
            "peak_mib": peak / 2**20,
            "delta_mib": (peak - base) / 2**20,
            "method": "cuda max_memory_allocated",
        }
    cmd = [sys.executable, "-m", "esad_lib.benchmark", "--probe", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode < 0:
        why = " (SIGKILL: most likely the out-of-memory killer)" if proc.returncode == -9 else ""
        return {"status": f"failed: killed by signal {-proc.returncode}{why}"}
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"status": f"failed: {tail[0][:200]}"}
    return json.loads(lines[-1])


def _probe_main(spec_json: str) -> int:
    """Subprocess side of ``peak_memory``: build the workload, warm it up, measure one call."""
    spec = json.loads(spec_json)
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    fn = _build(spec, torch.device("cpu"))
    if spec.get("warmup", True):
        fn()
    out = measure_peak_rss(fn)
    print(json.dumps(out))
    return 0


# --------------------------------------------------------------------------------------------
# workloads (shared by the timing in this process and the memory probes in subprocesses)
# --------------------------------------------------------------------------------------------
def _random_images(batch: int, size: tuple[int, int], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, int(size[0]), int(size[1]), generator=g) * 2.0 - 1.0


def _build_model(cfg: ESADConfig, device: torch.device) -> torch.nn.Module:
    from esad_lib.models import build_model

    seed_everything(cfg.seed)
    return build_model(cfg).to(device)


def _scoring_extractor(model: torch.nn.Module, cfg: ESADConfig):
    if cfg.score_map != "feature":
        return None
    from esad_lib.scoring import build_scoring_extractor

    return build_scoring_extractor(model, cfg)


def make_scoring(
    cfg: ESADConfig,
    batch: int,
    device: torch.device,
    model: torch.nn.Module | None = None,
) -> Callable[[], torch.Tensor]:
    """Full test-time scoring of ``batch`` images: every cutout size x every mask, map included.

    Goes through ``esad_lib.scoring.anomaly_maps`` (so ``cfg.fast_scoring`` picks the path).
    A given ``model`` is deep-copied, so that a path that changes the model cannot affect another.
    With the fast path the model and extractor are prepared (BatchNorm folded, channels_last)
    once, before timing -- as ``esad_lib.scoring.score_dataset`` does once per split.
    """
    from esad_lib.scoring import anomaly_maps, prepare_scoring

    model = copy.deepcopy(model) if model is not None else _build_model(cfg, device)
    model.eval()
    extractor = _scoring_extractor(model, cfg)
    if cfg.fast_scoring:
        model, extractor = prepare_scoring(model, extractor)
    images = _random_images(batch, cfg.image_size, cfg.seed + 1).to(device)
    return lambda: anomaly_maps(model, images, cfg, extractor=extractor)


class _AllReconstructions(torch.nn.Module):
    """Test-fill reconstructions for every cutout size with the fixed scoring masks (what
    ``ESADModel.reconstruct_all`` computes): ``img [B,3,H,W] -> [C,B,3,H,W]`` (C cutout sizes)."""

    def __init__(self, model: torch.nn.Module, cfg: ESADConfig, size: tuple[int, int]) -> None:
        super().__init__()
        from esad_lib.models.esad import scoring_masks

        self.model, self.fill = model, model.test_fill if cfg.test_fill is None else cfg.test_fill
        masks = scoring_masks(size[0], size[1], cfg.cutout_sizes, model.num_masks, cfg.seed)
        self.cutouts = list(masks)
        for c, m in masks.items():
            self.register_buffer(f"masks_{c}", m)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        outs = [
            self.model(img, c, fill=self.fill, masks=getattr(self, f"masks_{c}")).recon for c in self.cutouts
        ]
        return torch.stack(outs)


def make_scoring_onnx(
    cfg: ESADConfig, batch: int, device: torch.device, model: torch.nn.Module, tmp: Path
) -> tuple[Callable[[], torch.Tensor] | None, str]:
    """Full scoring with the networks run by ONNX Runtime (CPU): one exported graph holds every
    cutout size x every mask; the maps (feature extractor, smoothing) stay in torch, computed by
    the library's ``average_over_cutouts`` and ``smooth_maps``.  ``(None, why)`` when it
    cannot run.  The export (seconds) happens here, before timing."""
    from esad_lib.anomaly_map import average_over_cutouts, smooth_maps
    from esad_lib.scoring import FAST_PATH_ATOL, anomaly_maps, prepare_scoring

    if device.type != "cpu":
        return None, "skipped: measured on CPU runs only"
    model = copy.deepcopy(model).eval()
    images = _random_images(batch, cfg.image_size, cfg.seed + 1)
    t0 = time.perf_counter()
    fn, why = _onnx_option(_AllReconstructions(model, cfg, tuple(cfg.image_size)).eval(), images, tmp)
    if fn is None:
        return None, why
    export_s = time.perf_counter() - t0
    _, extractor = prepare_scoring(model, _scoring_extractor(model, cfg))
    images_cl = images.contiguous(memory_format=torch.channels_last)

    def run() -> torch.Tensor:
        recons = torch.from_numpy(fn())
        with torch.inference_mode():
            rec = {
                c: recons[i].contiguous(memory_format=torch.channels_last)
                for i, c in enumerate(cfg.cutout_sizes)
            }
            maps = average_over_cutouts(images_cl, rec, extractor, cfg.score_map)
            return smooth_maps(maps.contiguous().float(), cfg)

    ref = anomaly_maps(
        model, images, cfg.replace(fast_scoring=False), extractor=_scoring_extractor(model, cfg)
    )
    diff = float((run() - ref).abs().max())
    if diff > FAST_PATH_ATOL:
        return None, f"failed: maps differ from the eager path by {diff:.1e} > {FAST_PATH_ATOL:g}"
    return run, f"{why}; export + session {export_s:.1f} s; maps equal the eager ones within {diff:.1e}"


def make_train_step(
    cfg: ESADConfig, device: torch.device, model: torch.nn.Module | None = None
) -> Callable[[], float]:
    """One optimiser step as ``esad_lib.training`` takes it: forward over the K masks with the
    model's train fill, ``ESADLoss``, backward, Adam (float16 autocast + GradScaler on CUDA when
    ``cfg.amp``).

    Batch = ``cfg.batch_size``; the cutout size is the middle one of ``cfg.cutout_sizes``
    (the cost of a step does not depend on it: masks only multiply).
    """
    from esad_lib.losses import ESADLoss

    model = copy.deepcopy(model) if model is not None else _build_model(cfg, device)
    model.train()
    extractor = None
    if cfg.w_feature > 0:
        from esad_lib.features import build_feature_extractor

        extractor = build_feature_extractor(cfg.feature_extractor, weights=cfg.feature_weights, device=device)
    loss_fn = ESADLoss(cfg, extractor=extractor).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    use_amp = bool(cfg.amp) and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    images = _random_images(cfg.batch_size, cfg.image_size, cfg.seed + 2).to(device)
    sizes = sorted(cfg.cutout_sizes)
    cutout = int(sizes[len(sizes) // 2])
    gen = torch.Generator().manual_seed(cfg.seed)

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        amp = torch.autocast("cuda", dtype=torch.float16) if use_amp else contextlib.nullcontext()
        with amp:
            out = model(images, cutout, fill=model.train_fill, generator=gen)
            total, _ = loss_fn(images, out.recon, out.inpaint)
        scaler.scale(total).backward()
        scaler.step(opt)
        scaler.update()
        return float(total.detach())

    return step


def _build(spec: dict[str, Any], device: torch.device) -> Callable[[], object]:
    """A zero-argument callable for the workload described by the JSON-able ``spec``."""
    kind = spec["kind"]
    if kind in ("score", "train_step"):
        cfg = ESADConfig.from_dict(spec["cfg"]).replace(device=str(device))
        if kind == "score":
            return make_scoring(cfg, int(spec["batch"]), device)
        return make_train_step(cfg, device)
    if kind == "metric":
        maps, channels, defects = synthetic_metric_inputs(
            int(spec["n"]), tuple(spec["size"]), seed=int(spec.get("seed", 0))
        )
        return _metric_call(spec["metric"], maps, channels, defects)
    raise ValueError(f"unknown workload kind {kind!r}")


# --------------------------------------------------------------------------------------------
# MVTec-LOCO-scale metric inputs
# --------------------------------------------------------------------------------------------
def synthetic_metric_inputs(
    n: int, size: tuple[int, int], seed: int = 0, good_fraction: float = 0.3
) -> tuple[list[np.ndarray], list[np.ndarray], list]:
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
    from esad_lib.data import DefectSpec

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


def _metric_call(name: str, maps, channels, defects) -> Callable[[], float]:
    from esad_lib import metrics

    masks = [(c > 0).any(0) if c.shape[0] else np.zeros(c.shape[1:], dtype=bool) for c in channels]
    if name == "au_spro":
        return lambda: float(metrics.au_spro(maps, channels, defects))
    if name == "au_spro_reference":
        return lambda: float(metrics.au_spro_reference(maps, channels, defects))
    if name == "pixel_auroc":
        return lambda: float(metrics.pixel_auroc(maps, masks))
    if name == "pixel_auroc_reference":
        return lambda: float(metrics.pixel_auroc_reference(maps, masks))
    raise ValueError(f"unknown metric {name!r}")


# --------------------------------------------------------------------------------------------
# sections
# --------------------------------------------------------------------------------------------
def _count(model: torch.nn.Module, cfg: ESADConfig) -> dict[str, Any]:
    """Parameters and MACs: per U-Net forward (1 image) and per image of full scoring."""
    from esad_lib.models import counting

    nets = [n for n in (getattr(model, "inpaint_net", None), model.recon_net) if n is not None]
    h, w = cfg.image_size
    per_net = [int(counting.count_macs(n, (1, 3, h, w))) for n in nets]
    # full scoring of one image = every cutout size x K masks x every net
    n_fwd = len(cfg.cutout_sizes) * int(cfg.num_masks)
    return {
        "parameters": int(counting.count_parameters(model)),
        "nets": len(nets),
        "macs_per_net_forward": per_net,
        "macs_per_image_scoring_networks": n_fwd * sum(per_net),
        "network_forwards_per_image": n_fwd * len(nets),
    }


def section_models(st: dict, device: torch.device, log: Callable[[str], None]) -> dict[str, Any]:
    """ESAD vs RIAD: size, compute, training step, full scoring (batch 1 and batched)."""
    methods = ("esad", "riad")
    cfgs = {m: _cfg_for(st["profile"], m, str(device)) for m in methods}
    models = {m: _build_model(cfgs[m], device) for m in methods}
    out: dict[str, Any] = {"config": {m: cfgs[m].diff(PRESETS[st["profile"]]) for m in methods}}
    out["count"] = {m: _count(models[m], cfgs[m]) for m in methods}
    log("models: counted parameters and MACs")

    # full scoring: batch 1 with the fast path on and off; batched with the fast path only (the
    # plain path scores the images of a batch one at a time, i.e. it IS the batch-1 plain path)
    out["scoring"] = {}
    tmp = tempfile.TemporaryDirectory(prefix="esad_bench_onnx_")
    for batch in (1, st["batched"]):
        fns = {}
        for m in methods:
            for fast in (True, False) if batch == 1 else (True,):
                fns[f"{m}/{'fast' if fast else 'plain'}"] = make_scoring(
                    cfgs[m].replace(fast_scoring=fast), batch, device, models[m]
                )
            if batch == 1:  # the networks in ONNX Runtime (not a library path; see scoring.py)
                fn, why = make_scoring_onnx(cfgs[m], batch, device, models[m], Path(tmp.name))
                out.setdefault("onnx_status", {})[m] = why
                if fn is not None:
                    fns[f"{m}/onnxruntime"] = fn
        if batch == 1:
            res = time_interleaved(fns, st["repeats"], st["warmup"], device)
        else:
            res = time_interleaved(fns, st["heavy_repeats"], st["heavy_warmup"], device)
        for v in res.values():
            v["images_per_s"] = batch / v["median_s"]
        out["scoring"][str(batch)] = res
        del fns
        gc.collect()
        log(f"models: timed full scoring at batch {batch}")
    tmp.cleanup()

    # peak memory of scoring one image (a subprocess each on CPU)
    mem = out.setdefault("memory", {})
    for m in methods:
        base = {"cfg": cfgs[m].to_dict(), "threads": torch.get_num_threads(), "warmup": False}
        mem.setdefault(m, {})["scoring_b1"] = peak_memory({"kind": "score", "batch": 1, **base}, device)
    log("models: measured peak memory")
    return out


def section_train(st: dict, device: torch.device, log: Callable[[str], None]) -> dict[str, Any]:
    """One training step of ESAD vs RIAD: time and peak memory.

    CPU: each step runs in a fresh subprocess (its wall time and the peak resident memory of
    that one call), the contenders alternating, ``train_repeats`` times each -- the first step
    of a process, one-time set-up included; a step that runs out of memory is reported as
    failed.  CUDA: in-process, interleaved after a warm-up step, memory from the allocator.
    Batch: the profile's ``batch_size`` unless ``train_batch`` overrides it.
    """
    methods = ("esad", "riad")
    cfgs = {m: _cfg_for(st["profile"], m, str(device)) for m in methods}
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


# ---- masks ---------------------------------------------------------------------------------
def masks_loop(model, img: torch.Tensor, masks: torch.Tensor, fill: str) -> torch.Tensor:
    """``ESADModel.forward``'s reconstruction with one U-Net call per mask (the naive loop).

    ``img [B,3,H,W]``, ``masks [K,1,H,W]`` -> ``recon [B,3,H,W]``; same formulas as the model
    (``esad_lib.models.apply_fill``), only the K masks are not stacked into the batch.
    """
    from esad_lib.models import apply_fill

    recon = torch.zeros_like(img)
    for k in range(masks.shape[0]):
        m = masks[k : k + 1]  # [1,1,H,W]
        # cutout_k = img * m_k                                   [1,B,3,H,W]
        cutout = (img * m).unsqueeze(0)
        pre = None
        if model.inpaint_net is not None and fill in ("train", "test"):
            # pre_k = G1(cutout_k)
            pre = model.inpaint_net(cutout[0]).unsqueeze(0)
        filled = apply_fill(img, cutout, pre, m, fill, model.fill_alpha)
        # recon = sum_k G2(filled_k) * (1 - m_k)
        recon = recon + model.recon_net(filled[0]) * (1.0 - m)
    return recon


def section_masks(st: dict, device: torch.device, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """K masks as one batched forward (``ESADModel.forward``) vs a Python loop, eval + no_grad."""
    from esad_lib.masks import disjoint_masks

    rows = []
    for method in ("esad", "riad"):
        cfg = _cfg_for(st["profile"], method, str(device))
        model = _build_model(cfg, device).eval()
        h, w = cfg.image_size
        img = _random_images(1, (h, w), cfg.seed + 3).to(device)
        cut = int(sorted(cfg.cutout_sizes)[0])
        masks = disjoint_masks(h, w, cut, cfg.num_masks, generator=torch.Generator().manual_seed(0)).to(
            device
        )
        fill = model.test_fill
        with torch.no_grad():
            batched = model(img, cut, fill=fill, masks=masks).recon
            diff = float((masks_loop(model, img, masks, fill) - batched).abs().max())
            fns = {
                "loop over masks": lambda: masks_loop(model, img, masks, fill),  # noqa: B023 (run in-loop)
                "batched (ESADModel.forward)": lambda: model(img, cut, fill=fill, masks=masks),  # noqa: B023
            }
            res = time_interleaved(fns, st["repeats"], st["warmup"], device)
        loop_s = res["loop over masks"]["median_s"]
        for name, r in res.items():
            rows.append(
                {
                    "model": method,
                    "variant": name,
                    "masks": int(cfg.num_masks),
                    "cutout": cut,
                    **r,
                    "speedup_vs_loop": loop_s / r["median_s"],
                    "max_abs_diff_loop_vs_batched": diff,
                    "tolerance": TOL_FP32,
                    "equal": diff <= TOL_FP32,
                }
            )
        log(f"masks: {method} done")
    return rows


# ---- where the time goes ------------------------------------------------------------------
def layer_kind(m: torch.nn.Module) -> str | None:
    """The cost category of a leaf module (None: not timed separately)."""
    if isinstance(m, torch.nn.Conv2d):
        k = "x".join(str(v) for v in m.kernel_size)
        if m.groups > 1 and m.groups == m.in_channels == m.out_channels:
            return f"depthwise {k} conv"
        if m.groups > 1:
            return f"grouped {k} conv (groups = C_in, expand)"
        return f"dense {k} conv"
    if isinstance(m, torch.nn.ConvTranspose2d):
        return "transposed 2x2 conv"
    if isinstance(m, torch.nn.BatchNorm2d):
        return "BatchNorm"
    if isinstance(m, torch.nn.ReLU):
        return "ReLU"
    if isinstance(m, torch.nn.MaxPool2d):
        return "max-pool"
    return None


def _conv_macs(m: torch.nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    if isinstance(m, torch.nn.Conv2d):
        # MACs = B * C_out * H_out * W_out * (C_in / groups) * k_h * k_w
        return out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
    if isinstance(m, torch.nn.ConvTranspose2d):
        # MACs = B * C_in * H_in * W_in * (C_out / groups) * k_h * k_w
        return inp.numel() * (m.out_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
    return 0


def layer_breakdown(
    net: torch.nn.Module, x: torch.Tensor, device: torch.device, repeats: int = 2
) -> dict[str, dict[str, float]]:
    """Seconds and MACs per layer kind of ``net(x)`` (forward hooks, eval + inference_mode).

    "other" = whole forward minus the timed layers (concatenation, residual adds, padding,
    tanh, Python overhead).  The hooks add a little overhead of their own; shares are what count.
    """
    acc: dict[str, dict[str, float]] = {}
    starts: dict[int, float] = {}

    def pre(m, _inp):
        _sync(device)
        starts[id(m)] = time.perf_counter()

    def post(m, inp, out):
        _sync(device)
        d = acc.setdefault(layer_kind(m), {"s": 0.0, "macs": 0.0, "calls": 0})
        d["s"] += time.perf_counter() - starts.pop(id(m))
        d["macs"] += _conv_macs(m, inp[0], out)
        d["calls"] += 1

    handles = []
    for m in net.modules():
        if layer_kind(m) is not None:
            handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    total = 0.0
    try:
        with torch.inference_mode():
            net(x)  # warm-up
            acc.clear()
            for _ in range(repeats):
                _sync(device)
                t0 = time.perf_counter()
                net(x)
                _sync(device)
                total += time.perf_counter() - t0
    finally:
        for h in handles:
            h.remove()
    timed = sum(d["s"] for d in acc.values())
    acc["other (cat, add, pad, tanh, Python)"] = {"s": max(total - timed, 0.0), "macs": 0.0, "calls": 0}
    out = {}
    for kind, d in sorted(acc.items(), key=lambda kv: -kv[1]["s"]):
        out[kind] = {
            "ms": 1000.0 * d["s"] / repeats,
            "share": d["s"] / total if total else 0.0,
            "gmacs": d["macs"] / repeats / 1e9,
            "gmac_per_s": (d["macs"] / d["s"] / 1e9) if d["s"] > 0 and d["macs"] else None,
            "calls": int(d["calls"] / repeats),
        }
    out["total"] = {
        "ms": 1000.0 * total / repeats,
        "share": 1.0,
        "gmacs": sum(v["gmacs"] for v in out.values()),
    }
    return out


def section_layers(st: dict, device: torch.device, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Where one U-Net forward spends its time, per layer kind: lightweight vs classic, NCHW vs
    channels_last, on the K-image batch of one cutout size at the profile's resolution."""
    rows = []
    for method in ("esad", "riad"):
        cfg = _cfg_for(st["profile"], method, str(device))
        net = _build_model(cfg, device).recon_net.eval()
        x = _random_images(int(cfg.num_masks), cfg.image_size, cfg.seed + 5).to(device)
        for fmt in ("NCHW", "channels_last"):
            n, xx = net, x
            if fmt == "channels_last":
                n = copy.deepcopy(net).to(memory_format=torch.channels_last)
                xx = x.contiguous(memory_format=torch.channels_last)
            bd = layer_breakdown(n, xx, device, repeats=st["layer_repeats"])
            rows.append(
                {"net": f"{cfg.unet} ({method})", "format": fmt, "batch": int(x.shape[0]), "kinds": bd}
            )
            log(f"layers: {cfg.unet} {fmt} done")
    return rows


# ---- inference options ---------------------------------------------------------------------
class _OneCutoutSize(torch.nn.Module):
    """The model's reconstruction for one cutout size with fixed masks: ``img -> recon``."""

    def __init__(self, model: torch.nn.Module, cutout: int, masks: torch.Tensor, fill: str) -> None:
        super().__init__()
        self.model, self.cutout, self.fill = model, int(cutout), fill
        self.register_buffer("masks", masks)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.model(img, self.cutout, fill=self.fill, masks=self.masks).recon


def _onnx_option(
    module: torch.nn.Module, img: torch.Tensor, tmp: Path
) -> tuple[Callable[[], np.ndarray] | None, str]:
    """An ONNX Runtime (CPU) session for ``module``; ``(None, why)`` when not possible."""
    try:
        import onnx  # noqa: F401
        import onnxruntime as ort
    except ImportError as e:
        return None, f"skipped: {e.name} not installed (pip install onnx onnxruntime)"
    path = tmp / "model.onnx"
    try:
        with warnings_silenced():
            torch.onnx.export(
                module, (img,), str(path), input_names=["img"], output_names=["recon"], dynamo=False
            )
        so = ort.SessionOptions()
        so.intra_op_num_threads = torch.get_num_threads()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 -- report any exporter/runtime failure as a row
        return None, f"failed: {type(e).__name__}: {str(e).splitlines()[0][:160]}"
    x = img.cpu().numpy()
    return (lambda: sess.run(None, {"img": x})[0]), f"ok (onnxruntime {ort.__version__})"


@contextlib.contextmanager
def warnings_silenced() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def section_inference(st: dict, device: torch.device, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Inference options on the reconstruction for one cutout size (all K masks batched), for
    ESAD and for RIAD (each option as a speed-up over the same model's plain eager forward)."""
    rows = []
    for method in ("esad", "riad"):
        rows += [{"model": method, **r} for r in _inference_rows(method, st, device, log)]
    return rows


def _inference_rows(method: str, st: dict, device: torch.device, log: Callable[[str], None]) -> list[dict]:
    from esad_lib.masks import disjoint_masks

    cfg = _cfg_for(st["profile"], method, str(device))
    model = _build_model(cfg, device).eval()
    h, w = cfg.image_size
    cut = int(sorted(cfg.cutout_sizes)[0])
    masks = disjoint_masks(h, w, cut, cfg.num_masks, generator=torch.Generator().manual_seed(0)).to(device)
    img = _random_images(1, (h, w), cfg.seed + 4).to(device)
    eager = _OneCutoutSize(model, cut, masks, cfg.test_fill).eval()
    with torch.no_grad():
        ref = eager(img).float().cpu()

    def no_grad(fn):
        def run():
            with torch.no_grad():
                return fn()

        return run

    def inference(fn):
        def run():
            with torch.inference_mode():
                return fn()

        return run

    fns: dict[str, Callable[[], object]] = {"eager (no_grad)": no_grad(lambda: eager(img))}
    status: dict[str, str] = {"eager (no_grad)": "ok"}
    tol: dict[str, float] = {"eager (no_grad)": TOL_EXACT}
    extra: dict[str, dict] = {}

    fns["inference_mode"] = inference(lambda: eager(img))
    status["inference_mode"], tol["inference_mode"] = "ok", TOL_EXACT

    cl_model = _OneCutoutSize(copy.deepcopy(model), cut, masks, cfg.test_fill).eval()
    cl_model = cl_model.to(memory_format=torch.channels_last)
    img_cl = img.contiguous(memory_format=torch.channels_last)
    fns["channels_last"] = inference(lambda: cl_model(img_cl))
    status["channels_last"], tol["channels_last"] = "ok", TOL_FP32

    fold_model = fold_batchnorm(_OneCutoutSize(copy.deepcopy(model), cut, masks, cfg.test_fill).eval())
    fns["BN folded into conv"] = inference(lambda: fold_model(img))
    status["BN folded into conv"], tol["BN folded into conv"] = "ok", TOL_FP32

    both = fold_batchnorm(_OneCutoutSize(copy.deepcopy(model), cut, masks, cfg.test_fill).eval())
    both = both.to(memory_format=torch.channels_last)
    fns["channels_last + BN folded"] = inference(lambda: both(img_cl))
    status["channels_last + BN folded"], tol["channels_last + BN folded"] = "ok", TOL_FP32

    name = "torch.compile"
    tol[name] = TOL_FP32
    if not st["compile"]:
        status[name] = "skipped: --quick (inductor compiles C++ for minutes on a 2-core CPU)"
    else:
        try:
            compiled = torch.compile(_OneCutoutSize(copy.deepcopy(model), cut, masks, cfg.test_fill).eval())
            t0 = time.perf_counter()
            with torch.inference_mode():
                compiled(img)
            _sync(device)
            extra[name] = {"compile_s": time.perf_counter() - t0}
            fns[name] = inference(lambda: compiled(img))
            status[name] = "ok"
        except Exception as e:  # noqa: BLE001 -- report why compile does not work here
            status[name] = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
    log(f"inference: {method} compile " + status[name])

    for dt_name, dt, t in (
        ("autocast bf16", torch.bfloat16, TOL_BF16),
        ("autocast fp16", torch.float16, TOL_FP16),
    ):
        tol[dt_name] = t
        if device.type != "cuda":
            status[dt_name] = "skipped: CUDA only (no GPU in this run)"
            continue

        def run_amp(dt=dt):
            with torch.inference_mode(), torch.autocast("cuda", dtype=dt):
                return eager(img)

        fns[dt_name], status[dt_name] = run_amp, "ok"

    name = "ONNX Runtime (CPU)"
    tol[name] = TOL_FP32
    tmpdir = tempfile.TemporaryDirectory(prefix="esad_bench_onnx_")
    if device.type != "cpu":
        status[name] = "skipped: measured on CPU runs only"
    else:
        fn, why = _onnx_option(
            _OneCutoutSize(copy.deepcopy(model), cut, masks, cfg.test_fill).eval(), img, Path(tmpdir.name)
        )
        status[name] = why
        if fn is not None:
            fns[name] = fn
    log(f"inference: {method} onnx " + status[name])

    # outputs equal within tolerance?
    diffs: dict[str, float] = {}
    for n, fn in list(fns.items()):
        try:
            o = fn()
            o = torch.as_tensor(np.asarray(o)) if isinstance(o, np.ndarray) else o.float().cpu()
            diffs[n] = float((o - ref).abs().max())
        except Exception as e:  # noqa: BLE001
            status[n] = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
            del fns[n]
    res = time_interleaved(fns, st["repeats"], st["warmup"], device)
    tmpdir.cleanup()
    base = res["eager (no_grad)"]["median_s"]
    rows = []
    for n in status:
        row: dict[str, Any] = {"option": n, "status": status[n], "tolerance": tol[n]}
        if n in res:
            row.update(res[n])
            row["speedup_vs_eager"] = base / res[n]["median_s"]
            row["max_abs_diff"] = diffs[n]
            row["equal"] = diffs[n] <= tol[n]
        row.update(extra.get(n, {}))
        rows.append(row)
    log(f"inference: {method} done")
    return rows


# ---- metrics -------------------------------------------------------------------------------
def section_metrics(st: dict, device: torch.device, log: Callable[[str], None]) -> dict[str, Any]:
    """AU-sPRO and pixel AUROC at LOCO scale (time, memory) and fast == reference on a subset."""
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
    full = {m: _metric_call(m, maps, channels, defects) for m in ("au_spro", "pixel_auroc")}
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
        m: _metric_call(m, maps, channels, defects)
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


# --------------------------------------------------------------------------------------------
# targets, table, entry point
# --------------------------------------------------------------------------------------------
def _targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with the measured figure (reported, not asserted)."""
    quick = res["meta"]["quick"]
    where = "(quick mode: not the target's setting)" if quick else ""
    out = []
    mo = res.get("models")
    if mo:
        s1 = mo["scoring"]["1"]
        sp = s1["esad/fast"]["images_per_s"] / s1["riad/fast"]["images_per_s"]
        frac = mo["count"]["esad"]["parameters"] / mo["count"]["riad"]["parameters"]
        note = ""
        if "esad/onnxruntime" in s1 and "riad/onnxruntime" in s1:
            best = {
                m: max(v["images_per_s"] for k, v in s1.items() if k.startswith(f"{m}/"))
                for m in ("esad", "riad")
            }
            sp2 = s1["esad/onnxruntime"]["images_per_s"] / s1["riad/onnxruntime"]["images_per_s"]
            note = (
                f" (both networks in ONNX Runtime: {sp2:.2f}x; "
                f"fastest path of each: {best['esad'] / best['riad']:.2f}x)"
            )
        out.append(
            {
                "target": f"ESAD full scoring >= {TARGET_SCORING_SPEEDUP}x RIAD images/s (CPU, batch 1)",
                "measured": f"{sp:.2f}x{note}",
                "met": sp >= TARGET_SCORING_SPEEDUP,
            }
        )
        out.append(
            {
                "target": f"ESAD parameters < {TARGET_PARAM_FRACTION} of RIAD's",
                "measured": f"{frac:.3f}",
                "met": frac < TARGET_PARAM_FRACTION,
            }
        )
    ma = res.get("masks")
    if ma:
        r = next(x for x in ma if x["model"] == "esad" and x["variant"].startswith("batched"))
        out.append(
            {
                "target": f"ESAD: batched masks >= {TARGET_MASK_SPEEDUP}x faster than the loop",
                "measured": f"{r['speedup_vs_loop']:.2f}x",
                "met": r["speedup_vs_loop"] >= TARGET_MASK_SPEEDUP,
            }
        )
    me = res.get("metrics")
    if me:
        f = me["full"]["au_spro"]
        mem = f["memory"].get("peak_mib")
        shape = f"{me['inputs']['n']}x{me['inputs']['size'][0]}x{me['inputs']['size'][1]}"
        out.append(
            {
                "target": f"AU-sPRO on {shape} < {TARGET_SPRO_SECONDS:.0f} s",
                "measured": f"{f['median_s']:.2f} s",
                "met": f["median_s"] < TARGET_SPRO_SECONDS,
            }
        )
        out.append(
            {
                "target": f"AU-sPRO peak memory < {TARGET_SPRO_PEAK_GIB:.0f} GiB",
                "measured": f"{mem / 1024:.2f} GiB" if mem is not None else f["memory"].get("status", "?"),
                "met": mem is not None and mem / 1024 < TARGET_SPRO_PEAK_GIB,
            }
        )
        d = me["subset"]["diff"]["au_spro"]
        out.append(
            {
                "target": f"AU-sPRO == reference within {TOL_METRIC:g}",
                "measured": f"|diff| = {d:.1e}",
                "met": d <= TOL_METRIC,
            }
        )
    for t in out:
        t["note"] = where
    return out


def _ratio_mem(e: dict, r: dict) -> str:
    if "delta_mib" in e and "delta_mib" in r and e["delta_mib"]:
        return f"{r['delta_mib'] / e['delta_mib']:.2f}x"
    return "-"


def _fmt_load(v: list[float] | None) -> str:
    return "/".join(f"{x:.1f}" for x in v) if v else "?"


def _fmt_s(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s * 1000:.1f} ms" if s < 1 else f"{s:.2f} s"


def _fmt_mib(d: dict | None) -> str:
    if not d or "peak_mib" not in d:
        return (d or {}).get("status", "-")
    return f"{d['delta_mib']:.0f} MiB (process {d['peak_mib']:.0f})"


def format_markdown(res: dict[str, Any]) -> str:
    """The results as markdown tables (what ``esad bench`` prints and writes to results.md)."""
    meta = res["meta"]
    lines = [
        f"# ESAD benchmark ({'quick' if meta['quick'] else 'full'}) -- {meta['date']}",
        "",
        f"Device: {meta['device_name']}; torch {meta['torch']}, {meta['threads']} threads; profile "
        f"`{meta['profile']}` ({meta['image_size'][0]}x{meta['image_size'][1]}, base width "
        f"{meta['base_width']}, {meta['cutout_sizes']} cutouts x {meta['num_masks']} masks). "
        f"Median of {meta['repeats']} interleaved repeats after {meta['warmup']} warm-up "
        f"(batched scoring: median of {meta['heavy_repeats']} after "
        f"{meta['heavy_warmup']} warm-up). Load average at start "
        f"{_fmt_load(meta.get('load_average_start'))}, at end {_fmt_load(meta.get('load_average_end'))} "
        "(2 cores: above 2 means other processes competed for the CPU).",
    ]
    mo = res.get("models")
    if mo:
        c, sc, mem = mo["count"], mo["scoring"], mo["memory"]
        b = meta["batched"]

        def ratio(a: float, r: float) -> str:
            return f"{r / a:.2f}x" if a else "-"

        lines += [
            "",
            "## ESAD (two lightweight U-Nets) vs RIAD (one classic U-Net)",
            "",
            "| measure | ESAD | RIAD | RIAD / ESAD |",
            "|---|---|---|---|",
            f"| parameters | {c['esad']['parameters'] / 1e6:.2f} M | {c['riad']['parameters'] / 1e6:.2f} M | "
            f"{ratio(c['esad']['parameters'], c['riad']['parameters'])} |",
            f"| MACs per U-Net forward (1 image) | "
            f"{' + '.join(f'{x / 1e9:.2f}' for x in c['esad']['macs_per_net_forward'])} G | "
            f"{' + '.join(f'{x / 1e9:.2f}' for x in c['riad']['macs_per_net_forward'])} G | "
            f"{ratio(sum(c['esad']['macs_per_net_forward']), sum(c['riad']['macs_per_net_forward']))} |",
            f"| U-Net MACs per image, full scoring ({c['esad']['network_forwards_per_image']} / "
            f"{c['riad']['network_forwards_per_image']} forwards) | "
            f"{c['esad']['macs_per_image_scoring_networks'] / 1e9:.1f} G | "
            f"{c['riad']['macs_per_image_scoring_networks'] / 1e9:.1f} G | "
            f"{ratio(*(c[m]['macs_per_image_scoring_networks'] for m in ('esad', 'riad')))} |",
        ]
        for batch in ("1", str(b)):
            for path in ("fast", "plain", "onnxruntime"):
                if f"esad/{path}" not in sc[batch]:
                    continue
                e, r = sc[batch][f"esad/{path}"], sc[batch][f"riad/{path}"]
                label = {
                    "fast": "fast_scoring on",
                    "plain": "fast_scoring off (plain eager)",
                    "onnxruntime": "networks in ONNX Runtime, maps in torch (not a library path)",
                }[path]
                lines.append(
                    f"| full scoring, batch {batch}, {label}: latency | {_fmt_s(e['median_s'])} | "
                    f"{_fmt_s(r['median_s'])} | {ratio(e['median_s'], r['median_s'])} |"
                )
                lines.append(
                    f"| full scoring, batch {batch}, {label}: images/s | {e['images_per_s']:.3g} | "
                    f"{r['images_per_s']:.3g} | {e['images_per_s'] / r['images_per_s']:.2f}x (ESAD / RIAD) |"
                )
        lines.append(
            f"| full scoring peak memory (batch 1) | {_fmt_mib(mem['esad']['scoring_b1'])} | "
            f"{_fmt_mib(mem['riad']['scoring_b1'])} | "
            f"{ratio(*(mem[m]['scoring_b1'].get('delta_mib', 0) for m in ('esad', 'riad')))} |"
        )
    tr = res.get("train")
    if tr:
        t, mem = tr["train_step"], tr["memory"]

        def sec(m: str) -> str:
            d = t[m]
            return _fmt_s(d["median_s"]) if d.get("median_s") is not None else mem[m].get("status", "-")

        e_s, r_s = t["esad"].get("median_s"), t["riad"].get("median_s")
        note = t["esad"].get("note")
        label = f"time ({note}, {t['esad']['repeats']} run(s))" if note else "time"
        speed = f"{r_s / e_s:.2f}x" if e_s and r_s else "-"
        lines += [
            "",
            f"## One training step, batch {tr['batch']} x K masks (forward, losses, backward, Adam)",
            "",
            "| measure | ESAD | RIAD | RIAD / ESAD |",
            "|---|---|---|---|",
            f"| {label} | {sec('esad')} | {sec('riad')} | {speed} |",
            f"| peak memory | {_fmt_mib(mem['esad'])} | {_fmt_mib(mem['riad'])} | "
            f"{_ratio_mem(mem['esad'], mem['riad'])} |",
        ]
    ma = res.get("masks")
    if ma:
        lines += [
            "",
            "## K masks: one batched forward vs a Python loop (eval, no_grad, batch 1)",
            "",
            "| model | variant | time | speed-up vs loop | max abs diff loop vs batched (tol) |",
            "|---|---|---|---|---|",
        ]
        for r in ma:
            lines.append(
                f"| {r['model']} | {r['variant']} | {_fmt_s(r['median_s'])} | {r['speedup_vs_loop']:.2f}x | "
                f"{r['max_abs_diff_loop_vs_batched']:.1e} ({r['tolerance']:g}) |"
            )
    inf = res.get("inference")
    if inf:
        lines += [
            "",
            "## Inference options (one cutout size, K masks batched, batch 1; vs the same model's eager)",
            "",
            "| model | option | status | time | speed-up vs eager | max abs diff (tol) | equal |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in inf:
            if "median_s" in r:
                extra = f", compile {r['compile_s']:.0f} s" if "compile_s" in r else ""
                lines.append(
                    f"| {r['model']} | {r['option']} | {r['status']}{extra} | {_fmt_s(r['median_s'])} | "
                    f"{r['speedup_vs_eager']:.2f}x | {r['max_abs_diff']:.1e} ({r['tolerance']:g}) | "
                    f"{'yes' if r['equal'] else 'NO'} |"
                )
            else:
                lines.append(f"| {r['model']} | {r['option']} | {r['status']} | - | - | - | - |")
    la = res.get("layers")
    if la:
        lines += [
            "",
            f"## Where a U-Net forward spends its time (batch {la[0]['batch']} = K masks of one cutout size, "
            "inference_mode)",
            "",
            "| net | format | layer kind | time | share | GMACs | GMAC/s |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in la:
            for kind, d in r["kinds"].items():
                gps = f"{d['gmac_per_s']:.1f}" if d.get("gmac_per_s") else "-"
                lines.append(
                    f"| {r['net']} | {r['format']} | {kind} | {d['ms']:.1f} ms | {100 * d['share']:.0f} % | "
                    f"{d['gmacs']:.2f} | {gps} |"
                )
    me = res.get("metrics")
    if me:
        i = me["inputs"]
        lines += [
            "",
            f"## Metrics on {i['n']} maps of {i['size'][0]}x{i['size'][1]} ({i['map_dtype']}, "
            f"{i['anomalous']} anomalous images, {i['channels']} defect channels)",
            "",
            "| metric | value | time | peak memory (call; process) |",
            "|---|---|---|---|",
        ]
        for m in ("au_spro", "pixel_auroc"):
            f = me["full"][m]
            lines.append(f"| {m} | {f['value']:.6f} | {_fmt_s(f['median_s'])} | {_fmt_mib(f['memory'])} |")
        s = me["subset"]
        lines += [
            "",
            f"Fast vs brute-force reference on {s['n']} maps of {s['size'][0]}x{s['size'][1]}:",
            "",
            "| metric | fast | reference | |diff| | fast time | reference time |",
            "|---|---|---|---|---|---|",
        ]
        for m in ("au_spro", "pixel_auroc"):
            a, r = s["timing"][m], s["timing"][f"{m}_reference"]
            lines.append(
                f"| {m} | {a['value']:.8f} | {r['value']:.8f} | {s['diff'][m]:.1e} | "
                f"{_fmt_s(a['median_s'])} | {_fmt_s(r['median_s'])} |"
            )
    tg = res.get("targets")
    if tg:
        lines += ["", "## Targets (issue 7)", "", "| target | measured | met |", "|---|---|---|"]
        for t in tg:
            met = "yes" if t["met"] else "no"
            lines.append(f"| {t['target']} | {t['measured']} | {met} {t['note']} |")
    errs = res.get("errors")
    if errs:
        lines += ["", "## Sections that failed", ""] + [f"- {k}: {v}" for k, v in errs.items()]
    return "\n".join(lines) + "\n"


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    return f"CPU {name} ({os.cpu_count()} logical cores)"


#: run order: cheap sections first, torch.compile (minutes of compilation) last.
SECTIONS = ("metrics", "masks", "models", "train", "layers", "inference")


def run_benchmark(
    quick: bool,
    out_dir: str | os.PathLike = "bench",
    device: str | torch.device | None = None,
    profile: str | None = None,
    sections: tuple[str, ...] = SECTIONS,
    log: Callable[[str], None] | None = None,
    train_batch: int | None = None,
) -> dict[str, Any]:
    """Run the benchmark, write ``out_dir/results.json`` and ``out_dir/results.md``, return the results.

    ``quick``: tiny sizes, seconds (the test suite); else the profile ``paper`` (256x256, width 64,
    batch 8) and LOCO-scale metrics.  ``device``: "auto" (default), "cpu", "cuda", ...
    ``profile`` overrides the model scale profile; ``train_batch`` the training step's batch
    (default: the profile's).  A section that raises is reported under ``errors`` (the others
    still run); the files are rewritten after every section.
    """
    dev = resolve_device(str(device) if device is not None else "auto")
    st = bench_settings(quick, profile)
    st["train_batch"] = train_batch
    cfg = PRESETS[st["profile"]] if st["profile"] in PRESETS else _cfg_for(st["profile"], "esad", "cpu")
    t_start = time.perf_counter()

    def _default_log(msg: str) -> None:
        cpu = time.process_time() + resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
        print(f"[bench {time.perf_counter() - t_start:7.1f} s wall, {cpu:7.1f} s cpu] {msg}", flush=True)

    say = log or _default_log
    res: dict[str, Any] = {
        "meta": {
            "quick": bool(quick),
            "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "device": str(dev),
            "device_name": _device_name(dev),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "threads": torch.get_num_threads(),
            "profile": st["profile"],
            "image_size": list(cfg.image_size),
            "base_width": cfg.base_width,
            "cutout_sizes": list(cfg.cutout_sizes),
            "num_masks": cfg.num_masks,
            "batched": st["batched"],
            "warmup": st["warmup"],
            "repeats": st["repeats"],
            "heavy_repeats": st["heavy_repeats"],
            "heavy_warmup": st["heavy_warmup"],
            "train_batch": train_batch or cfg.batch_size,
        }
    }
    errors: dict[str, str] = {}
    out = Path(out_dir)
    old_threads = torch.get_num_threads()
    if st["threads"]:
        torch.set_num_threads(int(st["threads"]))
    res["meta"]["threads"] = torch.get_num_threads()
    res["meta"]["load_average_start"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    funcs = {
        "models": section_models,
        "train": section_train,
        "masks": section_masks,
        "inference": section_inference,
        "layers": section_layers,
        "metrics": section_metrics,
    }
    unknown = [n for n in sections if n not in funcs]
    if unknown:
        raise ValueError(f"unknown section(s) {unknown}; choose from {SECTIONS}")
    try:
        for name in sections:
            try:
                res[name] = funcs[name](st, dev, say)
            except Exception as e:  # noqa: BLE001 -- a broken section is reported, the rest still runs
                errors[name] = f"{type(e).__name__}: {e}"
                say(f"{name}: FAILED {errors[name]}")
            _write_results(res, errors, out, t_start)  # after every section: a long run keeps its figures
    finally:
        torch.set_num_threads(old_threads)
    return res


def _write_results(res: dict[str, Any], errors: dict[str, str], out: Path, t_start: float) -> None:
    if errors:
        res["errors"] = errors
    res["targets"] = _targets(res)
    res["meta"]["total_s"] = time.perf_counter() - t_start
    res["meta"]["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    atomic_write_text(out / "results.json", json.dumps(res, indent=2, default=str) + "\n")
    atomic_write_text(out / "results.md", format_markdown(res))


def build_arg_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The options of ``esad bench`` / ``benchmarks/bench.py``."""
    p = parser or argparse.ArgumentParser(prog="bench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, seconds (what the test suite runs)")
    p.add_argument(
        "--out", default="bench", help="output folder for results.json and results.md (default: bench)"
    )
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1, ...")
    p.add_argument(
        "--profile",
        default=None,
        choices=sorted(PRESETS),
        help="model scale (default: paper, or smoke with --quick)",
    )
    p.add_argument(
        "--train-batch",
        type=int,
        default=None,
        help="batch of the training-step row (default: the profile's batch_size)",
    )
    p.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated subset of {','.join(SECTIONS)} (default: all)",
    )
    return p


def main_from_args(args: argparse.Namespace) -> int:
    sections = tuple(s.strip() for s in str(args.sections).split(",") if s.strip())
    res = run_benchmark(
        args.quick,
        args.out,
        device=args.device,
        profile=args.profile,
        sections=sections,
        train_batch=args.train_batch,
    )
    print(format_markdown(res))
    print(f"written: {Path(args.out) / 'results.json'}, {Path(args.out) / 'results.md'}")
    return 1 if res.get("errors") else 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--probe"]:
        return _probe_main(argv[1])
    return main_from_args(build_arg_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
