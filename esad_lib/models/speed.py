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
* Not done, by measurement (``benchmarks/train_speed.py --compile``): ``torch.compile`` of the
  U-Nets for training on CPU -- minutes of compilation for no faster step at the demo scale.
* The repeated-input form of ``ExpandConv2d`` (the encoder's grouped conv as a depthwise conv of
  the repeated input) is kept: at the demo scale it costs nothing, at the paper's width the
  plain grouped conv's CPU backward is several times slower (``benchmarks/train_memory.py``
  shows both, memory and time).

Shapes: ``to_training_layout`` takes and returns ``[B, C, H, W]`` (same values; only the strides
change).  Both functions are no-ops when ``cfg.channels_last_training`` is False.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

__all__ = ["prepare_for_training", "to_training_layout", "training_optimizer", "tune_cpu_allocator"]

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
