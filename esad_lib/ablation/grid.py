"""The grid runner: train every distinct model once, evaluate every distinct config once, write
``results.csv``, ``summary.md`` and ``grid.json`` (sequentially, or one worker process per device)."""

from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing as mp
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from esad_lib.ablation import steps
from esad_lib.ablation.results import collect_results, collect_scores
from esad_lib.ablation.summary import summary_markdown
from esad_lib.ablation.variants import (
    RunSpec,
    Variant,
    expand_grid,
    get_variant,
    run_finished,
    training_config,
)
from esad_lib.config import ESADConfig
from esad_lib.evaluation import SCORES_FILE, write_metrics
from esad_lib.paths import atomic_write_text

#: a job: ``(steps function name, config, model folder, resume flag or run folder)``.
Job = tuple[str, ESADConfig, Path, Any]


def _check_run_dir(spec: RunSpec, out: Path) -> None:
    """Refuse to mix a run directory made with a different configuration."""
    if not (meta := spec.run_dir(out) / "run.json").exists():
        return
    try:
        old = json.loads(meta.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise RuntimeError(f"{meta} is unreadable ({e}); move it away or use a new --out") from e
    if old.get("config_key") != spec.config_key:
        raise RuntimeError(
            f"{spec.run_dir(out)} holds a run of {spec.variant!r} made with another configuration "
            f"(config_key {old.get('config_key')} != {spec.config_key}, profile "
            f"{old.get('profile')} -> {spec.cfg.profile}); use a new --out directory or move the old one")


def _write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=list) + "\n")


_WORKER_DEVICE: str | None = None  # in a worker process: its device


def _init_worker(devices: Any) -> None:
    global _WORKER_DEVICE
    _WORKER_DEVICE = devices.get()
    if _WORKER_DEVICE == "cpu":  # several CPU workers: one thread each, no oversubscription
        torch.set_num_threads(1)


def _job(step: str, cfg_dict: dict[str, Any], model_dir: Path, arg: Any) -> Any:
    """``steps.<step>(cfg on this worker's device, model_dir, arg)`` in a worker process."""
    cfg = ESADConfig.from_dict(cfg_dict).replace(device=_WORKER_DEVICE or "auto")
    return getattr(steps, step)(cfg, model_dir, arg)


def _run_jobs(jobs: list[Job], ex: cf.Executor | None, device: str | None) -> Iterator[tuple[int, Any]]:
    """``(job index, result)`` as jobs finish: in the pool ``ex``, else in turn here (on ``device``)."""
    if ex is None:
        for i, (step, cfg, mdir, arg) in enumerate(jobs):
            yield i, getattr(steps, step)(cfg.replace(device=device) if device else cfg, mdir, arg)
        return
    futs = {ex.submit(_job, st, cfg.to_dict(), mdir, arg): i for i, (st, cfg, mdir, arg) in enumerate(jobs)}
    for f in cf.as_completed(futs):
        yield futs[f], f.result()


#: written by ``run_grid`` into the grid's folder: its duration and what it trained / evaluated.
GRID_FILE = "grid.json"


@dataclass
class GridReport:
    """What :func:`run_grid` did: train keys trained / resumed, run dirs evaluated / skipped."""

    trained: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    evaluated: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0
    results_csv: Path | None = None
    summary_md: Path | None = None


def _train_jobs(specs: list[RunSpec], models_root: Path, report: GridReport) -> list[Job]:
    """One job per distinct model a pending run needs (notes trained / resumed; writes
    train_config.json: the config with the preset's test-time fields)."""
    jobs: dict[str, Job] = {}
    for s in specs:
        mdir = s.model_dir(models_root)
        if s.train_key in jobs or not s.needs_training or steps.model_finished(mdir):
            continue
        resume = steps.model_started(mdir)
        (report.resumed if resume else report.trained).append(s.train_key)
        mdir.mkdir(parents=True, exist_ok=True)
        tcfg = training_config(s.cfg)
        _write_json(mdir / "train_config.json", tcfg.to_dict())
        jobs[s.train_key] = ("train_model", tcfg, mdir, resume)
    return list(jobs.values())


def _finish(group: list[RunSpec], metrics: dict[str, Any], out: Path, report: GridReport) -> None:
    """Write run.json, config.json and (last) metrics.json of every run of an evaluation group."""
    # the group's one evaluation wrote group[0]'s scores.csv; every run gets a copy (for the summary)
    first_scores = group[0].run_dir(out) / SCORES_FILE
    for s in group:
        d = s.run_dir(out)
        if s is not group[0] and first_scores.exists():
            d.mkdir(parents=True, exist_ok=True)
            atomic_write_text(d / SCORES_FILE, first_scores.read_text())
        meta = dict(variant=s.variant, category=s.category, seed=s.seed, profile=s.cfg.profile)
        meta.update(config_key=s.config_key, train_key=s.train_key, diff=get_variant(s.variant).diff)
        _write_json(d / "run.json", {**meta, "detector": s.detector is not None})
        _write_json(d / "config.json", s.cfg.to_dict())
        write_metrics(d, metrics)
        report.evaluated.append(str(d))


def _execute(pending, out, models_root, report, ex, device: str | None, progress: bool) -> None:
    """Train every model ``pending`` needs, then evaluate each distinct config once (a detector in
    this process: a reader's may not pickle), with :func:`_run_jobs`."""
    jobs = _train_jobs(pending, models_root, report)
    for _ in tqdm(_run_jobs(jobs, ex, device), total=len(jobs), desc="ablation: train", disable=not progress):
        pass
    groups: dict[str, list[RunSpec]] = {}
    for s in pending:
        groups.setdefault(s.config_key, []).append(s)
    esad_groups, jobs = [], []
    for group in groups.values():
        s = group[0]
        s.run_dir(out).mkdir(parents=True, exist_ok=True)
        if s.detector is not None:
            cfg = s.cfg.replace(device=device) if device else s.cfg
            _finish(group, steps.evaluate_detector(s.detector, cfg, s.run_dir(out)), out, report)
        else:
            esad_groups.append(group)
            jobs.append(("evaluate_model", s.cfg, s.model_dir(models_root), s.run_dir(out)))
    done = _run_jobs(jobs, ex, device)
    for i, metrics in tqdm(done, total=len(jobs), desc="ablation: evaluate", disable=not progress):
        _finish(esad_groups[i], metrics, out, report)


def run_grid(
    base: ESADConfig, variants: Sequence[str | Variant], categories: Sequence[str], seeds: Sequence[int],
    out: str | Path, devices: Sequence[str] | None = None, progress: bool = True,
    models_dir: str | Path | None = None,
) -> GridReport:
    """Run (or finish) the grid under ``out``: each distinct model trained once, each config evaluated
    once; results.csv + summary.md.  ``devices``: several -> one worker process each ("spawn" with
    CUDA).  ``models_dir``: default ``out/models``; ``cache_dir() / "runs"`` shares ``train_or_load``'s."""
    t0, out, report = time.perf_counter(), Path(out), GridReport()
    models_root = Path(models_dir) if models_dir is not None else out / "models"
    specs = expand_grid(base, variants, categories, seeds)
    for s in specs:
        _check_run_dir(s, out)
    report.skipped = [str(s.run_dir(out)) for s in specs if run_finished(s, out)]
    pending = [s for s in specs if not run_finished(s, out)]
    if devices is not None and len(devices) > 1:
        cuda = any(d.startswith("cuda") for d in devices)
        ctx = mp.get_context("spawn" if cuda or "fork" not in mp.get_all_start_methods() else "fork")
        with ctx.Manager() as manager:
            queue = manager.Queue()  # each worker takes one device at start
            for d in devices:
                queue.put(d)
            with cf.ProcessPoolExecutor(len(devices), mp_context=ctx, initializer=_init_worker,
                                        initargs=(queue,)) as ex:
                _execute(pending, out, models_root, report, ex, None, progress)
    else:
        _execute(pending, out, models_root, report, None, devices[0] if devices else None, progress)
    df = collect_results(out, specs)
    report.results_csv, report.summary_md = out / "results.csv", out / "summary.md"
    atomic_write_text(report.results_csv, df.to_csv(index=False))
    atomic_write_text(report.summary_md, summary_markdown(df, scores=collect_scores(out, specs)))
    report.seconds = time.perf_counter() - t0
    # what this call did and how long it took (a re-run that skips finished runs records its own time)
    _write_json(out / GRID_FILE, {
        "seconds": round(report.seconds, 1), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "threads": torch.get_num_threads(), "devices": list(devices or ["default"]), "runs": len(specs),
        "evaluated": len(report.evaluated), "skipped": len(report.skipped),
        "trained": len(set(report.trained)), "resumed": len(set(report.resumed)),
    })
    return report
