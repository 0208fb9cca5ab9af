"""Training ESAD (paper Sec. 3 "inpainting -> filling -> reconstruction", Sec. 4 "Implementation").

One step, as RIAD and ESAD train (the explicit version is written out in notebook 04):

1. draw ONE cutout size ``c`` for the batch from ``cfg.cutout_sizes`` (RIAD: 2, 4, 8, 16);
2. draw ``K`` disjoint masks for ``c``; the model inpaints each cutout with ``G1``, fills the
   hidden cells with the inpainting (training fill, ``select = 0``), reconstructs with ``G2``;
3. loss = ``ESADLoss`` (L2 + SSIM + MSGMS + feature loss, on the reconstruction and on the
   inpainting), Adam over BOTH U-Nets (RIAD: lr 1e-4, weight decay 1e-5).

Around it: validation loss on ``validation/good`` each epoch with early stopping (best weights
kept), mixed precision on CUDA (``torch.autocast`` float16 + ``GradScaler``) when
``cfg.amp``, ``tqdm.auto`` progress with running losses, ``log.csv`` (and TensorBoard when
asked and installed), an atomic ``checkpoint.pt`` every epoch and exact resume, and a stop
with a clear message on a non-finite loss.  The same code runs on CPU, one GPU, and -- under
``torchrun`` -- several processes with DistributedDataParallel (``esad_lib.distributed``
documents the multi-process semantics and which random draws agree across ranks).

Determinism.  Every random draw of the loop comes from a per-purpose generator seeded by
``derive_seed(cfg.seed, purpose, epoch, step[, rank])``: the shuffle (``DistributedSampler``,
seeded with ``cfg.seed + epoch``), the cutout size per step and the masks per step.  The
global RNGs (Python, NumPy, torch CPU and CUDA) are seeded with ``cfg.seed`` before the
model is built (so its initial weights are fixed) and saved/restored by the checkpoint for
any third-party code that draws from them.  On CPU the same seed gives the same numbers, and
a run interrupted after any epoch and resumed ends with bit-identical weights (tested).
On CUDA, cuDNN kernels may be non-deterministic; results then agree only up to float noise.

Run folder (``out_dir``)::

    config.json          the ESADConfig (written at the start)
    log.csv              one row per epoch: train/validation losses and their parts, seconds
    checkpoint.pt        everything needed to resume (written atomically every epoch)
    model.pt             state_dict of the best-validation weights (written when training ends)
    train_summary.json   train_seconds, epochs_run, best_epoch, best_val_loss, ... (written last)

``model.pt`` and ``train_summary.json`` appear only when training has finished (all epochs,
or early stopping), so their presence means "done".  Deviation from the paper: the paper
does not describe validation or early stopping; RIAD trains for a fixed number of epochs.
With ``early_stopping_patience = 0`` (demo/smoke presets) every epoch runs and ``model.pt``
still holds the weights of the epoch with the lowest validation loss.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import random
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from esad_lib.config import RUNTIME_FIELDS, ESADConfig, seed_everything
from esad_lib.distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    broadcast_buffers,
    broadcast_object,
    init_distributed,
    seeded_generator,
    unwrap,
    wrap_ddp,
)
from esad_lib.paths import atomic_write_bytes, atomic_write_text, cache_dir

__all__ = [
    "CHECKPOINT_FILE",
    "CONFIG_FILE",
    "LOG_FILE",
    "MODEL_FILE",
    "RESUME_MUTABLE_FIELDS",
    "SUMMARY_FILE",
    "TrainResult",
    "cutout_size_for_step",
    "load_run",
    "read_log",
    "run_dir_for",
    "train",
    "train_or_load",
    "validation_loss",
]

CONFIG_FILE = "config.json"
LOG_FILE = "log.csv"
CHECKPOINT_FILE = "checkpoint.pt"
MODEL_FILE = "model.pt"
SUMMARY_FILE = "train_summary.json"
RUN_FILES = (CONFIG_FILE, LOG_FILE, CHECKPOINT_FILE, MODEL_FILE, SUMMARY_FILE)

#: config fields a resumed run may change: more epochs, another patience, another device.
RESUME_MUTABLE_FIELDS = ("epochs", "early_stopping_patience", *RUNTIME_FIELDS)

#: training images are kept in memory (decoded and resized once) below this many bytes.
PRELOAD_MAX_BYTES = 2 * 1024**3

CHECKPOINT_FORMAT = 1


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


# ---------------------------------------------------------------------------------------
# data


class _Images(Dataset):
    """The ``image`` tensors ``[3, H, W]`` of a ``LOCODataset``, optionally decoded once into memory."""

    def __init__(self, ds: Dataset, preload: bool):
        self.ds = ds
        self.cache: torch.Tensor | None = None
        if preload and len(ds) > 0:
            self.cache = torch.stack([ds[i]["image"] for i in range(len(ds))])

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.cache[i] if self.cache is not None else self.ds[i]["image"]


def _datasets(cfg: ESADConfig, info: DistInfo) -> tuple[_Images, _Images, Path]:
    from esad_lib.data import LOCODataset, dataset_root

    # the synthetic benchmark is generated on first use: one process per node does it first
    # (an error there still reaches the barrier; the other ranks then raise the same error)
    if info.local_rank == 0:
        try:
            root = Path(dataset_root(cfg))
        finally:
            barrier(info)
    else:
        barrier(info)
        root = Path(dataset_root(cfg))
    size = tuple(cfg.image_size)
    train_ds = LOCODataset(root, cfg.category, "train", image_size=size)
    val_ds = LOCODataset(root, cfg.category, "validation", image_size=size)
    if len(train_ds) == 0:
        raise ValueError(
            f"no training images in {root / cfg.category / 'train' / 'good'}: "
            "check --data / cfg.dataset and --category"
        )
    nbytes = (len(train_ds) + len(val_ds)) * 3 * size[0] * size[1] * 4
    preload = cfg.num_workers == 0 and nbytes <= PRELOAD_MAX_BYTES
    return _Images(train_ds, preload), _Images(val_ds, preload), root


def cutout_size_for_step(cfg: ESADConfig, epoch: int, step: int) -> int:
    """The cutout size of training step ``step`` of ``epoch`` (0-based), the same on every rank."""
    sizes = tuple(cfg.cutout_sizes)
    g = seeded_generator(cfg.seed, "cutout", epoch, step)
    return int(sizes[int(torch.randint(len(sizes), (1,), generator=g))])


LR_SCHEDULES = ("constant", "cosine")


def lr_at(cfg: ESADConfig, epoch: int, step: int, steps_per_epoch: int) -> float:
    """The learning rate of training step ``step`` of ``epoch`` (both 0-based).

    ``constant``: ``cfg.lr`` (RIAD; every preset).  ``cosine`` (ours, an option; the README
    gives what it did at the demo budget): with
    ``t = epoch * steps_per_epoch + step`` and ``T = cfg.epochs * steps_per_epoch`` steps,

        lr_t = lr * (1 + cos(pi * t / T)) / 2

    -- ``lr`` at the first step, 0 after the last.  A pure function of the position, so a
    resumed run uses exactly the rates of an uninterrupted one.
    """
    if cfg.lr_schedule == "constant":
        return float(cfg.lr)
    if cfg.lr_schedule == "cosine":
        total = max(1, int(cfg.epochs) * int(steps_per_epoch))
        t = epoch * int(steps_per_epoch) + step
        # lr_t = lr * (1 + cos(pi t / T)) / 2
        return float(cfg.lr) * 0.5 * (1.0 + math.cos(math.pi * min(t, total) / total))
    raise ValueError(f"unknown lr_schedule {cfg.lr_schedule!r}; choose one of {', '.join(LR_SCHEDULES)}")


# ---------------------------------------------------------------------------------------
# RNG state <-> plain types/tensors (so checkpoints load with weights_only=True)


def _rng_state() -> dict[str, Any]:
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": {
            "version": py_version,
            "state": torch.tensor(py_state, dtype=torch.int64),
            "gauss": py_gauss,
        },
        "numpy": {
            "name": str(np_name),
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((int(py["version"]), tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


# ---------------------------------------------------------------------------------------
# run folder helpers


def _save_torch(obj: Any, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def _cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def _write_log(path: Path, history: list[dict[str, Any]]) -> None:
    cols: list[str] = []
    for row in history:
        cols.extend(k for k in row if k not in cols)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for row in history:
        w.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in cols})
    atomic_write_text(path, buf.getvalue())


def read_log(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """``log.csv`` of a run as a list of dicts (numbers parsed; empty cells -> None)."""
    path = Path(run_dir) / LOG_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: is {run_dir} a training run folder?")
    rows = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            parsed: dict[str, Any] = {}
            for k, v in row.items():
                if v == "":
                    parsed[k] = None
                elif v in ("True", "False"):
                    parsed[k] = v == "True"
                else:
                    try:
                        parsed[k] = int(v) if v.lstrip("-").isdigit() else float(v)
                    except ValueError:
                        parsed[k] = v
            rows.append(parsed)
    return rows


def _config_mismatch(stored: dict[str, Any], cfg: ESADConfig) -> dict[str, tuple[Any, Any]]:
    now = json.loads(json.dumps(cfg.to_dict()))
    return {
        k: (stored.get(k), now.get(k))
        for k in sorted(set(stored) | set(now))
        if k not in RESUME_MUTABLE_FIELDS and stored.get(k) != now.get(k)
    }


def _prepare_run_dir(out_dir: Path, cfg: ESADConfig, resume: bool) -> dict[str, Any] | None:
    """Check ``out_dir`` (rank 0 only); return the checkpoint to resume from, or None."""
    ckpt_path = out_dir / CHECKPOINT_FILE
    if resume and ckpt_path.exists():
        cfg_path = out_dir / CONFIG_FILE
        if cfg_path.exists():
            stored = json.loads(cfg_path.read_text())
            diff = _config_mismatch(stored, cfg)
            if diff:
                lines = ", ".join(f"{k}: run has {a!r}, now {b!r}" for k, (a, b) in diff.items())
                raise ValueError(
                    f"cannot resume {out_dir}: its config.json differs from the requested config ({lines}). "
                    f"Only {', '.join(RESUME_MUTABLE_FIELDS)} may change on resume; use the run's "
                    "settings or train into a new --out folder."
                )
        try:
            ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        except Exception as e:  # a truncated file cannot happen (atomic writes) but a foreign one can
            raise ValueError(
                f"cannot read {ckpt_path} ({type(e).__name__}: {e}); it is not a checkpoint written by "
                "esad_lib.training -- train into a new --out folder"
            ) from e
        if ckpt.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(
                f"{ckpt_path} has checkpoint format {ckpt.get('format')!r}, expected {CHECKPOINT_FORMAT}"
            )
        return ckpt
    if not resume:
        present = [name for name in RUN_FILES if (out_dir / name).exists()]
        if present:
            raise FileExistsError(
                f"{out_dir} already holds a training run ({', '.join(present)}); pass resume=True "
                "(CLI: --resume) to continue it, or choose another output folder"
            )
    return None


# ---------------------------------------------------------------------------------------
# validation


@torch.no_grad()
def validation_loss(
    model: nn.Module,
    loss_fn: nn.Module,
    images: Dataset,
    cfg: ESADConfig,
    device: torch.device,
    info: DistInfo | None = None,
    use_amp: bool = False,
) -> dict[str, float] | None:
    """Mean training objective on the validation images, averaged over every cutout size.

    The masks for cutout size ``c`` and validation batch ``b`` come from
    ``derive_seed(cfg.seed, "val", c, b)``: the same in every epoch, so the numbers are
    comparable across epochs.  Uses the training fill (this is the training loss on held-out
    images).  Under DDP each rank scores every ``world_size``-th image and the sums are
    all-reduced.  Returns ``{"loss": ..., <part>: ...}`` or None when there are no images.
    """
    info = info if info is not None else DistInfo()
    n = len(images)
    if n == 0:
        return None
    net = unwrap(model)
    was_training = net.training
    net.eval()
    idx = list(range(info.rank, n, info.world_size))
    sums: dict[str, float] = {}
    count = 0
    for c in cfg.cutout_sizes:
        for b, start in enumerate(range(0, len(idx), cfg.batch_size)):
            img = torch.stack([images[i] for i in idx[start : start + cfg.batch_size]]).to(device)
            gen = seeded_generator(cfg.seed, "val", int(c), b)
            with _autocast(device, use_amp):
                out = net(img, int(c), fill=net.train_fill, generator=gen)
                total, parts = loss_fn(img, out.recon, out.inpaint)
            bs = img.shape[0]
            parts = {"loss": float(total.detach()), **{k: v for k, v in parts.items() if k != "total"}}
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v * bs
            count += bs
    net.train(was_training)
    keys = sorted(sums)
    totals = all_reduce_sum([sums[k] for k in keys] + [count], info, device)
    # count = images x cutout sizes, so this is the mean over both
    return {k: v / totals[-1] for k, v in zip(keys, totals[:-1])}


def _autocast(device: torch.device, enabled: bool):
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    return contextlib.nullcontext()


# ---------------------------------------------------------------------------------------
# the trainer


def train(
    cfg: ESADConfig,
    out_dir: str | os.PathLike,
    resume: bool = False,
    progress: bool = True,
    *,
    on_epoch_end: Callable[[int, nn.Module], None] | None = None,
    max_epochs: int | None = None,
    tensorboard: bool = False,
) -> TrainResult:
    """Train ``cfg``'s model on ``cfg.category``'s ``train/good`` images; write the run to ``out_dir``.

    Args:
        cfg: the experiment (``cfg.epochs``, ``batch_size`` (per process), ``lr``, ...).
        out_dir: run folder (created).  Must not already hold a run unless ``resume``.
        resume: continue the run in ``out_dir`` from its ``checkpoint.pt`` (same final
            weights as an uninterrupted run); starts fresh when there is no checkpoint.  A
            finished run is returned as is (unless ``cfg.epochs`` was raised).
        progress: ``tqdm.auto`` bars (epochs and steps with running losses); rank 0 only.
        on_epoch_end: called as ``on_epoch_end(epoch, model)`` (1-based epoch, the plain model
            in eval mode, current -- not best -- weights) after each epoch's checkpoint is
            written; rank 0 only.  For notebooks that collect reconstructions per epoch.
        max_epochs: stop after this many epochs *in this call* (the run stays resumable, no
            ``model.pt`` yet); for time-boxed jobs.  None = run to ``cfg.epochs``.
        tensorboard: also log to ``out_dir/tb`` with ``torch.utils.tensorboard`` (needs the
            ``tensorboard`` package; a warning when it is missing).

    Returns a ``TrainResult`` (model with the best-validation weights, eval mode).
    Raises ``FloatingPointError`` when the loss becomes NaN/inf, ``FileExistsError`` when
    ``out_dir`` holds a run and ``resume`` is False, ``ValueError`` on a config mismatch.
    Under ``torchrun`` (``WORLD_SIZE > 1``) every process calls this; see ``esad_lib.distributed``.
    """
    info, device, created = init_distributed(cfg.device)
    ok = False
    try:
        result = _train(
            cfg, Path(out_dir), resume, progress, on_epoch_end, max_epochs, tensorboard, info, device
        )
        ok = True
        return result
    finally:
        if created:
            import torch.distributed as dist

            if ok:
                dist.barrier()
            dist.destroy_process_group()


def _train(
    cfg: ESADConfig,
    out_dir: Path,
    resume: bool,
    progress: bool,
    on_epoch_end: Callable[[int, nn.Module], None] | None,
    max_epochs: int | None,
    tensorboard: bool,
    info: DistInfo,
    device: torch.device,
) -> TrainResult:
    from tqdm.auto import tqdm

    from esad_lib.losses import ESADLoss
    from esad_lib.models import build_model

    if cfg.epochs < 1:
        raise ValueError(f"cfg.epochs must be >= 1, got {cfg.epochs}")
    if not cfg.cutout_sizes:
        raise ValueError("cfg.cutout_sizes is empty; RIAD/ESAD use (2, 4, 8, 16)")
    lr_at(cfg, 0, 0, 1)  # an unknown schedule fails here, before any work
    main = info.is_main

    # rank 0 inspects the run folder; errors are raised on every rank (no rank left waiting)
    ckpt, error = None, None
    if main:
        try:
            ckpt = _prepare_run_dir(out_dir, cfg, resume)
        except (ValueError, FileExistsError) as e:
            error = e
    error = broadcast_object(error, info)
    if error is not None:
        raise error
    ckpt = broadcast_object(ckpt, info)

    train_set, val_set, _root = _datasets(cfg, info)
    # global RNGs: the model's initial weights (and any third-party draw) depend on them.  Seeded
    # after the data is ready, so a first-time generation of the synthetic benchmark cannot shift them.
    seed_everything(cfg.seed)
    model = build_model(cfg).to(device)
    extractor = None
    if cfg.w_feature > 0:
        from esad_lib.features import build_feature_extractor

        # The feature LOSS uses cfg.loss_feature_extractor (scoring may use another extractor,
        # cfg.feature_extractor).  "recon_encoder" as a loss extractor would be a frozen copy of
        # the reconstruction net's encoder at initialisation -- a seeded random CNN with the
        # U-Net's architecture -- since no trained net exists yet.
        name = getattr(cfg, "loss_feature_extractor", cfg.feature_extractor)
        extractor = build_feature_extractor(
            name,
            weights=cfg.feature_weights,
            device=device,
            model=model if name == "recon_encoder" else None,
        )
    loss_fn = ESADLoss(cfg, extractor).to(device)
    use_amp = bool(cfg.amp) and device.type == "cuda"
    # Adam over BOTH U-Nets (the inpainting and the reconstruction net).  [RIAD] lr 1e-4, wd 1e-5
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    history: list[dict[str, Any]] = []
    start_epoch, best_val, best_epoch, bad_epochs = 0, math.inf, 0, 0
    stopped, train_seconds = False, 0.0
    best_state: dict[str, torch.Tensor] | None = None
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        start_epoch = int(ckpt["epoch"])
        best_val, best_epoch = float(ckpt["best_val"]), int(ckpt["best_epoch"])
        bad_epochs, stopped = int(ckpt["bad_epochs"]), bool(ckpt["stopped"])
        train_seconds = float(ckpt["train_seconds"])
        history = list(ckpt["history"])
        best_state = ckpt["best_model"]
        _set_rng_state(ckpt["rng"])
        if int(ckpt.get("world_size", 1)) != info.world_size and main:
            warnings.warn(
                f"resuming a run trained on {ckpt.get('world_size')} process(es) with {info.world_size}: "
                "it continues correctly, but the data shards and masks differ from an uninterrupted run",
                stacklevel=2,
            )

    ddp_model = wrap_ddp(model, info, device, bool(getattr(cfg, "sync_batchnorm", False)))
    net = unwrap(ddp_model)  # the plain ESADModel (SyncBatchNorm layers when converted)
    sampler = DistributedSampler(
        train_set, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=cfg.seed, drop_last=False
    )
    loader = DataLoader(
        train_set,
        batch_size=cfg.batch_size,
        sampler=sampler,
        num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda",
        drop_last=False,
    )

    writer = None
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / CONFIG_FILE, json.dumps(cfg.to_dict(), indent=2) + "\n")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                writer = SummaryWriter(str(out_dir / "tb"))
            except ImportError:
                warnings.warn(
                    "TensorBoard logging asked for but the 'tensorboard' package is not installed "
                    "(pip install tensorboard); logging to log.csv only",
                    stacklevel=2,
                )
    if len(val_set) == 0 and main:
        warnings.warn(
            f"no validation images for {cfg.category}: early stopping and best-weights selection "
            "use the training loss",
            stacklevel=2,
        )

    epochs_this_call = 0
    epoch_bar = tqdm(
        total=cfg.epochs,
        initial=start_epoch,
        desc=f"train {cfg.category}",
        unit="epoch",
        disable=not (progress and main),
    )
    try:
        for epoch in range(start_epoch, cfg.epochs):
            if stopped or (max_epochs is not None and epochs_this_call >= max_epochs):
                break
            t0 = time.perf_counter()
            sampler.set_epoch(epoch)
            ddp_model.train()
            sums: dict[str, float] = {}
            seen = 0
            step_bar = tqdm(
                loader,
                desc=f"epoch {epoch + 1}/{cfg.epochs}",
                leave=False,
                unit="batch",
                disable=not (progress and main),
            )
            for step, batch in enumerate(step_bar):
                img = batch.to(device, non_blocking=True)
                # one cutout size per step, identical on every rank; masks differ per rank
                c = cutout_size_for_step(cfg, epoch, step)
                mask_gen = seeded_generator(cfg.seed, "masks", epoch, step, info.rank)
                with _autocast(device, use_amp):
                    out = ddp_model(img, c, fill=net.train_fill, generator=mask_gen)
                    total, parts = loss_fn(img, out.recon, out.inpaint)
                finite = bool(torch.isfinite(total.detach()).item())
                if info.distributed:  # every rank must stop together (else the others wait forever)
                    finite = all_reduce_sum([0.0 if finite else 1.0], info, device)[0] == 0.0
                if not finite:
                    raise FloatingPointError(
                        f"non-finite training loss (total = {float(total.detach())}, parts = {parts}) at "
                        f"epoch {epoch + 1}, step {step + 1}, cutout size {c}"
                        + (f" on rank {info.rank}" if info.distributed else "")
                        + ". Training stopped; "
                        + (
                            f"{out_dir / CHECKPOINT_FILE} holds the last good epoch ({epoch}). "
                            if epoch > 0
                            else "no epoch had finished, nothing was saved. "
                        )
                        + f"Lower the learning rate (--set lr=...; now {cfg.lr}), "
                        + ("turn mixed precision off (--set amp=false), " if use_amp else "")
                        + "or check the input images."
                    )
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(cfg, epoch, step, len(loader))
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(total).backward()
                scaler.step(optimizer)
                scaler.update()
                bs = img.shape[0]
                seen += bs
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + float(v) * bs
                if progress and main:
                    step_bar.set_postfix(
                        loss=f"{sums['total'] / seen:.4f}",
                        **{
                            k.replace("recon_", "r_"): f"{v / seen:.3f}"
                            for k, v in sums.items()
                            if k.startswith("recon_")
                        },
                        c=c,
                    )
            step_bar.close()

            keys = sorted(sums)
            totals = all_reduce_sum([sums[k] for k in keys] + [seen], info, device)
            train_means = {k: v / totals[-1] for k, v in zip(keys, totals[:-1])}
            val = (
                validation_loss(ddp_model, loss_fn, val_set, cfg, device, info, use_amp)
                if _val_ok(val_set, ddp_model, info)
                else None
            )
            monitor = val["loss"] if val is not None else train_means["total"]
            # early stopping: improvement = strictly lower validation loss
            improved = monitor < best_val
            if improved:
                best_val, best_epoch, bad_epochs = monitor, epoch + 1, 0
                best_state = _cpu_state(net)
            else:
                bad_epochs += 1
            patience = int(cfg.early_stopping_patience)
            if patience > 0 and bad_epochs >= patience:
                stopped = True
            epoch_seconds = time.perf_counter() - t0
            train_seconds += epoch_seconds
            row: dict[str, Any] = {"epoch": epoch + 1, "train_loss": train_means["total"]}
            row.update({f"train_{k}": v for k, v in train_means.items() if k != "total"})
            row["val_loss"] = val["loss"] if val is not None else None
            if val is not None:
                row.update({f"val_{k}": v for k, v in val.items() if k != "loss"})
            row.update(
                {"lr": optimizer.param_groups[0]["lr"], "best": improved, "seconds": round(epoch_seconds, 3)}
            )
            history.append(row)
            epochs_this_call += 1

            if main:
                _write_log(out_dir / LOG_FILE, history)
                if writer is not None:
                    for k, v in row.items():
                        if isinstance(v, float) and k not in ("lr",):
                            writer.add_scalar(k, v, epoch + 1)
                    writer.flush()
                _save_torch(
                    {
                        "format": CHECKPOINT_FORMAT,
                        "epoch": epoch + 1,
                        "model": _cpu_state(net),
                        "optimizer": optimizer.state_dict(),
                        "scaler": scaler.state_dict(),
                        "best_model": best_state,
                        "best_val": best_val,
                        "best_epoch": best_epoch,
                        "bad_epochs": bad_epochs,
                        "stopped": stopped,
                        "train_seconds": train_seconds,
                        "history": history,
                        "world_size": info.world_size,
                        # the shuffle, cutout and mask generators are re-derived from
                        # (seed, purpose, epoch, step[, rank]); their position is this epoch
                        "generators": {"seed": int(cfg.seed), "next_epoch": epoch + 1},
                        "rng": _rng_state(),
                    },
                    out_dir / CHECKPOINT_FILE,
                )
                epoch_bar.update(1)
                epoch_bar.set_postfix(
                    train=f"{row['train_loss']:.4f}",
                    val="-" if row["val_loss"] is None else f"{row['val_loss']:.4f}",
                    best=best_epoch,
                )
                if on_epoch_end is not None:
                    net.eval()
                    on_epoch_end(epoch + 1, net)
                    net.train()
    finally:
        epoch_bar.close()
        if writer is not None:
            writer.close()

    epochs_done = len(history)
    finished = stopped or epochs_done >= cfg.epochs
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    already_written = (out_dir / SUMMARY_FILE).exists() and epochs_this_call == 0
    if main and finished and not already_written:
        _save_torch(best_state, out_dir / MODEL_FILE)
        summary = {
            "train_seconds": round(train_seconds, 3),
            "epochs_run": epochs_done,
            "epochs_max": cfg.epochs,
            "best_epoch": best_epoch,
            "best_val_loss": best_val,
            "stopped_early": stopped,
            "world_size": info.world_size,
            "global_batch_size": cfg.batch_size * info.world_size,
            "device": str(device),
            "amp": use_amp,
            "train_images": len(train_set),
            "validation_images": len(val_set),
            "config_key": cfg.key(),
        }
        atomic_write_text(out_dir / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    return TrainResult(
        run_dir=out_dir,
        model=net,
        cfg=cfg,
        history=history,
        epochs_run=epochs_done,
        best_epoch=best_epoch,
        best_val_loss=best_val,
        stopped_early=stopped,
        finished=finished,
        train_seconds=train_seconds,
        extra={"world_size": info.world_size, "device": str(device)},
    )


def _val_ok(val_set: Dataset, model: nn.Module, info: DistInfo) -> bool:
    """Validation runs when there are images; rank 0's BN statistics are shared first."""
    if len(val_set) == 0:
        return False
    broadcast_buffers(model, info)
    return True


# ---------------------------------------------------------------------------------------
# loading and caching


def load_run(
    run_dir: str | os.PathLike, device: str | torch.device | None = None
) -> tuple[nn.Module, ESADConfig]:
    """The trained model (best weights, eval mode) and config of a finished run folder.

    ``device``: where to put the model (default: ``resolve_device(cfg.device)``).
    """
    from esad_lib.config import resolve_device
    from esad_lib.models import build_model

    run_dir = Path(run_dir)
    cfg_path, model_path = run_dir / CONFIG_FILE, run_dir / MODEL_FILE
    if not cfg_path.exists():
        raise FileNotFoundError(
            f"{cfg_path} not found: {run_dir} is not a training run folder (esad train --out ...)"
        )
    if not model_path.exists():
        hint = (
            "training has not finished; continue it with esad train ... --resume"
            if (run_dir / CHECKPOINT_FILE).exists()
            else "train it first (esad train ... --out RUN)"
        )
        raise FileNotFoundError(f"{model_path} not found: {hint}")
    cfg = ESADConfig.from_dict(json.loads(cfg_path.read_text()))
    dev = torch.device(device) if device is not None else resolve_device(cfg.device)
    model = build_model(cfg)
    model.load_state_dict(torch.load(model_path, map_location="cpu", weights_only=True))
    return model.to(dev).eval(), cfg


def run_dir_for(cfg: ESADConfig) -> Path:
    """Where ``train_or_load`` keeps the run of ``cfg``: ``cache_dir()/runs/<cfg.key()>``."""
    return cache_dir() / "runs" / cfg.key()


@contextlib.contextmanager
def _file_lock(path: Path):
    """An exclusive inter-process lock on ``path`` (fcntl on POSIX, msvcrt on Windows)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        try:
            import fcntl

            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        except ImportError:  # Windows
            import msvcrt

            f.seek(0)
            while True:
                try:
                    msvcrt.locking(f.fileno(), msvcrt.LK_LOCK, 1)
                    break
                except OSError:
                    time.sleep(0.5)
            try:
                yield
            finally:
                f.seek(0)
                msvcrt.locking(f.fileno(), msvcrt.LK_UNLCK, 1)


def train_or_load(cfg: ESADConfig, progress: bool = True) -> nn.Module:
    """The trained model for ``cfg``: loaded from the cache when present, else trained there.

    The run lives in ``cache_dir()/runs/<cfg.key()>/`` (the key covers every field that
    changes results, so another config never reuses it).  A lock file beside it makes
    concurrent callers (two notebooks) wait for one training; an interrupted training is
    resumed.  Returns the model (best weights, eval mode) on ``resolve_device(cfg.device)``.
    """
    from esad_lib.distributed import dist_info

    run_dir = run_dir_for(cfg)
    # under torchrun the ranks must enter train() together (no lock: only rank 0 writes)
    lock = (
        contextlib.nullcontext()
        if dist_info().distributed
        else _file_lock(run_dir.parent / f"{run_dir.name}.lock")
    )
    with lock:
        done = (run_dir / MODEL_FILE).exists() and (run_dir / SUMMARY_FILE).exists()
        if done:
            stored = json.loads((run_dir / CONFIG_FILE).read_text())
            if _config_mismatch(stored, cfg):
                raise ValueError(f"{run_dir} holds a run of another config (key collision?); remove it")
            from esad_lib.config import resolve_device

            model, _ = load_run(run_dir, device=resolve_device(cfg.device))
            return model
        return train(cfg, run_dir, resume=True, progress=progress).model
