"""Activation checkpointing for the U-Nets, BatchNorm-safe (a memory option of training; the
paper does not discuss it -- a project choice that leaves the maths unchanged).

``torch.utils.checkpoint`` (non-reentrant, ``use_reentrant=False``) keeps only the *inputs* of
a checkpointed function for backward and runs the function a second time inside backward to
rebuild what its backward needs.  That second run is a problem for BatchNorm in train mode: it
would update ``running_mean`` / ``running_var`` (and ``num_batches_tracked``) a second time, so
the running statistics after one step would differ from those of an unchecked step.  The
recomputation itself is exact (train-mode BN normalises with the batch statistics, which the
second run recomputes from the same input).

``bn_safe_checkpoint`` therefore snapshots the BatchNorm buffers of the checkpointed modules
before the *recomputation* and restores them afterwards (also when non-reentrant checkpointing
stops the recomputation early): the first run updates the running statistics once, exactly as
without checkpointing; the second leaves them as they were.  ``tests/test_models_checkpointing.py``
checks gradients and buffers against an unchecked step.

Granularities a ``UNetBase`` accepts (``CHECKPOINT_MODES``):

* ``"off"``   -- nothing is recomputed.
* ``"block"`` -- every encoder/decoder block (the ``FeatureExtractionBlock``, or the level-1
  ``ConvBNReLU``) separately; the decoder's concatenation is still stored.
* ``"level"`` -- every U-Net level: an encoder level is (max-pool -> block), a decoder level is
  (transposed conv -> concat with the skip -> block), the head (3x3 conv -> tanh) is one more;
  only the level outputs (which the skips keep alive anyway) are stored.
* ``"net"``   -- the whole U-Net as one function: only its input is stored; backward
  recomputes the whole net at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = ["CHECKPOINT_MODES", "bn_buffers", "bn_safe_checkpoint"]

#: granularities of ``UNetBase.checkpointing``.
CHECKPOINT_MODES = ("off", "block", "level", "net")


def bn_buffers(modules: Sequence[nn.Module]) -> list[torch.Tensor]:
    """The running-statistics buffers of every BatchNorm inside ``modules`` (de-duplicated)."""
    seen: set[int] = set()
    out: list[torch.Tensor] = []
    for mod in modules:
        for m in mod.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
                for b in (m.running_mean, m.running_var, m.num_batches_tracked):
                    if b is not None and id(b) not in seen:
                        seen.add(id(b))
                        out.append(b)
    return out


def bn_safe_checkpoint(
    fn: Callable[..., torch.Tensor], modules: Sequence[nn.Module], *args: torch.Tensor
) -> torch.Tensor:
    """``fn(*args)`` under non-reentrant activation checkpointing.

    ``modules``: the modules ``fn`` runs (their BatchNorm running statistics are restored after
    the recomputation in backward, so they are updated once per forward, as without
    checkpointing).  Returns what ``fn`` returns (one tensor).
    """
    buffers = bn_buffers(modules)
    calls = [0]

    def run(*a: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        if calls[0] == 1 or not buffers:  # the forward itself: BN updates its statistics once
            return fn(*a)
        # recomputation inside backward: run it, then put the running statistics back
        with torch.no_grad():
            saved = [b.clone() for b in buffers]
        try:
            return fn(*a)
        finally:
            with torch.no_grad():
                for b, s in zip(buffers, saved):
                    b.copy_(s)

    return checkpoint(run, *args, use_reentrant=False)
