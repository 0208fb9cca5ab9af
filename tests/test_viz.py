"""esad_lib.viz: every helper runs under Agg on small inputs and draws what it says."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import ipywidgets as W  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.colorbar import Colorbar  # noqa: E402

from esad_lib import get_config, viz  # noqa: E402


@pytest.fixture
def ax():
    fig, ax = plt.subplots()
    yield ax
    plt.close(fig)


def _texts(ax) -> str:
    return "\n".join(t.get_text() for t in ax.texts) + "\n" + ax.get_title()


def test_to_rgb_round_trips_the_loaders_scaling() -> None:
    u8 = np.random.default_rng(0).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    x = torch.from_numpy(u8).permute(2, 0, 1).float() / 127.5 - 1  # the loader's scaling, [3,H,W]
    assert np.array_equal(viz.to_rgb(x), u8)
    assert np.array_equal(viz.to_rgb(x.permute(1, 2, 0).numpy()), u8)  # [H,W,3] too
    assert viz.to_rgb(torch.full((3, 2, 2), 5.0)).max() == 255  # clipped
    with pytest.raises(ValueError, match="expected an image"):
        viz.to_rgb(torch.zeros(2, 4, 4))


def test_show_image_and_mask(ax) -> None:
    x = torch.zeros(3, 4, 6)
    im = viz.show_image(ax, x, "hidden = grey")
    assert im.get_array().shape == (4, 6, 3) and int(im.get_array()[0, 0, 0]) in (127, 128)
    assert ax.get_title() == "hidden = grey" and not ax.get_xticks().size
    m = viz.show_mask(ax, torch.ones(4, 6), "mask", vmin=0, vmax=1)
    assert m.get_array().shape == (4, 6)


def test_show_map_labels_its_colour_bar(ax) -> None:
    im = viz.show_map(ax, torch.rand(8, 8), "map", label="z-score vs train/good")
    bars = [a for a in ax.figure.axes if a is not ax]
    assert len(bars) == 1 and bars[0].get_ylabel() == "z-score vs train/good"
    assert isinstance(im.colorbar, Colorbar)
    assert viz.show_map(ax, np.zeros((3, 3)), colorbar=False).colorbar is None


def test_map_value_label_follows_the_config() -> None:
    cfg = get_config("smoke")
    assert viz.map_value_label(cfg.replace(map_normalization="train")) == "z-score vs train/good"
    assert viz.map_value_label(cfg.replace(map_normalization="validation")) == "z-score vs validation/good"
    assert viz.map_value_label(cfg.replace(map_normalization="none", score_map="pixel")) == "1 - MSGMS (raw)"
    assert "raw" in viz.map_value_label(cfg.replace(map_normalization="train"), standardised=False)


def test_outline_mask_encloses_the_masks_bounding_box(ax) -> None:
    mask = np.zeros((20, 30))
    mask[4:9, 10:22] = 1  # rows 4..8, columns 10..21
    cs = viz.outline_mask(ax, mask, color="cyan")
    verts = np.concatenate([p.vertices for p in cs.get_paths()])
    (x0, y0), (x1, y1) = verts.min(0), verts.max(0)
    # the 0.5 level runs half-way between mask and background pixels
    assert (x0, x1, y0, y1) == pytest.approx((9.5, 21.5, 3.5, 8.5), abs=1e-6)
    assert viz.outline_mask(ax, np.zeros((5, 5))) is None


def test_channels_rgb_colours_each_channel() -> None:
    ch = np.zeros((2, 4, 4), dtype=np.uint8)
    ch[0, :2] = 255
    ch[1, 2:] = 255
    out = viz.channels_rgb(ch)
    colours = plt.cm.tab10([0, 1])[:, :3]
    assert np.allclose(out[0, 0], colours[0]) and np.allclose(out[3, 3], colours[1])
    assert viz.channels_rgb(ch, (8, 8)).shape == (8, 8, 3)  # nearest resize
    assert viz.channels_rgb(np.zeros((0, 4, 4)), (3, 5)).shape == (3, 5, 3)


def test_score_histogram_draws_one_histogram_per_label(ax) -> None:
    names = ["good"] * 5 + ["structural"] * 3
    viz.score_histogram(ax, np.arange(8.0), names, this_score=6.0, threshold=4.5, value_label="z")
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[:2] == ["good (5)", "structural (3)"]
    assert "above 75% of all 8 test images" in legend[2] and "threshold 4.500" in legend[3]
    assert "(z)" in ax.get_xlabel()


def test_diagrams_draw_their_parts(ax) -> None:
    viz.draw_feature_extraction_block(ax)
    text = _texts(ax)
    for part in ("group conv", "depthwise conv", "1×1 conv", "ECA", "residual", "+"):
        assert part in text
    ax.clear()
    cfg = get_config("smoke")
    viz.draw_esad_network(ax, cfg)
    text = _texts(ax)
    for part in ("inpainting U-Net $G_1$", "reconstruction U-Net $G_2$", "fill hidden cells", "feature map",
                 "image score", f"{cfg.num_masks} disjoint masks", str(tuple(cfg.cutout_sizes))):
        assert part in text, part
    widths = [t.get_text() for t in ax.texts if t.get_text().isdigit()]
    assert widths.count(str(cfg.base_width)) == 2  # level 1 of each U-Net, labelled with its width
    ax.clear()
    viz.draw_esad_network(ax)  # the paper's numbers
    assert "(2, 4, 8, 16)" in _texts(ax) and "0.5·$pre_k$ + 0.5·$x$" in _texts(ax)


class _Kernel:
    def __init__(self, allow_stdin: bool) -> None:
        self._allow_stdin = allow_stdin


class _Shell:
    def __init__(self, kernel) -> None:
        self.kernel = kernel


def test_widget_frontend_detection_is_false_headless() -> None:
    assert viz.widget_frontend_available(_Shell(_Kernel(True)))
    assert not viz.widget_frontend_available(_Shell(_Kernel(False)))  # nbclient / papermill
    assert not viz.widget_frontend_available(_Shell(None))  # IPython terminal, no kernel
    assert not viz.widget_frontend_available()  # plain python (pytest): no IPython shell


def test_setting_cache_computes_once_per_key() -> None:
    cache = viz.SettingCache()
    assert cache.get(("a", 1), lambda: [1]) == [1]
    assert cache.get(("a", 1), lambda: [2]) == [1]
    assert cache.get(("a", 2), lambda: [3]) == [3]
    assert cache.calls == 2 and len(cache) == 2


@pytest.mark.parametrize("lo, hi", [(5.0, 9.0), (-9.0, -5.0), (0.2, 0.4), (-3.0, 3.0)])
def test_set_slider_range_moves_above_and_below_the_old_range(lo, hi) -> None:
    s = W.FloatSlider(value=0.5, min=0.0, max=1.0, continuous_update=False)
    with pytest.raises(Exception, match="min > max"):  # the naive order fails for a range above
        W.FloatSlider(value=0.5, min=0.0, max=1.0).min = 5.0
    viz.set_slider_range(s, lo, hi, value=4.0)
    assert (s.min, s.max) == (lo, hi) and s.value == min(max(4.0, lo), hi)
    with pytest.raises(ValueError, match="lo="):
        viz.set_slider_range(s, 2.0, 1.0)


def _overlap_brute_force(m: np.ndarray, gt: np.ndarray) -> float:
    """Flag the n brightest pixels one by one (n = |gt|), ties with the n-th flagged too."""
    n = int(gt.sum())
    values = np.sort(m.ravel())[::-1]
    flagged = m >= values[n - 1]
    return float(sum(int(f and g) for f, g in zip(flagged.ravel(), gt.ravel())) / flagged.sum())


def test_gt_overlap_equals_brute_force_and_its_extremes() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        m = rng.random((9, 7))
        gt = rng.random((9, 7)) < 0.2
        if gt.any():
            assert viz.gt_overlap(m, gt) == pytest.approx(_overlap_brute_force(m, gt))
    m = np.zeros((8, 8))
    m[2:4, 2:5] = 1.0  # the map is bright exactly on the defect
    gt = m > 0
    assert viz.gt_overlap(m, gt) == 1.0
    assert viz.gt_overlap(-m + rng.random((8, 8)) * 1e-3, gt) == 0.0  # bright everywhere but there
    ties = np.ones((4, 4))  # a flat map flags every pixel: overlap = the defect's share
    assert viz.gt_overlap(ties, gt[:4, :4]) == pytest.approx(gt[:4, :4].sum() / 16)
    assert np.isnan(viz.gt_overlap(m, np.zeros((8, 8), bool)))
    assert viz.gt_overlap(torch.from_numpy(m), torch.from_numpy(gt)) == 1.0
    with pytest.raises(ValueError, match="differ in size"):
        viz.gt_overlap(m, gt[:4])


def test_clearest_example_picks_the_found_defect_and_skips_tiny_ones() -> None:
    rng = np.random.default_rng(1)
    maps = [rng.random((16, 16)) for _ in range(4)]
    masks = [np.zeros((16, 16), bool) for _ in range(4)]
    masks[0][0:4, 0:4] = True  # large, missed by its map (noise)
    masks[1][8:12, 8:12] = True  # large and found
    maps[1][8:12, 8:12] += 2.0
    masks[2][5, 5] = True  # one pixel, found: too small to show
    maps[2][5, 5] += 5.0
    masks[3][3:5, 3:5] = True  # found, smaller than image 1's
    maps[3][3:5, 3:5] += 2.0
    assert viz.clearest_example(maps, masks) == 1  # ties (1.0) go to the larger defect
    assert viz.clearest_example(maps, masks, min_area_fraction=0.0) == 1
    assert viz.clearest_example(maps[2:3], masks[2:3]) == 0  # no defect is large: the found one anyway
    # a mapping of settings averages the overlap: image 3 is found in both, image 1 in one only
    other = [m.copy() for m in maps]
    other[1] = rng.random((16, 16))
    assert viz.clearest_example({"a": maps, "b": other}, masks) == 3
    with pytest.raises(ValueError, match="empty"):
        viz.clearest_example(maps, [np.zeros((16, 16), bool)] * 4)
    with pytest.raises(ValueError, match="masks but maps"):
        viz.clearest_example(maps[:3], masks)
