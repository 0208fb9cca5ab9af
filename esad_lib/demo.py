"""The demo workflow behind ``esad demo`` / ``make demo``, and the report of several runs.

``run_demo(profile)`` trains (or reuses) and evaluates, per synthetic category:

* ESAD at the profile's preset (the method of the paper);
* optionally RIAD at the same budget (``esad_lib.config.riad_config``), the naive per-pixel
  z-score baseline (no training) and a PatchCore-style detector on ImageNet features
  (``esad_lib.patchcore``; no training, seconds per category);

then writes ``report.md`` (the per-category table with 95 % bootstrap intervals, and the
*paired* differences ESAD minus each other method on the same test images) and ``demo.json``
(every metric, the differences, and the provenance of the run: commit, date, thread count,
profile, seeds, seconds).  ``docs/demo_report.md`` is the
committed copy of ``make demo``'s report; the README quotes it.

Notebooks 06 and 07 use the same pieces without writing any report: ``compare_methods`` (the
per-category runs, reusing ``esad demo``'s cached evaluations) and ``paired_from_scores`` (the
paired differences of in-memory scores, e.g. two test-time settings of one model).
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
from esad_lib.report import format_paired, format_report
from esad_lib.run_io import MODEL_FILE, run_dir_for
from esad_lib.scoring import fit_detector
from esad_lib.training import train, train_or_load
from esad_lib.uncertainty import ANOMALY_TYPES, METHOD_PAIRED, paired_image_auroc_by_type, percentile_interval

__all__ = [
    "METHOD_LABELS",
    "METHOD_NAMES",
    "Comparison",
    "DemoResult",
    "ScoreTable",
    "compare_methods",
    "comparison_report",
    "default_report_dir",
    "detector_metrics",
    "paired_differences",
    "paired_from_scores",
    "provenance",
    "read_scores",
    "report_from_runs",
    "run_demo",
    "scores_of",
    "summary_line",
    "train_and_evaluate",
]

#: ``(scores [N], label names, image ids "<label>/<file stem>")`` of one method on one test split.
ScoreTable = tuple[np.ndarray, list[str], list[str]]


def summary_line(m: dict) -> str:
    """One line per evaluated run: AUROCs, AU-PRO, AU-sPRO, scoring speed."""

    def p(x):
        return "-" if x is None else f"{100 * x:.1f}"

    ia, sp = m["image_auroc"], m["au_spro"]
    timing = m.get("timing")
    return (
        f"{m['category']} ({m['method']}): image AUROC str {p(ia['structural'])} log {p(ia['logical'])} "
        f"mean {p(ia['mean'])} | pixel AUROC {p(m['pixel_auroc'])} | AU-PRO {p(m['au_pro'])} | "
        f"AU-sPRO str {p(sp['structural'])} log {p(sp['logical'])}"
        + (f" | scoring {timing['scoring_ms_per_image']:.1f} ms/image" if timing else "")
    )


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
    """A finished evaluation of config ``key`` in today's metrics.json layout (an older layout is
    evaluated again; nothing is retrained)."""
    p = run_dir / "metrics.json"
    if not (p.exists() and (run_dir / SCORES_FILE).exists()):
        return False
    try:
        m = json.loads(p.read_text())
    except json.JSONDecodeError:
        return False
    return m.get("config_key") == key and m.get("schema") == METRICS_SCHEMA


def train_and_evaluate(
    cfg: ESADConfig, run_dir: Path | None = None, progress: bool = True, reevaluate: bool = False
) -> dict:
    """Train ``cfg`` (unless already trained) and evaluate it; a finished run is skipped.

    ``run_dir=None`` uses ``train_or_load``'s cache folder (``cache_dir()/runs/<cfg.key()>``),
    so the notebooks reuse the models ``esad demo`` trained.  An interrupted training resumes.
    ``reevaluate=True`` evaluates a finished run again (its metrics.json is rewritten).
    """
    if run_dir is None:
        run_dir = run_dir_for(cfg)
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
    """Fit ``detector`` on train/good of ``cfg.category`` and evaluate it into ``out_dir``
    (metrics.json, scores.csv).  A finished evaluation with the same ``config_key`` (the
    detector's ``info()``) is reused unless ``reevaluate``; a detector without one is always run."""
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
    scores = np.asarray([float(r["score"]) for r in rows])
    names = [r["label"] for r in rows]
    ids = [f"{r['label']}/{Path(r['path']).stem}" for r in rows]
    return scores, names, ids


def scores_of(result: Any) -> ScoreTable:
    """The ``read_scores`` triple of an in-memory ``esad_lib.scoring.ScoreResult`` (same ids)."""
    names = [str(n) for n in result.label_names]
    ids = [f"{n}/{Path(p).stem}" for n, p in zip(names, result.paths)]
    return np.asarray(result.scores, dtype=np.float64), names, ids


def _aligned(a: tuple, b: tuple) -> tuple[tuple, tuple]:
    """Both score tables in the same image order (sorted by id)."""
    out = []
    for scores, names, ids in (a, b):
        order = np.argsort(np.asarray(ids), kind="stable")
        out.append((scores[order], [names[i] for i in order], [ids[i] for i in order]))
    return out[0], out[1]


def paired_from_scores(
    base: dict[str, ScoreTable],
    others: dict[str, dict[str, ScoreTable]],
    kind: str = "structural",
    seed: int = 0,
) -> tuple[dict[str, dict[str, dict]], dict[str, dict]]:
    """Paired bootstrap differences of the image AUROC, ``base - other``, per category and mean.

    ``base[category]`` and ``others[method][category]`` are ``ScoreTable`` triples (``read_scores``
    of a run folder, or ``scores_of`` a ScoreResult) of the SAME test images, matched by id.
    ``kind``: "structural", "logical" or "mean".  The mean's interval is the percentile interval
    of the per-resample mean over categories (each category resampled independently: their test
    sets are independent).  Returns ``(diffs[method][category], means[method])``, each an
    ``esad_lib.uncertainty`` difference dict (diff, low, high, excludes_zero, ...).
    """
    diffs: dict[str, dict[str, dict]] = {}
    means: dict[str, dict] = {}
    for method, tables in others.items():
        diffs[method], samples = {}, []
        for cat, table in tables.items():
            a, b = _aligned(base[cat], table)
            res = paired_image_auroc_by_type(*a[:2], *b[:2], a[2], b[2], seed=seed, return_samples=True)
            r = res[kind]
            if r is None:
                continue
            samples.append(r.pop("samples"))
            for k in ANOMALY_TYPES + ("mean",):
                if res[k] is not None:
                    res[k].pop("samples", None)
            diffs[method][cat] = r
        if samples:
            mean_diff = float(np.mean([diffs[method][c]["diff"] for c in diffs[method]]))
            lo, hi = percentile_interval(np.mean(samples, axis=0), 0.95)
            means[method] = {
                "diff": mean_diff,
                "low": lo,
                "high": hi,
                "excludes_zero": bool(lo > 0.0 or hi < 0.0),
                "n_categories": len(samples),
                "method": METHOD_PAIRED,
            }
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
    try:
        out = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def provenance(profile: str, categories: Sequence[str], seconds: float) -> dict[str, Any]:
    """Where a table came from: commit, date, threads, profile, seeds, machine, time taken."""
    cfg = get_config(profile)
    return {
        "commit": _git_commit(),
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.processor() or platform.machine(),
        "profile": profile,
        "categories": list(categories),
        "seed": cfg.seed,
        "synth_seed": cfg.synth_seed,
        "seconds": round(float(seconds), 1),
    }


@dataclass
class DemoResult:
    """What ``run_demo`` measured and wrote."""

    text: str  # the markdown report (report.md)
    metrics: dict[str, dict[str, dict]] = field(default_factory=dict)  # method -> category -> metrics
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
    """What ``compare_methods`` evaluated: per method and category, the metrics and the folder
    holding their ``scores.csv`` (ESAD and RIAD: the run folder; the others: the report folder)."""

    metrics: dict[str, dict[str, dict]] = field(default_factory=dict)  # method -> category -> metrics
    dirs: dict[str, dict[str, Path]] = field(default_factory=dict)  # method -> category -> folder

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
    """Train (or reuse) and evaluate ESAD and the methods asked for, per synthetic category.

    The runs of ``esad demo``: ESAD at the profile's preset, RIAD at the same budget
    (``riad_config``), the naive baseline and the PatchCore-style reference at the same
    resolution, plus a reader's own ``detectors`` (``{name: factory}``, ``factory(cfg)`` an
    unfitted detector: see ``esad_lib.detectors.base``), each fitted on train/good and
    evaluated by the same protocol.  Finished evaluations are reused (same config key) unless
    ``reevaluate``.  Without ``out`` ESAD and RIAD live in ``train_or_load``'s cache and the
    others under ``default_report_dir(profile)``; with ``out``, all under ``out/<category>/<method>``.
    ``echo`` prints one summary line per category to stderr.
    """
    report_dir = Path(out) if out is not None else default_report_dir(profile)
    others: dict[str, DetectorFactory] = {}
    if with_naive:
        others["naive"] = NaiveDetector
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
    """The markdown of the results table (``format_report``) and of the paired differences ESAD
    minus each other method (``format_paired``), and the paired dict that ``demo.json`` stores.
    Every method besides ESAD gets a column (a reader's detector: ``"<name> (ours)"``)."""
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
    """Train + evaluate ESAD (and the methods asked for) per synthetic category; the tables.

    ``overrides`` are config fields changed in every run (``esad demo --set KEY=VALUE``);
    ``detectors`` a reader's own methods (``compare_methods``).  Writes ``report.md`` and
    ``demo.json`` to ``out`` (default ``<data root>/runs/<profile>``).  ESAD and RIAD runs live
    in ``out/<category>/<method>`` or, without ``out``, in ``train_or_load``'s cache (shared with
    the notebooks).
    """
    report_dir = Path(out) if out is not None else default_report_dir(profile)
    t0 = time.perf_counter()
    cmp = compare_methods(
        profile,
        categories,
        with_riad=with_riad,
        with_naive=with_naive,
        with_patchcore=with_patchcore,
        progress=progress,
        overrides=overrides,
        out=out,
        detectors=detectors,
    )
    text, paired = comparison_report(cmp, title=f"ESAD (ours, `{profile}` profile) vs reported")
    prov = provenance(profile, categories, time.perf_counter() - t0)
    prov["overrides"] = {k: list(v) if isinstance(v, tuple) else v for k, v in (overrides or {}).items()}
    text += _provenance_md(prov)
    blob = {"provenance": prov, "metrics": cmp.metrics, "paired": paired}
    atomic_write_text(report_dir / "report.md", text)
    atomic_write_text(report_dir / "demo.json", json.dumps(json_safe(blob), indent=1, sort_keys=True) + "\n")
    return DemoResult(text=text, metrics=cmp.metrics, paired=paired, provenance=prov, report_dir=report_dir)
