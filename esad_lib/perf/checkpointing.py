"""Activation checkpointing of the U-Nets per level, a memory opt-in of training (``cfg.checkpointing``;
ours).  ``enable_checkpointing`` makes every U-Net's class a subclass that runs ``encoder_level`` /
``decoder_level`` through ``bn_safe_checkpoint``: only the level outputs are stored and backward
recomputes a level at a time (the least memory measured by ``make bench``), for one extra forward;
keys, outputs and gradients are unchanged.  The recomputation would update train-mode BatchNorm's
running statistics a second time: ``bn_safe_checkpoint`` restores them after it."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from esad_lib.method.unet import UNetBase


def bn_buffers(modules: Sequence[nn.Module]) -> list[torch.Tensor]:
    """The running-statistics buffers of every BatchNorm inside ``modules`` (de-duplicated)."""
    bns = [m for mod in modules for m in mod.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    found = [b for m in bns for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]
    return list({id(b): b for b in found}.values())


def bn_safe_checkpoint(fn: Callable[..., torch.Tensor], modules: Sequence[nn.Module], *args) -> torch.Tensor:
    """``fn(*args)`` under non-reentrant activation checkpointing; the BatchNorm running statistics
    of ``modules`` (those ``fn`` runs) are restored after the recomputation in backward."""
    buffers, calls = bn_buffers(modules), [0]

    def run(*a):
        calls[0] += 1
        if calls[0] == 1 or not buffers:  # the forward itself: BN updates its statistics once
            return fn(*a)
        with torch.no_grad():  # the recomputation in backward: put the statistics back after it
            saved = [b.clone() for b in buffers]
        try:
            return fn(*a)
        finally:
            with torch.no_grad():
                for b, s in zip(buffers, saved):
                    b.copy_(s)

    return checkpoint(run, *args, use_reentrant=False)


class _LevelCheckpointing:
    """Mixin placed before a U-Net class: each level runs under ``bn_safe_checkpoint`` in training."""

    def encoder_level(self, i: int, x: torch.Tensor) -> torch.Tensor:
        level = super().encoder_level
        on = self.training and torch.is_grad_enabled()
        return bn_safe_checkpoint(level, [self.enc[i]], i, x) if on else level(i, x)

    def decoder_level(self, j: int, y: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        level = super().decoder_level
        on = self.training and torch.is_grad_enabled()
        return bn_safe_checkpoint(level, [self.dec[j]], j, y, skip) if on else level(j, y, skip)


@functools.cache
def _checkpointed_class(cls: type) -> type:
    """``Checkpointed<cls>``: the mixin before ``cls`` (one class per U-Net class)."""
    return type(f"Checkpointed{cls.__name__}", (_LevelCheckpointing, cls), {"plain_class": cls})


def enable_checkpointing(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Per-level activation checkpointing of every U-Net inside ``model`` (an ``ESADModel``, a
    U-Net, ...) on or off, in place; returns ``model``."""
    for net in model.modules():
        if isinstance(net, UNetBase):
            base = getattr(type(net), "plain_class", type(net))
            net.__class__ = _checkpointed_class(base) if enabled else base
    return model
