"""Scoring: smoothing == scipy, fast path == eager path, image score == max of the smoothed map,
maps at the original resolution."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from esad_lib.config import get_config
from esad_lib.method.anomaly_map import (
    MapStats,
    gaussian_filter,
    image_scores,
    mean_filter,
    smooth_maps,
    upsample_map,
)
from esad_lib.scoring import (
    FAST_PATH_ATOL,
    anomaly_maps,
    raw_maps,
    score_dataset,
)


def _det(model, cfg):
    """The ESAD detector of a trained ``model`` scored with ``cfg`` (the one scoring loop's input)."""
    from esad_lib.detectors import EsadDetector

    return EsadDetector(cfg, model, progress=False)


@pytest.mark.parametrize("size", [1, 3, 4, 7])
def test_mean_filter_equals_scipy_uniform_filter(size):
    x = torch.rand(2, 13, 17, generator=torch.Generator().manual_seed(size), dtype=torch.float64)
    got = mean_filter(x, size).numpy()
    want = np.stack([ndimage.uniform_filter(a, size=size, mode="nearest") for a in x.numpy()])
    # scipy centres even windows one pixel to the other side: compare odd sizes exactly,
    # even sizes up to a one-pixel shift of the window origin
    if size % 2 == 0:
        want = np.stack([ndimage.uniform_filter(a, size=size, mode="nearest", origin=-1) for a in x.numpy()])
    np.testing.assert_allclose(got, want, atol=1e-12)


@pytest.mark.parametrize("sigma", [0.7, 1.0, 2.5])
def test_gaussian_filter_equals_scipy(sigma):
    x = torch.rand(3, 20, 15, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    got = gaussian_filter(x, sigma).numpy()
    want = np.stack(
        [ndimage.gaussian_filter(a, sigma=sigma, mode="nearest", truncate=4.0) for a in x.numpy()]
    )
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_bad_scoring_options_raise_clear_errors():
    cfg = get_config("smoke")
    for field, value in [("score_map", "pixels"), ("smoothing", "median"), ("map_normalization", "z")]:
        with pytest.raises(ValueError, match=field):
            cfg.replace(**{field: value})


def test_upsample_map_to_original_size():
    m = np.arange(12, dtype=np.float32).reshape(3, 4)
    up = upsample_map(m, (30, 50))
    assert up.shape == (30, 50) and up.dtype == np.float32
    # bilinear interpolation never leaves the input's range
    assert up.min() >= m.min() - 1e-6 and up.max() <= m.max() + 1e-6
    same = upsample_map(m, (3, 4))
    np.testing.assert_array_equal(same, m)


def test_map_stats_standardise_validation_maps():
    maps = torch.rand(6, 8, 8, generator=torch.Generator().manual_seed(0)) * 3 + 1
    stats = MapStats.from_maps(maps)
    z = stats.apply(maps)
    np.testing.assert_allclose(z.mean(0).numpy(), 0.0, atol=1e-5)
    with pytest.raises(ValueError, match="at least 2"):
        MapStats.from_maps(maps[:1])


@pytest.fixture(scope="module")
def tiny_model():
    from esad_lib.method import build_model

    torch.manual_seed(0)
    cfg = get_config("smoke")
    model = build_model(cfg).eval()
    return model, cfg


@pytest.mark.parametrize(
    "score_map, smoothing", [("pixel", "mean"), ("feature", "gaussian"), ("feature", "none")]
)
def test_image_score_is_max_of_smoothed_map(tiny_model, score_map, smoothing):
    model, cfg = tiny_model
    cfg = cfg.replace(score_map=score_map, smoothing=smoothing)
    x = torch.rand(3, 3, *cfg.image_size, generator=torch.Generator().manual_seed(2)) * 2 - 1
    maps = anomaly_maps(model, x, cfg)
    assert maps.shape == (3, *cfg.image_size)
    with torch.no_grad():
        want = smooth_maps(raw_maps(model, x, cfg), cfg)
    torch.testing.assert_close(maps, want, atol=1e-5, rtol=1e-5)
    scores = image_scores(maps)
    assert torch.equal(scores, torch.stack([m.max() for m in maps]))


@pytest.mark.parametrize("score_map", ["pixel", "feature"])
def test_fast_path_equals_plain_eager_path(tiny_model, score_map):
    model, cfg = tiny_model
    x = torch.rand(4, 3, *cfg.image_size, generator=torch.Generator().manual_seed(3)) * 2 - 1
    fast = anomaly_maps(model, x, cfg.replace(score_map=score_map, fast_scoring=True))
    eager = anomaly_maps(model, x, cfg.replace(score_map=score_map, fast_scoring=False))
    assert not fast.is_inference()
    # the fast path leaves the caller's model as it was: normal tensors, contiguous format
    for p in model.parameters():
        assert not p.is_inference()
        assert p.is_contiguous()
    np.testing.assert_allclose(fast.numpy(), eager.numpy(), atol=FAST_PATH_ATOL, rtol=0)


def test_score_dataset_shapes_and_original_resolution(tiny_model):
    from esad_lib.data import dataset_root, load_image

    model, cfg = tiny_model
    root = dataset_root(cfg)
    res = score_dataset(_det(model, cfg), cfg, root=root, max_images=2, progress=False)
    assert set(res.label_names) == {"good", "logical", "structural"}
    assert len(res) == 6 == len(res.scores) == len(res.maps) == len(res.channels)
    assert res.ms_per_image > 0
    for i in range(len(res)):
        h0, w0 = load_image(res.paths[i]).shape[:2]
        assert res.orig_sizes[i] == (h0, w0)
        full = res.full_res_map(i)
        assert full.shape == (h0, w0)
        assert res.channels[i].shape[1:] == (h0, w0)
        assert res.maps[i].shape == tuple(cfg.image_size)
        # image score = max of the full-resolution map (MVTec's official definition), exactly;
        # bilinear upsampling never raises the max of the network-size map
        assert res.scores[i] == float(full.max())
        assert res.scores[i] <= float(res.maps[i].max()) + 1e-7
        assert res.gt_mask(i).any() == (res.label_names[i] != "good")
    # fast and eager scoring of the whole split agree
    eager = score_dataset(
        _det(model, cfg.replace(fast_scoring=False)),
        cfg.replace(fast_scoring=False),
        root=root,
        max_images=2,
        progress=False,
    )
    np.testing.assert_allclose(res.scores, eager.scores, atol=FAST_PATH_ATOL)


@pytest.mark.parametrize("split", ["train", "validation"])
def test_normalised_scores_use_the_maps_of_that_splits_good_images(tiny_model, split):
    """``map_normalization=split`` == per-pixel z-score of the plain maps by the mean/std of
    that split's good maps, computed here by hand."""
    from esad_lib.data import dataset_root

    model, cfg = tiny_model
    root = dataset_root(cfg)
    plain_ref = score_dataset(_det(model, cfg), cfg, split=split, labels=["good"], root=root, progress=False)
    ref = np.stack(plain_ref.maps).astype(np.float64)  # [N,H,W]
    mean, std = ref.mean(0), ref.std(0, ddof=1)
    std = np.maximum(std, 0.1 * std.mean() + 1e-12)
    plain = score_dataset(_det(model, cfg), cfg, root=root, max_images=2, keep_channels=False, progress=False)
    got = score_dataset(
        _det(model, cfg.replace(map_normalization=split)),
        cfg.replace(map_normalization=split),
        root=root,
        max_images=2,
        progress=False,
    )
    assert got.label_names == plain.label_names
    for m_plain, m_got in zip(plain.maps, got.maps):
        np.testing.assert_allclose(m_got, (m_plain - mean) / std, rtol=1e-4, atol=1e-4)
    assert got.scores.tolist() == [float(got.full_res_map(i).max()) for i in range(len(got))]


def test_scoring_batch_is_eval_batch_size_not_the_training_batch(tiny_model, monkeypatch):
    import torch.utils.data as tud

    from esad_lib.data import dataset_root

    model, cfg = tiny_model
    seen = []

    class Spy(tud.DataLoader):  # records the batch size scoring asks for
        def __init__(self, *a, **k):
            seen.append(k.get("batch_size"))
            super().__init__(*a, **k)

    monkeypatch.setattr(tud, "DataLoader", Spy)
    root = dataset_root(cfg)
    a = score_dataset(
        _det(model, cfg.replace(batch_size=1, eval_batch_size=3)),
        cfg.replace(batch_size=1, eval_batch_size=3),
        root=root,
        max_images=3,
        progress=False,
    )
    assert seen and set(seen) == {3}
    b = score_dataset(
        _det(model, cfg.replace(eval_batch_size=1)),
        cfg.replace(eval_batch_size=1),
        root=root,
        max_images=3,
        progress=False,
    )
    np.testing.assert_allclose(a.scores, b.scores, atol=FAST_PATH_ATOL)
    # a runtime field: the same trained model and cache key
    assert cfg.replace(eval_batch_size=3).key() == cfg.key()


def test_keep_aspect_sizes_follow_each_category_and_reach_the_maps(tiny_model):
    """``keep_aspect``: long side = max(image_size), short side from the images' aspect ratio,
    both multiples of 16; training and scoring use it (maps at that size)."""
    from esad_lib.data import dataset_root, image_size, input_size, list_samples

    model, cfg = tiny_model
    root = dataset_root(cfg)
    assert input_size(cfg, root) == tuple(cfg.image_size)  # squash (the paper), the default
    for cat in ("pushpins", "juice_bottle", "breakfast_box"):
        c = cfg.replace(category=cat, keep_aspect=True, image_size=(64, 64))
        h, w = input_size(c, root)
        h0, w0 = image_size(list_samples(root, cat, split="train")[0].path)
        assert max(h, w) == 64 and h % 16 == 0 and w % 16 == 0
        assert (h >= w) == (h0 >= w0)
        assert abs(min(h, w) - 64 * min(h0, w0) / max(h0, w0)) <= 8  # nearest multiple of 16
    c = cfg.replace(keep_aspect=True, image_size=(48, 48))
    res = score_dataset(_det(model, c), c, root=root, max_images=1, progress=False)
    assert {m.shape for m in res.maps} == {input_size(c, root)}


@pytest.mark.parametrize(
    ("field", "value", "base"),
    [
        ("fill_alpha", 0.2, {}),
        ("test_fill", "zero", {}),
        ("score_map", "pixel", {}),
        ("feature_extractor", "recon_encoder", {}),
        ("smoothing", "none", {}),
        ("smoothing_sigma", 2.5, {}),
        ("smoothing_size", 3, {"smoothing": "mean"}),
        ("map_normalization", "train", {}),
    ],
)
def test_each_test_time_field_of_the_config_changes_the_scores(tiny_model, field, value, base):
    """Scoring reads every test-time choice from the config it is given (the model holds only
    its networks), so changing one field changes the maps -- e.g. fill_alpha=0.2 is used."""
    from esad_lib.config import TEST_TIME_FIELDS
    from esad_lib.data import dataset_root

    assert field in TEST_TIME_FIELDS
    model, cfg = tiny_model
    cfg = cfg.replace(**base)
    assert getattr(cfg, field) != value
    root = dataset_root(cfg)
    a = score_dataset(_det(model, cfg), cfg, root=root, max_images=2, progress=False, keep_channels=False)
    b = score_dataset(
        _det(model, cfg.replace(**{field: value})),
        cfg.replace(**{field: value}),
        root=root,
        max_images=2,
        progress=False,
        keep_channels=False,
    )
    assert a.paths == b.paths
    assert any(not np.allclose(x, y) for x, y in zip(a.maps, b.maps)), f"{field}={value!r} was ignored"
