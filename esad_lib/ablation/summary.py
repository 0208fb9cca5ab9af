"""``summary.md`` of an ablation grid, and the comparison of every variant with ``esad`` against the
paper's claims (paired CIs of the difference)."""

from __future__ import annotations

import math

import pandas as pd

from esad_lib import uncertainty
from esad_lib.ablation.results import CI_N_BOOT, ImageBootstrap, _as_bootstrap, seed_table, summary_table
from esad_lib.ablation.variants import BASE_VARIANT, variant_registry
from esad_lib.ablation.verdict import (
    SIMILAR_TOLERANCE,
    claim_verdict,
    minimum_detectable_effect,
    verdict_reason,
    verdict_sentence,
)

#: metrics broken down per category (and compared with the base variant).
HEADLINE_METRICS: tuple[str, ...] = ("image_auroc.structural", "au_spro.structural")
#: the metric the paper's claims are about (its tables: image AUROC on structural anomalies); only
#: differences in it get a verdict, the others are explorations.
CLAIM_METRIC = "image_auroc.structural"


def _row(cells) -> str:
    return "| " + " | ".join(cells) + " |"


def _cell(boot: ImageBootstrap | None, df, v: str, m: str, mean: float, std: float, cats=None) -> str:
    """The CI of variant ``v``'s metric ``m`` where the per-image scores give one, else mean ± std over
    seeds, in % for the [0, 1] metrics (no ± with one seed)."""
    if ci := boot.interval(df, v, m, cats) if boot is not None else None:
        return uncertainty.format_ci(ci)
    if m == "n_params" or m.endswith(".n_params"):
        return f"{mean:,.0f}"
    return f"{100 * mean:.1f}" + ("" if pd.isna(std) else f" ± {100 * std:.1f}")


def _header(df, metrics: list[str], cats: list[str], seeds: list) -> list[str]:
    """Title, what the grid ran, how to read a cell, and the head of the variants x metrics table."""
    profiles = ", ".join(sorted(set(map(str, df["profile"]))))
    return [
        "# Ablation summary",
        "",
        f"Profile: {profiles}; categories: {', '.join(cats)}; seeds: {', '.join(map(str, seeds))}.",
        "Values in % (metric x 100), averaged over categories. `76.9 [72.1, 81.4]`: 95 % confidence "
        f"interval over the test images: a stratified bootstrap (good / structural / logical images "
        f"resampled separately, B = {CI_N_BOOT}, percentile interval); with several seeds mean ± 1.96 se, "
        "se² = seed variance / n_seeds + bootstrap variance of the seed mean, clipped to [0, 100] "
        "(esad_lib.uncertainty.seed_image_interval). "
        "Available where the runs' per-image scores allow it (image AUROC). `76.9 ± 1.2`: mean ± std "
        "over seeds, no interval (AU-sPRO, AU-PRO and pixel AUROC need the anomaly maps, which the "
        "grid does not keep).",
        "",
        _row(["variant", *metrics]),
        "|---|" + "---|" * len(metrics),
    ]


def _overall_rows(df, variants: list[str], metrics: list[str], boot: ImageBootstrap | None) -> list[str]:
    """One row per variant: each metric averaged over categories, with its CI where there is one."""
    cells = {(r.variant, r.metric): _cell(boot, df, r.variant, r.metric, r.mean, r.std)
             for r in summary_table(df).itertuples()}
    return [_row([v] + [cells.get((v, m), "") for m in metrics]) for v in variants]


def _per_category_tables(df, variants: list[str], cats: list[str], headline: list[str],
                         boot: ImageBootstrap | None) -> list[str]:
    """Per headline metric: variants x categories (mean over seeds, CI where available)."""
    per_cat = df.groupby(["variant", "category", "metric"], sort=False)["value"].mean()
    cells = {(v, c, m): _cell(boot, df, v, m, mean, math.nan, [c])
             for (v, c, m), mean in per_cat.items() if m in headline}
    lines = []
    for m in headline:
        lines += ["", f"## {m} per category (mean over seeds, 95 % CI where available)", ""]
        lines += [_row(["variant", *cats]), "|---|" + "---|" * len(cats)]
        lines += [_row([v] + [cells.get((v, c, m), "") for c in cats]) for v in variants]
    return lines


def _claim_tables(df, base: str, headline: list[str], boot: ImageBootstrap | None) -> list[str]:
    """Each variant's difference to ``base``: a verdict on its paper claim for :data:`CLAIM_METRIC` (the
    paper's claims are about it), a plain exploration table for the other headline metrics."""
    lines = []
    for m in headline:
        cmp = compare_to_base(df, metric=m, base=base, scores=boot)
        if cmp.empty:
            continue
        if m != CLAIM_METRIC:  # the paper makes no claim about this metric: differences, no verdicts
            title = f"## Exploration: {m} (difference to {base}, in points; no paper claim, no verdict)"
            lines += ["", title, "", "| variant | measured Δ [95 % CI] | CI |", "|---" * 3 + "|"]
            lines += [_row([r.variant, r.measured, r.ci_method]) for r in cmp.itertuples()]
            continue
        lines += ["", f"## Paper claim vs measurement: {m} (difference to {base}, in points)", ""]
        lines += [
            "Δ = variant − esad with its 95 % CI: paired over the same test images (and seeds) where "
            "per-image scores exist, else a t-interval over seeds (≥ 2 seeds) or none. `*`: the CI "
            "excludes 0. Verdict (esad_lib.ablation.verdict), δ = "
            f"{100 * SIMILAR_TOLERANCE:.1f} points: 'lower' claims are supported when the CI lies below 0, "
            "contradicted when it lies above 0, 'equivalent' when it lies inside ±δ; 'similar' claims are "
            "supported when the CI lies inside ±δ, contradicted when it lies wholly outside; otherwise 'not "
            "enough evidence', with the minimum detectable effect (80 % power) of that interval.",
            "",
            "| variant | paper claims | expected | measured Δ [95 % CI] | CI | verdict |",
            "|---" * 6 + "|",
        ]
        for r in cmp.itertuples():
            verdict = f"{r.verdict} ({r.verdict_reason})"
            lines.append(_row([r.variant, r.claim, r.expected, r.measured, r.ci_method, verdict]))
        profile = ", ".join(sorted(set(map(str, df["profile"]))))
        lines += ["", verdict_sentence(cmp["verdict"], m, df["category"], df["seed"], profile)]
    return lines


def summary_markdown(df, base: str = BASE_VARIANT, scores=None) -> str:
    """Markdown: variants x metrics (image AUROC 95 % CIs with ``scores``, else mean ± std over seeds),
    per-category tables of the :data:`HEADLINE_METRICS` and the paper claims vs Δ to ``base``."""
    if df.empty:
        return "# Ablation summary\n\nNo finished runs yet.\n"
    boot = _as_bootstrap(df, scores)
    variants, metrics = list(dict.fromkeys(df["variant"])), list(dict.fromkeys(df["metric"]))
    cats = sorted(set(df["category"]))
    lines = _header(df, metrics, cats, sorted(set(df["seed"]))) + _overall_rows(df, variants, metrics, boot)
    if boot is not None and boot.problems:
        lines += ["", "Runs without an interval (their test images differ from the category's other runs):"]
        lines += [f"- {k}: {msg}" for k, msg in sorted(boot.problems.items())]
    headline = [m for m in HEADLINE_METRICS if m in metrics] or metrics[:1]
    if len(cats) > 1:
        lines += _per_category_tables(df, variants, cats, headline, boot)
    if base in variants:
        lines += _claim_tables(df, base, headline, boot)
    return "\n".join(lines) + "\n"


def _interval(ci: dict | None, per_seed: list[float], what: str) -> tuple[float, float, str]:
    """``(low, high, how)``: the bootstrap interval ``ci`` over test images (and seeds) when there
    is one, else the Student-t interval over >= 2 per-seed values, else none (NaN)."""
    n = len(per_seed)
    if ci is not None:
        return ci["low"], ci["high"], what + (f" + {n} seeds" if n > 1 else "")
    if n > 1:
        agg = uncertainty.aggregate_seeds(per_seed)
        return agg["low"], agg["high"], f"t-interval over {n} seeds"
    return math.nan, math.nan, "none (one seed, no per-image scores)"


#: columns of :func:`compare_to_base`'s table.
COMPARE_COLUMNS: tuple[str, ...] = tuple(
    "variant claim expected delta_mean delta_std seed_deltas delta_low delta_high excludes_zero ci_method "
    "measured verdict verdict_reason mde".split())


def compare_to_base(df, metric: str, base: str = BASE_VARIANT, tolerance: float = SIMILAR_TOLERANCE,
                    scores=None):
    """Per variant (not ``base``): the paper's claim and Δ = its category mean − ``base``'s per seed (common
    categories) on ``metric``, with its 95 % CI (:func:`_interval`; paired over the test images with
    ``scores``), the :func:`claim_verdict` of that CI and its minimum detectable effect (COMPARE_COLUMNS)."""
    reg, boot = variant_registry(), _as_bootstrap(df, scores)
    sub = df[df["metric"] == metric]
    if base not in set(sub["variant"]):
        return pd.DataFrame(columns=list(COMPARE_COLUMNS))
    per = sub.groupby(["variant", "seed", "category"])["value"].mean()
    cats = sub.groupby(["variant", "seed"])["category"].agg(set).to_dict()  # (variant, seed) -> categories
    rows = []
    for v in dict.fromkeys(sub["variant"]):
        if v == base:
            continue
        seed_deltas = {}
        for seed in sorted(set(sub.loc[sub["variant"] == v, "seed"])):
            if common := sorted(cats.get((v, seed), set()) & cats.get((base, seed), set())):
                dv = sum(per[(v, seed, c)] for c in common) / len(common)
                db = sum(per[(base, seed, c)] for c in common) / len(common)
                seed_deltas[int(seed)] = float(dv - db)
        if not (deltas := list(seed_deltas.values())):
            continue
        s = pd.Series(deltas)
        mean, std = float(s.mean()), float(s.std()) if len(s) > 1 else float("nan")
        ci = boot.paired(df, v, base, metric) if boot is not None else None
        low, high, method = _interval(ci, deltas, "paired bootstrap over test images")
        var = reg.get(v)
        expected = var.expect if var else None
        wording = {"lower": f"lower than {base}", "similar": f"close to {base}"}.get(expected, "no claim")
        rows.append((
            v, var.claim if var else "", wording, mean, std, seed_deltas, low, high,
            bool(low > 0 or high < 0), method, uncertainty.format_diff(mean, low, high) + f" (n={len(s)})",
            claim_verdict(expected, low, high, tolerance), verdict_reason(expected, low, high, tolerance),
            minimum_detectable_effect(low, high),  # NaN without an interval
        ))
    return pd.DataFrame(rows, columns=list(COMPARE_COLUMNS))


#: columns of :func:`interval_table`.
INTERVAL_COLUMNS = tuple("variant metric value low high ci_method n_seeds n_categories".split())


def interval_table(df, scores=None, metrics=None):
    """Per variant and metric (``metrics``, default all): the mean over categories and seeds with its
    95 % CI (:func:`_interval`; over test images with ``scores``).  Columns :data:`INTERVAL_COLUMNS`."""
    boot, st, per_seed, rows = _as_bootstrap(df, scores), summary_table(df), seed_values(df), []
    if metrics is not None:
        st = st[st["metric"].isin(list(metrics))]
    for r in st.itertuples():
        ci = boot.interval(df, r.variant, r.metric) if boot is not None else None
        low, high, method = _interval(ci, per_seed[(r.variant, r.metric)], "bootstrap over test images")
        rows.append((r.variant, r.metric, float(r.mean), float(low), float(high), method, r.n_seeds,
                     int(r.n_categories)))
    return pd.DataFrame(rows, columns=list(INTERVAL_COLUMNS))


def seed_values(df) -> dict[tuple[str, str], list[float]]:
    """``{(variant, metric): [category mean of each seed, in seed order]}`` (:func:`seed_table`)."""
    st = seed_table(df).sort_values("seed")
    return {k: list(g["value"]) for k, g in st.groupby(["variant", "metric"], sort=False)}
