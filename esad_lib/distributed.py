"""Training on ``N`` processes with PyTorch's DistributedDataParallel; the paper's method is unchanged.
``esad train`` runs as is under ``torchrun``::

    torchrun --nproc_per_node=4 -m esad_lib.cli train --data DIR --category C --profile paper --out RUN

* Backend NCCL with CUDA (process ``RANK`` on GPU ``LOCAL_RANK``), gloo on CPU.
* ONE ``DistributedDataParallel`` wraps the whole ``ESADModel``: each U-Net runs ``K`` times per
  forward (once per mask), which DDP allows within one wrapper, not as ``K`` calls of a per-U-Net one.
* ``cfg.batch_size`` is ONE process's batch (global batch ``N * cfg.batch_size``); the learning
  rate is NOT scaled.  ``DistributedSampler`` pads an epoch to ``ceil(n_train / N)`` images per process.
* BatchNorm: rank 0's running statistics are broadcast at every forward, so the saved model carries
  them; ``cfg.sync_batchnorm``: ``SyncBatchNorm`` (global-batch statistics, CUDA only).
* Only rank 0 reads or writes the run folder (on resume it broadcasts the checkpoint); validation is
  sharded and all-reduced, so every rank takes the same early-stopping decision.

Random draws (``derive_seed``): the shuffle (``(seed, epoch)``) and a step's cutout size are
IDENTICAL on every rank (the N micro-batches of a step solve one task, as one batch on one GPU); a
step's masks DIFFER per rank (N independent mask sets); validation masks (``"val", cutout size``)
are the same every epoch and on every rank.
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
    return DistInfo(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")), local)


def init_distributed(device: str = "auto") -> tuple[DistInfo, torch.device, bool]:
    """Join torchrun's process group (none without ``WORLD_SIZE > 1``); pick this process's device.
    Returns ``(info, device, created)``; ``created``: this call initialised the group."""
    info = dist_info()
    if not info.distributed:
        return info, resolve_device(device), False
    want_cuda = resolve_device(device).type == "cuda"  # a CUDA request without CUDA fails here
    dev = torch.device("cuda", info.local_rank) if want_cuda else torch.device("cpu")
    if want_cuda:  # one GPU per process: LOCAL_RANK picks it (an explicit "cuda:i" is overridden)
        torch.cuda.set_device(dev)
    created = not dist.is_initialized()
    if created:
        for var in ("MASTER_ADDR", "MASTER_PORT"):
            if var not in os.environ:
                raise RuntimeError(f"WORLD_SIZE={info.world_size} but {var} is not set: launch distributed "
                                   "runs with torchrun (e.g. torchrun --nproc_per_node=2 -m esad_lib.cli "
                                   "train ...)")
        kw: dict[str, Any] = {"device_id": dev} if dev.type == "cuda" else {}
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo", init_method="env://", **kw)
    return dist_info(), dev, created


def shutdown_distributed(created: bool, sync: bool = True) -> None:
    """Destroy the group ``init_distributed`` created, after a barrier if ``sync`` (not after an error)."""
    if created and dist.is_initialized():
        if sync:
            dist.barrier()
        dist.destroy_process_group()


def derive_seed(seed: int, purpose: str, *indices: int) -> int:
    """A 63-bit seed for one purpose and position, e.g. ``derive_seed(0, "masks", epoch, step, rank)``:
    SHA-256 of the parts (platform-stable), independent of earlier draws and global RNGs (exact resume)."""
    blob = ":".join([str(int(seed)), purpose, *(str(int(i)) for i in indices)]).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "little") & (2**63 - 1)


def seeded_generator(seed: int, purpose: str, *indices: int) -> torch.Generator:
    """A fresh CPU ``torch.Generator`` seeded with ``derive_seed(seed, purpose, *indices)``."""
    return torch.Generator().manual_seed(derive_seed(seed, purpose, *indices))


def wrap_ddp(model: nn.Module, info: DistInfo, device: torch.device, sync_batchnorm: bool) -> nn.Module:
    """``model`` itself for one process, else ``DistributedDataParallel(model)`` (optionally Sync BN)."""
    if not info.distributed:
        return model
    if sync_batchnorm:
        if device.type != "cuda":
            raise ValueError("sync_batchnorm=True needs CUDA devices (PyTorch's SyncBatchNorm has no CPU "
                             "kernel); use --set sync_batchnorm=false for a CPU/gloo run")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)  # broadcasts rank 0's BN buffers


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


def broadcast_buffers(model: nn.Module, info: DistInfo, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (BatchNorm running statistics) to every rank."""
    if not info.distributed:
        return
    for buf in unwrap(model).buffers():
        dist.broadcast(buf, src=src)


# ---- the few patterns the trainer needs, each in one place ------------------------------
def main_then_broadcast(fn: Callable[[], T], info: DistInfo,
                        errors: tuple[type[BaseException], ...] = (ValueError,)) -> T:
    """``fn()`` run on rank 0 only; its result (or its error, if of a type in ``errors``) on every rank,
    so that every rank raises it and none is left waiting in a collective."""
    result, error = None, None
    if info.is_main:
        try:
            result = fn()
        except errors as e:
            error = e
    if info.distributed:  # pickled: tensors should be on the CPU
        box = [(result, error)]
        dist.broadcast_object_list(box, src=0)
        result, error = box[0]
    if error is not None:
        raise error
    return result


def local_main_first(fn: Callable[[], T], info: DistInfo) -> T:
    """``fn()`` on local rank 0 first, then on the node's other ranks (e.g. generate data once); an
    error on local rank 0 still reaches the barrier (the other ranks then usually raise it too)."""
    if info.local_rank == 0:
        try:
            return fn()
        finally:
            barrier(info)
    barrier(info)
    return fn()


def all_ranks_finite(value: float, info: DistInfo, device: torch.device) -> bool:
    """Whether ``value`` is finite on EVERY rank (one all-reduce): all ranks stop together."""
    finite = math.isfinite(value)
    if info.distributed:
        finite = all_reduce_sum([0.0 if finite else 1.0], info, device)[0] == 0.0
    return finite


def mean_over_ranks(sums: dict[str, float], count: int, info: DistInfo,
                    device: torch.device) -> dict[str, float]:
    """``{k: sum over ranks of sums[k] / sum over ranks of count}`` (one all-reduce, sorted keys)."""
    keys = sorted(sums)
    totals = all_reduce_sum([sums[k] for k in keys] + [count], info, device)
    return {k: v / totals[-1] for k, v in zip(keys, totals[:-1])}


def shard(n: int, info: DistInfo) -> list[int]:
    """The indices of ``range(n)`` this rank handles: every ``world_size``-th, from ``rank``."""
    return list(range(info.rank, n, info.world_size))


def train_sampler(dataset: Dataset, info: DistInfo, seed: int) -> DistributedSampler:
    """The training shuffle: one permutation (``seed + epoch``) on every rank, each taking its stride."""
    return DistributedSampler(dataset, info.world_size, info.rank, shuffle=True, seed=seed, drop_last=False)
