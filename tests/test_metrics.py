"""Metrics: fast == brute-force reference (random inputs with ties) and hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
from metric_references import (
    area_under_curve_reference,
    au_pro_reference,
    au_spro_reference,
    image_auroc_reference,
    image_defect_names,
    pixel_auroc_reference,
    spro_curve_reference,
)
from sklearn.metrics import roc_auc_score

from esad_lib import metrics as M

DEFECTS = [
    {"defect_name": "missing", "pixel_value": 255, "saturation_threshold": 3, "relative_saturation": False},
    {"defect_name": "extra", "pixel_value": 128, "saturation_threshold": 0.5, "relative_saturation": True},
    {"defect_name": "big", "pixel_value": 64, "saturation_threshold": 1.0, "relative_saturation": True},
]


# ---- hand-computed 4x4 example ----------------------------------------------------------------
# anomalous image A: defect = top-left 2x2 (scores 0.9, 0.4 / 0.6, 0.2); good image B.
MAP_A = np.array(
    [[0.9, 0.4, 0.1, 0.1], [0.6, 0.2, 0.1, 0.1], [0.1, 0.1, 0.1, 0.1], [0.1, 0.1, 0.1, 0.7]], dtype=np.float32
)
MAP_B = np.zeros((4, 4), dtype=np.float32)
MAP_B[1, 2] = 0.8
MAP_B[3, 0] = 0.5
MASK_A = np.zeros((4, 4), dtype=bool)
MASK_A[:2, :2] = True
# negatives: 12 of A (0.7 and eleven 0.1) + 16 of B (0.8, 0.5, fourteen 0.0) = 28


def test_pixel_auroc_hand_computed() -> None:
    # #negatives below each positive: 0.9 -> 28, 0.6 -> 26, 0.4 -> 25, 0.2 -> 25 ; 104 / (4 * 28)
    got = M.pixel_auroc([MAP_A, MAP_B], [MASK_A, np.zeros((4, 4), bool)])
    assert got == pytest.approx(104 / 112, abs=1e-12)


def test_au_spro_hand_computed() -> None:
    # absolute saturation 3 -> a = min(3, 4) = 3.  Curve (FPR * 28, sPRO):
    # (0,0) (0,1/3) (1,1/3) (2,1/3) (2,2/3) (3,2/3) (3,1) ... ; limit 0.1 = 2.8/28, end point y = 2/3.
    # area * 28 = 1/3 + 1/3 + 0.8 * 2/3 = 1.2  ->  AU-sPRO = (1.2 / 28) / 0.1 = 3/7
    ch_a = (MASK_A * 255).astype(np.uint8)[None]
    ch_b = np.zeros((0, 4, 4), np.uint8)
    got = M.au_spro([MAP_A, MAP_B], [ch_a, ch_b], DEFECTS, fpr_limit=0.1)
    assert got == pytest.approx(3 / 7, abs=1e-12)
    assert au_spro_reference([MAP_A, MAP_B], [ch_a, ch_b], DEFECTS, fpr_limit=0.1) == pytest.approx(3 / 7)
    # the polyline keeps the corners only (points on horizontal pieces are implied)
    fpr, spro = M.spro_curve([MAP_A, MAP_B], [ch_a, ch_b], DEFECTS)
    np.testing.assert_allclose(fpr * 28, [0, 0, 2, 2, 3, 3, 28])
    np.testing.assert_allclose(spro, [0, 1 / 3, 1 / 3, 2 / 3, 2 / 3, 1, 1])


def test_au_pro_hand_computed() -> None:
    # one region of area 4: PRO = TP / 4.  Curve (FPR * 28, PRO): (0,.25) (1,.25) (2,.25) (2,.5) (3,.5)
    # (3,.75) (3,1) (14,1).  limit 0.3 = 8.4/28: area * 28 = .25 + .25 + .5 + 5.4 = 6.4 -> 6.4/8.4
    got = M.au_pro([MAP_A, MAP_B], [MASK_A, np.zeros((4, 4), bool)], fpr_limit=0.3)
    assert got == pytest.approx(6.4 / 8.4, abs=1e-12)


def test_image_auroc_hand_computed() -> None:
    # pairs (anomalous > good): 0.35 > 0.1, 0.35 < 0.4, 0.8 > both -> 3/4
    assert M.image_auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert image_auroc_reference([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    # a tie counts one half
    assert M.image_auroc([0.5, 0.5], [0, 1]) == pytest.approx(0.5)


def test_area_under_curve_interpolates_end_point() -> None:
    x, y = np.array([0.0, 0.2, 0.6, 1.0]), np.array([0.0, 0.5, 1.0, 1.0])
    # 0..0.2: 0.05 ; 0.2..0.3: y(0.3) = 0.625 -> 0.1 * (0.5 + 0.625) / 2 = 0.05625 ; / 0.3
    assert M.area_under_curve(x, y, 0.3) == pytest.approx((0.05 + 0.05625) / 0.3)
    assert area_under_curve_reference(x, y, 0.3) == pytest.approx((0.05 + 0.05625) / 0.3)
    # x_max on a curve point: no interpolation
    assert M.area_under_curve(x, y, 0.2) == pytest.approx(0.05 / 0.2)


# ---- random inputs with ties: fast == reference ----------------------------------------------------
def _random_case(rng: np.random.Generator, n_levels: int):
    n = int(rng.integers(2, 5))
    maps, chans, masks, names = [], [], [], []
    for i in range(n):
        h, w = int(rng.integers(4, 8)), int(rng.integers(4, 8))
        maps.append((rng.integers(0, n_levels, size=(h, w)) / n_levels).astype(np.float32))
        c = 0 if i == 0 else int(rng.integers(0, 4))
        ch = np.zeros((c, h, w), np.uint8)
        for j in range(c):
            value = DEFECTS[int(rng.integers(len(DEFECTS)))]["pixel_value"]
            ch[j][rng.random((h, w)) < 0.3] = value  # may overlap other channels, may be empty
        chans.append(ch)
        masks.append((ch != 0).any(0) if c else np.zeros((h, w), bool))
        names.append("good" if c == 0 else ("structural" if i % 2 else "logical"))
    return maps, chans, masks, names


@pytest.mark.parametrize("seed", range(12))
def test_pixel_metrics_match_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    maps, chans, masks, _ = _random_case(rng, n_levels=int(rng.choice([3, 8, 1000])))
    if not any(m.any() for m in masks):
        masks[-1][0, 0] = True
        chans[-1] = np.concatenate([chans[-1], (masks[-1] * 255).astype(np.uint8)[None]])
    fast = M.pixel_auroc(maps, masks)
    assert fast == pytest.approx(pixel_auroc_reference(maps, masks), abs=1e-9)
    flat_m = np.concatenate([m.ravel() for m in maps])
    assert fast == pytest.approx(roc_auc_score(np.concatenate([g.ravel() for g in masks]), flat_m), abs=1e-9)
    for limit in (0.05, 0.3, 1.0):
        assert M.au_pro(maps, masks, limit) == pytest.approx(au_pro_reference(maps, masks, limit), abs=1e-9)
        assert M.au_spro(maps, chans, DEFECTS, limit) == pytest.approx(
            au_spro_reference(maps, chans, DEFECTS, limit), abs=1e-9
        )


def test_spro_curve_matches_reference_and_is_monotone() -> None:
    rng = np.random.default_rng(42)
    maps, chans, _, _ = _random_case(rng, n_levels=5)
    chans[1] = np.concatenate([chans[1], np.full((1, *maps[1].shape), 64, np.uint8)])
    fpr, spro = M.spro_curve(maps, chans, DEFECTS)
    rfpr, rspro = spro_curve_reference(maps, chans, DEFECTS)
    # the same polyline: equal areas up to every limit (the fast one omits points on flat pieces)
    for limit in np.linspace(0.01, 1.0, 60):
        assert M.area_under_curve(fpr, spro, limit) == pytest.approx(
            area_under_curve_reference(rfpr, rspro, limit), abs=1e-12
        )
    assert fpr[0] == 0 and spro[0] == 0 and fpr[-1] == 1 and spro[-1] == pytest.approx(rspro[-1])
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(spro) >= -1e-12)


def test_float64_maps_with_close_values_are_not_merged() -> None:
    # values that differ only beyond float32 precision must stay distinct thresholds
    base = np.full((4, 4), 0.5)
    a, b = base.copy(), base.copy()
    a[0, 0] = 0.5 + 1e-12  # the only positive pixel, just above every negative
    mask = np.zeros((4, 4), bool)
    mask[0, 0] = True
    assert M.pixel_auroc([a, b], [mask, np.zeros_like(mask)]) == pytest.approx(1.0)
    assert M.au_pro([a, b], [mask, np.zeros_like(mask)], 0.3) == pytest.approx(1.0)


def test_perfect_and_inverted_maps() -> None:
    rng = np.random.default_rng(3)
    masks = [np.zeros((6, 6), bool) for _ in range(3)]
    masks[1][1:3, 1:4] = True
    masks[2][4:, 4:] = True
    perfect = [g.astype(np.float32) + 0.01 * rng.random(g.shape).astype(np.float32) for g in masks]
    inverted = [-m for m in perfect]
    chans = [(g * 255).astype(np.uint8)[None] if g.any() else np.zeros((0, 6, 6), np.uint8) for g in masks]
    assert M.pixel_auroc(perfect, masks) == pytest.approx(1.0)
    assert M.pixel_auroc(inverted, masks) == pytest.approx(0.0)
    assert M.au_pro(perfect, masks) == pytest.approx(1.0)
    assert M.au_pro(inverted, masks) == pytest.approx(0.0)
    assert M.au_spro(perfect, chans, DEFECTS) == pytest.approx(1.0)
    assert M.au_spro(inverted, chans, DEFECTS) == pytest.approx(0.0)


def test_saturation_caps_spro() -> None:
    # a defect of 10 pixels with absolute saturation 3: finding 3 of them already gives sPRO 1
    m = np.zeros((5, 5), np.float32)
    ch = np.zeros((1, 5, 5), np.uint8)
    ch[0, :2, :] = 255  # 10 pixels
    m[0, :3] = 1.0  # 3 found, above every negative
    fpr, spro = M.spro_curve([m], [ch], DEFECTS)
    assert (fpr[1], spro[1]) == (0.0, 1.0)
    # relative saturation 0.5 of value 128: 3 of 10 found -> 3 / 5
    fpr, spro = M.spro_curve([m], [(ch // 255 * 128).astype(np.uint8)], DEFECTS)
    assert spro[1] == pytest.approx(0.6)


def test_relative_saturation_truncates_to_whole_pixels_as_the_official_code() -> None:
    # 0.5 * 9 pixels = 4.5 -> int() = 4 pixels: finding 2 of 9 gives 2 / 4, not 2 / 4.5
    m = np.zeros((5, 5), np.float32)
    ch = np.zeros((1, 5, 5), np.uint8)
    ch[0, :3, :3] = 128  # 9 pixels, relative saturation 0.5
    m[0, :2] = 1.0  # 2 found, above every negative
    _, spro = M.spro_curve([m], [ch], DEFECTS)
    assert spro[1] == pytest.approx(2 / 4)
    # a product below one pixel saturates at 1 pixel (no division by zero)
    tiny = [{"defect_name": "t", "pixel_value": 9, "saturation_threshold": 0.1, "relative_saturation": True}]
    ch2 = np.zeros((1, 5, 5), np.uint8)
    ch2[0, 0, :3] = 9  # 0.1 * 3 = 0.3 -> 1 pixel
    m2 = np.zeros((5, 5), np.float32)
    m2[0, 0] = 1.0
    _, spro = M.spro_curve([m2], [ch2], tiny)
    assert spro[1] == 1.0


@pytest.mark.parametrize("seed", range(6))
def test_au_spro_at_limits_equals_one_call_per_limit(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    maps, chans, masks, _ = _random_case(rng, n_levels=int(rng.choice([3, 1000])))
    if not any(m.any() for m in masks):  # at least one region
        chans[-1] = np.concatenate([chans[-1], np.full((1, *maps[-1].shape), 255, np.uint8)])
        chans[-1][-1, 1:] = 0
    at = M.PixelOrder(maps, chans, DEFECTS).at_limits("all", M.SPRO_LIMITS)
    assert list(at) == list(M.SPRO_LIMITS) == [0.01, 0.05, 0.1, 0.3, 1.0]
    for lim, v in at.items():
        assert v == pytest.approx(M.au_spro(maps, chans, DEFECTS, lim), abs=1e-12)
        assert v == pytest.approx(au_spro_reference(maps, chans, DEFECTS, lim), abs=1e-9)


@pytest.mark.parametrize("seed", range(6))
def test_au_spro_by_defect_matches_reference_on_the_defects_images(seed: int) -> None:
    rng = np.random.default_rng(200 + seed)
    maps, chans, _, names = _random_case(rng, n_levels=50)
    by = M.au_spro_by_defect(maps, chans, names, DEFECTS, limits=(0.05, 1.0))
    shown = [image_defect_names(c, DEFECTS) for c in chans]
    assert set(by) == set().union(*shown)
    for d, vals in by.items():
        idx = [i for i, n in enumerate(names) if n == "good" or d in shown[i]]
        for lim, v in vals.items():
            ref = au_spro_reference(
                [maps[i] for i in idx], [chans[i] for i in idx], DEFECTS, lim, defect_names=[d]
            )
            assert v == pytest.approx(ref, abs=1e-9)


def test_per_defect_regions_exclude_other_defects_from_negatives() -> None:
    m = np.zeros((4, 4), np.float32)
    ch = np.zeros((2, 4, 4), np.uint8)
    ch[0, 0, :2] = 255  # "missing": 2 pixels, found
    ch[1, 3, :] = 64  # "big": 4 pixels, scored high too, but not "missing"
    m[0, :2] = 1.0
    m[3, :] = 1.0
    fpr, spro = M.spro_curve([m], [ch], DEFECTS, defect_names=["missing"])
    # the "big" pixels are not negatives: the first threshold finds "missing" at FPR 0
    assert (fpr[1], spro[1]) == (0.0, 1.0)


def test_by_type_helpers_use_good_images_in_each_group() -> None:
    rng = np.random.default_rng(7)
    maps, chans, masks, names = _random_case(rng, n_levels=50)
    names = ["good", "structural", "logical", "structural"][: len(maps)]
    if "logical" not in names:
        names[-1] = "logical"
    for i, n in enumerate(names):
        if n != "good" and chans[i].shape[0] == 0:
            chans[i] = np.full((1, *maps[i].shape), 255, np.uint8)
            chans[i][0, 0, 0] = 0
    chans[0] = np.zeros((0, *maps[0].shape), np.uint8)
    got = M.map_metrics(maps, chans, names, DEFECTS, spro_fpr_limit=0.3)["au_spro"]
    for kind in ("structural", "logical"):
        idx = [i for i, n in enumerate(names) if n in ("good", kind)]
        want = au_spro_reference([maps[i] for i in idx], [chans[i] for i in idx], DEFECTS, 0.3)
        assert got[kind] == pytest.approx(want, abs=1e-9)
    assert got["mean"] == pytest.approx((got["structural"] + got["logical"]) / 2)

    scores = [0.1, 0.9, 0.3, 0.2, 0.8]
    labels = ["good", "structural", "logical", "good", "structural"]
    res = M.image_auroc_by_type(scores, labels)
    assert res["structural"] == pytest.approx(1.0)
    assert res["logical"] == pytest.approx(1.0)
    res = M.image_auroc_by_type([0.1, 0.9, 0.2], ["good", "structural", "good"])
    assert res["logical"] is None and res["mean"] == pytest.approx(1.0)
    assert M.image_auroc_by_type([0.1, 0.9], ["structural", "logical"]) == dict.fromkeys(
        ("structural", "logical", "mean")
    )


def test_type_groups_are_good_plus_one_type_and_none_when_a_type_is_missing():
    assert M.type_groups(["good", "structural", "logical", "good"]) == {
        "structural": [0, 1, 3],
        "logical": [0, 2, 3],
    }
    assert M.type_groups(["good", "structural"]) == {"structural": [0, 1], "logical": None}
    assert M.type_mean({"structural": 0.5, "logical": None}) == 0.5
    assert M.type_mean({"structural": None, "logical": None}) is None


@pytest.mark.parametrize("seed", range(6))
def test_image_auroc_matches_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 5, size=20).astype(float)
    labels = np.r_[np.zeros(10, int), np.ones(10, int)]
    assert M.image_auroc(scores, labels) == pytest.approx(image_auroc_reference(scores, labels), abs=1e-12)


def test_pro_regions_are_eight_connected() -> None:
    # two diagonal pixels form ONE region (8-connectivity); finding one of them gives PRO 1/2
    m = np.zeros((4, 4), np.float32)
    g = np.zeros((4, 4), bool)
    g[0, 0] = g[1, 1] = True
    m[0, 0] = 1.0
    fpr, pro = M.pro_curve([m], [g])
    assert pro[1] == pytest.approx(0.5)


def test_clear_errors() -> None:
    m = np.zeros((3, 3), np.float32)
    with pytest.raises(ValueError, match="defects config"):
        M.au_spro([m], [np.full((1, 3, 3), 7, np.uint8)], DEFECTS)
    with pytest.raises(ValueError, match="several pixel values"):
        ch = np.full((1, 3, 3), 255, np.uint8)
        ch[0, 0, 0] = 128
        M.au_spro([m], [ch], DEFECTS)
    with pytest.raises(ValueError, match="shape"):
        M.au_pro([m], [np.zeros((2, 3), bool)])
    with pytest.raises(ValueError, match="negative"):
        M.au_pro([m], [np.ones((3, 3), bool)])
    with pytest.raises(ValueError, match="both"):
        M.image_auroc([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="fpr_limit"):
        M.au_pro([m], [np.eye(3, dtype=bool)], fpr_limit=0.0)


def test_fast_curves_survive_interleaved_scores() -> None:
    # high negatives on every 2nd pixel, positives on odd columns between them: the counting into
    # the gaps between positive scores must not depend on where pixels lie
    rng = np.random.default_rng(0)
    m = np.empty(20_000, dtype=np.float64)
    m[0::2] = 1.0 + rng.integers(0, 1000, 10_000) / 1000
    m[1::2] = rng.integers(0, 50, 10_000) / 100
    m = m.reshape(100, 200)
    g = np.zeros((100, 200), bool)
    g[10:14, 11:19:2] = True
    m[g] = np.linspace(0.3, 1.9, int(g.sum()))
    ch = (g * 255).astype(np.uint8)[None]
    for limit in (0.01, 0.05, 0.3, 1.0):
        assert M.au_pro([m], [g], limit) == pytest.approx(au_pro_reference([m], [g], limit), abs=1e-12)
        assert M.au_spro([m], [ch], DEFECTS, limit) == pytest.approx(
            au_spro_reference([m], [ch], DEFECTS, limit), abs=1e-12
        )


@pytest.mark.parametrize("seed", range(4))
def test_image_auroc_equals_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores = np.round(rng.random(30), 1)  # many ties
    labels = (rng.random(30) < 0.4).astype(int)
    labels[:2] = [0, 1]
    assert M.image_auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_au_spro_accepts_defect_specs() -> None:
    from esad_lib.data import DefectSpec

    specs = [DefectSpec("missing", 255, 3.0, False)]
    ch_a = (MASK_A * 255).astype(np.uint8)[None]
    got = M.au_spro([MAP_A, MAP_B], [ch_a, np.zeros((0, 4, 4), np.uint8)], specs, fpr_limit=0.1)
    assert got == pytest.approx(3 / 7, abs=1e-12)
