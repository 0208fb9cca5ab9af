"""Image-bootstrap intervals of the summary: one set of stratified resamples per category, shared
by all runs of that category, so that seed means and differences between variants are paired."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from esad_lib import uncertainty
from esad_lib.ablation.results import CI_LEVEL, CI_METRICS, CI_N_BOOT, CI_SEED


class ImageBootstrap:
    """Bootstrap samples of the image AUROCs of every run, from the runs' ``scores.csv``.

    All runs of one category are scored on the same test images, so they share one set of
    stratified resamples (strata = label names; ``n_boot`` resamples, ``seed``): differences
    between variants and means over seeds are then paired.  A run whose images or labels differ
    from the category's first run (sorted by variant, seed) is left out, with the reason in
    ``problems``.  Categories are independent test sets; a category mean of the per-resample
    values is a bootstrap sample of the mean.
    """

    def __init__(
        self,
        df,
        scores: dict[tuple[str, str, int], Any],
        n_boot: int = CI_N_BOOT,
        seed: int = CI_SEED,
        level: float = CI_LEVEL,
    ):
        self.level = level
        self.n_boot = n_boot
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
            weights = uncertainty.resample_weights(uncertainty.resample_indices(names_ref, n_boot, seed))
            for k in in_cat:
                sc = scores[k]
                try:
                    uncertainty.check_paired(
                        names_ref,
                        sc["label"].astype(str).to_numpy(),
                        list(ref["path"]),
                        list(sc["path"]),
                        what=f"run {k} and run {in_cat[0]}",
                    )
                except ValueError as e:
                    self.problems[k] = str(e)
                    continue
                self.runs[k] = uncertainty.auroc_by_type_resampled(
                    sc["score"].to_numpy(float), names_ref, weights
                )

    def _cells(self, variant: str, metric: str, cells: Iterable[tuple[str, int]]):
        """value and samples [B] of ``metric`` per (category, seed); None if one is missing."""
        kind = metric.split(".", 1)[1]
        out = {}
        for c, s in cells:
            r = self.runs.get((variant, c, int(s)))
            if r is None or r[1].get(kind) is None:
                return None
            out[(c, int(s))] = (r[0][kind], r[1][kind])
        return out

    def interval(self, df, variant: str, metric: str, categories: Sequence[str] | None = None):
        """CI of the variant's metric averaged over categories (then over seeds), or None.

        One seed: percentile interval of the stratified bootstrap; several seeds:
        ``uncertainty.seed_image_interval`` (seed variance + image variance of the seed mean).
        """
        if metric not in CI_METRICS:
            return None
        sub = df[(df["variant"] == variant) & (df["metric"] == metric)]
        if categories is not None:
            sub = sub[sub["category"].isin(categories)]
        if sub.empty:
            return None
        cells = self._cells(variant, metric, zip(sub["category"], sub["seed"]))
        if cells is None:
            return None
        seeds = sorted({s for _, s in cells})
        values = [np.mean([v for (c, s), (v, _) in cells.items() if s == sd]) for sd in seeds]
        samples = np.stack(
            [np.mean([b for (c, s), (_, b) in cells.items() if s == sd], axis=0) for sd in seeds]
        )
        return uncertainty.seed_image_interval(values, samples, self.level, bounds=(0.0, 1.0))

    def paired(self, df, variant: str, base: str, metric: str):
        """Paired CI of ``variant - base`` on ``metric`` (same seeds, common categories), or None."""
        if metric not in CI_METRICS:
            return None
        sub = df[df["metric"] == metric]
        have = {v: set(zip(g["category"], g["seed"].astype(int))) for v, g in sub.groupby("variant")}
        common = sorted(have.get(variant, set()) & have.get(base, set()))
        if not common:
            return None
        cv, cb = self._cells(variant, metric, common), self._cells(base, metric, common)
        if cv is None or cb is None:
            return None
        seeds = sorted({s for _, s in common})
        diffs = [np.mean([cv[k][0] - cb[k][0] for k in common if k[1] == sd]) for sd in seeds]
        samples = np.stack(
            [np.mean([cv[k][1] - cb[k][1] for k in common if k[1] == sd], axis=0) for sd in seeds]
        )
        r = uncertainty.seed_image_interval(diffs, samples, self.level, bounds=(-1.0, 1.0))
        r["excludes_zero"] = bool(r["low"] > 0 or r["high"] < 0)
        return r


def _as_bootstrap(df, scores) -> ImageBootstrap | None:
    if scores is None or isinstance(scores, ImageBootstrap):
        return scores
    return ImageBootstrap(df, scores)
