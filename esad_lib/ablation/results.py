"""The grid's results on disk (``results.csv`` with each run's image-bootstrap CI, per-image scores),
the seed / summary tables, and :class:`ImageBootstrap`, the paired intervals of the summary."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from esad_lib import uncertainty
from esad_lib.ablation.variants import RunSpec, run_finished
from esad_lib.evaluation import SCORES_FILE

#: the columns every ``results.csv`` has (tidy long format: one row per run and metric).
KEY_COLUMNS: tuple[str, ...] = ("variant", "category", "seed", "metric", "value", "profile", "config_key")
#: columns of ``results.csv``: KEY_COLUMNS plus the run's 95 % CI (NaN where none can be computed).
RESULT_COLUMNS: tuple[str, ...] = (*KEY_COLUMNS, "ci_low", "ci_high")
#: metrics whose CI the per-image scores give (stratified bootstrap over test images);
#: AU-sPRO / AU-PRO / pixel AUROC need the anomaly maps, which the grid does not keep.
CI_METRICS: tuple[str, ...] = ("image_auroc.structural", "image_auroc.logical", "image_auroc.mean")
#: bootstrap resamples, bootstrap seed and level of every interval of the summary.
CI_N_BOOT, CI_SEED, CI_LEVEL = uncertainty.DEFAULT_N_BOOT, 0, 0.95
#: metrics.json entries that become rows of results.csv (timings, counts, ... do not).
METRIC_NAMES: tuple[str, ...] = ("image_auroc", "pixel_auroc", "au_pro", "au_spro", "n_params")


def flatten_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a nested metrics dict, names joined with ``.`` (``au_spro.mean``); at the top
    level only the :data:`METRIC_NAMES`, in their order.  ``None`` values are dropped."""
    flat: dict[str, float] = {}
    for k in list(metrics) if prefix else [k for k in METRIC_NAMES if k in metrics]:
        v, name = metrics[k], f"{prefix}{k}"
        if isinstance(v, dict):
            flat.update(flatten_metrics(v, name + "."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            flat[name] = float(v)
    return flat


def _finished_run_dirs(out: Path, specs: Iterable[RunSpec] | None) -> list[Path]:
    if specs is None:
        return sorted(p.parent for p in (out / "runs").glob("*/*/seed*/metrics.json"))
    return [s.run_dir(out) for s in specs if run_finished(s, out)]


def read_run_scores(run_dir: str | Path):
    """``run_dir/scores.csv`` as a DataFrame (path, label, anomalous, score), or None when absent."""
    p = Path(run_dir) / SCORES_FILE
    return pd.read_csv(p) if p.exists() else None


def _run_image_ci(scores_df, category: str) -> dict[str, tuple[float, float]]:
    """``image_auroc.<type>`` -> (low, high): the run's stratified bootstrap (ImageBootstrap's resamples)."""
    if scores_df is None or not (scores_df["label"] == "good").any():
        return {}
    scores, labels = scores_df["score"].to_numpy(float), scores_df["label"].astype(str)
    seed = uncertainty.category_seed(CI_SEED, category)
    cis = uncertainty.image_auroc_ci_by_type(scores, labels, CI_N_BOOT, seed, CI_LEVEL)
    return {f"image_auroc.{k}": (r["low"], r["high"]) for k, r in cis.items() if r is not None}


def collect_results(out: str | Path, specs: Iterable[RunSpec] | None = None):
    """DataFrame (:data:`RESULT_COLUMNS`) of the finished runs under ``out`` (all, or ``specs``'); the
    CI: the run's stratified bootstrap over its test images for the :data:`CI_METRICS`, else NaN."""
    rows = []
    for d in _finished_run_dirs(Path(out), specs):
        try:
            meta = json.loads((d / "run.json").read_text())
            metrics = json.loads((d / "metrics.json").read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise RuntimeError(f"cannot read the finished run in {d} ({e}); move it away and re-run") from e
        cis = _run_image_ci(read_run_scores(d), meta["category"])
        for name, value in flatten_metrics(metrics).items():
            key = (meta["variant"], meta["category"], int(meta["seed"]), name, value)
            rows.append((*key, meta["profile"], meta["config_key"], *cis.get(name, (math.nan, math.nan))))
    return pd.DataFrame(rows, columns=list(RESULT_COLUMNS))


def collect_scores(out: str | Path, specs: Iterable[RunSpec] | None = None) -> dict[tuple, Any]:
    """``{(variant, category, seed): scores}`` of the finished runs under ``out`` with scores.csv."""
    found = {}
    for d in _finished_run_dirs(Path(out), specs):
        if (sc := read_run_scores(d)) is not None:
            found[(d.parent.parent.name, d.parent.name, int(d.name.removeprefix("seed")))] = sc
    return found


def read_results(path: str | Path):
    """Load a ``results.csv`` written by :func:`run_grid`, checking its columns."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; run `esad ablate ... --out DIR` (it writes it)")
    df = pd.read_csv(path)
    if missing := [c for c in RESULT_COLUMNS if c not in df.columns]:
        raise ValueError(f"{path} is not an ablation results table: columns {missing} missing "
                         f"(expected {RESULT_COLUMNS})")
    return df


def seed_table(df):
    """Per variant, metric and seed: the value averaged over categories, and n_categories."""
    g = df.groupby(["variant", "metric", "seed"], sort=False)["value"]
    return g.agg(value="mean", n_categories="count").reset_index()


def summary_table(df):
    """Per variant and metric: mean, std (ddof=1; NaN with one seed) and n over seeds of the
    category-averaged value.  Columns variant, metric, mean, std, n_seeds, n_categories."""
    g = seed_table(df).groupby(["variant", "metric"], sort=False)
    t = g.agg(mean=("value", "mean"), std=("value", "std"), n_seeds=("value", "count"))
    t["n_categories"] = g["n_categories"].max()
    return t.reset_index()


def _per_seed_interval(items: list[tuple[int, float, Any]], bounds: tuple[float, float]):
    """``uncertainty.seed_image_interval`` of the per-seed means of ``items``: (seed, value, samples [B])."""
    seeds = sorted({s for s, _, _ in items})
    values = [np.mean([v for s, v, _ in items if s == sd]) for sd in seeds]
    samples = np.stack([np.mean([b for s, _, b in items if s == sd], axis=0) for sd in seeds])
    return uncertainty.seed_image_interval(values, samples, CI_LEVEL, bounds=bounds)


class ImageBootstrap:
    """Bootstrap samples of every run's image AUROCs (from ``scores.csv``): all runs of a category
    share one set of stratified resamples, so differences and seed means are paired.  A run whose
    images differ from the category's first run is left out, with the reason in ``problems``."""

    def __init__(self, df, scores: dict[tuple[str, str, int], Any]):
        # (variant, category, seed) -> ({type: value}, {type: samples [B]})
        self.runs: dict[tuple[str, str, int], tuple[dict, dict]] = {}
        self.problems: dict[tuple[str, str, int], str] = {}
        finished = set(zip(df["variant"], df["category"], df["seed"].astype(int)))
        keys = sorted(k for k in scores if k in finished)
        for cat in sorted({k[1] for k in keys}):
            in_cat = [k for k in keys if k[1] == cat]
            ref = scores[in_cat[0]]
            names_ref = ref["label"].astype(str).to_numpy()
            if not (names_ref == "good").any():
                continue
            idx = uncertainty.resample_indices(names_ref, CI_N_BOOT, uncertainty.category_seed(CI_SEED, cat))
            weights = uncertainty.resample_weights(idx)
            for k in in_cat:
                sc, what = scores[k], f"run {k} and run {in_cat[0]}"
                try:
                    labels, paths = sc["label"].astype(str).to_numpy(), list(sc["path"])
                    uncertainty.check_paired(names_ref, labels, list(ref["path"]), paths, what=what)
                except ValueError as e:
                    self.problems[k] = str(e)
                    continue
                s = sc["score"].to_numpy(float)
                self.runs[k] = uncertainty.auroc_by_type_resampled(s, names_ref, weights)

    def _cells(self, variant: str, metric: str, cells: Iterable[tuple[str, int]]):
        """value and samples [B] of ``metric`` per (category, seed); None if one is missing (or no CI)."""
        if metric not in CI_METRICS:
            return None
        kind, out = metric.split(".", 1)[1], {}
        for c, s in cells:
            r = self.runs.get((variant, c, int(s)))
            if r is None or r[1].get(kind) is None:
                return None
            out[(c, int(s))] = (r[0][kind], r[1][kind])
        return out

    def interval(self, df, variant: str, metric: str, categories: Sequence[str] | None = None):
        """CI of the variant's metric averaged over categories (then over seeds), or None."""
        sub = df[(df["variant"] == variant) & (df["metric"] == metric)]
        if categories is not None:
            sub = sub[sub["category"].isin(categories)]
        if sub.empty or (cells := self._cells(variant, metric, zip(sub["category"], sub["seed"]))) is None:
            return None
        return _per_seed_interval([(s, v, b) for (_, s), (v, b) in cells.items()], (0.0, 1.0))

    def paired(self, df, variant: str, base: str, metric: str):
        """Paired CI of ``variant - base`` on ``metric`` (same seeds, common categories), or None."""
        sub = df[df["metric"] == metric]
        have = {v: set(zip(g["category"], g["seed"].astype(int))) for v, g in sub.groupby("variant")}
        common = sorted(have.get(variant, set()) & have.get(base, set()))
        cv, cb = self._cells(variant, metric, common), self._cells(base, metric, common)
        if not common or cv is None or cb is None:
            return None
        items = [(k[1], cv[k][0] - cb[k][0], cv[k][1] - cb[k][1]) for k in common]
        r = _per_seed_interval(items, (-1.0, 1.0))
        r["excludes_zero"] = bool(r["low"] > 0 or r["high"] < 0)
        return r


def _as_bootstrap(df, scores) -> ImageBootstrap | None:
    return scores if scores is None or isinstance(scores, ImageBootstrap) else ImageBootstrap(df, scores)
