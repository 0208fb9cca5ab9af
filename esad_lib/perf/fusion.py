"""Inference-only rewrites of a trained network that keep its outputs (float32 rounding aside):
``fold_batchnorm`` merges each eval-mode BatchNorm into the conv before it (the feature
extraction block has one after each of its three convs: folding saves a read and write of
every activation, what the memory-bound depthwise convs pay for on a CPU), and
``prepare_for_inference`` returns a folded, channels_last, marked *copy* (the scoring fast path)."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

_PREPARED_ATTR = "_esad_inference_ready"


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """Fold every BatchNorm that directly follows a conv inside an ``nn.Sequential`` into that conv,
    IN PLACE (call it on a copy), with the BN's running statistics (inference only):
    BN(conv(x)) = W' x + b',  W' = W g / sqrt(var + eps),  b' = (b - mu) g / sqrt(var + eps) + beta"""
    for seq in [m for m in module.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = seq._modules[a], seq._modules[b]
            # a BN without running statistics cannot fold
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.running_mean is not None:
                # fuse_conv_bn_eval returns a new conv of the same class (ExpandConv2d kept)
                seq._modules[a] = fuse_conv_bn_eval(conv.eval(), bn.eval())
                seq._modules[b] = nn.Identity()
    return module


def is_prepared(module: nn.Module | None) -> bool:
    """True for a module returned by ``prepare_for_inference``."""
    return bool(getattr(module, _PREPARED_ATTR, False))


def prepare_for_inference(module: nn.Module, channels_last: bool = True) -> nn.Module:
    """A copy of ``module`` in eval mode with BatchNorm folded and (optionally) channels_last
    weights, gradients off; a prepared module is returned as is."""
    if is_prepared(module):
        return module
    out = fold_batchnorm(copy.deepcopy(module).eval()).requires_grad_(False)
    out = out.to(memory_format=torch.channels_last) if channels_last else out
    setattr(out, _PREPARED_ATTR, True)
    return out
