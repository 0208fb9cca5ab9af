"""Feature extractors: determinism, frozen-ness, weight loading from a file, distance maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from esad_lib import features
from esad_lib.config import get_config
from esad_lib.features import (
    FeatureExtractor,
    available_extractors,
    build_feature_extractor,
)
from esad_lib.method.anomaly_map import feature_distance_map


def _images(b: int = 2, h: int = 32, w: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_random_cnn_is_deterministic_and_seeded() -> None:
    x = _images()
    a = build_feature_extractor("random_cnn")(x)
    b = build_feature_extractor("random_cnn")(x)
    c = build_feature_extractor("random_cnn", seed=1)(x)
    assert [f.shape for f in a] == [(2, 32, 16, 16), (2, 64, 8, 8), (2, 128, 4, 4)]
    for fa, fb, fc in zip(a, b, c):
        assert torch.equal(fa, fb)
        assert not torch.allclose(fa, fc)


def test_extractor_is_frozen_but_passes_gradients_to_its_input() -> None:
    ext = build_feature_extractor("random_cnn")
    assert isinstance(ext, FeatureExtractor)
    assert not any(p.requires_grad for p in ext.parameters())
    parent = nn.Sequential(ext)
    parent.train()
    assert not ext.training and not any(m.training for m in ext.modules())
    x = _images().requires_grad_(True)
    sum(f.sum() for f in ext(x)).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_missing_weights_error_says_how_to_get_them(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    for name in ("resnet18", "wide_resnet50_2", "vgg16"):
        url = getattr(torchvision.models, features.IMAGENET_BACKBONES[name][1]).IMAGENET1K_V1.url
        with pytest.raises(FileNotFoundError) as err:
            build_feature_extractor(name)
        msg = str(err.value)
        assert url in msg
        assert str(tmp_path / "hub" / "checkpoints" / Path(url).name) in msg
        assert "--feature-weights" in msg and "random_cnn" in msg
    with pytest.raises(FileNotFoundError, match="nothere.pth"):
        build_feature_extractor("resnet18", weights=tmp_path / "nothere.pth")
    assert available_extractors()["resnet18"]["available"] is False
    assert available_extractors()["random_cnn"]["available"] is True


def test_resnet18_loads_from_state_dict_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None).eval()
    path = tmp_path / "my_resnet18.pth"
    torch.save(net.state_dict(), path)
    ext = build_feature_extractor("resnet18", weights=path)
    x = _images(1, 64, 64)
    feats = ext(x)
    assert [f.shape for f in feats] == [(1, 64, 16, 16), (1, 128, 8, 8), (1, 256, 4, 4)]
    # the same computation written out: [-1,1] -> ImageNet normalisation -> stem -> layer1..3
    mean = torch.tensor(features.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(features.IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        h = net.maxpool(net.relu(net.bn1(net.conv1(((x + 1) / 2 - mean) / std))))
        l1 = net.layer1(h)
        l2 = net.layer2(l1)
        l3 = net.layer3(l2)
    for got, want in zip(feats, (l1, l2, l3)):
        torch.testing.assert_close(got, want)

    # the same file in the torch hub cache under its official name is found without weights=
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    target = features.hub_weights_path("resnet18")
    target.parent.mkdir(parents=True)
    target.write_bytes(path.read_bytes())
    assert available_extractors()["resnet18"]["available"] is True
    torch.testing.assert_close(build_feature_extractor("resnet18")(x)[2], l3)


def test_wrong_weights_file_gives_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, bad)
    with pytest.raises(RuntimeError, match="do not fit"):
        build_feature_extractor("resnet18", weights=bad)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(RuntimeError, match="could not read"):
        build_feature_extractor("resnet18", weights=junk)


class _Identity(nn.Module):
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x, F.avg_pool2d(x, 2)]


def test_feature_distance_map_values_and_shapes() -> None:
    ext = build_feature_extractor("random_cnn")
    x, y = _images(seed=1), _images(seed=2)
    assert feature_distance_map(ext, x, x, (32, 32)).abs().max().item() == 0.0
    d = feature_distance_map(ext, x, y, (40, 24))
    assert d.shape == (2, 1, 40, 24)
    assert (d >= 0).all() and (d <= 2).all() and d.mean() > 0
    assert feature_distance_map(ext, x, y, (32, 32), layers=[0]).shape == (2, 1, 32, 32)
    # hand case with an identity "extractor": y = -x -> distance 2 everywhere; y = 3x -> 0;
    # zero vectors on both sides -> 0 (not 1 as plain 1 - cos would give)
    ident = _Identity()
    torch.testing.assert_close(feature_distance_map(ident, x, -x, (32, 32)), torch.full((2, 1, 32, 32), 2.0))
    assert feature_distance_map(ident, x, 3 * x, (32, 32)).abs().max() < 1e-6
    z = torch.zeros(1, 3, 8, 8)
    assert feature_distance_map(ident, z, z, (8, 8)).abs().max() == 0
    # a per-position check against a loop: e = [1,0,0], f = [0,1,0] -> 1 - cos = 1
    e = torch.zeros(1, 3, 4, 4)
    e[:, 0] = 1
    f = torch.zeros(1, 3, 4, 4)
    f[:, 1] = 1
    np.testing.assert_allclose(feature_distance_map(ident, e, f, (4, 4), layers=[0]).numpy(), 1.0)


def test_recon_encoder_is_a_frozen_copy_of_the_model() -> None:
    from esad_lib.method import build_model

    cfg = get_config("smoke")
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    ext = build_feature_extractor("recon_encoder", model=model)
    x = _images()
    with torch.no_grad():
        want = model.recon_net.encode(x)
    got = ext(x)
    assert len(got) == 3
    for g, w in zip(got, want[1:4]):
        torch.testing.assert_close(g, w)
    with torch.no_grad():  # later training of the model does not change the extractor
        for p in model.recon_net.parameters():
            p.add_(1.0)
    for g, g2 in zip(got, ext(x)):
        torch.testing.assert_close(g, g2)
    with pytest.raises(ValueError, match="model="):
        build_feature_extractor("recon_encoder")
    with pytest.raises(ValueError, match="unknown feature extractor"):
        build_feature_extractor("alexnet")


