"""The grid runner: train every distinct model once, evaluate every distinct config once, write
``results.csv`` and ``summary.md`` (sequentially, or one worker process per device)."""

from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing as mp
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from esad_lib.ablation import steps
from esad_lib.ablation.results import SCORES_FILE, collect_results, collect_scores
from esad_lib.ablation.specs import RunSpec, expand_grid, run_finished
from esad_lib.ablation.summary import summary_markdown
from esad_lib.ablation.variants import Variant, get_variant, training_config
from esad_lib.config import ESADConfig
from esad_lib.evaluation import write_metrics
from esad_lib.paths import atomic_write_text


def _check_run_dir(spec: RunSpec, out: Path) -> None:
    """Refuse to mix a run directory made with a different configuration."""
    meta = spec.run_dir(out) / "run.json"
    if meta.exists():
        try:
            old = json.loads(meta.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise RuntimeError(f"{meta} is unreadable ({e}); move it away or use a new --out") from e
        if old.get("config_key") != spec.config_key:
            raise RuntimeError(
                f"{spec.run_dir(out)} holds a run of {spec.variant!r} made with another configuration "
                f"(config_key {old.get('config_key')} != {spec.config_key}, profile "
                f"{old.get('profile')} -> {spec.cfg.profile}); use a new --out directory or move the old one"
            )


def _write_run_meta(spec: RunSpec, out: Path) -> None:
    d = spec.run_dir(out)
    meta = {
        "variant": spec.variant,
        "category": spec.category,
        "seed": spec.seed,
        "profile": spec.cfg.profile,
        "config_key": spec.config_key,
        "train_key": spec.train_key,
        "diff": {
            k: list(v) if isinstance(v, tuple) else v for k, v in get_variant(spec.variant).diff.items()
        },
        "detector": spec.detector is not None,
    }
    atomic_write_text(d / "run.json", json.dumps(meta, indent=2) + "\n")
    atomic_write_text(d / "config.json", json.dumps(spec.cfg.to_dict(), indent=2, default=list) + "\n")


# -- worker-process plumbing (one process per device) -----------------------------------
_WORKER_DEVICE: str | None = None


def _init_worker(devices: Any) -> None:
    global _WORKER_DEVICE
    _WORKER_DEVICE = devices.get()
    if _WORKER_DEVICE == "cpu":  # several CPU workers: one thread each, no oversubscription
        import torch

        torch.set_num_threads(1)


def _train_job(cfg_dict: dict[str, Any], model_dir: str, resume: bool) -> str:
    cfg = ESADConfig.from_dict(cfg_dict).replace(device=_WORKER_DEVICE or "auto")
    steps.train_model(cfg, Path(model_dir), resume)
    return str(_WORKER_DEVICE)


def _eval_job(cfg_dict: dict[str, Any], model_dir: str, run_dir: str) -> dict[str, Any]:
    cfg = ESADConfig.from_dict(cfg_dict).replace(device=_WORKER_DEVICE or "auto")
    return steps.evaluate_model(cfg, Path(model_dir), Path(run_dir))


def assign_devices(n_jobs: int, devices: Sequence[str]) -> list[str]:
    """Round-robin device per job index (the order jobs start in when all workers are free)."""
    if not devices:
        raise ValueError("assign_devices needs at least one device")
    return [devices[i % len(devices)] for i in range(n_jobs)]


def _pool(ctx: Any, manager: Any, devices: Sequence[str]) -> cf.ProcessPoolExecutor:
    """A pool of one worker per device; each worker takes one device from a queue at start."""
    queue = manager.Queue()
    for d in devices:
        queue.put(d)
    return cf.ProcessPoolExecutor(len(devices), mp_context=ctx, initializer=_init_worker, initargs=(queue,))


@dataclass
class GridReport:
    """What :func:`run_grid` did."""

    trained: list[str] = field(default_factory=list)  # train keys trained from scratch
    resumed: list[str] = field(default_factory=list)  # train keys resumed from a checkpoint
    evaluated: list[str] = field(default_factory=list)  # run dirs evaluated now
    skipped: list[str] = field(default_factory=list)  # run dirs already finished
    seconds: float = 0.0
    results_csv: Path | None = None
    summary_md: Path | None = None


@dataclass
class _Plan:
    """What a grid still has to do: its runs, the models to train and the evaluations to make."""

    out: Path
    models_root: Path
    specs: list[RunSpec]
    #: one training job per distinct model that a pending run needs (train_key -> first run)
    train_jobs: dict[str, RunSpec]
    #: one evaluation per distinct full config (config_key -> its runs); identical configs share metrics
    eval_groups: dict[str, list[RunSpec]]


def _plan(specs: list[RunSpec], out: Path, models_root: Path, report: GridReport) -> _Plan:
    """Check the run folders, note the finished runs in ``report.skipped`` and list the jobs."""
    for s in specs:
        _check_run_dir(s, out)
    todo = [s for s in specs if not run_finished(s, out)]
    report.skipped = [str(s.run_dir(out)) for s in specs if run_finished(s, out)]
    train_jobs: dict[str, RunSpec] = {}
    for s in todo:
        if s.needs_training and not steps.model_finished(s.model_dir(models_root)):
            train_jobs.setdefault(s.train_key, s)
    eval_groups: dict[str, list[RunSpec]] = {}
    for s in todo:
        eval_groups.setdefault(s.config_key, []).append(s)
    return _Plan(out, models_root, specs, train_jobs, eval_groups)


def _prepare_training(s: RunSpec, plan: _Plan, report: GridReport) -> tuple[ESADConfig, Path, bool]:
    """The training config, model folder and resume flag of ``s``'s model (noted in ``report``);
    writes ``train_config.json`` into the model folder."""
    mdir = s.model_dir(plan.models_root)
    resume = steps.model_started(mdir)
    (report.resumed if resume else report.trained).append(s.train_key)
    mdir.mkdir(parents=True, exist_ok=True)
    tcfg = training_config(s.cfg)
    atomic_write_text(mdir / "train_config.json", json.dumps(tcfg.to_dict(), indent=2, default=list) + "\n")
    return tcfg, mdir, resume


def _finish(group: list[RunSpec], metrics: dict[str, Any], out: Path, report: GridReport) -> None:
    """Write run.json, config.json and (last) metrics.json of every run of an evaluation group."""
    # the group's one evaluation wrote scores.csv into group[0]'s folder; every run of the
    # group gets a copy (the summary's per-image intervals read it from each run)
    first_scores = group[0].run_dir(out) / SCORES_FILE
    for s in group:
        if s is not group[0] and first_scores.exists():
            s.run_dir(out).mkdir(parents=True, exist_ok=True)
            atomic_write_text(s.run_dir(out) / SCORES_FILE, first_scores.read_text())
        _write_run_meta(s, out)
        write_metrics(s.run_dir(out), metrics)
        report.evaluated.append(str(s.run_dir(out)))


def _run_here(plan: _Plan, device: str | None, report: GridReport, progress: bool) -> None:
    """Train, then evaluate, in this process (on ``device`` when given, else each config's own)."""
    for s in tqdm(list(plan.train_jobs.values()), desc="ablation: train", disable=not progress):
        tcfg, mdir, resume = _prepare_training(s, plan, report)
        if device:
            tcfg = tcfg.replace(device=device)
        steps.train_model(tcfg, mdir, resume)
    for group in tqdm(list(plan.eval_groups.values()), desc="ablation: evaluate", disable=not progress):
        _finish(group, _evaluate_here(group[0], plan, device), plan.out, report)


def _evaluate_here(s: RunSpec, plan: _Plan, device: str | None) -> dict[str, Any]:
    """Evaluate one run in this process: its detector, or its trained model."""
    cfg = s.cfg.replace(device=device) if device else s.cfg
    s.run_dir(plan.out).mkdir(parents=True, exist_ok=True)
    if s.detector is not None:
        return steps.evaluate_detector(s.detector, cfg, s.run_dir(plan.out))
    return steps.evaluate_model(cfg, s.model_dir(plan.models_root), s.run_dir(plan.out))


def _default_start_method(devices: Sequence[str]) -> str:
    """``"spawn"`` when a device is CUDA (CUDA cannot be used in forked children), else ``"fork"``
    where available."""
    cuda = any(d.startswith("cuda") for d in devices)
    return "spawn" if cuda or "fork" not in mp.get_all_start_methods() else "fork"


def _train_in_workers(ex: cf.Executor, plan: _Plan, report: GridReport, progress: bool) -> None:
    futs = []
    for s in plan.train_jobs.values():
        tcfg, mdir, resume = _prepare_training(s, plan, report)
        futs.append(ex.submit(_train_job, tcfg.to_dict(), str(mdir), resume))
    for f in tqdm(cf.as_completed(futs), total=len(futs), desc="ablation: train", disable=not progress):
        f.result()


def _evaluate_in_workers(ex: cf.Executor, plan: _Plan, report: GridReport, progress: bool) -> None:
    fut_groups = {}
    for group in plan.eval_groups.values():
        s = group[0]
        if s.detector is not None:  # a reader's detector may not pickle: evaluated in this process
            _finish(group, _evaluate_here(s, plan, None), plan.out, report)
            continue
        s.run_dir(plan.out).mkdir(parents=True, exist_ok=True)
        fut = ex.submit(
            _eval_job, s.cfg.to_dict(), str(s.model_dir(plan.models_root)), str(s.run_dir(plan.out))
        )
        fut_groups[fut] = group
    for f in tqdm(
        cf.as_completed(fut_groups), total=len(fut_groups), desc="ablation: evaluate", disable=not progress
    ):
        _finish(fut_groups[f], f.result(), plan.out, report)


def _run_in_workers(
    plan: _Plan, devices: Sequence[str], start_method: str | None, report: GridReport, progress: bool
) -> None:
    """One worker process per device: all training jobs first, then all evaluations."""
    ctx = mp.get_context(_default_start_method(devices) if start_method is None else start_method)
    with ctx.Manager() as manager, _pool(ctx, manager, devices) as ex:
        _train_in_workers(ex, plan, report, progress)
        _evaluate_in_workers(ex, plan, report, progress)


def _write_tables(plan: _Plan, report: GridReport) -> None:
    """``results.csv`` and ``summary.md`` of every finished run of the grid."""
    df = collect_results(plan.out, plan.specs)
    report.results_csv = plan.out / "results.csv"
    atomic_write_text(report.results_csv, df.to_csv(index=False))
    report.summary_md = plan.out / "summary.md"
    atomic_write_text(report.summary_md, summary_markdown(df, scores=collect_scores(plan.out, plan.specs)))


def run_grid(
    base: ESADConfig,
    variants: Sequence[str | Variant],
    categories: Sequence[str],
    seeds: Sequence[int],
    out: str | Path,
    devices: Sequence[str] | None = None,
    progress: bool = True,
    models_dir: str | Path | None = None,
    start_method: str | None = None,
) -> GridReport:
    """Run (or finish) the ablation grid under ``out`` and write results.csv + summary.md.

    ``variants``: registered names or ``Variant`` objects (a reader's own: a config diff or a
    detector, with the claim it tests; see ``register_variant``).
    ``devices``: None/one device -> sequential in this process (``base.device`` or the one
    given); several -> one worker process per device.  ``models_dir``: where trained models
    live (default ``out/models``); ``esad_lib.paths.cache_dir() / "runs"`` shares them with
    ``esad_lib.training.train_or_load`` (same folder names: the training config's key), so a
    grid reuses the models the notebooks trained and vice versa.  ``start_method`` of the
    worker processes: default "spawn" when a device is CUDA (CUDA cannot be used in forked
    children), else "fork" where available.

    Phases: plan (check run folders, list jobs), train (each distinct model once), evaluate
    (each distinct config once, metrics.json last), write (results.csv, summary.md).
    """
    t0 = time.perf_counter()
    out = Path(out)
    models_root = Path(models_dir) if models_dir is not None else out / "models"
    report = GridReport()
    plan = _plan(expand_grid(base, variants, categories, seeds), out, models_root, report)
    if devices is not None and len(devices) > 1:
        _run_in_workers(plan, devices, start_method, report, progress)
    else:
        _run_here(plan, devices[0] if devices else None, report, progress)
    _write_tables(plan, report)
    report.seconds = time.perf_counter() - t0
    return report
