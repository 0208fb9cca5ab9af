"""esad_lib.uncertainty: the vectorised bootstrap equals brute force, and its intervals behave.

Every fast path is compared with a recomputation on the explicitly resampled images
(``metrics.image_auroc`` / scikit-learn / ``metrics.au_spro`` on ``x[idx[b]]``).
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from esad_lib import metrics
from esad_lib import uncertainty as U

DEFECTS = [
    {"defect_name": "abs", "pixel_value": 255, "saturation_threshold": 30, "relative_saturation": False},
    {"defect_name": "rel", "pixel_value": 128, "saturation_threshold": 0.5, "relative_saturation": True},
]


def _binary(n_good: int, n_bad: int, shift: float, seed: int, decimals: int | None = None):
    rng = np.random.default_rng(seed)
    s = np.r_[rng.normal(size=n_good), rng.normal(size=n_bad) + shift]
    if decimals is not None:
        s = np.round(s, decimals)  # many ties
    lab = np.r_[np.zeros(n_good, int), np.ones(n_bad, int)]
    return s, lab


def _loco_like(n_good: int, n_struct: int, n_logic: int, h: int, w: int, seed: int, dtype=np.float32):
    """Random maps with rectangular defects of two saturation kinds (some images have two)."""
    rng = np.random.default_rng(seed)
    maps, chans, names = [], [], []
    kinds = ["good"] * n_good + ["structural"] * n_struct + ["logical"] * n_logic
    for i, kind in enumerate(kinds):
        m = rng.normal(size=(h, w)).astype(dtype)
        if kind == "good":
            c = np.zeros((0, h, w), np.uint8)
        else:
            c = np.zeros((2, h, w), np.uint8)
            y, x = rng.integers(0, h - 6), rng.integers(0, w - 7)
            c[0, y : y + 5, x : x + 6] = 255
            m[y : y + 5, x : x + 6] += 1.5 if kind == "structural" else 0.5
            if i % 2:
                y, x = rng.integers(0, h - 4), rng.integers(0, w - 4)
                c[1, y : y + 4, x : x + 3] = 128
                m[y : y + 4, x : x + 3] += 0.8
        maps.append(m)
        chans.append(c)
        names.append(kind)
    return maps, chans, names


# ---- resampling --------------------------------------------------------------------------------
def test_resampling_is_stratified_and_deterministic() -> None:
    strata = np.array(["good"] * 7 + ["structural"] * 5 + ["logical"] * 3)
    idx = U.resample_indices(strata, 300, seed=4)
    assert idx.shape == (300, strata.size)
    assert (strata[idx] == strata).all()  # every slot keeps its stratum: counts preserved
    w = U.resample_weights(idx)
    assert w.shape == (300, strata.size) and (w.sum(1) == strata.size).all()
    for s in ("good", "structural", "logical"):
        assert (w[:, strata == s].sum(1) == (strata == s).sum()).all()
    # w[b, i] == number of times image i was drawn in resample b
    for b in (0, 17, 299):
        assert (w[b] == np.bincount(idx[b], minlength=strata.size)).all()
    np.testing.assert_array_equal(idx, U.resample_indices(strata, 300, seed=4))
    assert not np.array_equal(idx, U.resample_indices(strata, 300, seed=5))
    # resampling draws with replacement: some image appears twice in some resample
    assert (w > 1).any()
    with pytest.raises(ValueError, match="n_boot"):
        U.resample_indices(strata, 0)


# ---- image AUROC --------------------------------------------------------------------------------
@pytest.mark.parametrize("decimals", [None, 1, 0])
def test_weighted_auroc_equals_brute_force_on_every_resample(decimals) -> None:
    s, lab = _binary(23, 17, 0.8, seed=2, decimals=decimals)  # decimals 0/1: heavy ties
    idx = U.resample_indices(lab, 150, seed=1)
    fast = U.weighted_auroc(s, lab, U.resample_weights(idx))
    ours = np.array([metrics.image_auroc(s[i], lab[i]) for i in idx])
    sk = np.array([roc_auc_score(lab[i], s[i]) for i in idx])
    # exact: the same rational number, divided once, as metrics.image_auroc
    np.testing.assert_array_equal(fast, ours)
    # scikit-learn integrates its ROC curve by the trapezoid rule in floats: equal up to rounding
    np.testing.assert_allclose(fast, sk, rtol=0, atol=1e-12)
    # float weights (a weighted AUROC) agree with scikit-learn's sample_weight
    wf = np.random.default_rng(0).uniform(0.1, 2.0, size=s.size)
    assert U.weighted_auroc(s, lab, wf)[0] == pytest.approx(
        roc_auc_score(lab, s, sample_weight=wf), abs=1e-12
    )


def test_image_auroc_ci_value_and_errors() -> None:
    s, lab = _binary(40, 40, 1.0, seed=3)
    r = U.image_auroc_ci(s, lab, n_boot=500, seed=0, return_samples=True)
    assert r["value"] == metrics.image_auroc(s, lab)
    assert r["low"] < r["value"] < r["high"] and r["n_boot"] == 500
    assert (r["n_good"], r["n_anomalous"]) == (40, 40)
    assert r["low"] == np.percentile(r["samples"], 2.5) and r["high"] == np.percentile(r["samples"], 97.5)
    again = U.image_auroc_ci(s, lab, n_boot=500, seed=0)
    assert (again["low"], again["high"]) == (r["low"], r["high"])
    with pytest.raises(ValueError, match="both good"):
        U.image_auroc_ci(s, np.ones_like(lab))
    with pytest.raises(ValueError, match="0 \\(good\\) / 1"):
        U.image_auroc_ci(s, lab * 2)


def test_interval_shrinks_with_more_images() -> None:
    widths = []
    for n in (20, 80, 320):
        s, lab = _binary(n, n, 1.0, seed=n)
        r = U.image_auroc_ci(s, lab, n_boot=1000, seed=0)
        widths.append(r["high"] - r["low"])
    assert widths[0] > widths[1] > widths[2]
    # about 1/sqrt(n): quadrupling n roughly halves the width
    assert 0.35 < widths[2] / widths[1] < 0.7 and 0.35 < widths[1] / widths[0] < 0.7


def test_percentile_interval_covers_the_true_auroc_about_95_percent() -> None:
    # good ~ N(0, 1), anomalous ~ N(d, 1): true AUROC = Phi(d / sqrt 2)
    d = 1.0
    true_auc = NormalDist().cdf(d / math.sqrt(2.0))
    rng = np.random.default_rng(123)
    n_exp, hits = 300, 0
    lab = np.r_[np.zeros(40, int), np.ones(40, int)]
    for e in range(n_exp):
        s = np.r_[rng.normal(size=40), rng.normal(size=40) + d]
        r = U.image_auroc_ci(s, lab, n_boot=500, seed=e)
        hits += r["low"] <= true_auc <= r["high"]
    coverage = hits / n_exp
    assert 0.88 <= coverage <= 0.99, coverage


def test_by_type_matches_metrics_and_shares_good_images() -> None:
    rng = np.random.default_rng(5)
    names = np.array(["good"] * 12 + ["structural"] * 8 + ["logical"] * 6)
    s = rng.normal(size=names.size) + (names == "structural") * 1.0 + (names == "logical") * 0.3
    r = U.image_auroc_ci_by_type(s, names, n_boot=200, seed=2, return_samples=True)
    ref = metrics.image_auroc_by_type(s, names)
    for k in ("structural", "logical", "mean"):
        assert r[k]["value"] == pytest.approx(ref[k], abs=1e-15)
    # brute force per resample: AUROC of good vs type on the resampled images
    idx = U.resample_indices(names, 200, seed=2)
    for b in (0, 99, 199):
        rb = metrics.image_auroc_by_type(s[idx[b]], names[idx[b]])
        for k in ("structural", "logical", "mean"):
            assert r[k]["samples"][b] == pytest.approx(rb[k], abs=1e-15)
    only_struct = U.image_auroc_ci_by_type(s[names != "logical"], names[names != "logical"], n_boot=50)
    assert only_struct["logical"] is None
    assert only_struct["mean"]["value"] == only_struct["structural"]["value"]
    with pytest.raises(ValueError, match="unknown label"):
        U.image_auroc_ci_by_type(s, ["bad"] * names.size)


# ---- paired ---------------------------------------------------------------------------------------
def test_paired_with_itself_is_exactly_zero() -> None:
    s, lab = _binary(30, 25, 0.7, seed=8, decimals=1)
    names = np.array(["good"] * 30 + ["structural"] * 15 + ["logical"] * 10)
    rt = U.paired_image_auroc_by_type(s, names, s, names, n_boot=100)
    assert all((rt[k]["low"], rt[k]["high"]) == (0.0, 0.0) for k in ("structural", "logical", "mean"))


def test_paired_input_checks() -> None:
    s, lab = _binary(5, 5, 1.0, seed=0)
    ids = [f"img{i}.png" for i in range(10)]
    with pytest.raises(ValueError, match="labels differ at row 0"):
        U.check_paired(lab, lab[::-1].copy())
    with pytest.raises(ValueError, match="10 vs 9 images"):
        U.check_paired(lab, lab[:9])
    with pytest.raises(ValueError, match="different order"):
        U.check_paired(lab, lab, ids_a=ids, ids_b=ids[1:] + ids[:1])
    with pytest.raises(ValueError, match="different images.*img3"):
        U.check_paired(lab, lab, ids_a=ids, ids_b=ids[:3] + ["other.png"] + ids[4:])
    with pytest.raises(ValueError, match="for both sides"):
        U.check_paired(lab, lab, ids_a=ids)
    U.check_paired(lab, lab, ids_a=ids, ids_b=list(ids))  # same ids: fine


# ---- AU-sPRO --------------------------------------------------------------------------------------
def test_spro_grid_exact_and_fine_grid_match_metrics() -> None:
    maps, chans, names = _loco_like(8, 8, 0, 30, 24, seed=1)
    exact = metrics.au_spro(maps, chans, DEFECTS)
    ones = np.ones(len(maps))
    st = U.spro_statistics(maps, chans, DEFECTS, grid="exact")
    v, bound = U.weighted_au_spro(st, ones)
    assert v[0] == pytest.approx(exact, abs=1e-12) and bound[0] >= 0
    # a finite grid: within the chord bound it reports, and that bound is small
    for t in (300, 2000):
        st = U.spro_statistics(maps, chans, DEFECTS, grid=t)
        (v,), (bound,) = U.weighted_au_spro(st, ones)
        assert abs(v - exact) <= bound + 1e-12, (t, v, exact, bound)
        assert bound < 5e-3
    # the same with float64 maps and another FPR limit
    m64 = [m.astype(np.float64) for m in maps]
    st = U.spro_statistics(m64, chans, DEFECTS, fpr_limit=0.3, grid="exact")
    assert U.weighted_au_spro(st, ones)[0][0] == pytest.approx(
        metrics.au_spro(m64, chans, DEFECTS, 0.3), abs=1e-12
    )


def test_spro_grid_bound_on_larger_maps() -> None:
    maps, chans, _ = _loco_like(10, 10, 0, 128, 96, seed=2)
    exact = metrics.au_spro(maps, chans, DEFECTS)
    st = U.spro_statistics(maps, chans, DEFECTS, grid=2000)
    (v,), (bound,) = U.weighted_au_spro(st, np.ones(len(maps)))
    # stated tolerance: the grid AU-sPRO is within 1e-3 (0.1 point) of the exact one here
    assert abs(v - exact) <= bound <= 1e-3


def test_spro_resamples_equal_brute_force() -> None:
    maps, chans, names = _loco_like(6, 6, 0, 20, 16, seed=3)
    idx = U.resample_indices(names, 6, seed=9)
    brute = [metrics.au_spro([maps[i] for i in r], [chans[i] for i in r], DEFECTS) for r in idx]
    st = U.spro_statistics(maps, chans, DEFECTS, grid="exact")
    fast, _ = U.weighted_au_spro(st, U.resample_weights(idx))
    np.testing.assert_allclose(fast, brute, rtol=0, atol=1e-12)
    r = U.au_spro_ci(maps, chans, names, DEFECTS, n_boot=6, seed=9, grid="exact", return_samples=True)
    np.testing.assert_allclose(r["samples"], brute, rtol=0, atol=1e-12)
    assert r["value"] == pytest.approx(metrics.au_spro(maps, chans, DEFECTS), abs=1e-12)
    assert r["n_regions"] == sum(int((c != 0).any(axis=(1, 2)).sum()) for c in chans)


def test_spro_by_type_and_paired() -> None:
    maps, chans, names = _loco_like(6, 4, 4, 20, 16, seed=4)
    r = U.au_spro_ci_by_type(maps, chans, names, DEFECTS, n_boot=50, seed=1, grid="exact")
    ref = metrics.map_metrics(maps, chans, names, DEFECTS)["au_spro"]
    for k in ("structural", "logical", "mean"):
        assert r[k]["value"] == pytest.approx(ref[k], abs=1e-12)
        assert r[k]["low"] <= r[k]["high"]
    # paired with itself: exactly zero
    p0 = U.au_spro_ci_by_type(maps, chans, names, DEFECTS, n_boot=50, grid="exact", maps_b=maps)
    assert all((p0[k]["low"], p0[k]["high"], p0[k]["diff"]) == (0.0, 0.0, 0.0) for k in p0)


def test_spro_errors() -> None:
    maps, chans, names = _loco_like(3, 0, 0, 10, 10, seed=0)
    with pytest.raises(ValueError, match="no anomalous regions"):
        U.spro_statistics(maps, chans, DEFECTS)
    maps, chans, names = _loco_like(3, 3, 0, 10, 10, seed=0)
    with pytest.raises(ValueError, match="grid must be"):
        U.spro_statistics(maps, chans, DEFECTS, grid=1)
    st = U.spro_statistics(maps, chans, DEFECTS)
    with pytest.raises(ValueError, match="do not match the 6 images"):
        U.weighted_au_spro(st, np.ones((2, 5)))


# ---- seeds ------------------------------------------------------------------------------------
def test_aggregate_seeds_t_interval() -> None:
    v = [0.70, 0.74, 0.78]
    r = U.aggregate_seeds(v)
    # hand-computed: mean 0.74, s = 0.04, t_{2, 0.975} = 4.302652729911275
    assert r["value"] == pytest.approx(0.74) and r["std"] == pytest.approx(0.04)
    half = 4.302652729911275 * 0.04 / math.sqrt(3)
    assert (r["low"], r["high"]) == (pytest.approx(0.74 - half), pytest.approx(0.74 + half))
    one = U.aggregate_seeds([0.7])
    assert one["value"] == 0.7 and math.isnan(one["low"]) and one["n_seeds"] == 1


def test_seed_image_interval_combines_both_variances() -> None:
    rng = np.random.default_rng(0)
    samples = rng.normal(size=(3, 4000)) * 0.02 + np.array([[0.7], [0.74], [0.78]])
    r = U.seed_image_interval([0.7, 0.74, 0.78], samples)
    img_var = np.var(samples.mean(0), ddof=1)
    se = math.sqrt(0.04**2 / 3 + img_var)
    assert r["se"] == pytest.approx(se) and r["value"] == pytest.approx(0.74)
    assert r["high"] - r["low"] == pytest.approx(2 * 1.959963984540054 * se)
    # wider than either part alone
    assert r["se"] > max(r["se_seed"], r["se_image"])
    # clipped to the metric's range
    wide = U.seed_image_interval([0.9, 0.99], np.full((2, 10), 0.95), bounds=(0.0, 1.0))
    assert wide["high"] == 1.0 and wide["low"] < 0.9
    single = U.seed_image_interval([0.7], samples[:1])
    assert single["low"] == np.percentile(samples[0], 2.5)


# ---- formatting ---------------------------------------------------------------------------------
def test_formatters() -> None:
    assert U.format_ci(0.7691, 0.7212, 0.8139) == "76.9 [72.1, 81.4]"
    assert U.format_ci({"value": 0.5, "low": 0.4, "high": 0.6}) == "50.0 [40.0, 60.0]"
    assert U.format_ci(0.5, math.nan, math.nan) == "50.0"
    assert U.format_diff(0.032, -0.01, 0.075) == "+3.2 [-1.0, 7.5]"
    assert U.format_diff(0.032, 0.01, 0.075) == "+3.2 [1.0, 7.5] *"
    assert U.format_diff(-0.05, -0.08, -0.02) == "-5.0 [-8.0, -2.0] *"
    assert U.format_diff(0.05, math.nan, math.nan) == "+5.0"
    assert U.format_diff({"diff": 0.0, "low": 0.0, "high": 0.0}) == "+0.0 [0.0, 0.0]"
    assert U.format_ci(0.123456, 0.1, 0.2, scale=1.0, digits=3) == "0.123 [0.100, 0.200]"
