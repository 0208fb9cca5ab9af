"""esad_lib.demo's comparison pieces (shared by `esad demo` and notebooks 06/07) and the tables of
esad_lib.report built from them: paired differences of in-memory scores equal those read from
run folders, the win/loss lines follow the intervals, the reported columns' label."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from esad_lib.demo import (
    compare_methods,
    comparison_report,
    paired_differences,
    paired_from_scores,
    read_scores,
    scores_of,
)
from esad_lib.evaluation import SCORES_FILE, scores_csv
from esad_lib.report import format_metric, format_report, win_loss_summary


def _fake_result(seed: int, shift: float, reverse: bool = False) -> SimpleNamespace:
    """A ScoreResult-like object: 10 good, 8 structural, 6 logical images."""
    rng = np.random.default_rng(seed)
    names = ["good"] * 10 + ["structural"] * 8 + ["logical"] * 6
    paths = [f"/d/test/{n}/{i:03d}.png" for i, n in enumerate(names)]
    scores = rng.random(len(names)) + shift * (np.asarray(names) != "good")
    if reverse:  # the same images in another order (a paired comparison must match them by id)
        names, paths, scores = names[::-1], paths[::-1], scores[::-1]
    return SimpleNamespace(scores=np.asarray(scores), label_names=names, paths=paths)


def _write_scores(d: Path, r: SimpleNamespace) -> Path:
    rows = [
        {"path": p, "label": n, "anomalous": int(n != "good"), "score": float(s)}
        for p, n, s in zip(r.paths, r.label_names, r.scores)
    ]
    d.mkdir(parents=True)
    (d / SCORES_FILE).write_text(scores_csv(SimpleNamespace(to_rows=lambda: rows)))
    return d


def _auroc(r: SimpleNamespace, kind: str) -> float:
    names = np.asarray(r.label_names)
    keep = (names == "good") | (names == kind)
    return roc_auc_score(names[keep] == kind, np.asarray(r.scores)[keep])


def test_paired_from_scores_equals_the_run_folder_version_and_the_hand_computed_difference(tmp_path) -> None:
    a = {"pushpins": _fake_result(0, 0.6), "screw_bag": _fake_result(1, 0.3)}
    b = {"pushpins": _fake_result(2, 0.2, reverse=True), "screw_bag": _fake_result(3, 0.4)}
    tables_a = {c: scores_of(r) for c, r in a.items()}
    tables_b = {"B": {c: scores_of(r) for c, r in b.items()}}
    dirs_a = {c: _write_scores(tmp_path / "a" / c, r) for c, r in a.items()}
    dirs_b = {"B": {c: _write_scores(tmp_path / "b" / c, r) for c, r in b.items()}}
    assert scores_of(a["pushpins"])[2] == read_scores(dirs_a["pushpins"])[2]  # the same image ids
    mem = paired_from_scores(tables_a, tables_b)
    disk = paired_differences(dirs_a, dirs_b)
    assert json.dumps(mem, sort_keys=True) == json.dumps(disk, sort_keys=True)
    diffs, means = mem
    for cat in a:
        want = _auroc(a[cat], "structural") - _auroc(b[cat], "structural")
        d = diffs["B"][cat]
        assert d["diff"] == pytest.approx(want) and d["low"] <= d["diff"] <= d["high"]
    assert means["B"]["diff"] == pytest.approx(np.mean([diffs["B"][c]["diff"] for c in a]))
    logical = paired_from_scores(tables_a, tables_b, kind="logical")[0]["B"]["pushpins"]
    want = _auroc(a["pushpins"], "logical") - _auroc(b["pushpins"], "logical")
    assert logical["diff"] == pytest.approx(want)


def test_each_category_draws_its_own_resamples_shared_by_every_method() -> None:
    """Two categories with the same images and scores get different bootstrap resamples (a shared seed
    would make their samples identical and correlate a mean over categories); within a category every
    method uses the same resamples (the difference is paired)."""
    same = scores_of(_fake_result(0, 0.6))
    other = scores_of(_fake_result(2, 0.2))
    diffs, _ = paired_from_scores({"pushpins": same, "screw_bag": same},
                                  {"B": {"pushpins": other, "screw_bag": other},
                                   "C": {"pushpins": same, "screw_bag": same}}, keep_samples=True)
    a, b = diffs["B"]["pushpins"]["samples"], diffs["B"]["screw_bag"]["samples"]
    assert diffs["B"]["pushpins"]["diff"] == diffs["B"]["screw_bag"]["diff"]
    assert not np.array_equal(a, b) and abs(np.corrcoef(a, b)[0, 1]) < 0.2
    assert not np.any(diffs["C"]["pushpins"]["samples"])  # the same resample for both: exactly 0


def test_win_loss_summary_follows_the_intervals() -> None:
    def d(diff, lo, hi):
        return {"diff": diff, "low": lo, "high": hi, "excludes_zero": lo > 0 or hi < 0}

    diffs = {
        "RIAD": {
            "pushpins": d(0.1, 0.02, 0.2),
            "screw_bag": d(-0.1, -0.2, -0.01),
            "juice_bottle": d(0.0, -0.1, 0.1),
        },
        "naive": {"pushpins": d(0.05, -0.01, 0.1)},
    }
    means = {"RIAD": d(0.0, -0.05, 0.05), "naive": d(0.05, 0.01, 0.09)}
    riad, naive = win_loss_summary(diffs, means)
    assert riad == (
        "ESAD vs RIAD: ahead on pushpins; behind on screw bag; no clear difference on juice bottle; "
        "mean +0.0 [-5.0, 5.0] points (no clear difference)"
    )
    assert naive.startswith("ESAD vs naive: ahead on none; behind on none; no clear difference on pushpins")
    assert naive.endswith("mean +5.0 [1.0, 9.0] points (ahead)")


def test_format_report_labels_the_reported_columns() -> None:
    m = {"pushpins": {"category": "pushpins", "image_auroc": {"structural": 0.7, "logical": 0.6}}}
    assert "| ESAD str. (reported) | RIAD str. (reported) |" in format_report(m)
    text = format_report(m, reported_label="reported, not comparable")
    assert "| ESAD str. (reported, not comparable) | RIAD str. (reported, not comparable) |" in text


def test_compare_methods_reuses_finished_evaluations_unless_told_to_reevaluate(tmp_path) -> None:
    out = tmp_path / "cmp"
    first = compare_methods("smoke", ["pushpins"], progress=False, out=out, echo=False)
    assert set(first.metrics) == {"esad", "naive"} and set(first.dirs["esad"]) == {"pushpins"}
    files = [out / "pushpins" / m / "metrics.json" for m in ("esad", "naive")]
    stamps = [f.stat().st_mtime_ns for f in files]
    again = compare_methods("smoke", ["pushpins"], progress=False, out=out, echo=False)
    assert [f.stat().st_mtime_ns for f in files] == stamps  # reused
    assert again.metrics["esad"]["pushpins"]["ci"] == first.metrics["esad"]["pushpins"]["ci"]
    fresh = compare_methods("smoke", ["pushpins"], progress=False, out=out, echo=False, reevaluate=True)
    assert all(f.stat().st_mtime_ns != s for f, s in zip(files, stamps))  # evaluated again
    for m in ("esad", "naive"):  # the same model and images: the same numbers
        assert fresh.metrics[m]["pushpins"]["image_auroc"] == first.metrics[m]["pushpins"]["image_auroc"]


def test_format_metric_prints_the_value_with_its_interval() -> None:
    ci = {"au_spro": {"structural": {"value": 0.51, "low": 0.4, "high": 0.6, "se": 0.05}}}
    m = {"au_spro": {"structural": 0.5, "logical": 0.3}, "ci": ci}
    assert format_metric(m, "au_spro", "structural") == "50.0 [40.0, 60.0]"  # the exact value, ci's bounds
    assert format_metric(m, "au_spro", "logical") == "30.0"  # no interval: the value alone
    assert format_metric(m, "image_auroc", "structural") == "-"


class BlurredDifference:
    """A reader's own detector, as a notebook would define it: the distance of the blurred image
    to the mean of the blurred training images."""

    name = "blurdiff"

    def fit(self, images):
        self.mean = F.avg_pool2d(images, 3, 1, 1).mean(dim=0)  # [3,H,W]
        return self

    def anomaly_maps(self, images):
        return (F.avg_pool2d(images, 3, 1, 1) - self.mean).abs().amax(dim=1)  # [B,H,W]


def test_a_readers_detector_gets_the_tables_intervals_and_paired_differences(tmp_path) -> None:
    cmp = compare_methods(
        "smoke",
        ["pushpins"],
        out=tmp_path,
        progress=False,
        echo=False,
        detectors={"blurdiff": lambda cfg: BlurredDifference()},
    )
    m, naive = cmp.metrics["blurdiff"]["pushpins"], cmp.metrics["naive"]["pushpins"]
    assert m["method"] == "blurdiff" and set(m) == set(naive)  # one metrics.json schema
    assert (tmp_path / "pushpins" / "blurdiff" / "metrics.json").exists()
    ci = m["ci"]["image_auroc"]["structural"]
    assert ci["low"] <= m["image_auroc"]["structural"] <= ci["high"]
    text, paired = comparison_report(cmp, "t")
    assert "blurdiff (ours) str." in text and "ESAD − blurdiff" in text
    d = paired["structural_image_auroc"]["per_category"]["blurdiff"]["pushpins"]
    esad = cmp.metrics["esad"]["pushpins"]["image_auroc"]["structural"]
    assert d["diff"] == pytest.approx(esad - m["image_auroc"]["structural"])
    assert d["low"] <= d["diff"] <= d["high"]


def test_the_one_seed_demo_says_so_and_stores_the_means_bootstrap_se(tmp_path) -> None:
    from esad_lib.demo import run_demo

    res = run_demo(profile="smoke", categories=["pushpins"], progress=False, out=tmp_path)
    assert "- These tables are one training seed (seed 0):" in res.text
    assert "`esad demo --seeds 0 1 2`" in res.text
    paired = json.loads((tmp_path / "demo.json").read_text())["paired"]["structural_image_auroc"]
    mean = paired["mean"]["naive"]
    # the mean's se: the sd of the per-resample category means; with one category, that category's se
    per_cat = res.paired["structural_image_auroc"]["per_category"]["naive"]["pushpins"]
    assert mean["se"] == pytest.approx(per_cat["se"]) and mean["se"] > 0
