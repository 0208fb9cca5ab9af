"""Training-speed preparation of a model and its input batches (a project choice; the paper's
method is unchanged: the same functions are computed, float32 rounding aside).

What the trainer calls (``esad_lib.training``)::

    model = prepare_for_training(build_model(cfg).to(device), cfg)   # once (+ allocator, CPU)
    optimizer = training_optimizer(model.parameters(), cfg)          # Adam, as before
    img = to_training_layout(batch.to(device), cfg)                  # every step

* **channels_last** (``cfg.channels_last_training``): parameters and input batches in NHWC
  memory order.  On CPU every convolution, BatchNorm and max-pool of the U-Nets then runs its
  channels_last kernel (oneDNN), which the lightweight U-Net's memory-bound depthwise / grouped
  convolutions and its many BatchNorms profit from.  The feature loss's extractor follows
  automatically (a convolution's output keeps its input's layout).  Measured by
  ``benchmarks/train_speed.py`` (before/after images per second, loss curves compared).
* **CPU allocator** (``cfg.cpu_malloc_tuning``, ``tune_cpu_allocator``): glibc's malloc hands
  large blocks back to the operating system when they are freed (``munmap`` / heap trimming),
  so every training step pays page faults to get the same memory back, zeroed, for the next
  step's activations.  ``mallopt`` raising the mmap threshold to its maximum (32 MiB on 64-bit)
  and switching heap trimming off lets the process reuse its freed memory instead; the resident
  set then stays at its high-water mark (what training reaches every step anyway).  Process-
  wide, Linux/glibc only (elsewhere a no-op), applied when the model is on the CPU.
* **fused Adam** (``training_optimizer``): the same Adam update (RIAD's ``lr``,
  ``weight_decay``) in one fused kernel instead of a Python loop of small per-parameter ops,
  which at the demo's small nets is a visible part of a step.  Works with the CUDA GradScaler
  and with checkpoints of the unfused optimiser (same state).
* Not done, by measurement: computing the 1x1 convolutions as explicit matrix products on the
  channels_last view (PyTorch sends them to its im2col path at small batches on one thread):
  no faster step.
* Elsewhere, same purpose: ``ESADLoss`` computes every loss map once over both outputs
  (``esad_lib.method.loss``), and the trainer's validation batches its passes
  (``esad_lib.training.validation_loss``).
* Not done, by measurement (``benchmarks/train_speed.py --compile``): ``torch.compile`` of the
  U-Nets for training on CPU -- 81 s to compile from an empty cache, then a step 0.97x as
  fast as eager (2026-12-01, idle machine, 2 threads, demo scale).
* The repeated-input form of ``ExpandConv2d`` (the encoder's grouped conv as a depthwise conv of
  the repeated input) is kept: at the demo scale it costs nothing, at the paper's width the
  plain grouped conv's CPU backward is several times slower (``benchmarks/train_memory.py``
  shows both, memory and time).

Shapes: ``to_training_layout`` takes and returns ``[B, C, H, W]`` (same values; only the strides
change).  Both functions are no-ops when ``cfg.channels_last_training`` is False.

Also here, the inference latency of the memory layouts, for teaching (``forward_latency``,
``latency_spread``; notebook 02): one forward pass of each given net in each layout --
``"NCHW"`` (PyTorch's default), ``"channels_last"`` and ``"channels_last + BN folded"``
(``esad_lib.perf.fusion.prepare_for_inference``: the layout and folding of the scoring fast
path, ``cfg.fast_scoring``) -- all timed interleaved in one loop
(``esad_lib.perf.timing.interleaved_samples``), so that background load hits every contender
alike; every repeat is kept, so that a plot can show the spread.  CPU timings depend on the
thread count and on what else runs on the machine: compare ratios measured side by side, not
absolute milliseconds from different runs.  ``forward_latency`` times inputs ``[B, 3, H, W]``.
"""

from __future__ import annotations

import copy
import ctypes
import ctypes.util
import statistics
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from esad_lib.perf.fusion import prepare_for_inference
from esad_lib.perf.timing import interleaved_samples

__all__ = [
    "LATENCY_LAYOUTS",
    "forward_latency",
    "latency_spread",
    "layout_variant",
    "prepare_for_training",
    "to_training_layout",
    "training_optimizer",
    "tune_cpu_allocator",
]

# glibc mallopt parameters (malloc.h) and limits
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: glibc's upper limit of the mmap threshold on 64-bit (4 * 1024 * 1024 * sizeof(long))
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024
#: a trim threshold no step reaches (the largest C int): freed heap memory is kept
_TRIM_THRESHOLD_MAX = 2**31 - 1


def tune_cpu_allocator() -> bool:
    """Let glibc's malloc keep freed memory for reuse (module docstring).  True when applied;
    False where the C library has no ``mallopt`` (not Linux/glibc) or refuses the values."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX) == 1
    return ok and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_MAX) == 1


def prepare_for_training(model: nn.Module, cfg: Any) -> nn.Module:
    """``model`` (moved to its device already) with channels_last parameters when
    ``cfg.channels_last_training``; converted IN PLACE and returned (build the optimiser
    afterwards, or before: ``Module.to`` keeps the parameter objects).  With
    ``cfg.cpu_malloc_tuning`` and the model on the CPU it also calls ``tune_cpu_allocator``."""
    if cfg.cpu_malloc_tuning and any(p.device.type == "cpu" for p in model.parameters()):
        tune_cpu_allocator()
    if cfg.channels_last_training:
        model = model.to(memory_format=torch.channels_last)
    return model


def to_training_layout(batch: torch.Tensor, cfg: Any) -> torch.Tensor:
    """An input batch ``[B, C, H, W]`` in the memory layout ``prepare_for_training`` chose."""
    if batch.dim() != 4:
        raise ValueError(f"to_training_layout expects a batch [B, C, H, W], got shape {tuple(batch.shape)}")
    if cfg.channels_last_training:
        return batch.contiguous(memory_format=torch.channels_last)
    return batch


def training_optimizer(params: Iterable[torch.nn.Parameter], cfg: Any) -> torch.optim.Adam:
    """Adam over ``params`` with ``cfg.lr`` and ``cfg.weight_decay`` ([RIAD]), fused (one kernel
    per step) where PyTorch supports it for the parameters' device (CPU, CUDA)."""
    params = list(params)
    devices = {p.device.type for p in params}
    fused = bool(params) and devices <= {"cpu", "cuda"} and all(p.is_floating_point() for p in params)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused or None)


#: memory layouts ``forward_latency`` can time; the last is the scoring fast path's preparation
LATENCY_LAYOUTS = ("NCHW", "channels_last", "channels_last + BN folded")


def layout_variant(net: nn.Module, x: torch.Tensor, layout: str) -> tuple[nn.Module, torch.Tensor]:
    """An eval-mode copy of ``net`` and a copy of the input ``x`` ``[B, C, H, W]`` in ``layout``
    (one of ``LATENCY_LAYOUTS``); ``net`` and ``x`` are not changed.  All variants compute the
    same function (float32 rounding aside; the tests check it)."""
    if x.dim() != 4:
        raise ValueError(f"layout_variant expects an input [B, C, H, W], got shape {tuple(x.shape)}")
    if layout == "NCHW":
        return copy.deepcopy(net).eval(), x.contiguous()
    x_cl = x.contiguous(memory_format=torch.channels_last)
    if layout == "channels_last":
        return copy.deepcopy(net).eval().to(memory_format=torch.channels_last), x_cl
    if layout == "channels_last + BN folded":
        return prepare_for_inference(net, channels_last=True), x_cl
    raise ValueError(f"unknown layout {layout!r}: choose one of {LATENCY_LAYOUTS}")


def forward_latency(
    nets: Mapping[str, nn.Module],
    input_shape: Sequence[int],
    layouts: Sequence[str] = LATENCY_LAYOUTS,
    repeats: int = 7,
    warmup: int = 2,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: str | None = None,
) -> list[dict[str, Any]]:
    """Milliseconds of one forward pass (eval mode, ``torch.inference_mode``) of every net of
    ``nets`` (name -> module) in every layout of ``layouts``, on one seeded random input of
    ``input_shape`` ``[B, 3, H, W]`` with values in [-1, 1].

    All (net, layout) pairs are timed in ONE interleaved loop (``interleaved_samples``: each
    repeat runs every pair once, the starting pair rotating), after ``warmup`` untimed rounds
    (the first calls create the convolution primitives).  Returns one row per timed call, in
    long form: ``{"net", "layout", "repeat", "ms"}`` (``repeats`` rows per pair; ``repeat`` is
    the round, so the rows of one round were measured within moments of each other: a paired
    ratio).  The callers' modules are not changed (``layout_variant`` copies).
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"forward_latency needs repeats >= 1 and warmup >= 0, got {repeats}, {warmup}")
    if len(input_shape) != 4:
        raise ValueError(f"forward_latency: input_shape must be [B, 3, H, W], got {tuple(input_shape)}")
    if not nets or not layouts:
        raise ValueError("forward_latency: give at least one net and one layout")
    unknown = [lay for lay in layouts if lay not in LATENCY_LAYOUTS]
    if unknown:
        raise ValueError(f"forward_latency: unknown layouts {unknown}; choose from {LATENCY_LAYOUTS}")
    device = torch.device(device)
    g = torch.Generator().manual_seed(seed)
    # uniform noise in [-1, 1] (the U-Nets' input range): x = 2 u - 1
    x = (torch.rand(*(int(v) for v in input_shape), generator=g) * 2.0 - 1.0).to(device)
    fns = {}
    for name, net in nets.items():
        for layout in layouts:
            module, xx = layout_variant(net, x, layout)
            module = module.to(device)
            fns[(name, layout)] = lambda m=module, xx=xx: m(xx)
    with torch.inference_mode():
        samples = interleaved_samples(fns, repeats, warmup, device, progress=progress)
    return [
        {"net": name, "layout": layout, "repeat": r, "ms": 1000.0 * t}
        for (name, layout), times in samples.items()
        for r, t in enumerate(times)
    ]


def latency_spread(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per (net, layout) of ``forward_latency``'s rows: ``n``, ``median_ms``, the inter-quartile
    range ``q1_ms`` / ``q3_ms`` (linear interpolation between order statistics, numpy's default
    percentile) and ``min_ms`` / ``max_ms``; in the rows' order of first appearance."""
    groups: dict[tuple[str, str], list[float]] = {}
    for row in rows:
        groups.setdefault((row["net"], row["layout"]), []).append(float(row["ms"]))
    out = []
    for (name, layout), ms in groups.items():
        # quartiles, "inclusive": q_p = x_(1 + p (n - 1)) interpolated; one sample: q1 = q3 = it
        q1, _, q3 = statistics.quantiles(ms, n=4, method="inclusive") if len(ms) > 1 else (ms[0],) * 3
        out.append(
            {"net": name, "layout": layout, "n": len(ms), "median_ms": statistics.median(ms),
             "q1_ms": q1, "q3_ms": q3, "min_ms": min(ms), "max_ms": max(ms)}
        )
    return out
