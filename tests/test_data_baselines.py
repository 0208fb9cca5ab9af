"""The naive per-pixel z-score baseline (esad_lib.baselines)."""

from __future__ import annotations

import numpy as np

from esad_lib.baselines import naive_baseline_table, naive_zscore_scores
from esad_lib.data import generate_synthetic


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
