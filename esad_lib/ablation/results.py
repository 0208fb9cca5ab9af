"""The grid's results on disk: flattening ``metrics.json``, the tidy ``results.csv`` table with each
run's image-bootstrap CI, the runs' per-image scores, and the seed / summary tables."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from esad_lib import uncertainty
from esad_lib.ablation.specs import RunSpec, run_finished

#: the columns every ``results.csv`` has (tidy long format: one row per run and metric).
KEY_COLUMNS: tuple[str, ...] = ("variant", "category", "seed", "metric", "value", "profile", "config_key")
#: columns of ``results.csv``: KEY_COLUMNS plus the run's 95 % CI (NaN where none can be computed).
RESULT_COLUMNS: tuple[str, ...] = (*KEY_COLUMNS, "ci_low", "ci_high")
#: per-image scores of a run (written by evaluate_model; evaluation.SCORES_FILE's layout).
SCORES_FILE = "scores.csv"
#: metrics whose CI the per-image scores give (stratified bootstrap over test images);
#: AU-sPRO / AU-PRO / pixel AUROC need the anomaly maps, which the grid does not keep.
CI_METRICS: tuple[str, ...] = ("image_auroc.structural", "image_auroc.logical", "image_auroc.mean")
#: bootstrap resamples, bootstrap seed and level of every interval of the summary.
CI_N_BOOT = uncertainty.DEFAULT_N_BOOT
CI_SEED = 0
CI_LEVEL = 0.95

#: metrics.json entries that become rows of results.csv (timings, counts, ... do not).
METRIC_NAMES: tuple[str, ...] = ("image_auroc", "pixel_auroc", "au_pro", "au_spro", "n_params")


def flatten_metrics(
    metrics: dict[str, Any], prefix: str = "", keep: Sequence[str] | None = METRIC_NAMES
) -> dict[str, float]:
    """Numeric leaves of a nested metrics dict, names joined with ``.`` (``au_spro.mean``).

    Only top-level entries named in ``keep`` are used, in its order (all with ``keep=None``); ``None``
    values (an anomaly type absent from the data) are dropped.
    """
    flat: dict[str, float] = {}
    top = keep is not None and not prefix  # top level: the entries of ``keep``, in its order
    for k in [k for k in keep if k in metrics] if top else list(metrics):
        v = metrics[k]
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            flat.update(flatten_metrics(v, name + ".", None))
        elif isinstance(v, bool) or v is None:
            continue
        elif isinstance(v, (int, float)):
            flat[name] = float(v)
    return flat


def _finished_run_dirs(out: Path, specs: Iterable[RunSpec] | None) -> list[Path]:
    if specs is None:
        return sorted(p.parent for p in (out / "runs").glob("*/*/seed*/metrics.json"))
    return [s.run_dir(out) for s in specs if run_finished(s, out)]


def read_run_scores(run_dir: str | Path):
    """``run_dir/scores.csv`` as a DataFrame (path, label, score, ...), or None when absent."""
    import pandas as pd

    p = Path(run_dir) / SCORES_FILE
    if not p.exists():
        return None
    df = pd.read_csv(p)
    missing = [c for c in ("path", "label", "score") if c not in df.columns]
    if missing:
        raise ValueError(
            f"{p}: columns {missing} missing (expected path, label, anomalous, score); re-run it"
        )
    return df


def _run_image_ci(scores_df) -> dict[str, tuple[float, float]]:
    """``image_auroc.<type>`` -> (low, high) of one run's stratified-bootstrap interval."""
    if scores_df is None or not (scores_df["label"] == "good").any():
        return {}
    cis = uncertainty.image_auroc_ci_by_type(
        scores_df["score"].to_numpy(float), scores_df["label"].astype(str), CI_N_BOOT, CI_SEED, CI_LEVEL
    )
    return {f"image_auroc.{k}": (r["low"], r["high"]) for k, r in cis.items() if r is not None}


def collect_results(out: str | Path, specs: Iterable[RunSpec] | None = None):
    """Tidy results of finished runs under ``out`` (all of them, or those of ``specs``).

    Returns a pandas DataFrame with :data:`RESULT_COLUMNS`.  ``ci_low``/``ci_high`` are the
    run's 95 % interval (stratified bootstrap over its test images, ``CI_N_BOOT`` resamples,
    percentile) for the :data:`CI_METRICS`, computed from the run's ``scores.csv``; NaN for
    the other metrics and for runs without per-image scores.
    """
    import pandas as pd

    out = Path(out)
    rows = []
    for d in _finished_run_dirs(out, specs):
        meta_path, metrics_path = d / "run.json", d / "metrics.json"
        try:
            meta = json.loads(meta_path.read_text())
            metrics = json.loads(metrics_path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise RuntimeError(
                f"cannot read the finished run in {d} ({e}); move the folder away and re-run"
            ) from e
        cis = _run_image_ci(read_run_scores(d))
        for name, value in flatten_metrics(metrics).items():
            low, high = cis.get(name, (math.nan, math.nan))
            rows.append(
                {
                    "variant": meta["variant"],
                    "category": meta["category"],
                    "seed": int(meta["seed"]),
                    "metric": name,
                    "value": value,
                    "profile": meta["profile"],
                    "config_key": meta["config_key"],
                    "ci_low": low,
                    "ci_high": high,
                }
            )
    return pd.DataFrame(rows, columns=list(RESULT_COLUMNS))


def collect_scores(
    out: str | Path, specs: Iterable[RunSpec] | None = None
) -> dict[tuple[str, str, int], Any]:
    """Per-image scores of the finished runs under ``out``: ``{(variant, category, seed): DataFrame}``
    (runs without ``scores.csv`` are left out)."""
    out = Path(out)
    found = {}
    for d in _finished_run_dirs(out, specs):
        sc = read_run_scores(d)
        if sc is not None:
            seed = int(d.name.removeprefix("seed"))
            found[(d.parent.parent.name, d.parent.name, seed)] = sc
    return found


def read_results(path: str | Path):
    """Load a ``results.csv`` written by :func:`run_grid`, checking its columns (a table from
    before the CI columns existed gets them as NaN)."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist; run `esad ablate ... --out DIR` first (it writes DIR/results.csv)"
        )
    df = pd.read_csv(path)
    missing = [c for c in KEY_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(
            f"{path} is not an ablation results table: columns {missing} missing (expected {RESULT_COLUMNS})"
        )
    for c in RESULT_COLUMNS:
        if c not in df.columns:
            df[c] = math.nan
    return df


def seed_table(df):
    """Per variant, metric and seed: the value averaged over categories.

    Returns columns variant, metric, seed, value, n_categories.
    """
    g = df.groupby(["variant", "metric", "seed"], sort=False)["value"]
    return g.agg(value="mean", n_categories="count").reset_index()


def summary_table(df):
    """Per variant and metric: mean, std (ddof=1; NaN with one seed) and n over seeds of the
    category-averaged value.  Columns variant, metric, mean, std, n_seeds, n_categories."""
    st = seed_table(df)
    g = st.groupby(["variant", "metric"], sort=False)
    t = g.agg(mean=("value", "mean"), std=("value", "std"), n_seeds=("value", "count"))
    t["n_categories"] = g["n_categories"].max()
    return t.reset_index()
