"""The run folder of a training run: what is written, how it is read back.

``esad_lib.training`` calls these to keep a run resumable and hand it to the notebooks.  Layout::

    config.json          the ESADConfig (written at the start)
    log.csv              one row per epoch: train/validation losses and their parts, seconds
    checkpoint.pt        everything needed to resume (written atomically every epoch)
    model.pt             state_dict of the best-validation weights (written when training ends)
    train_summary.json   train_seconds, epochs_run, best_epoch, best_val_loss, ... (written last)
    .train.lock          held by the `esad train` process writing the folder (``run_lock``); kept

``model.pt`` and ``train_summary.json`` appear only when training has finished ("done").  Every
file is written atomically (temp file + rename), readable by ``torch.load(..., weights_only=True)``
(RNG states as plain types and tensors).  Only rank 0 of a distributed run calls the writers.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from esad_lib.config import RUNTIME_FIELDS, ESADConfig, resolve_device
from esad_lib.method import build_model
from esad_lib.paths import atomic_write_bytes, atomic_write_text, cache_dir

CONFIG_FILE = "config.json"
LOG_FILE = "log.csv"
CHECKPOINT_FILE = "checkpoint.pt"
MODEL_FILE = "model.pt"
SUMMARY_FILE = "train_summary.json"
RUN_FILES = (CONFIG_FILE, LOG_FILE, CHECKPOINT_FILE, MODEL_FILE, SUMMARY_FILE)

#: config fields a resumed run may change: more epochs, another patience, another device.
RESUME_MUTABLE_FIELDS = ("epochs", "early_stopping_patience", *RUNTIME_FIELDS)

CHECKPOINT_FORMAT = 1
RUN_LOCK_FILE = ".train.lock"


class RunFileError(ValueError):
    """A file of a run folder cannot be read (the message names it and says how to recover)."""


class RunInUseError(FileExistsError):
    """Another process is training into the same run folder."""


@dataclass
class RunState:
    """Where a run stands after ``epoch`` finished epochs: the progress ``checkpoint.pt`` keeps."""

    epoch: int = 0
    best_val: float = math.inf  # lowest monitored loss, reached at epoch best_epoch
    best_epoch: int = 0
    bad_epochs: int = 0  # epochs since best_epoch (early stopping)
    stopped: bool = False
    train_seconds: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)  # log.csv as a list of rows
    best_state: dict[str, torch.Tensor] | None = None  # CPU weights of best_epoch

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any]) -> RunState:
        return cls(int(ckpt["epoch"]), float(ckpt["best_val"]), int(ckpt["best_epoch"]),
                   int(ckpt["bad_epochs"]), bool(ckpt["stopped"]), float(ckpt["train_seconds"]),
                   list(ckpt["history"]), ckpt["best_model"])


# ---- tensors and RNG states <-> files --------------------------------------------------------------------
def save_torch(obj: Any, path: Path) -> None:
    """``torch.save(obj)`` to ``path``, atomically."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of ``module.state_dict()``."""
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def rng_state() -> dict[str, Any]:
    """The global RNG states (Python, NumPy, torch CPU and CUDA) as plain types and tensors."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    return {
        "python": {"version": py_version, "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss": py_gauss},
        "numpy": {"name": str(np_name), "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
                  "pos": int(np_pos), "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``rng_state`` returned (CUDA states only when the device count matches)."""
    py = state["python"]
    random.setstate((int(py["version"]), tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["gauss"]))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


# ---- log.csv, config.json, train_summary.json ------------------------------------------------------------
def write_log(path: Path, history: list[dict[str, Any]]) -> None:
    """``history`` (one dict per epoch) as CSV; columns in first-seen order, None -> empty cell."""
    cols = list(dict.fromkeys(k for row in history for k in row))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    w.writerows(history)
    atomic_write_text(path, buf.getvalue())


def _parse_cell(v: str) -> Any:
    if v == "":
        return None
    if v in ("True", "False"):
        return v == "True"
    try:
        return int(v) if v.lstrip("-").isdigit() else float(v)
    except ValueError:
        return v


def read_log(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """``log.csv`` of a run as a list of dicts (numbers parsed; empty cells -> None)."""
    path = Path(run_dir) / LOG_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: is {run_dir} a training run folder?")
    with open(path, newline="") as f:
        return [{k: _parse_cell(v) for k, v in row.items()} for row in csv.DictReader(f)]


def write_json(path: Path, obj: Any) -> None:
    """``obj`` as indented JSON (``config.json``, ``train_summary.json``), atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def is_finished(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a finished run (``model.pt`` and ``train_summary.json``)."""
    return (run_dir / MODEL_FILE).exists() and (run_dir / SUMMARY_FILE).exists()


# ---- checkpoint.pt and resuming --------------------------------------------------------------------------
def save_checkpoint(path: Path, cfg: ESADConfig, state: RunState, model: nn.Module,
                    optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, world_size: int) -> None:
    """Write ``checkpoint.pt`` after epoch ``state.epoch`` (loads with ``weights_only=True``)."""
    save_torch({
        "format": CHECKPOINT_FORMAT, "epoch": state.epoch, "model": cpu_state(model),
        "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "best_model": state.best_state,
        "best_val": state.best_val, "best_epoch": state.best_epoch, "bad_epochs": state.bad_epochs,
        "stopped": state.stopped, "train_seconds": state.train_seconds, "history": state.history,
        "world_size": world_size, "rng": rng_state(),
        # the shuffle, cutout and mask generators: re-derived from (seed, purpose, epoch, step[, rank])
        "generators": {"seed": int(cfg.seed), "next_epoch": state.epoch},
    }, path)


def config_mismatch(stored: dict[str, Any], cfg: ESADConfig) -> dict[str, tuple[Any, Any]]:
    """Fields (outside ``RESUME_MUTABLE_FIELDS``) where ``stored`` (a config.json) differs from ``cfg``."""
    now = json.loads(json.dumps(cfg.to_dict()))
    keys = [k for k in sorted(set(stored) | set(now)) if k not in RESUME_MUTABLE_FIELDS]
    return {k: (stored.get(k), now.get(k)) for k in keys if stored.get(k) != now.get(k)}


def prepare_run_dir(out_dir: Path, cfg: ESADConfig, resume: bool) -> dict[str, Any] | None:
    """Check ``out_dir`` (rank 0 only); return the checkpoint to resume from, or None.  ``ValueError``:
    resuming with another config or a foreign file; ``FileExistsError``: a run there, no ``resume``."""
    ckpt_path, cfg_path = out_dir / CHECKPOINT_FILE, out_dir / CONFIG_FILE
    if resume and ckpt_path.exists():
        diff = config_mismatch(json.loads(cfg_path.read_text()), cfg) if cfg_path.exists() else {}
        if diff:
            lines = ", ".join(f"{k}: run has {a!r}, now {b!r}" for k, (a, b) in diff.items())
            raise ValueError(f"cannot resume {out_dir}: its config.json differs from the requested config "
                             f"({lines}). Only {', '.join(RESUME_MUTABLE_FIELDS)} may change on resume; use "
                             "the run's settings or train into a new --out folder.")
        try:
            ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        except Exception as e:  # a truncated file cannot happen (atomic writes) but a foreign one can
            raise ValueError(f"cannot read {ckpt_path} ({type(e).__name__}: {e}); it is not a checkpoint "
                             "written by esad_lib.training -- train into a new --out folder") from e
        if (found := ckpt.get("format")) != CHECKPOINT_FORMAT:
            raise ValueError(f"{ckpt_path} has checkpoint format {found!r}, expected {CHECKPOINT_FORMAT}")
        return ckpt
    present = [name for name in RUN_FILES if (out_dir / name).exists()]
    if not resume and present:
        raise FileExistsError(f"{out_dir} already holds a training run ({', '.join(present)}); pass "
                              "resume=True (CLI: --resume) to continue it, or choose another output folder")
    return None


# ---- finished runs and the cache -------------------------------------------------------------------------
def load_run(run_dir: str | os.PathLike,
             device: str | torch.device | None = None) -> tuple[nn.Module, ESADConfig]:
    """The model (best weights, eval mode, on ``device`` or ``cfg.device``) and config of a finished run."""
    run_dir = Path(run_dir)
    cfg_path, model_path = run_dir / CONFIG_FILE, run_dir / MODEL_FILE
    if not cfg_path.exists():
        raise FileNotFoundError(f"{cfg_path} not found: {run_dir} is not a training run folder (esad train "
                                "--out ...)")
    if not model_path.exists():
        hint = "training has not finished; continue it with esad train ... --resume"
        hint = hint if (run_dir / CHECKPOINT_FILE).exists() else "train it first (esad train ... --out RUN)"
        raise FileNotFoundError(f"{model_path} not found: {hint}")
    cfg = ESADConfig.from_dict(json.loads(cfg_path.read_text()))
    dev = torch.device(device) if device is not None else resolve_device(cfg.device)
    model = build_model(cfg)
    try:
        model.load_state_dict(torch.load(model_path, map_location="cpu", weights_only=True))
    except Exception as e:  # truncated, overwritten, or weights of another network
        raise RunFileError(f"cannot read {model_path}: the file is damaged ({type(e).__name__}: "
                           f"{str(e)[:200]}). Restore model.pt from a copy of the run, or retrain: move "
                           f"{run_dir} away and run `esad train` with the settings in {cfg_path} and --out "
                           f"{run_dir}") from e
    return model.to(dev).eval(), cfg


def run_dir_for(cfg: ESADConfig) -> Path:
    """Where ``train_or_load`` keeps the run of ``cfg``: ``cache_dir()/runs/<cfg.key()>``."""
    return cache_dir() / "runs" / cfg.key()


@contextlib.contextmanager
def _flock(path: Path, wait: bool) -> Iterator[bool]:
    """An exclusive ``fcntl.flock`` on ``path`` until the file closes; False: taken (when not ``wait``)."""
    try:
        import fcntl
    except ImportError as e:  # Windows
        raise OSError(f"cannot lock {path}: run folders are locked with fcntl, which this system lacks "
                      "(Linux and macOS have it); train under Linux or WSL") from e
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            held = True
        except BlockingIOError:
            held = False
        yield held


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive inter-process lock on ``path``, waited for; it goes when the file closes."""
    with _flock(path, wait=True):
        yield


@contextlib.contextmanager
def run_lock(out_dir: str | os.PathLike, enabled: bool = True) -> Iterator[None]:
    """Hold ``out_dir`` for a training run (``.train.lock``, freed even when the process is killed): a
    second ``esad train`` into it raises ``RunInUseError`` at once.  ``enabled`` False holds nothing."""
    if not enabled:
        yield
        return
    path = Path(out_dir) / RUN_LOCK_FILE
    with _flock(path, wait=False) as held:
        if not held:
            raise RunInUseError(f"{out_dir} is in use: another `esad train` is writing a run there (it holds "
                                f"{path}). Wait for it to finish, or train into another --out folder")
        yield
