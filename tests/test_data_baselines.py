"""The naive per-pixel z-score baseline (esad_lib.baselines)."""

from __future__ import annotations

import numpy as np
import pytest

from esad_lib import get_config
from esad_lib.baselines import naive_baseline_table, naive_category_scores, naive_zscore_scores
from esad_lib.data import generate_synthetic
from esad_lib.detectors import NaiveDetector
from esad_lib.evaluation import evaluate
from esad_lib.scoring import fit_detector
from esad_lib.uncertainty import image_auroc_ci


def test_zscore_equals_brute_force_loop():
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, size=(6, 5, 4, 3)).astype(np.uint8)
    test = rng.integers(0, 256, size=(3, 5, 4, 3)).astype(np.uint8)
    train[:, 0, 0, :] = 7  # a pixel that never varies: sigma floored at 1
    scores, maps = naive_zscore_scores(train, test)
    assert maps.shape == (3, 5, 4) and scores.shape == (3,)
    for m in range(3):
        for y in range(5):
            for x in range(4):
                zs = []
                for c in range(3):
                    vals = [float(train[n, y, x, c]) for n in range(6)]
                    mu = sum(vals) / 6
                    sd = max((sum((v - mu) ** 2 for v in vals) / 6) ** 0.5, 1.0)
                    zs.append(abs(float(test[m, y, x, c]) - mu) / sd)
                assert abs(maps[m, y, x] - max(zs)) < 1e-4
        assert scores[m] == maps[m].max()


def test_hand_computed_example():
    train = np.array([[[0.0]], [[2.0]]])  # [N=2, H=1, W=1]: mu = 1, sigma = 1
    scores, maps = naive_zscore_scores(train, np.array([[[4.0]]]))
    assert maps.shape == (1, 1, 1) and scores[0] == 3.0


def test_table_on_synthetic(tmp_path):
    root = generate_synthetic(
        tmp_path / "s", max_side=32, counts=(3, 0, 3, 4, 4), categories=["pushpins"], progress=False
    )
    rows = naive_baseline_table(root, progress=False)
    assert [(r["category"], r["type"]) for r in rows] == [("pushpins", "logical"), ("pushpins", "structural")]
    assert all(0.0 <= r["auroc"] <= 1.0 and r["n_good"] == 3 and r["n_anomalous"] == 4 for r in rows)
    per_defect = naive_baseline_table(root, by_defect=True, progress=False)
    assert len(per_defect) == 8 and all(r["n_anomalous"] == 1 for r in per_defect)


def test_table_rows_carry_the_bootstrap_interval(tmp_path):
    root = generate_synthetic(
        tmp_path / "s", max_side=32, counts=(4, 0, 4, 4, 4), categories=["pushpins"], progress=False
    )
    rows = naive_baseline_table(root, progress=False, n_boot=200, seed=3)
    res = naive_category_scores(root, "pushpins")
    names = np.array(res.label_names)
    for r in rows:
        sel = (names == "good") | (names == r["type"])
        ci = image_auroc_ci(res.scores[sel], (names[sel] == r["type"]).astype(int), n_boot=200, seed=3)
        assert abs(ci["value"] - r["auroc"]) < 1e-12
        assert (r["auroc_low"], r["auroc_high"], r["auroc_se"]) == (ci["low"], ci["high"], ci["se"])
        assert r["auroc_low"] <= r["auroc"] <= r["auroc_high"] and r["resolution"] == "18x32"
    bare = naive_baseline_table(root, progress=False, n_boot=0)
    assert all(r["auroc_low"] is None for r in bare)
    assert [r["auroc"] for r in bare] == [r["auroc"] for r in rows]


def test_network_size_equals_the_naive_detector(tmp_path):
    """At the model's input size the table is the naive column of `esad demo` (NaiveDetector)."""
    root = generate_synthetic(
        tmp_path / "s", max_side=48, counts=(5, 0, 5, 5, 5), categories=["juice_bottle"], progress=False
    )
    cfg = get_config("smoke", category="juice_bottle", image_size=(16, 16), max_test_images=None)
    ref, _ = evaluate(fit_detector(NaiveDetector(cfg), cfg, root), cfg, root=root, progress=False)
    rows = naive_baseline_table(
        root, progress=False, size=cfg.image_size, keep_aspect=cfg.keep_aspect, n_boot=0
    )
    got = {r["type"]: r["auroc"] for r in rows}
    assert got == {"logical": ref["image_auroc"]["logical"], "structural": ref["image_auroc"]["structural"]}
    assert {r["resolution"] for r in rows} == {"16x16"}
    aspect = naive_baseline_table(root, progress=False, size=(32, 32), keep_aspect=True, n_boot=0)
    assert {r["resolution"] for r in aspect} == {"32x16"}  # 48x24 images, long side 32, multiple of 16


def test_network_size_at_native_size_is_the_native_path(tmp_path):
    """With the stored size as network size the resize is the identity: same scores (float rounding)."""
    root = generate_synthetic(
        tmp_path / "s", max_side=32, counts=(4, 0, 3, 3, 3), categories=["screw_bag"], progress=False
    )
    native = naive_category_scores(root, "screw_bag")
    net = naive_category_scores(root, "screw_bag", size=native.resolution)
    assert net.resolution == native.resolution and net.label_names == native.label_names
    np.testing.assert_allclose(net.scores, native.scores, rtol=1e-4, atol=1e-3)
    down = naive_category_scores(root, "screw_bag", size=(16, 16))
    assert down.resolution == (16, 16) and not np.allclose(down.scores, native.scores)


def test_bad_size_is_refused(tmp_path):


    root = generate_synthetic(
        tmp_path / "s", max_side=32, counts=(3, 0, 2, 2, 2), categories=["pushpins"], progress=False
    )
    with pytest.raises(ValueError, match="size must be"):
        naive_category_scores(root, "pushpins", size=(0, 16))
    with pytest.raises(ValueError, match="n_boot"):
        naive_baseline_table(root, progress=False, n_boot=-1)
