"""Training-speed opt-ins, each called explicitly by the trainer (``esad_lib.training``), and the
latency of the inference memory layouts (ours; the method computes the same functions):

* ``tune_cpu_allocator`` (``cfg.cpu_malloc_tuning``): glibc's malloc returns large freed blocks
  to the OS, so each step pays page faults to get them back; ``mallopt`` (the largest mmap
  threshold, no trimming) keeps them.  Process-wide; Linux/glibc only (elsewhere: False).
* ``prepare_for_training`` / ``to_training_layout`` (``cfg.channels_last_training``): NHWC
  parameters and batches: oneDNN's channels_last kernels for convs, BatchNorms, max-pools.
* ``training_optimizer``: the same Adam update fused into one kernel (no per-parameter loop).

``forward_latency`` times nets in ``LATENCY_LAYOUTS`` (notebook 02) in one interleaved loop
(``interleaved_samples``): compare ratios measured side by side, not absolute times."""

from __future__ import annotations

import copy
import ctypes.util
import functools
import itertools
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from esad_lib.perf.fusion import prepare_for_inference

# glibc's mallopt (malloc.h): M_TRIM_THRESHOLD = -1 set to the largest C int (never trim),
# M_MMAP_THRESHOLD = -3 set to its 64-bit maximum, 4 * 1024 * 1024 * sizeof(long) = 32 MiB
_MALLOPT = ((-3, 32 * 1024 * 1024), (-1, 2**31 - 1))


def tune_cpu_allocator() -> bool:
    """Let glibc's malloc keep freed memory for reuse (module docstring): True when applied."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in _MALLOPT)


def prepare_for_training(model: nn.Module, cfg: Any) -> nn.Module:
    """``model`` with channels_last parameters when ``cfg.channels_last_training`` (in place;
    ``Module.to`` keeps the parameter objects an optimiser holds)."""
    return model.to(memory_format=torch.channels_last) if cfg.channels_last_training else model


def to_training_layout(batch: torch.Tensor, cfg: Any) -> torch.Tensor:
    """An input batch ``[B, C, H, W]`` in the memory layout ``prepare_for_training`` chose."""
    if batch.dim() != 4:
        raise ValueError(f"to_training_layout expects a batch [B, C, H, W], got shape {tuple(batch.shape)}")
    return batch.contiguous(memory_format=torch.channels_last) if cfg.channels_last_training else batch


def training_optimizer(params: Iterable[torch.nn.Parameter], cfg: Any) -> torch.optim.Adam:
    """Adam over ``params`` with ``cfg.lr`` and ``cfg.weight_decay`` ([RIAD]), fused (one kernel
    per step) where PyTorch supports it for the parameters' device (CPU, CUDA)."""
    params = list(params)
    devices = {p.device.type for p in params}
    fused = bool(params) and devices <= {"cpu", "cuda"} and all(p.is_floating_point() for p in params)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused or None)


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
        for n in names[r % len(names) :] + names[: r % len(names)]:
            sync(device)
            t0 = time.perf_counter()
            fns[n]()
            sync(device)
            times[n].append(time.perf_counter() - t0)
    return times


#: memory layouts ``forward_latency`` can time; the last is the scoring fast path's preparation
LATENCY_LAYOUTS = ("NCHW", "channels_last", "channels_last + BN folded")


def layout_variant(net: nn.Module, x: torch.Tensor, layout: str) -> tuple[nn.Module, torch.Tensor]:
    """An eval-mode copy of ``net`` and of the input ``x [B, C, H, W]`` in ``layout`` (one of
    ``LATENCY_LAYOUTS``); all compute the same function (float32 rounding aside; tested)."""
    if x.dim() != 4 or layout not in LATENCY_LAYOUTS:
        raise ValueError(f"layout_variant needs x [B, C, H, W] and a layout of {LATENCY_LAYOUTS}, got "
                         f"{tuple(x.shape)}, {layout!r}")
    if layout == "NCHW":
        return copy.deepcopy(net).eval(), x.contiguous()
    x_cl = x.contiguous(memory_format=torch.channels_last)
    if layout == "channels_last":
        return copy.deepcopy(net).eval().to(memory_format=torch.channels_last), x_cl
    return prepare_for_inference(net, channels_last=True), x_cl  # "channels_last + BN folded"


def forward_latency(nets: Mapping[str, nn.Module], input_shape: Sequence[int],
                    layouts: Sequence[str] = LATENCY_LAYOUTS, repeats: int = 7, warmup: int = 2,
                    seed: int = 0, device: torch.device | str = "cpu", progress=None) -> list[dict[str, Any]]:
    """Milliseconds of one forward pass (eval, ``inference_mode``) of every net of ``nets`` (name ->
    module) in every layout of ``layouts``, on one seeded input ``input_shape [B, 3, H, W]`` in
    [-1, 1], all in ONE interleaved loop after ``warmup`` rounds.  One row per timed call,
    ``{"net", "layout", "repeat", "ms"}``; the rows of one ``repeat`` make a paired ratio."""
    unknown = [lay for lay in layouts if lay not in LATENCY_LAYOUTS]
    if repeats < 1 or warmup < 0 or len(input_shape) != 4 or not nets or not layouts or unknown:
        want = f"repeats >= 1, warmup >= 0, input_shape [B, 3, H, W], a net, layouts of {LATENCY_LAYOUTS}"
        raise ValueError(f"forward_latency needs {want}; got {repeats}, {warmup}, {input_shape}, {layouts}")
    device = torch.device(device)
    g = torch.Generator().manual_seed(seed)
    # uniform noise in [-1, 1] (the U-Nets' input range): x = 2 u - 1
    x = (torch.rand(*(int(v) for v in input_shape), generator=g) * 2.0 - 1.0).to(device)
    fns = {}
    for (name, net), layout in itertools.product(nets.items(), layouts):
        module, xx = layout_variant(net, x, layout)
        fns[(name, layout)] = functools.partial(module.to(device), xx)
    with torch.inference_mode():
        samples = interleaved_samples(fns, repeats, warmup, device, progress=progress)
    return [{"net": name, "layout": layout, "repeat": r, "ms": 1000.0 * t}
            for (name, layout), times in samples.items() for r, t in enumerate(times)]


def latency_spread(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per (net, layout) of ``forward_latency``'s rows, in order: ``n``, ``median_ms``, quartiles
    ``q1_ms`` / ``q3_ms`` (numpy's default percentile), ``min_ms`` / ``max_ms``."""
    groups: dict[tuple[str, str], list[float]] = {}
    for row in rows:
        groups.setdefault((row["net"], row["layout"]), []).append(float(row["ms"]))
    out = []
    for (name, layout), ms in groups.items():
        # quartiles, "inclusive": q_p = x_(1 + p (n - 1)) interpolated; one sample: q1 = q3 = it
        q1, _, q3 = statistics.quantiles(ms, n=4, method="inclusive") if len(ms) > 1 else (ms[0],) * 3
        out.append({"net": name, "layout": layout, "n": len(ms), "median_ms": statistics.median(ms),
                    "q1_ms": q1, "q3_ms": q3, "min_ms": min(ms), "max_ms": max(ms)})
    return out
