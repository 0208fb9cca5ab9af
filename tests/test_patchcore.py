"""PatchCore reference detector: features, coreset, nearest neighbours, protocol (smoke data)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from esad_lib.config import PatchCoreConfig, get_config
from esad_lib.data import LOCODataset, dataset_root, load_defects_config
from esad_lib.evaluation import RUN_KEYS, evaluate, load_metrics, metrics_from_result
from esad_lib.features import build_feature_extractor
from esad_lib.patchcore import (
    PatchCore,
    greedy_coreset_indices,
    jl_projection,
    local_aggregate,
    nearest_neighbour_distances,
    patch_features,
    reduce_channels,
)
from esad_lib.scoring import fit_detector, score_dataset


@pytest.fixture(scope="module")
def smoke_data(session_data_root):
    """The smoke profile's synthetic benchmark (pushpins) and its train/good images."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ESAD_PROFILE", "smoke")
        mp.setenv("ESAD_DATA_ROOT", str(session_data_root))
        cfg = get_config("smoke", category="pushpins", device="cpu")
        root = dataset_root(cfg)
    ds = LOCODataset(root, cfg.category, "train", image_size=cfg.image_size, labels=["good"])
    train = torch.stack([ds[i]["image"] for i in range(len(ds))])
    return cfg, root, train


@pytest.fixture(scope="module")
def extractor():
    return build_feature_extractor("random_cnn")


# ---- patch features -----------------------------------------------------------------------
def test_local_aggregate_is_the_mean_of_existing_neighbours():
    x = torch.randn(2, 3, 6, 5)
    y = local_aggregate(x, 3)
    assert y.shape == x.shape
    assert torch.allclose(y[:, :, 2, 3], x[:, :, 1:4, 2:5].mean((-2, -1)), atol=1e-6)  # interior: 3x3
    assert torch.allclose(y[:, :, 0, 0], x[:, :, 0:2, 0:2].mean((-2, -1)), atol=1e-6)  # corner: 2x2
    assert torch.equal(local_aggregate(x, 1), x)


def test_reduce_channels_averages_consecutive_channels():
    f = torch.randn(10, 12)
    r = reduce_channels(f, 4)
    assert torch.allclose(r, f.view(10, 4, 3).mean(-1), atol=1e-6)
    assert torch.equal(reduce_channels(f, None), f) and torch.equal(reduce_channels(f, 12), f)


def test_patch_features_shapes_and_layout(extractor):
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    maps = extractor(x)  # random_cnn: 32, 64, 128 channels at 1/2, 1/4, 1/8
    f = patch_features(maps, (1, 2))
    assert f.shape == (2, 8, 8, 64 + 128)
    # first channels: the aggregated shallower tap itself; the rest: the deeper tap upsampled
    assert torch.equal(f[..., :64], local_aggregate(maps[1]).permute(0, 2, 3, 1))
    up = F.interpolate(local_aggregate(maps[2]), size=(8, 8), mode="bilinear", align_corners=False)
    assert torch.equal(f[..., 64:], up.permute(0, 2, 3, 1))
    assert patch_features(maps, (0, 2)).shape == (2, 16, 16, 32 + 128)
    assert patch_features(maps, (1, 2), target_dim=48).shape == (2, 8, 8, 48)
    with pytest.raises(ValueError, match="layers"):
        patch_features(maps, (1, 3))


# ---- nearest neighbours ---------------------------------------------------------------------
def test_nearest_neighbour_equals_brute_force_numpy():
    g = torch.Generator().manual_seed(0)
    q, bank = torch.randn(300, 20, generator=g), torch.randn(500, 20, generator=g)
    d, idx = nearest_neighbour_distances(q, bank, chunk_size=64, bank_chunk_size=100)
    full = np.sqrt(((q.numpy()[:, None, :].astype(np.float64) - bank.numpy()[None]) ** 2).sum(-1))
    assert np.array_equal(idx.numpy(), full.argmin(1))
    np.testing.assert_allclose(d.numpy(), full.min(1), rtol=1e-6)


def test_chunked_equals_unchunked_exactly():
    g = torch.Generator().manual_seed(1)
    q, bank = torch.randn(257, 33, generator=g), torch.randn(401, 33, generator=g)
    d1, i1 = nearest_neighbour_distances(q, bank, chunk_size=len(q), bank_chunk_size=len(bank))
    for cs, bcs in ((1, 1), (7, 13), (64, 400)):
        d2, i2 = nearest_neighbour_distances(q, bank, chunk_size=cs, bank_chunk_size=bcs)
        assert torch.equal(i1, i2) and torch.equal(d1, d2), (cs, bcs)


def test_query_in_the_bank_has_distance_exactly_zero():
    g = torch.Generator().manual_seed(2)
    bank = torch.randn(200, 16, generator=g) * 10 + 50  # large norms: the mm form alone would not give 0
    d, idx = nearest_neighbour_distances(bank[50:90], bank, chunk_size=16, bank_chunk_size=64)
    assert torch.equal(d, torch.zeros(40)) and torch.equal(idx, torch.arange(50, 90))
    with pytest.raises(ValueError, match="one D"):
        nearest_neighbour_distances(torch.zeros(3, 4), bank)


# ---- coreset ----------------------------------------------------------------------------------
def _kcenter_brute_force(x: np.ndarray, n: int, first: int) -> list[int]:
    """Textbook greedy k-center: full distance matrix, argmax over unselected of min distance."""
    dmat = np.sqrt(((x[:, None, :] - x[None]) ** 2).sum(-1))
    chosen = [first]
    for _ in range(n - 1):
        mind = dmat[:, chosen].min(1)
        mind[chosen] = -1.0
        chosen.append(int(mind.argmax()))
    return chosen


def test_greedy_coreset_equals_brute_force_k_center():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(120, 6, generator=g)
    got = greedy_coreset_indices(x, 25, projection_dim=None, first_index=7)
    assert got.tolist() == _kcenter_brute_force(x.double().numpy(), 25, 7)
    assert len(set(got.tolist())) == 25
    # with the JL projection: k-center on the projected features
    x = torch.randn(150, 40, generator=g)
    got = greedy_coreset_indices(x, 20, projection_dim=8, seed=5, first_index=0)
    proj = (x @ jl_projection(40, 8, seed=5)).double().numpy()
    assert got.tolist() == _kcenter_brute_force(proj, 20, 0)


def test_greedy_coreset_is_deterministic_per_seed():
    x = torch.randn(200, 30, generator=torch.Generator().manual_seed(4))
    a = greedy_coreset_indices(x, 15, projection_dim=10, seed=0)
    assert torch.equal(a, greedy_coreset_indices(x, 15, projection_dim=10, seed=0))
    assert not torch.equal(a, greedy_coreset_indices(x, 15, projection_dim=10, seed=1))
    assert jl_projection(30, 40, seed=0) is None  # no reduction -> no projection
    with pytest.raises(ValueError, match="n_select"):
        greedy_coreset_indices(x, 0)


# ---- the detector on the smoke data ---------------------------------------------------------
def test_fit_bank_size_and_determinism(smoke_data, extractor):
    _, _, train = smoke_data
    full = PatchCore(extractor, layers=(1, 2), coreset_ratio=1.0).fit(train)
    n_patches = len(train) * 8 * 8  # 32x32 images, grid of the 1/4 tap
    assert full.memory_bank.shape == (n_patches, 192) and full.full_bank_size == n_patches
    a = PatchCore(extractor, layers=(1, 2), coreset_ratio=0.25, seed=3).fit(train)
    b = PatchCore(extractor, layers=(1, 2), coreset_ratio=0.25, seed=3, batch_size=3).fit(train.split(3))
    assert a.memory_bank.shape == (int(n_patches * 0.25), 192)
    assert torch.equal(a.memory_bank, b.memory_bank)
    # the coreset is a subset of the full bank's rows
    d, _ = nearest_neighbour_distances(a.memory_bank, full.memory_bank)
    assert float(d.max()) == 0.0


def test_map_of_a_training_image_is_zero(smoke_data, extractor):
    _, _, train = smoke_data
    pc = PatchCore(extractor, layers=(1, 2), coreset_ratio=1.0, batch_size=len(train)).fit(train)
    d = pc.patch_distances(train)  # its own patches are in the bank
    assert d.shape == (len(train), 8, 8) and float(d.abs().max()) == 0.0
    maps = pc.anomaly_maps(train)
    assert maps.shape == (len(train), 32, 32) and float(maps.abs().max()) < 1e-6
    # a new (mirrored) image is not in the bank
    other = torch.flip(train[:2], dims=(-1,))
    assert float(pc.patch_distances(other).max()) > 0.0


def test_unfitted_and_bad_parameters_are_clear_errors(extractor):
    with pytest.raises(RuntimeError, match="fit"):
        PatchCore(extractor).patch_distances(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="coreset_ratio"):
        PatchCore(extractor, coreset_ratio=0.0)
    with pytest.raises(ValueError, match="patch_size"):
        PatchCore(extractor, patch_size=2)
    with pytest.raises(ValueError, match="layers"):
        PatchCore(extractor, layers=(5,)).fit(torch.zeros(1, 3, 32, 32))


def _fitted(cfg, root, **settings):
    pc = PatchCore.from_config(cfg, PatchCoreConfig(extractor="random_cnn", coreset_ratio=0.5), **settings)
    return fit_detector(pc, cfg, root)


def test_patchcore_through_the_one_scoring_loop_scores_are_max_of_full_res_map(smoke_data):
    cfg, root, _ = smoke_data
    res = score_dataset(_fitted(cfg, root), cfg, root=root, progress=False)
    assert len(res) == len(res.maps) == len(res.scores) == len(res.channels)
    assert set(res.label_names) == {"good", "logical", "structural"}
    assert all(m.shape == tuple(cfg.image_size) and m.dtype == np.float32 for m in res.maps)
    want = [float(res.full_res_map(i).max()) for i in range(len(res))]
    assert np.array_equal(res.scores, np.asarray(want))
    assert res.ms_per_image > 0
    again = score_dataset(_fitted(cfg, root), cfg, root=root, progress=False)
    assert np.array_equal(res.scores, again.scores)  # deterministic
    m = metrics_from_result(res, load_defects_config(root / cfg.category))
    assert 0.0 <= m["image_auroc"]["structural"] <= 1.0 and 0.0 <= m["au_spro"]["mean"] <= 1.0
    with pytest.raises(ValueError, match="recon_encoder"):
        PatchCore.from_config(cfg, extractor="recon_encoder")
    with pytest.raises(ValueError, match="fitted at"):
        _fitted(cfg, root).anomaly_maps(torch.zeros(1, 3, 48, 48))


def test_patchcore_config_is_validated_and_keyed() -> None:
    with pytest.raises(ValueError, match="PatchCoreConfig.coreset_ratio"):
        PatchCoreConfig(coreset_ratio=0.0)
    with pytest.raises(ValueError, match="PatchCoreConfig.patch_size"):
        PatchCoreConfig(patch_size=2)
    cfg = get_config("smoke")
    base = PatchCoreConfig()
    assert base.key(cfg) == PatchCoreConfig().key(cfg) != base.replace(layers=(1, 2)).key(cfg)
    assert base.key(cfg) != base.key(cfg.replace(category="juice_bottle"))


def test_evaluate_patchcore_writes_loadable_metrics(smoke_data, tmp_path):
    cfg, root, _ = smoke_data
    out = tmp_path / "patchcore_run"
    metrics, _ = evaluate(_fitted(cfg, root), cfg, out_dir=out, root=root, progress=False)
    on_disk = load_metrics(out)
    assert on_disk == json.loads(json.dumps(metrics))
    assert on_disk["method"] == "patchcore" and on_disk["feature_extractor"] == "random_cnn"
    assert on_disk["config_key"] == PatchCoreConfig(extractor="random_cnn", coreset_ratio=0.5).key(cfg)
    assert on_disk["category"] == "pushpins" and set(RUN_KEYS) <= set(on_disk)  # the one schema
    t = on_disk["timing"]
    assert t["fit_seconds"] > 0 and t["scoring_ms_per_image"] > 0 and t["train_seconds"] is None
    assert on_disk["patchcore"]["bank_size"] == on_disk["patchcore"]["full_bank_size"] // 2
    for key in ("structural", "logical", "mean"):
        assert 0.0 <= on_disk["image_auroc"][key] <= 1.0
    assert 0.0 <= on_disk["pixel_auroc"] <= 1.0 and 0.0 <= on_disk["au_pro"] <= 1.0
    rows = list(csv.DictReader((out / "scores.csv").open()))
    assert len(rows) == sum(on_disk["counts"].values())
    s = np.array([float(r["score"]) for r in rows])
    keep = [i for i, r in enumerate(rows) if r["label"] in ("good", "structural")]
    want = roc_auc_score([rows[i]["label"] == "structural" for i in keep], s[keep])
    assert on_disk["image_auroc"]["structural"] == pytest.approx(want)
