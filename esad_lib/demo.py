"""The demo workflow behind ``esad demo`` / ``make demo``, and the report of several runs.

``run_demo(profile)`` trains (or reuses) and evaluates, per synthetic category, ESAD at the profile's
preset and optionally RIAD at the same budget, the naive per-pixel z-score baseline and a PatchCore-style
detector (no training); then writes ``report.md`` (the per-category table with 95 % bootstrap intervals,
and the *paired* differences ESAD minus each other method on the same test images) and ``demo.json``
(every metric, the differences and the provenance).  ``docs/demo_report.md`` is the committed copy of
``make demo``'s report; notebooks 06 and 07 use ``compare_methods`` and ``paired_from_scores``.
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
from statistics import NormalDist
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
from esad_lib.uncertainty import METHOD_PAIRED, format_diff, paired_image_auroc_by_type, percentile_interval
from esad_lib.uncertainty.resampling import category_seed
from esad_lib.uncertainty.seeds import combine_seeds, images_for_halfwidth

#: ``(scores [N], label names, image ids "<label>/<file stem>")`` of one method on one test split.
ScoreTable = tuple[np.ndarray, list[str], list[str]]


def report_from_runs(runs: Sequence[str | Path]) -> str:
    """The markdown table for runs' metrics.json; ESAD runs are "ours", other methods extra columns."""
    by_method: dict[str, dict[str, dict]] = {}
    for run in runs:
        m = load_metrics(run)
        method, cat = m.get("method", "esad"), m["category"]
        if cat in by_method.setdefault(method, {}):
            raise ValueError(f"two {method} runs for category {cat!r} ({run}); report one per category")
        by_method[method][cat] = m
    main = "esad" if "esad" in by_method else next(iter(by_method))
    extra = {f"{k.upper() if k != 'naive' else k} (ours)": v for k, v in by_method.items() if k != main}
    return format_report(by_method[main], extra=extra, title=f"{main.upper()} (ours) vs reported")


def _finished(run_dir: Path, key: str) -> bool:
    """A finished evaluation of config ``key`` in today's metrics.json layout (else re-evaluated)."""
    try:
        m = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    same = m.get("config_key") == key and m.get("schema") == METRICS_SCHEMA
    return same and (run_dir / SCORES_FILE).exists()


def train_and_evaluate(cfg: ESADConfig, run_dir: Path | None = None, progress: bool = True,
                       reevaluate: bool = False) -> dict:
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


def detector_metrics(detector: Detector, cfg: ESADConfig, out_dir: Path, progress: bool = True,
                     reevaluate: bool = False) -> dict:
    """Fit ``detector`` on train/good and evaluate it into ``out_dir``; a finished evaluation with
    the same ``info()["config_key"]`` is reused unless ``reevaluate``."""
    key = detector.info().get("config_key") if hasattr(detector, "info") else None
    if key is not None and not reevaluate and _finished(out_dir, key):
        return load_metrics(out_dir)
    fit_detector(detector, cfg)
    return evaluate(detector, cfg, out_dir=out_dir, progress=progress)[0]


def read_scores(run_dir: str | Path) -> ScoreTable:
    """The ``ScoreTable`` of ``RUN/scores.csv`` (ids match two methods' rows for a paired comparison)."""
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


def paired_from_scores(base: dict[str, ScoreTable], others: dict[str, dict[str, ScoreTable]],
                       kind: str = "structural", seed: int = 0,
                       keep_samples: bool = False) -> tuple[dict[str, dict[str, dict]], dict[str, dict]]:
    """Paired bootstrap differences of the ``kind`` image AUROC, ``base - other``, per category and
    mean: ``(diffs[method][category], means[method])`` of ``esad_lib.uncertainty`` difference dicts.
    ``base[category]`` / ``others[method][category]``: ``ScoreTable``s of the SAME test images, matched
    by id; a category's resamples are drawn with ``category_seed(seed, category)`` for every method.  The
    mean's interval: percentile interval of the per-resample category mean, its ``se`` their standard
    deviation.  ``keep_samples``: every dict keeps its bootstrap ``samples [B]``."""
    diffs: dict[str, dict[str, dict]] = {}
    means: dict[str, dict] = {}
    for method, tables in others.items():
        diffs[method], samples = {}, []
        for cat, table in tables.items():
            a, b = _by_id(base[cat]), _by_id(table)
            r = paired_image_auroc_by_type(*a[:2], *b[:2], a[2], b[2], seed=category_seed(seed, cat),
                                           return_samples=True)[kind]
            if r is None:
                continue
            samples.append(r["samples"] if keep_samples else r.pop("samples"))
            diffs[method][cat] = r
        if samples:
            mean_diff = float(np.mean([diffs[method][c]["diff"] for c in diffs[method]]))
            boot = np.mean(samples, axis=0)
            lo, hi = percentile_interval(boot, 0.95)
            means[method] = dict(diff=mean_diff, low=lo, high=hi, excludes_zero=bool(lo > 0.0 or hi < 0.0),
                                 n_categories=len(samples), method=METHOD_PAIRED,
                                 se=float(np.std(boot, ddof=1)))
            if keep_samples:
                means[method]["samples"] = boot
    return diffs, means


def paired_differences(base_dirs: dict[str, Path], other_dirs: dict[str, dict[str, Path]],
                       kind: str = "structural", seed: int = 0,
                       keep_samples: bool = False) -> tuple[dict[str, dict[str, dict]], dict[str, dict]]:
    """``paired_from_scores`` of the scores.csv in ``base_dirs[cat]`` and ``other_dirs[method][cat]``."""
    base = {cat: read_scores(d) for cat, d in base_dirs.items()}
    others = {m: {cat: read_scores(d) for cat, d in dirs.items()} for m, dirs in other_dirs.items()}
    return paired_from_scores(base, others, kind=kind, seed=seed, keep_samples=keep_samples)


def provenance(profile: str, categories: Sequence[str], seconds: float,
               overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Where a table came from: commit, date, threads, profile, seeds, machine, time taken."""
    cfg = get_config(profile, **(overrides or {}))
    try:
        git = subprocess.run(["git", "-C", str(PROJECT_ROOT), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=10)
        commit = git.stdout.strip() or None if git.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        commit = None
    return {
        "commit": commit, "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "python": platform.python_version(), "machine": platform.processor() or platform.machine(),
        "profile": profile, "categories": list(categories), "seed": cfg.seed, "synth_seed": cfg.synth_seed,
        "seconds": round(float(seconds), 1),
    }


@dataclass
class DemoResult:
    """What ``run_demo`` measured and wrote (``text``: report.md; ``metrics[method][category]``)."""

    text: str
    metrics: dict[str, dict[str, dict]] = field(default_factory=dict)
    paired: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    report_dir: Path | None = None


def _provenance_md(p: dict[str, Any]) -> str:
    seeds = f"s {', '.join(map(str, p['seeds']))}" if p.get("seeds") else f" {p['seed']}"
    overrides = f", overrides {p['overrides']}" if p.get("overrides") else ""
    return (f"\nMeasured {p['date']} at commit `{p['commit']}`, profile `{p['profile']}`, torch {p['torch']} "
            f"with {p['torch_threads']} threads, training seed{seeds}, synthetic test set seed "
            f"{p['synth_seed']}{overrides}; {p['seconds']:.0f} s in all.\n")


#: column labels of the other methods in the results table, and their names in the paired table.
METHOD_LABELS = {"riad": "RIAD (ours)", "patchcore": "PatchCore-style (ours)", "naive": "naive (ours)"}
METHOD_NAMES = {"riad": "RIAD", "patchcore": "PatchCore", "naive": "naive"}


def default_report_dir(profile: str) -> Path:
    """Where ``esad demo`` keeps its report and the baselines' runs: ``<data root>/runs/<profile>``."""
    return data_root() / "runs" / profile


@dataclass
class Comparison:
    """``compare_methods``'s ``metrics[method][category]`` and ``dirs[method][category]`` (its scores.csv)."""

    metrics: dict[str, dict[str, dict]] = field(default_factory=dict)
    dirs: dict[str, dict[str, Path]] = field(default_factory=dict)

    def add(self, method: str, category: str, metrics: dict, folder: Path) -> None:
        self.metrics.setdefault(method, {})[category] = metrics
        self.dirs.setdefault(method, {})[category] = folder


#: a detector factory: the category's config -> an unfitted detector (``esad_lib.detectors``).
DetectorFactory = Callable[[ESADConfig], Detector]


def compare_methods(profile: str = "demo", categories: Sequence[str] = CATEGORIES, with_riad: bool = False,
                    with_naive: bool = True, with_patchcore: bool = False, progress: bool = True,
                    overrides: dict[str, Any] | None = None, out: str | Path | None = None,
                    reevaluate: bool = False, echo: bool = True,
                    detectors: dict[str, DetectorFactory] | None = None) -> Comparison:
    """Train (or reuse) and evaluate, per synthetic category, ESAD and the methods asked for, plus a reader's
    ``detectors`` (``{name: DetectorFactory}``); finished evaluations are reused unless ``reevaluate``.
    ESAD and RIAD live in ``train_or_load``'s cache, the others under ``default_report_dir(profile)``
    (``.../seed<N>/`` for a training seed other than the profile's); with ``out`` all under
    ``out/<category>/<method>``.  ``echo`` prints one line per category to stderr."""
    report_dir = Path(out) if out is not None else default_report_dir(profile)
    if out is None and (seed := get_config(profile, **(overrides or {})).seed) != get_config(profile).seed:
        report_dir = report_dir / f"seed{seed}"
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


def _others(cmp: Comparison) -> list[str]:
    """The methods ESAD is compared with, in the tables' order."""
    order = [m for m in ("riad", "patchcore", "naive") if m in cmp.metrics]
    return order + [m for m in cmp.metrics if m not in order and m != "esad"]


def comparison_report(cmp: Comparison, title: str,
                      reported_label: str = "reported") -> tuple[str, dict[str, Any]]:
    """The markdown of the results table and of the paired differences ESAD minus each other method,
    and the paired dict that ``demo.json`` stores."""
    order = _others(cmp)
    extra = {METHOD_LABELS.get(m, f"{m} (ours)"): cmp.metrics[m] for m in order}
    text = format_report(cmp.metrics["esad"], extra=extra, title=title, reported_label=reported_label)
    paired: dict[str, Any] = {}
    if order:
        others = {METHOD_NAMES.get(m, m): cmp.dirs[m] for m in order}
        diffs, means = paired_differences(cmp.dirs["esad"], others)
        paired = {"structural_image_auroc": {"per_category": diffs, "mean": means}}
        text += "\n" + format_paired(diffs, means)
    return text, paired


def _no_samples(x: Any) -> Any:
    return {k: _no_samples(v) for k, v in x.items() if k != "samples"} if isinstance(x, dict) else x


SEEDS_NOTE = (
    "- Each cell: the mean over the seeds of the paired difference; its 95 % interval covers the seeds AND "
    "the test images: each seed's paired bootstrap (the SAME resamples for every seed and method) combined "
    "by the law of total variance, se² = s²_seed / S + Var_b(seed mean), Student-t with Satterthwaite's "
    "df (docs/seeds.md). ESAD and RIAD are trained per seed (`cfg.seed`), PatchCore's coreset is drawn "
    "with it, the naive baseline has no randomness. `*` = the interval excludes 0."
)


def seeds_report(cmps: dict[int, Comparison], title: str) -> tuple[str, dict[str, Any]]:
    """``comparison_report``'s paired differences over training seeds (``cmps[seed]``: each seed's
    ``compare_methods`` on the SAME test images): per seed the paired bootstrap, combined by
    ``uncertainty.seeds.combine_seeds``, and a table of each seed's means.  Returns (markdown, dict)."""
    first = next(iter(cmps.values()))
    names = {m: METHOD_NAMES.get(m, m) for m in _others(first)}
    per_seed, first_ids = {}, {cat: sorted(read_scores(d)[2]) for cat, d in first.dirs["esad"].items()}
    for s, cmp in cmps.items():
        esad = {cat: read_scores(d) for cat, d in cmp.dirs["esad"].items()}
        for cat, table in esad.items():  # the same images -> the same resamples for every seed
            if sorted(table[2]) != first_ids[cat]:
                where = cmp.dirs["esad"][cat]
                raise ValueError(f"seed {s}, {cat}: {where} scored other test images than the first seed")
        others = {n: {cat: read_scores(d) for cat, d in cmp.dirs[m].items()} for m, n in names.items()}
        per_seed[s] = paired_from_scores(esad, others, keep_samples=True)
    diffs, means = {}, {}
    for n in names.values():
        diffs[n] = combine_seeds([{**d[n], "mean": m[n]} for d, m in per_seed.values()])
        means[n] = diffs[n].pop("mean")
    # one row per seed: each method's mean structural AUROC, ESAD minus each with its interval
    head = ["Seed", "ESAD str.", *(f"{n} str." for n in diffs), *(f"ESAD − {n}" for n in diffs)]
    lines = [f"### {title}", "", "Each seed, the mean over categories (structural image AUROC %; ESAD minus "
             "each method with its paired interval over the test images):", "",
             "| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for s, cmp in cmps.items():
        aurocs = [np.mean([x["image_auroc"]["structural"] for x in cmp.metrics[m].values()])
                  for m in ("esad", *names)]
        cells = [f"{100 * a:.1f}" for a in aurocs] + [format_diff(per_seed[s][1][n]) for n in diffs]
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    metric = f"structural image AUROC over {len(cmps)} training seeds"
    text = "\n".join(lines) + "\n\n" + format_paired(diffs, means, metric=metric, note=SEEDS_NOTE)
    by_seed = {str(s): {"per_category": d, "mean": m} for s, (d, m) in per_seed.items()}
    paired = {"per_category": diffs, "mean": means, "per_seed": by_seed}
    return text, {"structural_image_auroc": _no_samples(paired)}


def run_demo(profile: str = "demo", out: str | Path | None = None, categories: Sequence[str] = CATEGORIES,
             with_riad: bool = False, with_naive: bool = True, with_patchcore: bool = False,
             progress: bool = True, overrides: dict[str, Any] | None = None,
             detectors: dict[str, DetectorFactory] | None = None,
             seeds: Sequence[int] | None = None) -> DemoResult:
    """``compare_methods`` and its tables: writes ``report.md`` and ``demo.json`` to ``out`` (default
    ``<data root>/runs/<profile>``); ``overrides``: config fields changed in every run.  ``seeds``
    (two or more training seeds): ``compare_methods`` per seed (into ``out/seed<N>``) and
    ``seeds_report``, written to ``out`` (default ``<data root>/runs/<profile>/seeds``)."""
    if seeds is not None and len(set(seeds)) < 2:
        raise ValueError(f"seeds={list(seeds)}: give two or more training seeds (one seed: overrides seed=N)")
    report_dir = Path(out) if out is not None else default_report_dir(profile) / ("seeds" if seeds else "")
    t0, ov = time.perf_counter(), overrides or {}
    methods = dict(with_riad=with_riad, with_naive=with_naive, with_patchcore=with_patchcore,
                   progress=progress, detectors=detectors)
    name = f"ESAD (ours, `{profile}` profile)"
    if seeds:  # each training seed on the same test images
        cmps = {s: compare_methods(profile, categories, overrides={**ov, "seed": s},
                                   out=None if out is None else Path(out) / f"seed{s}", **methods)
                for s in dict.fromkeys(seeds)}
        title = f"{name} vs each method, training seeds {', '.join(map(str, cmps))}"
        text, paired = seeds_report(cmps, title)
        metrics: dict[str, Any] = {str(s): c.metrics for s, c in cmps.items()}
    else:
        cmp = compare_methods(profile, categories, overrides=ov, out=out, **methods)
        text, paired = comparison_report(cmp, title=f"{name} vs reported")
        text += (f"- These tables are one training seed (seed {get_config(profile, **ov).seed}): their "
                 "intervals cover the test images, not the training randomness; `esad demo --seeds 0 1 2` "
                 "repeats the comparison over three training seeds (docs/seeds.md).\n")
        metrics = cmp.metrics
    prov = provenance(profile, categories, time.perf_counter() - t0, ov)
    prov["overrides"] = {k: list(v) if isinstance(v, tuple) else v for k, v in ov.items()}
    if seeds:
        prov["seeds"] = list(cmps)
    text += _provenance_md(prov)
    blob = json_safe({"provenance": prov, "metrics": metrics, "paired": paired})
    atomic_write_text(report_dir / "report.md", text)
    atomic_write_text(report_dir / "demo.json", json.dumps(blob, indent=1, sort_keys=True) + "\n")
    return DemoResult(text=text, metrics=metrics, paired=paired, provenance=prov, report_dir=report_dir)


def demo_power(path: str | Path, half_width: float = 3.5, level: float = 0.95) -> list[dict[str, Any]]:
    """Test images per type that bring each mean paired difference's interval (ESAD minus each
    method, structural image AUROC, mean over categories) to +-``half_width`` points, from a finished
    demo's ``demo.json`` (``uncertainty.seeds.images_for_halfwidth``; a seeds demo's seed part does
    not shrink with images).  One row per method, in points: diff, low, high, half_width_now
    ((high - low) / 2), se, z_se, se_seed; and n_now, n_needed (images per type)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; `esad demo` writes <runs>/<profile>/demo.json")
    blob = json.loads(path.read_text())
    seeds = blob["provenance"].get("seeds")
    esad = next(iter(blob["metrics"].values()))["esad"] if seeds else blob["metrics"]["esad"]
    counts = {m["counts"][k] for m in esad.values() for k in ("good", "structural")}
    if len(counts) != 1:
        raise ValueError(f"{path}: {sorted(counts)} images per type; the model scales one common count")
    means = blob["paired"]["structural_image_auroc"]["mean"]
    if not seeds and any("se" not in m for m in means.values()):
        raise ValueError(f"{path} was written before demo.json held each difference's se; run the demo again")
    z, n_now, rows = NormalDist().inv_cdf(0.5 * (1.0 + level)), counts.pop(), []
    for k, m in means.items():
        se_img, se_seed = (m["se_image"], m["se_seed"]) if seeds else (m["se"], 0.0)
        need = images_for_halfwidth(100 * se_img, n_now, half_width, level, 100 * se_seed)
        rows.append(dict(method=k, diff=100 * m["diff"], low=100 * m["low"], high=100 * m["high"],
                         half_width_now=50 * (m["high"] - m["low"]), se=100 * m["se"], z_se=100 * z * m["se"],
                         se_seed=100 * se_seed, n_now=n_now, n_needed=need))
    return rows
