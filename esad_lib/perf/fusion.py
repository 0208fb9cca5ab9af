"""Inference-only rewrites of a trained network that keep its outputs (float32 rounding aside).

* ``fold_batchnorm``: an eval-mode BatchNorm right after a conv is an affine map per channel,
  so it can be merged into the conv's weights and bias and removed.  The feature extraction
  block (the paper's lightweight U-Net) has a BN after each of its three convs, so folding removes a full
  read-and-write of every activation tensor -- which is what the memory-bound depthwise /
  grouped convs of the lightweight U-Net pay for on a CPU.
* ``prepare_for_inference``: a folded, channels_last *copy* in eval mode (the caller's module
  is never changed), marked so that callers can tell it is already prepared.

Measured by ``esad bench`` (section "inference options") and ``esad_lib.scoring``.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["fold_batchnorm", "is_prepared", "prepare_for_inference"]

_PREPARED_ATTR = "_esad_inference_ready"


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """Fold every BatchNorm that directly follows a conv inside an ``nn.Sequential`` into that
    conv (IN PLACE; call on a copy).  For inference only: the BN's running statistics are used.

    conv(x) = W x + b;  BN(y) = g (y - mu) / sqrt(var + eps) + beta
    =>  BN(conv(x)) = W' x + b'  with  W' = W g / sqrt(var + eps),  b' = (b - mu) g / sqrt(var + eps) + beta
    """
    for seq in [m for m in module.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = seq._modules[a], seq._modules[b]
            if (
                isinstance(conv, nn.Conv2d)
                and isinstance(bn, nn.BatchNorm2d)
                and bn.running_mean is not None  # a BN without running statistics cannot fold
            ):
                # fuse_conv_bn_eval returns a new conv of the same class (ExpandConv2d kept)
                seq._modules[a] = fuse_conv_bn_eval(conv.eval(), bn.eval())
                seq._modules[b] = nn.Identity()
    return module


def is_prepared(module: nn.Module | None) -> bool:
    """True for a module returned by ``prepare_for_inference``."""
    return bool(getattr(module, _PREPARED_ATTR, False))


def prepare_for_inference(module: nn.Module, channels_last: bool = True) -> nn.Module:
    """A copy of ``module`` in eval mode with BatchNorm folded and (optionally) channels_last
    weights.  ``module`` itself is left untouched; a prepared module is returned as is."""
    if is_prepared(module):
        return module
    out = fold_batchnorm(copy.deepcopy(module).eval())
    if channels_last:
        out = out.to(memory_format=torch.channels_last)
    for p in out.parameters():
        p.requires_grad_(False)
    setattr(out, _PREPARED_ATTR, True)
    return out
