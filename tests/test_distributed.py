"""DistributedDataParallel training: a real 2-process gloo run on CPU.

One ``torch.multiprocessing.spawn`` launch of two ranks, each with torchrun's environment
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR/PORT``) so ``train`` initialises the
process group itself exactly as under ``torchrun``.  Each rank runs, in order:

1. an uninterrupted 2-epoch run into ``full/``;
2. the same run stopped after epoch 1 (``max_epochs=1``: the process group is torn down and
   ``train`` returns, as when a job's time slot ends) into ``resumed/``;
3. ``train(..., resume=True)`` on ``resumed/`` (a fresh process group, state from the checkpoint).

Rank 1 is handed a different run folder (``*-rank1``); since only rank 0 may touch the run
folder (it loads the checkpoint and broadcasts it), those folders must never appear.

The parent then trains the single-process reference: plain gradient accumulation over the same
per-rank micro-batches (``DistributedSampler`` shards, the per-step cutout size shared by the
ranks, each rank's own masks), each micro-batch's loss divided by the world size, one Adam step
per accumulation -- the exact equivalent of DDP with per-process BatchNorm statistics.  DDP
keeps rank 0's BatchNorm running statistics (``broadcast_buffers``), so the reference restores
the buffers it had after rank 0's micro-batch before each step.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from esad_lib.config import ESADConfig, get_config

WORLD = 2
#: 8 training images, 2 per micro-batch: 2 steps per epoch on each of the 2 ranks.
TINY = dict(image_size=(16, 16), base_width=4, cutout_sizes=(2, 4, 8), epochs=2, batch_size=2)
#: DDP averages (g0 + g1) / 2 with a gloo all-reduce, the reference accumulates autograd
#: gradients of loss0 / 2 and loss1 / 2.  With two ranks both are bit-identical (halving is
#: exact in binary floating point and a sum of two terms has one order): measured max |diff| = 0.
#: The tolerance (float32 rounding after a few Adam steps) covers other platforms' kernels.
ATOL, RTOL = 1e-6, 1e-5
#: a hung collective fails the test instead of stalling the suite (a normal run takes ~10-40 s)
HANG_SECONDS = 300


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _worker(rank: int, ports: list[int], data_root: str, base: str, cfg_dict: dict) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        LOCAL_RANK=str(rank),
        ESAD_DATA_ROOT=data_root,
    )
    torch.set_num_threads(1)
    from esad_lib.training import train

    cfg = ESADConfig.from_dict(cfg_dict)

    def run_dir(name: str) -> Path:
        return Path(base) / (name if rank == 0 else f"{name}-rank{rank}")

    # each call creates (and destroys) its own process group, on its own port: re-binding a
    # just-closed rendezvous port can hang
    os.environ["MASTER_PORT"] = str(ports[0])
    res = train(cfg, run_dir("full"), progress=False)
    assert res.extra["world_size"] == WORLD and res.finished
    os.environ["MASTER_PORT"] = str(ports[1])
    part = train(cfg, run_dir("resumed"), progress=False, max_epochs=1)
    assert part.epochs_run == 1 and not part.finished
    os.environ["MASTER_PORT"] = str(ports[2])
    done = train(cfg, run_dir("resumed"), resume=True, progress=False)
    assert done.epochs_run == 2 and done.finished


def _reference_accumulation(cfg: ESADConfig) -> dict[str, torch.Tensor]:
    """Single process, gradient accumulation over the ranks' micro-batches (see module docstring)."""
    from torch.utils.data import DistributedSampler

    from esad_lib.config import seed_everything
    from esad_lib.data import LOCODataset, dataset_root
    from esad_lib.perf.speed import to_training_layout
    from esad_lib.training import build_training, cutout_size_for_step, mask_generator

    ds = LOCODataset(dataset_root(cfg), cfg.category, "train", image_size=cfg.image_size)
    images = to_training_layout(torch.stack([ds[i]["image"] for i in range(len(ds))]), cfg)
    seed_everything(cfg.seed)
    # the trainer's model, loss and optimiser, with its performance opt-ins
    model, loss_fn, opt = build_training(cfg, torch.device("cpu"))
    model.train()
    for epoch in range(cfg.epochs):
        shards = []
        for r in range(WORLD):
            sampler = DistributedSampler(
                range(len(ds)), num_replicas=WORLD, rank=r, shuffle=True, seed=cfg.seed
            )
            sampler.set_epoch(epoch)
            idx = list(sampler)
            shards.append([idx[i : i + cfg.batch_size] for i in range(0, len(idx), cfg.batch_size)])
        for step in range(len(shards[0])):
            c = cutout_size_for_step(cfg, epoch, step)
            opt.zero_grad()
            for r in range(WORLD):
                img = to_training_layout(images[shards[r][step]], cfg)
                out = model(img, c, fill="train", generator=mask_generator(cfg, epoch, step, r))
                total, _ = loss_fn(img, out.recon, out.inpaint)
                (total / WORLD).backward()
                if r == 0:
                    rank0_buffers = {k: v.clone() for k, v in model.named_buffers()}
            with torch.no_grad():
                for k, v in model.named_buffers():
                    v.copy_(rank0_buffers[k])
            opt.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory, session_data_root):
    cfg = get_config("smoke", **TINY)
    with pytest.MonkeyPatch.context() as m:
        m.setenv("ESAD_DATA_ROOT", str(session_data_root))
        from esad_lib.data import dataset_root

        dataset_root(cfg)  # generate the synthetic benchmark once, before the ranks start
        base = tmp_path_factory.mktemp("ddp")
        before = {p for p in Path(session_data_root).rglob("*")}
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            ctx = mp.spawn(
                _worker,
                args=(_free_ports(3), str(session_data_root), str(base), cfg.to_dict()),
                nprocs=WORLD,
                join=False,
            )
            deadline = time.monotonic() + HANG_SECONDS
            while not ctx.join(timeout=2):  # re-raises a rank's exception
                if time.monotonic() > deadline:
                    for p in ctx.processes:
                        p.kill()
                    pytest.fail(f"the 2-process DDP run did not finish within {HANG_SECONDS} s (hang?)")
            reference = _reference_accumulation(cfg)
        finally:
            torch.set_num_threads(threads)
        after = {p for p in Path(session_data_root).rglob("*")}
    return cfg, base, reference, after - before


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"]


def test_ddp_run_completes_and_only_rank0_writes(ddp_runs):
    cfg, base, _, new_in_data_root = ddp_runs
    assert sorted(p.name for p in base.iterdir()) == ["full", "resumed"]  # no *-rank1 folders
    for name in ("full", "resumed"):
        files = sorted(p.name for p in (base / name).iterdir())
        assert files == ["checkpoint.pt", "config.json", "log.csv", "model.pt", "train_summary.json"]
    import json

    summary = json.loads((base / "full" / "train_summary.json").read_text())
    assert summary["world_size"] == WORLD and summary["global_batch_size"] == WORLD * cfg.batch_size
    assert summary["epochs_run"] == 2
    assert not new_in_data_root  # no rank wrote into the data root (data was ready)


def test_ddp_equals_single_process_gradient_accumulation(ddp_runs):
    _, base, reference, _ = ddp_runs
    got = _weights(base / "full")
    assert got.keys() == reference.keys()
    diffs = [(got[k] - v).abs().max().item() for k, v in reference.items() if v.is_floating_point()]
    print(f"max |DDP - accumulation| over all weights: {max(diffs):.3g}")
    for k, want in reference.items():
        if want.is_floating_point():
            torch.testing.assert_close(got[k], want, atol=ATOL, rtol=RTOL, msg=k)
        else:
            assert torch.equal(got[k], want), k  # BatchNorm num_batches_tracked
    init = _initial_weights(ddp_runs[0])
    moved = sum(
        not torch.allclose(init[k], reference[k]) for k in reference if reference[k].is_floating_point()
    )
    assert moved > len(reference) // 2  # training really changed the weights (the test can fail)


def _initial_weights(cfg: ESADConfig) -> dict[str, torch.Tensor]:
    from esad_lib.config import seed_everything
    from esad_lib.method import build_model

    seed_everything(cfg.seed)
    return build_model(cfg).state_dict()


def test_stopped_then_resumed_ddp_run_equals_uninterrupted(ddp_runs):
    _, base, _, _ = ddp_runs
    a, b = _weights(base / "full"), _weights(base / "resumed")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ma = torch.load(base / "full" / "model.pt", weights_only=True)
    mb = torch.load(base / "resumed" / "model.pt", weights_only=True)
    for k in ma:
        assert torch.equal(ma[k], mb[k]), k


def test_single_process_helpers_by_hand() -> None:
    """The trainer's distributed helpers reduce to the plain computation on one process."""
    from esad_lib.distributed import (
        DistInfo,
        all_ranks_finite,
        local_main_first,
        main_then_broadcast,
        mean_over_ranks,
        shard,
    )

    one, cpu = DistInfo(), torch.device("cpu")
    assert mean_over_ranks({"b": 3.0, "a": 1.0}, 4, one, cpu) == {"a": 0.25, "b": 0.75}
    assert all_ranks_finite(1.5, one, cpu) and not all_ranks_finite(float("nan"), one, cpu)
    assert not all_ranks_finite(float("inf"), one, cpu)
    assert shard(5, one) == [0, 1, 2, 3, 4] and shard(5, DistInfo(1, 2, 1)) == [1, 3]
    assert main_then_broadcast(lambda: 7, one) == 7 and local_main_first(lambda: 8, one) == 8

    def refuse() -> None:
        raise FileExistsError("held")

    with pytest.raises(FileExistsError, match="held"):
        main_then_broadcast(refuse, one, errors=(FileExistsError,))
