"""Training on several processes with PyTorch's DistributedDataParallel (torchrun).

Nothing here changes the method (the paper's): it spreads one training run over ``N``
processes (GPUs, or CPU processes with gloo) so that the paper's setting (256x256, 300
epochs) finishes sooner.  ``esad train`` runs unchanged under ``torchrun``::

    torchrun --nproc_per_node=4 -m esad_lib.cli train --data DIR --category C --profile paper --out RUN

How the pieces behave under DDP (``WORLD_SIZE > 1`` in the environment):

* Backend: NCCL when the run uses CUDA, gloo on CPU.  Process ``RANK`` uses GPU
  ``LOCAL_RANK``.
* Model: the whole ``ESADModel`` (inpainting U-Net + reconstruction U-Net) is wrapped in ONE
  ``DistributedDataParallel``.  Each U-Net is called ``K`` times per forward (once per mask);
  reusing a parameter inside one forward is fine for DDP (its gradient hook fires once per
  backward), whereas wrapping each U-Net separately would call each wrapper ``K`` times per
  backward, which DDP does not allow.
* Batch: ``cfg.batch_size`` is the batch of ONE process.  One optimizer step averages the
  gradients of ``N`` micro-batches, so the global batch is ``N * cfg.batch_size``.  The
  learning rate is NOT scaled automatically: if you want the linear-scaling rule, pass
  ``--set lr=...`` yourself.  An epoch has ``ceil(n_train / N)`` images per process
  (``DistributedSampler`` pads by repeating a few images so every process gets as many).
* BatchNorm: by default each process normalises with the statistics of its own micro-batch
  (per-process BN, like gradient accumulation over micro-batches on one GPU), and the running
  statistics of rank 0 are broadcast to the others at every forward (DDP's
  ``broadcast_buffers``), so the saved model carries rank 0's running statistics.  With
  ``cfg.sync_batchnorm = True`` the BatchNorm layers become ``SyncBatchNorm`` (statistics over
  the global batch; needs CUDA).  Sync BN costs one all-reduce per BN layer per forward --
  useful when the per-process batch is so small that its statistics are noisy.
* Only rank 0 reads or writes the run folder (config.json, checkpoint.pt, log.csv, model.pt,
  train_summary.json) and shows progress bars; on resume rank 0 loads the checkpoint and
  broadcasts it, so the run folder need not be on a shared file system.
* Validation is sharded: each process scores every ``N``-th validation image and the sums are
  all-reduced, so every rank sees the same validation loss and takes the same early-stopping
  decision.  Rank 0's BatchNorm running statistics are broadcast first.

Which random draws are identical on every rank (all come from per-purpose generators seeded by
``derive_seed(seed, purpose, epoch, step[, rank])``, never from the global RNG, so they do not
depend on how many draws happened before -- a resumed run draws exactly what an uninterrupted
one would):

* the shuffle of the training set (``DistributedSampler`` seeded with ``(seed, epoch)``):
  IDENTICAL on every rank -- required, each rank then takes its own disjoint stride of the
  same permutation;
* the cutout size of each step (``"cutout", epoch, step``): IDENTICAL on every rank.  RIAD
  draws one cutout size per batch; DDP averages the gradients of the N micro-batches into
  one step, so they must solve the same task for that step to be "one batch with one cutout
  size", as on one GPU with the global batch.  It also keeps the ranks' work balanced
  (the mask grid depends on the size);
* the masks of each step (``"masks", epoch, step, rank``): DIFFERENT on every rank.  Within
  one process one set of K masks is shared by the whole micro-batch; giving every rank its
  own set gives the global batch N independent mask sets -- more mask diversity per step and
  exactly what a single process accumulating the same N micro-batches (each with fresh
  masks) computes.  Nothing in the algorithm needs the masks to agree across images.
* validation masks (``"val", cutout size``): the same every epoch (so validation losses are
  comparable across epochs) and on every rank.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset, DistributedSampler

from esad_lib.config import resolve_device

T = TypeVar("T")

__all__ = [
    "DistInfo", "all_ranks_finite", "all_reduce_sum", "barrier", "broadcast_buffers", "broadcast_object",
    "derive_seed", "dist_info", "init_distributed", "local_main_first", "main_then_broadcast",
    "mean_over_ranks", "seeded_generator", "shard", "shutdown_distributed", "train_sampler", "unwrap",
    "wrap_ddp",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_info() -> DistInfo:
    """Rank/world size from an initialised process group, else from torchrun's environment."""
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_available() and dist.is_initialized():
        rank = dist.get_rank()
        if "LOCAL_RANK" not in os.environ:  # a group set up by the caller (e.g. mp.spawn), one node
            local = rank % max(torch.cuda.device_count(), 1)
        return DistInfo(rank, dist.get_world_size(), local)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return DistInfo(rank, world, local)


def init_distributed(device: str = "auto") -> tuple[DistInfo, torch.device, bool]:
    """Join the process group that torchrun describes; pick this process's device.

    Returns ``(info, device, created)``; ``created`` says whether this call initialised the
    process group (then ``shutdown_distributed`` should destroy it).  Without ``WORLD_SIZE > 1``
    (and no group initialised by the caller) this is a single-process run.
    """
    info = dist_info()
    if not info.distributed:
        return info, resolve_device(device), False
    want_cuda = device != "cpu" and torch.cuda.is_available() and not device.startswith("cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available; use --device cpu")
    if want_cuda:
        # one GPU per process: LOCAL_RANK picks it (an explicit "cuda:i" is overridden)
        dev = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    created = False
    if not dist.is_initialized():
        for var in ("MASTER_ADDR", "MASTER_PORT"):
            if var not in os.environ:
                raise RuntimeError(
                    f"WORLD_SIZE={info.world_size} but {var} is not set: launch distributed runs with "
                    "torchrun (e.g. torchrun --nproc_per_node=2 -m esad_lib.cli train ...)"
                )
        backend = "nccl" if dev.type == "cuda" else "gloo"
        kwargs: dict[str, Any] = {"backend": backend, "init_method": "env://"}
        if dev.type == "cuda":
            kwargs["device_id"] = dev
        dist.init_process_group(**kwargs)
        created = True
    return dist_info(), dev, created


def shutdown_distributed(created: bool, sync: bool = True) -> None:
    """Destroy the process group if ``init_distributed`` created it.

    ``sync``: wait for every rank first (a run that ended normally); False after an error,
    when the other ranks may never reach the barrier.
    """
    if created and dist.is_initialized():
        if sync:
            dist.barrier()
        dist.destroy_process_group()


def derive_seed(seed: int, purpose: str, *indices: int) -> int:
    """A 63-bit seed for one purpose and position, e.g. ``derive_seed(0, "masks", epoch, step, rank)``.

    Stable across Python versions and platforms (SHA-256 of the parts, not ``hash()``), and
    independent of any draws made before: this is what makes resume exact.
    """
    blob = ":".join([str(int(seed)), purpose, *(str(int(i)) for i in indices)]).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "little") & (2**63 - 1)


def seeded_generator(seed: int, purpose: str, *indices: int) -> torch.Generator:
    """A fresh CPU ``torch.Generator`` seeded with ``derive_seed(seed, purpose, *indices)``."""
    return torch.Generator().manual_seed(derive_seed(seed, purpose, *indices))


def wrap_ddp(model: nn.Module, info: DistInfo, device: torch.device, sync_batchnorm: bool) -> nn.Module:
    """``model`` itself for one process, else ``DistributedDataParallel(model)`` (optionally Sync BN).

    The returned module's ``forward`` is the model's; ``unwrap`` gives the plain model back.
    """
    if not info.distributed:
        return model
    if sync_batchnorm:
        if device.type != "cuda":
            raise ValueError(
                "sync_batchnorm=True needs CUDA devices (PyTorch's SyncBatchNorm has no CPU kernel); "
                "use --set sync_batchnorm=false for a CPU/gloo run"
            )
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    # DDP's default buffer sync: rank 0's buffers (BN running statistics) are broadcast at every
    # forward, so all ranks normalise in eval mode alike and the checkpoint holds rank 0's.
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside a DDP wrapper (or the model itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def all_reduce_sum(values: list[float], info: DistInfo, device: torch.device) -> list[float]:
    """Sum a few floats over all ranks (float64 so sums of many losses stay exact enough)."""
    if not info.distributed:
        return [float(v) for v in values]
    dev = device if dist.get_backend() == "nccl" else torch.device("cpu")
    t = torch.tensor(values, dtype=torch.float64, device=dev)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def broadcast_object(obj: Any, info: DistInfo, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (pickled; tensors should be on the CPU)."""
    if not info.distributed:
        return obj
    box = [obj if info.rank == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def broadcast_buffers(model: nn.Module, info: DistInfo, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (BatchNorm running statistics) to every rank."""
    if not info.distributed:
        return
    for buf in unwrap(model).buffers():
        dist.broadcast(buf, src=src)


# ---------------------------------------------------------------------------------------
# the few patterns the trainer needs, each in one place


def main_then_broadcast(
    fn: Callable[[], T], info: DistInfo, errors: tuple[type[BaseException], ...] = (ValueError,)
) -> T:
    """``fn()`` run on rank 0 only; its result (or its error, if of a type in ``errors``) on every rank.

    Broadcasting the error makes every rank raise it, so no rank is left waiting in a collective.
    """
    result, error = None, None
    if info.is_main:
        try:
            result = fn()
        except errors as e:
            error = e
    error = broadcast_object(error, info)
    if error is not None:
        raise error
    return broadcast_object(result, info)


def local_main_first(fn: Callable[[], T], info: DistInfo) -> T:
    """``fn()`` on local rank 0 first, then on the node's other ranks (e.g. generate data once).

    An error on local rank 0 still reaches the barrier; the other ranks then usually raise it too.
    """
    if info.local_rank == 0:
        try:
            return fn()
        finally:
            barrier(info)
    barrier(info)
    return fn()


def all_ranks_finite(value: float, info: DistInfo, device: torch.device) -> bool:
    """Whether ``value`` is finite on EVERY rank (one all-reduce), so that all ranks stop together."""
    finite = math.isfinite(value)
    if info.distributed:
        finite = all_reduce_sum([0.0 if finite else 1.0], info, device)[0] == 0.0
    return finite


def mean_over_ranks(
    sums: dict[str, float], count: int, info: DistInfo, device: torch.device
) -> dict[str, float]:
    """``{k: sum over ranks of sums[k] / sum over ranks of count}`` (one all-reduce, sorted keys)."""
    keys = sorted(sums)
    totals = all_reduce_sum([sums[k] for k in keys] + [count], info, device)
    return {k: v / totals[-1] for k, v in zip(keys, totals[:-1])}


def shard(n: int, info: DistInfo) -> list[int]:
    """The indices of ``range(n)`` this rank handles: every ``world_size``-th, from ``rank``."""
    return list(range(info.rank, n, info.world_size))


def train_sampler(dataset: Dataset, info: DistInfo, seed: int) -> DistributedSampler:
    """The shuffling sampler of the training set: the same permutation on every rank (seeded with
    ``seed + epoch`` after ``set_epoch``), each rank taking its own stride of it.  One process:
    ``torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))``."""
    return DistributedSampler(
        dataset, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=seed, drop_last=False
    )
