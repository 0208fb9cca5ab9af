"""Training ESAD (the authors' README "2. Proposed Method": inpainting -> filling -> reconstruction).

One step is ``esad_lib.method.train_step.train_step``: ONE cutout size ``c`` for the batch (RIAD:
2, 4, 8, 16), ``K`` disjoint masks, inpaint with ``G1``, training fill (``select = 0``), reconstruct
with ``G2``, ``ESADLoss`` on both outputs, Adam over BOTH U-Nets (RIAD: lr 1e-4, wd 1e-5).  Per
epoch ``train`` trains, validates (best weights, early stopping) and checkpoints; on CPU, one GPU
or under ``torchrun`` (``esad_lib.distributed``), mixed precision on CUDA when ``cfg.amp``.

Determinism: every draw (shuffle, cutout size, masks) comes from a generator seeded by
``derive_seed(cfg.seed, purpose, epoch, step[, rank])``; the global RNGs are seeded with
``cfg.seed`` before the model is built and saved in the checkpoint.  On CPU a run, a plain loop
over ``train_step`` and a resumed run give bit-identical weights (tested).

Deviation (the paper describes no validation): ``model.pt`` holds the weights of the epoch with
the lowest validation loss; ``early_stopping_patience = 0`` runs every epoch."""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from esad_lib import distributed, run_io
from esad_lib.config import ESADConfig, resolve_device, seed_everything
from esad_lib.data import LOCODataset, dataset_root, input_size
from esad_lib.distributed import DistInfo, seeded_generator, unwrap
from esad_lib.method import build_model, model_fills
from esad_lib.method.loss import loss_extractor
from esad_lib.method.masks import disjoint_masks
from esad_lib.method.train_step import autocast, train_step
from esad_lib.perf import speed
from esad_lib.perf.checkpointing import enable_checkpointing
from esad_lib.perf.loss import OnePassLoss
from esad_lib.run_io import RunState

#: training images are kept in memory (decoded and resized once) below this many bytes.
PRELOAD_MAX_BYTES = 2 * 1024**3


@dataclass
class TrainResult:
    """What ``train`` returns.  ``model`` holds the best-validation weights, in eval mode."""

    run_dir: Path
    model: nn.Module
    cfg: ESADConfig
    history: list[dict[str, Any]]
    epochs_run: int
    best_epoch: int
    best_val_loss: float
    stopped_early: bool
    finished: bool
    train_seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


# the random draws and the learning rate of a step: pure functions of (seed, epoch, step)
def cutout_size_for_step(cfg: ESADConfig, epoch: int, step: int) -> int:
    """The cutout size of training step ``step`` of ``epoch`` (0-based), the same on every rank."""
    g = seeded_generator(cfg.seed, "cutout", epoch, step)
    return cfg.cutout_sizes[int(torch.randint(len(cfg.cutout_sizes), (1,), generator=g))]


def mask_generator(cfg: ESADConfig, epoch: int, step: int, rank: int = 0) -> torch.Generator:
    """The generator of the masks of step ``step`` of ``epoch`` (0-based) on process ``rank``."""
    return seeded_generator(cfg.seed, "masks", epoch, step, rank)


def lr_at(cfg: ESADConfig, epoch: int, step: int, steps_per_epoch: int) -> float:
    """The learning rate of step ``step`` of ``epoch`` (0-based): ``constant`` (RIAD) or ``cosine`` (ours)."""
    if cfg.lr_schedule == "constant":
        return float(cfg.lr)
    total = max(1, int(cfg.epochs) * int(steps_per_epoch))
    t = epoch * int(steps_per_epoch) + step
    # lr_t = lr * (1 + cos(pi t / T)) / 2,  t = the step's index, T = the steps of all epochs
    return float(cfg.lr) * 0.5 * (1.0 + math.cos(math.pi * min(t, total) / total))


# data
class _Images(Dataset):
    """The ``image`` tensors ``[3, H, W]`` of a ``LOCODataset``, optionally decoded once into memory."""

    def __init__(self, ds: Dataset, preload: bool):
        self.ds = ds
        self.cache = torch.stack([ds[i]["image"] for i in range(len(ds))]) if preload and len(ds) else None

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.cache[i] if self.cache is not None else self.ds[i]["image"]


def _datasets(cfg: ESADConfig, info: DistInfo) -> tuple[_Images, _Images]:
    """``train/good`` and ``validation/good`` of ``cfg.category`` (generated once per node if synthetic)."""
    root = Path(distributed.local_main_first(lambda: dataset_root(cfg), info))
    size = input_size(cfg, root)
    train_ds = LOCODataset(root, cfg.category, "train", image_size=size)
    val_ds = LOCODataset(root, cfg.category, "validation", image_size=size)
    if len(train_ds) == 0:
        where = root / cfg.category / "train" / "good"
        raise ValueError(f"no training images in {where}: check --data / cfg.dataset and --category")
    nbytes = (len(train_ds) + len(val_ds)) * 3 * size[0] * size[1] * 4
    preload = cfg.num_workers == 0 and nbytes <= PRELOAD_MAX_BYTES
    return _Images(train_ds, preload), _Images(val_ds, preload)


# validation
@torch.no_grad()
def validation_loss(model: nn.Module, loss_fn: nn.Module, images: Dataset, cfg: ESADConfig,
                    device: torch.device, info: DistInfo | None = None,
                    use_amp: bool = False) -> dict[str, float] | None:
    """The training objective on the validation images, mean over cutout sizes: ``{"loss", <part>}``;
    masks of size ``c`` and batch ``b`` from ``derive_seed(cfg.seed, "val", c, b)`` (the same every
    epoch), the (size, image) pairs through the model ``cfg.eval_batch_size`` at a time."""
    info = info or DistInfo()
    if len(images) == 0:
        return None
    net = unwrap(model)
    was_training = net.training
    net.eval()
    idx = distributed.shard(len(images), info)
    sums: dict[str, float] = {}
    # (cutout size, image index, its masks [K, 1, H, W]) for every cutout size and image
    pairs: list[tuple[int, int, torch.Tensor]] = []
    for c in cfg.cutout_sizes:
        for b, start in enumerate(range(0, len(idx), cfg.batch_size)):
            batch_idx = idx[start : start + cfg.batch_size]
            h, w = images[batch_idx[0]].shape[-2:]
            gen = seeded_generator(cfg.seed, "val", c, b)
            masks = disjoint_masks(h, w, c, net.num_masks, generator=gen, device=device)
            pairs += [(c, i, masks) for i in batch_idx]
    for start in range(0, len(pairs), cfg.eval_batch_size):
        chunk = pairs[start : start + cfg.eval_batch_size]
        img = speed.to_training_layout(torch.stack([images[i] for _, i, _ in chunk]).to(device), cfg)
        masks = torch.stack([m for _, _, m in chunk], dim=1)  # [K, N, 1, H, W]: per image
        with autocast(device, use_amp):
            out = net(img, chunk[0][0], fill=model_fills(cfg)[0], masks=masks)
            total, parts = loss_fn(img, out.recon, out.inpaint)
        bs = img.shape[0]
        parts = {"loss": float(total.detach()), **{k: v for k, v in parts.items() if k != "total"}}
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + v * bs
    net.train(was_training)
    return distributed.mean_over_ranks(sums, len(pairs), info, device)


# the pieces of a run
@dataclass
class _Run:
    """Everything one run trains with; built identically on every rank."""

    cfg: ESADConfig
    out_dir: Path
    info: DistInfo
    device: torch.device
    train_set: _Images
    val_set: _Images
    model: nn.Module  # DistributedDataParallel(ESADModel) under torchrun, else the ESADModel
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    loader: DataLoader
    use_amp: bool

    @property
    def net(self) -> nn.Module:  # the plain ESADModel (SyncBatchNorm layers when converted)
        return unwrap(self.model)


class _Progress:
    """ONE ``tqdm.auto`` bar per run: epochs are its steps, the running losses its postfix."""

    def __init__(self, cfg: ESADConfig, start_epoch: int, enabled: bool):
        self._drawn, desc = 0.0, f"train {cfg.category}"
        self.bar = tqdm(total=cfg.epochs, initial=start_epoch, desc=desc, unit="epoch", disable=not enabled)

    def step(self, step: int, n_steps: int, sums: dict[str, float], seen: int, c: int) -> None:
        recon = {k.replace("recon_", "r_"): f"{v / seen:.3f}" for k, v in sums.items() if k[:6] == "recon_"}
        # a dict keeps this order (keyword arguments would be sorted by tqdm)
        shown = {"step": f"{step + 1}/{n_steps}", "loss": f"{sums['total'] / seen:.4f}", **recon, "c": c}
        self.bar.set_postfix(shown, refresh=False)
        if time.monotonic() - self._drawn >= 0.5:
            self.bar.refresh()
            self._drawn = time.monotonic()

    def epoch_done(self, row: dict[str, Any], best_epoch: int) -> None:
        val = "-" if row["val_loss"] is None else f"{row['val_loss']:.4f}"
        shown = {"train": f"{row['train_loss']:.4f}", "val": val, "best": best_epoch}
        self.bar.set_postfix(shown, refresh=False)
        self.bar.update(1)


# phase 1: prepare or resume the run folder
def build_training(cfg: ESADConfig, device: torch.device) -> tuple[nn.Module, nn.Module, torch.optim.Adam]:
    """The model, loss and optimiser of ``cfg`` on ``device``, ``esad_lib.perf``'s opt-ins applied."""
    if cfg.cpu_malloc_tuning and device.type == "cpu":
        speed.tune_cpu_allocator()  # glibc keeps freed memory for the next step (process-wide)
    model = build_model(cfg).to(device)
    if cfg.checkpointing:
        enable_checkpointing(model)  # recompute each U-Net level in backward: less memory
    model = speed.prepare_for_training(model, cfg)  # channels_last parameters (cfg.channels_last_training)
    # the ESAD loss with each term computed once over both outputs; its feature loss uses
    # cfg.loss_feature_extractor (scoring uses cfg.feature_extractor)
    loss_fn = OnePassLoss(cfg, loss_extractor(cfg, device) if cfg.w_feature > 0 else None).to(device)
    # Adam over BOTH U-Nets.  [RIAD] lr 1e-4, wd 1e-5; fused into one kernel per step
    return model, loss_fn, speed.training_optimizer(model.parameters(), cfg)


def _start(cfg: ESADConfig, out_dir: Path, resume: bool, info: DistInfo,
           device: torch.device) -> tuple[_Run, RunState]:
    """Check the run folder (rank 0; errors reach every rank), build the run, restore a checkpoint."""
    prepare = lambda: run_io.prepare_run_dir(out_dir, cfg, resume)
    ckpt = distributed.main_then_broadcast(prepare, info, errors=(ValueError, FileExistsError))
    train_set, val_set = _datasets(cfg, info)
    # global RNGs: the model's initial weights (and any third-party draw) depend on them.  Seeded
    # after the data is ready, so a first-time generation of the synthetic benchmark cannot shift them.
    seed_everything(cfg.seed)
    model, loss_fn, optimizer = build_training(cfg, device)
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    state = RunState()
    if ckpt is not None:  # resume: weights, optimiser, scaler, global RNG states, progress
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        run_io.set_rng_state(ckpt["rng"])
        state = RunState.from_checkpoint(ckpt)
        if int(ckpt.get("world_size", 1)) != info.world_size and info.is_main:
            warnings.warn(f"resuming a run trained on {ckpt.get('world_size')} process(es) with "
                          f"{info.world_size}: it continues correctly, but the data shards and masks differ "
                          "from an uninterrupted run", stacklevel=2)
    sampler = distributed.train_sampler(train_set, info, cfg.seed)
    loader = DataLoader(train_set, cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers,
                        pin_memory=device.type == "cuda", drop_last=False)
    ddp_model = distributed.wrap_ddp(model, info, device, cfg.sync_batchnorm)
    return _Run(cfg, out_dir, info, device, train_set, val_set, ddp_model, loss_fn, optimizer, scaler, loader,
                use_amp), state


def _open_run_folder(run: _Run, tensorboard: bool) -> Any:
    """Rank 0: write ``config.json``; return a TensorBoard writer when asked (and installed)."""
    if not run.info.is_main:
        return None
    run_io.write_json(run.out_dir / run_io.CONFIG_FILE, run.cfg.to_dict())
    if len(run.val_set) == 0:
        msg = "early stopping and best-weights selection use the training loss"
        warnings.warn(f"no validation images for {run.cfg.category}: {msg}", stacklevel=3)
    if tensorboard:
        try:
            from torch.utils.tensorboard import SummaryWriter

            return SummaryWriter(str(run.out_dir / "tb"))
        except ImportError:
            msg = "package is not installed (pip install tensorboard); logging to log.csv only"
            warnings.warn(f"TensorBoard logging asked for but the 'tensorboard' {msg}", stacklevel=3)
    return None


# phase 2: one epoch
def _train_epoch(run: _Run, epoch: int, progress: _Progress) -> dict[str, float]:
    """One pass over the training set; returns the mean loss parts over all ranks' images."""
    cfg, info = run.cfg, run.info
    run.loader.sampler.set_epoch(epoch)
    run.model.train()
    sums: dict[str, float] = {}
    seen = 0
    for step, batch in enumerate(run.loader):
        img = speed.to_training_layout(batch.to(run.device, non_blocking=True), cfg)
        # one cutout size per step, identical on every rank; masks differ per rank
        c = cutout_size_for_step(cfg, epoch, step)
        for group in run.optimizer.param_groups:
            group["lr"] = lr_at(cfg, epoch, step, len(run.loader))
        gen = mask_generator(cfg, epoch, step, info.rank)
        parts = train_step(run.model, img, c, run.loss_fn, run.optimizer, fill=model_fills(cfg)[0],
                           generator=gen, scaler=run.scaler, amp=run.use_amp)
        if not distributed.all_ranks_finite(parts["total"], info, run.device):  # every rank stops together
            raise FloatingPointError(_non_finite_message(run, parts, epoch, step, c))
        bs = img.shape[0]
        seen += bs
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + float(v) * bs
        progress.step(step, len(run.loader), sums, seen, c)
    return distributed.mean_over_ranks(sums, seen, info, run.device)


def _non_finite_message(run: _Run, parts: dict[str, float], epoch: int, step: int, c: int) -> str:
    where = f" on rank {run.info.rank}" if run.info.distributed else ""
    saved = f"{run.out_dir / run_io.CHECKPOINT_FILE} holds the last good epoch ({epoch}). "
    saved = saved if epoch > 0 else "no epoch had finished, nothing was saved. "
    amp_hint = "turn mixed precision off (--set amp=false), " if run.use_amp else ""
    return (f"non-finite training loss (total = {parts['total']}, parts = {parts}) at epoch {epoch + 1}, "
            f"step {step + 1}, cutout size {c}{where}. Training stopped; {saved}Lower the learning rate "
            f"(--set lr=...; now {run.cfg.lr}), {amp_hint}or check the input images.")


# phase 3: validate and decide
def _validate_and_decide(run: _Run, state: RunState,
                         train_means: dict[str, float]) -> tuple[dict[str, float] | None, bool]:
    """``(validation parts or None, improved)``; improved = strictly lower validation (else training) loss."""
    val = None
    if len(run.val_set) > 0:
        distributed.broadcast_buffers(run.model, run.info)  # rank 0's BatchNorm statistics on every rank
        val = validation_loss(run.model, run.loss_fn, run.val_set, run.cfg, run.device, run.info, run.use_amp)
    monitor = val["loss"] if val is not None else train_means["total"]
    improved = monitor < state.best_val
    if improved:
        state.best_val, state.best_epoch, state.bad_epochs = monitor, state.epoch + 1, 0
        state.best_state = run_io.cpu_state(run.net)
    else:
        state.bad_epochs += 1
    state.stopped = 0 < run.cfg.early_stopping_patience <= state.bad_epochs  # early stopping (0 = off)
    return val, improved


# phase 4: checkpoint (rank 0)
def _record_epoch(run: _Run, state: RunState, writer: Any, progress: _Progress,
                  on_epoch_end: Callable[[int, nn.Module], None] | None) -> None:
    """Rank 0: ``log.csv``, TensorBoard, ``checkpoint.pt``, the progress bar, ``on_epoch_end``."""
    row = state.history[-1]
    run_io.write_log(run.out_dir / run_io.LOG_FILE, state.history)
    if writer is not None:
        for k, v in row.items():
            if isinstance(v, float) and k != "lr":
                writer.add_scalar(k, v, state.epoch)
        writer.flush()
    ckpt = run.out_dir / run_io.CHECKPOINT_FILE
    run_io.save_checkpoint(ckpt, run.cfg, state, run.net, run.optimizer, run.scaler, run.info.world_size)
    progress.epoch_done(row, state.best_epoch)
    if on_epoch_end is not None:
        run.net.eval()
        on_epoch_end(state.epoch, run.net)
        run.net.train()


def _finish(run: _Run, state: RunState, epochs_this_call: int) -> TrainResult:
    """Best weights into the model; rank 0 writes ``model.pt`` and the summary when the run is done."""
    epochs_done = len(state.history)
    finished = state.stopped or epochs_done >= run.cfg.epochs
    net = run.net
    if state.best_state is not None:
        net.load_state_dict(state.best_state)
    net.eval()
    summary = run.out_dir / run_io.SUMMARY_FILE
    # a finished run loaded again (no epoch in this call) keeps its files
    if run.info.is_main and finished and (epochs_this_call > 0 or not summary.exists()):
        run_io.save_torch(state.best_state, run.out_dir / run_io.MODEL_FILE)
        run_io.write_json(summary, {
            "train_seconds": round(state.train_seconds, 3), "epochs_run": epochs_done,
            "epochs_max": run.cfg.epochs, "best_epoch": state.best_epoch, "best_val_loss": state.best_val,
            "stopped_early": state.stopped, "world_size": run.info.world_size,
            "global_batch_size": run.cfg.batch_size * run.info.world_size, "device": str(run.device),
            "amp": run.use_amp, "train_images": len(run.train_set), "validation_images": len(run.val_set),
            "config_key": run.cfg.key()})
    extra = {"world_size": run.info.world_size, "device": str(run.device)}
    return TrainResult(run.out_dir, net, run.cfg, state.history, epochs_done, state.best_epoch,
                       state.best_val, state.stopped, finished, state.train_seconds, extra)


# the trainer
def train(cfg: ESADConfig, out_dir: str | os.PathLike, resume: bool = False, progress: bool = True, *,
          on_epoch_end: Callable[[int, nn.Module], None] | None = None, max_epochs: int | None = None,
          tensorboard: bool = False) -> TrainResult:
    """Train ``cfg``'s model on ``cfg.category``'s ``train/good`` images; write the run to ``out_dir``.
    ``resume``: continue from ``checkpoint.pt`` (same final weights); ``on_epoch_end(epoch, model)``:
    rank 0, after each checkpoint, current weights in eval mode; ``max_epochs``: epochs in this call
    (stays resumable); ``tensorboard``: also log to ``out_dir/tb``.  ``FloatingPointError`` on a
    NaN/inf loss, ``FileExistsError`` when ``out_dir`` holds a run and not ``resume``.  Under
    ``torchrun`` every process calls it."""
    info, device, created = distributed.init_distributed(cfg.device)
    ok = False
    try:
        with run_io.run_lock(out_dir, enabled=not info.distributed):  # the folder is this run's until it ends
            run, state = _start(cfg, Path(out_dir), resume, info, device)
            result = _run_phases(run, state, progress and info.is_main, on_epoch_end, max_epochs, tensorboard)
        ok = True
        return result
    finally:
        distributed.shutdown_distributed(created, sync=ok)


def _run_phases(run: _Run, state: RunState, show_progress: bool,
                on_epoch_end: Callable[[int, nn.Module], None] | None, max_epochs: int | None,
                tensorboard: bool) -> TrainResult:
    writer = _open_run_folder(run, tensorboard)
    progress = _Progress(run.cfg, state.epoch, show_progress)
    first = state.epoch
    last = run.cfg.epochs if max_epochs is None else min(run.cfg.epochs, first + max_epochs)
    # the bar and the TensorBoard writer are closed however the loop ends
    with progress.bar, writer if writer is not None else contextlib.nullcontext():
        while state.epoch < last and not state.stopped:
            t0 = time.perf_counter()
            epoch = state.epoch
            train_means = _train_epoch(run, epoch, progress)
            val, improved = _validate_and_decide(run, state, train_means)
            seconds = time.perf_counter() - t0
            state.train_seconds += seconds
            state.history.append({  # one log.csv row
                "epoch": epoch + 1, "train_loss": train_means["total"],
                **{f"train_{k}": v for k, v in train_means.items() if k != "total"},
                "val_loss": None if val is None else val["loss"],
                **{f"val_{k}": v for k, v in (val or {}).items() if k != "loss"},
                "lr": run.optimizer.param_groups[0]["lr"], "best": improved, "seconds": round(seconds, 3)})
            state.epoch = epoch + 1
            if run.info.is_main:
                _record_epoch(run, state, writer, progress, on_epoch_end)
    return _finish(run, state, state.epoch - first)


# the cache
def train_or_load(cfg: ESADConfig, progress: bool = True) -> nn.Module:
    """The trained model of ``cfg`` from ``cache_dir()/runs/<cfg.key()>/``, trained there if missing."""
    run_dir = run_io.run_dir_for(cfg)
    # under torchrun the ranks must enter train() together (no lock: only rank 0 writes)
    lock = run_dir.parent / f"{run_dir.name}.lock"
    with contextlib.nullcontext() if distributed.dist_info().distributed else run_io.file_lock(lock):
        if run_io.is_finished(run_dir):
            stored = json.loads((run_dir / run_io.CONFIG_FILE).read_text())
            if run_io.config_mismatch(stored, cfg):
                raise ValueError(f"{run_dir} holds a run of another config (key collision?); remove it")
            return run_io.load_run(run_dir, device=resolve_device(cfg.device))[0]
        return train(cfg, run_dir, resume=True, progress=progress).model
