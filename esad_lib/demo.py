"""The demo workflow behind ``esad demo`` / ``make demo``, and the report of several runs.

``run_demo(profile)`` trains (or reuses) and evaluates, per synthetic category, ESAD at the
profile's preset and optionally RIAD at the same budget, the naive per-pixel z-score baseline and a
PatchCore-style detector (no training); then writes ``report.md`` (the per-category table with 95 %
bootstrap intervals, and the *paired* differences ESAD minus each other method on the same test
images) and ``demo.json`` (every metric, the differences and the provenance: commit, date, threads,
profile, seeds, seconds).  ``docs/demo_report.md`` is the committed copy of ``make demo``'s report.
Notebooks 06 and 07 use ``compare_methods`` and ``paired_from_scores`` without writing a report.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from esad_lib.config import CATEGORIES, ESADConfig, get_config, riad_config
from esad_lib.detectors import Detector, NaiveDetector, PatchCore
from esad_lib.evaluation import METRICS_SCHEMA, SCORES_FILE, evaluate, evaluate_run, json_safe, load_metrics
from esad_lib.paths import PROJECT_ROOT, atomic_write_text, data_root
from esad_lib.report import format_paired, format_report, summary_line
from esad_lib.run_io import MODEL_FILE, run_dir_for
from esad_lib.scoring import fit_detector
from esad_lib.training import train, train_or_load
from esad_lib.uncertainty import METHOD_PAIRED, paired_image_auroc_by_type, percentile_interval

# fmt: off
__all__ = [
    "METHOD_LABELS", "METHOD_NAMES", "Comparison", "DemoResult", "ScoreTable", "compare_methods",
    "comparison_report", "default_report_dir", "detector_metrics", "paired_differences",
    "paired_from_scores", "provenance", "read_scores", "report_from_runs", "run_demo", "scores_of",
    "train_and_evaluate",
]
# fmt: on

#: ``(scores [N], label names, image ids "<label>/<file stem>")`` of one method on one test split.
ScoreTable = tuple[np.ndarray, list[str], list[str]]


def report_from_runs(runs: Sequence[str | Path]) -> str:
    """The markdown table for runs' metrics.json; ESAD runs are "ours", other methods extra columns."""
    by_method: dict[str, dict[str, dict]] = {}
    for run in runs:
        m = load_metrics(run)
        method = m.get("method", "esad")
        cat = m["category"]
        if cat in by_method.setdefault(method, {}):
            raise ValueError(f"two {method} runs for category {cat!r} ({run}); report one per category")
        by_method[method][cat] = m
    main_method = "esad" if "esad" in by_method else next(iter(by_method))
    extra = {f"{k.upper()} (ours)" if k != "naive" else "naive (ours)": v for k, v in by_method.items()}
    extra.pop(f"{main_method.upper()} (ours)", None)
    return format_report(
        by_method[main_method], extra=extra, title=f"{main_method.upper()} (ours) vs reported"
    )


def _finished(run_dir: Path, key: str) -> bool:
    """A finished evaluation of config ``key`` in today's metrics.json layout (else re-evaluated)."""
    p = run_dir / "metrics.json"
    try:
        m = json.loads(p.read_text()) if p.exists() and (run_dir / SCORES_FILE).exists() else {}
    except json.JSONDecodeError:
        return False
    return bool(m) and m.get("config_key") == key and m.get("schema") == METRICS_SCHEMA


def train_and_evaluate(
    cfg: ESADConfig, run_dir: Path | None = None, progress: bool = True, reevaluate: bool = False
) -> dict:
    """Train ``cfg`` (unless trained; an interrupted training resumes) and evaluate it, unless
    finished and not ``reevaluate``; ``run_dir=None``: ``train_or_load``'s cache folder."""
    run_dir = run_dir_for(cfg) if run_dir is None else run_dir
    if not reevaluate and _finished(run_dir, cfg.key()):
        return load_metrics(run_dir)
    if run_dir == run_dir_for(cfg):
        train_or_load(cfg, progress=progress)
    elif not (run_dir / MODEL_FILE).exists():
        train(cfg, run_dir, resume=True, progress=progress)
    return evaluate_run(run_dir, progress=progress)


def detector_metrics(
    detector: Detector, cfg: ESADConfig, out_dir: Path, progress: bool = True, reevaluate: bool = False
) -> dict:
    """Fit ``detector`` on train/good and evaluate it into ``out_dir``; a finished evaluation with
    the same ``info()["config_key"]`` is reused unless ``reevaluate``."""
    key = detector.info().get("config_key") if hasattr(detector, "info") else None
    if key is not None and not reevaluate and _finished(out_dir, key):
        return load_metrics(out_dir)
    fit_detector(detector, cfg)
    return evaluate(detector, cfg, out_dir=out_dir, progress=progress)[0]


def read_scores(run_dir: str | Path) -> tuple[np.ndarray, list[str], list[str]]:
    """``(scores [N], label names, image ids)`` from ``RUN/scores.csv``; ids are
    ``<label>/<file stem>`` so that two methods' rows can be matched for a paired comparison."""
    p = Path(run_dir) / SCORES_FILE
    if not p.exists():
        raise FileNotFoundError(f"{p} not found; evaluate the run first (`esad evaluate {run_dir}`)")
    with p.open() as f:
        rows = list(csv.DictReader(f))
    ids = [f"{r['label']}/{Path(r['path']).stem}" for r in rows]
    return np.asarray([float(r["score"]) for r in rows]), [r["label"] for r in rows], ids


def scores_of(result: Any) -> ScoreTable:
    """The ``read_scores`` triple of an in-memory ``esad_lib.scoring.ScoreResult`` (same ids)."""
    names = [str(n) for n in result.label_names]
    ids = [f"{n}/{Path(p).stem}" for n, p in zip(names, result.paths)]
    return np.asarray(result.scores, dtype=np.float64), names, ids


def _by_id(t: ScoreTable) -> ScoreTable:
    """A score table in image-id order (two tables of the same images then align)."""
    order = np.argsort(np.asarray(t[2]), kind="stable")
    return t[0][order], [t[1][i] for i in order], [t[2][i] for i in order]


def paired_from_scores(
    base: dict[str, ScoreTable],
    others: dict[str, dict[str, ScoreTable]],
    kind: str = "structural",
    seed: int = 0,
) -> tuple[dict[str, dict[str, dict]], dict[str, dict]]:
    """Paired bootstrap differences of the ``kind`` image AUROC, ``base - other``, per category and
    mean: ``(diffs[method][category], means[method])`` of ``esad_lib.uncertainty`` difference dicts.

    ``base[category]`` / ``others[method][category]``: ``ScoreTable`` triples of the SAME test images,
    matched by id.  The mean's interval: percentile interval of the per-resample category mean.
    """
    diffs: dict[str, dict[str, dict]] = {}
    means: dict[str, dict] = {}
    for method, tables in others.items():
        diffs[method], samples = {}, []
        for cat, table in tables.items():
            a, b = _by_id(base[cat]), _by_id(table)
            res = paired_image_auroc_by_type(*a[:2], *b[:2], a[2], b[2], seed=seed, return_samples=True)
            r = res[kind]
            if r is None:
                continue
            samples.append(r.pop("samples"))
            diffs[method][cat] = r
        if samples:
            mean_diff = float(np.mean([diffs[method][c]["diff"] for c in diffs[method]]))
            lo, hi = percentile_interval(np.mean(samples, axis=0), 0.95)
            means[method] = dict(diff=mean_diff, low=lo, high=hi, excludes_zero=bool(lo > 0.0 or hi < 0.0))
            means[method].update(n_categories=len(samples), method=METHOD_PAIRED)
    return diffs, means


def paired_differences(
    base_dirs: dict[str, Path],
    other_dirs: dict[str, dict[str, Path]],
    kind: str = "structural",
    seed: int = 0,
) -> tuple[dict[str, dict[str, dict]], dict[str, dict]]:
    """``paired_from_scores`` of run folders: ``base_dirs[category]`` and
    ``other_dirs[method][category]`` are folders with ``scores.csv``."""
    base = {cat: read_scores(d) for cat, d in base_dirs.items()}
    others = {m: {cat: read_scores(d) for cat, d in dirs.items()} for m, dirs in other_dirs.items()}
    return paired_from_scores(base, others, kind=kind, seed=seed)


def _git_commit() -> str | None:
    cmd = ["git", "-C", str(PROJECT_ROOT), "describe", "--always", "--dirty"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def provenance(profile: str, categories: Sequence[str], seconds: float) -> dict[str, Any]:
    """Where a table came from: commit, date, threads, profile, seeds, machine, time taken."""
    cfg, date = get_config(profile), _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    p = dict(commit=_git_commit(), date=date, torch_threads=torch.get_num_threads(), torch=torch.__version__)
    p.update(python=platform.python_version(), machine=platform.processor() or platform.machine())
    p.update(profile=profile, categories=list(categories), seed=cfg.seed, synth_seed=cfg.synth_seed)
    return {**p, "seconds": round(float(seconds), 1)}


@dataclass
class DemoResult:
    """What ``run_demo`` measured and wrote (``text``: report.md; ``metrics[method][category]``)."""

    text: str
    metrics: dict[str, dict[str, dict]] = field(default_factory=dict)
    paired: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    report_dir: Path | None = None


def _provenance_md(p: dict[str, Any]) -> str:
    return (
        f"\nMeasured {p['date']} at commit `{p['commit']}`, profile `{p['profile']}`, torch {p['torch']} "
        f"with {p['torch_threads']} threads, training seed {p['seed']}, synthetic test set seed "
        f"{p['synth_seed']}"
        + (f", overrides {p['overrides']}" if p.get("overrides") else "")
        + f"; {p['seconds']:.0f} s in all.\n"
    )


#: column labels of the other methods in the results table, and their names in the paired table.
METHOD_LABELS = {"riad": "RIAD (ours)", "patchcore": "PatchCore-style (ours)", "naive": "naive (ours)"}
METHOD_NAMES = {"riad": "RIAD", "patchcore": "PatchCore", "naive": "naive"}


def default_report_dir(profile: str) -> Path:
    """Where ``esad demo`` keeps its report and the baselines' runs: ``<data root>/runs/<profile>``."""
    return data_root() / "runs" / profile


@dataclass
class Comparison:
    """What ``compare_methods`` evaluated: ``metrics[method][category]`` and ``dirs[method][category]``,
    the folder holding its ``scores.csv``."""

    metrics: dict[str, dict[str, dict]] = field(default_factory=dict)
    dirs: dict[str, dict[str, Path]] = field(default_factory=dict)

    def add(self, method: str, category: str, metrics: dict, folder: Path) -> None:
        self.metrics.setdefault(method, {})[category] = metrics
        self.dirs.setdefault(method, {})[category] = folder


#: a detector factory: the category's config -> an unfitted detector (``esad_lib.detectors``).
DetectorFactory = Callable[[ESADConfig], Detector]


def compare_methods(
    profile: str = "demo",
    categories: Sequence[str] = CATEGORIES,
    with_riad: bool = False,
    with_naive: bool = True,
    with_patchcore: bool = False,
    progress: bool = True,
    overrides: dict[str, Any] | None = None,
    out: str | Path | None = None,
    reevaluate: bool = False,
    echo: bool = True,
    detectors: dict[str, DetectorFactory] | None = None,
) -> Comparison:
    """Train (or reuse) and evaluate ESAD and the methods asked for, per synthetic category: RIAD
    at the same budget, the naive baseline, PatchCore and a reader's ``detectors`` (``{name:
    factory}``, ``factory(cfg)`` an unfitted detector).  Finished evaluations are reused unless
    ``reevaluate``.  ESAD and RIAD live in ``train_or_load``'s cache, the others under
    ``default_report_dir(profile)``; with ``out`` all under ``out/<category>/<method>``.  ``echo``
    prints one summary line per category to stderr.
    """
    report_dir = Path(out) if out is not None else default_report_dir(profile)
    others: dict[str, DetectorFactory] = {"naive": NaiveDetector} if with_naive else {}
    if with_patchcore:
        others["patchcore"] = PatchCore.from_config
    others.update(detectors or {})
    t0 = time.perf_counter()
    cmp = Comparison(metrics={"esad": {}}, dirs={"esad": {}})
    for cat in categories:
        cfg = get_config(profile, category=cat, dataset="synthetic", **(overrides or {}))
        for method, c in [("esad", cfg)] + ([("riad", riad_config(cfg))] if with_riad else []):
            d = Path(out) / cat / method if out is not None else run_dir_for(c)
            cmp.add(method, cat, train_and_evaluate(c, d, progress, reevaluate), d)
        for method, factory in others.items():
            d = report_dir / cat / method
            cmp.add(method, cat, detector_metrics(factory(cfg), cfg, d, progress, reevaluate), d)
        if echo:
            line = summary_line(cmp.metrics["esad"][cat])
            print(f"[{time.perf_counter() - t0:6.0f} s] {line}", file=sys.stderr)
    return cmp


def comparison_report(
    cmp: Comparison, title: str, reported_label: str = "reported"
) -> tuple[str, dict[str, Any]]:
    """The markdown of the results table and of the paired differences ESAD minus each other method,
    and the paired dict that ``demo.json`` stores."""
    order = [m for m in ("riad", "patchcore", "naive") if m in cmp.metrics]
    order += [m for m in cmp.metrics if m not in order and m != "esad"]
    extra = {METHOD_LABELS.get(m, f"{m} (ours)"): cmp.metrics[m] for m in order}
    text = format_report(cmp.metrics["esad"], extra=extra, title=title, reported_label=reported_label)
    paired: dict[str, Any] = {}
    if order:
        others = {METHOD_NAMES.get(m, m): cmp.dirs[m] for m in order}
        diffs, means = paired_differences(cmp.dirs["esad"], others)
        paired = {"structural_image_auroc": {"per_category": diffs, "mean": means}}
        text += "\n" + format_paired(diffs, means)
    return text, paired


def run_demo(
    profile: str = "demo",
    out: str | Path | None = None,
    categories: Sequence[str] = CATEGORIES,
    with_riad: bool = False,
    with_naive: bool = True,
    with_patchcore: bool = False,
    progress: bool = True,
    overrides: dict[str, Any] | None = None,
    detectors: dict[str, DetectorFactory] | None = None,
) -> DemoResult:
    """``compare_methods`` and its tables: writes ``report.md`` and ``demo.json`` to ``out`` (default
    ``<data root>/runs/<profile>``); ``overrides``: config fields changed in every run."""
    report_dir = Path(out) if out is not None else default_report_dir(profile)
    t0 = time.perf_counter()
    flags = (with_riad, with_naive, with_patchcore, progress, overrides, out)
    cmp = compare_methods(profile, categories, *flags, detectors=detectors)
    text, paired = comparison_report(cmp, title=f"ESAD (ours, `{profile}` profile) vs reported")
    prov = provenance(profile, categories, time.perf_counter() - t0)
    prov["overrides"] = {k: list(v) if isinstance(v, tuple) else v for k, v in (overrides or {}).items()}
    text += _provenance_md(prov)
    blob = {"provenance": prov, "metrics": cmp.metrics, "paired": paired}
    atomic_write_text(report_dir / "report.md", text)
    atomic_write_text(report_dir / "demo.json", json.dumps(json_safe(blob), indent=1, sort_keys=True) + "\n")
    return DemoResult(text=text, metrics=cmp.metrics, paired=paired, provenance=prov, report_dir=report_dir)
