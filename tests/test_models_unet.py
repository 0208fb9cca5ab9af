"""Feature extraction block and U-Nets: shapes, any input size, parameter counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from esad_lib.method import (
    ECA,
    ClassicUNet,
    FeatureExtractionBlock,
    LightweightUNet,
    build_unet,
)
from esad_lib.perf.counting import count_parameters


def _n(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_block_structure_and_parameter_count_by_hand() -> None:
    c_in, c_out, k, e = 8, 16, 3, 2
    blk = FeatureExtractionBlock(c_in, c_out, kernel_size=k, expansion=e)
    g = blk.expand[0]
    assert (g.in_channels, g.out_channels, g.groups, g.kernel_size) == (c_in, e * c_in, c_in, (k, k))
    d = blk.depthwise[0]
    assert (d.in_channels, d.out_channels, d.groups, d.kernel_size) == (e * c_in, e * c_in, e * c_in, (k, k))
    p = blk.pointwise[0]
    assert (p.in_channels, p.out_channels, p.groups, p.kernel_size) == (e * c_in, c_out, 1, (1, 1))
    mid = e * c_in
    group_conv = mid * k * k + 2 * mid  # one input channel per group, + BN
    depthwise = mid * k * k + 2 * mid  # + BN
    pointwise = mid * c_out + 2 * c_out  # 1x1, + BN
    projection = c_in * c_out + 2 * c_out  # residual 1x1, + BN
    expected = group_conv + depthwise + pointwise + projection
    assert _n(blk) == expected
    # identity residual when C_in == C_out
    assert isinstance(FeatureExtractionBlock(8, 8).shortcut, nn.Identity)


def test_block_shapes_eca_and_kernel_param() -> None:
    x = torch.randn(2, 6, 9, 11)
    for kwargs in ({}, {"use_eca": True}, {"kernel_size": 5, "expansion": 3}):
        y = FeatureExtractionBlock(6, 10, **kwargs)(x)
        assert y.shape == (2, 10, 9, 11)
        assert (y >= 0).all()  # ReLU after the sum
    assert isinstance(FeatureExtractionBlock(6, 6, use_eca=True).attention, ECA)
    with pytest.raises(ValueError, match="odd"):
        FeatureExtractionBlock(4, 4, kernel_size=2)


def test_decoder_block_mid_equals_input_is_depthwise() -> None:
    blk = FeatureExtractionBlock(8, 4, mid_ch=8)
    g = blk.expand[0]
    assert (g.in_channels, g.out_channels, g.groups) == (8, 8, 8)
    assert blk(torch.randn(1, 8, 5, 5)).shape == (1, 4, 5, 5)
    with pytest.raises(ValueError, match="multiple"):
        FeatureExtractionBlock(8, 4, mid_ch=12)


@pytest.mark.parametrize("kind", ["lightweight", "lightweight_std", "classic"])
@pytest.mark.parametrize("size", [(32, 32), (24, 40), (17, 29), (1, 1), (33, 16)])
def test_unet_any_input_size(kind: str, size: tuple[int, int]) -> None:
    net = build_unet(kind, base_width=4).eval()
    x = torch.rand(2, 3, *size) * 2 - 1
    with torch.no_grad():
        y = net(x)
    assert y.shape == (2, 3, *size)
    assert y.abs().max() <= 1.0  # tanh
    feats = net.encode(x)
    assert len(feats) == 5
    hp, wp = (-(-size[0] // 16) * 16, -(-size[1] // 16) * 16)
    for i, (f, width) in enumerate(zip(feats, net.widths)):
        assert f.shape == (2, width, hp >> i, wp >> i)


def test_unet_pads_by_replication_and_crops_back() -> None:
    """Output for a 20x20 input == output for its replicate-padded 32x32 version, cropped."""
    net = LightweightUNet(base_width=4).eval()
    x = torch.rand(1, 3, 20, 20)
    xp = torch.nn.functional.pad(x, (0, 12, 0, 12), mode="replicate")
    with torch.no_grad():
        torch.testing.assert_close(net(x), net(xp)[..., :20, :20])


def test_unet_rejects_wrong_channels() -> None:
    with pytest.raises(ValueError, match="expected input"):
        LightweightUNet(base_width=4)(torch.zeros(1, 1, 16, 16))


def test_parameter_counts_at_width_64_match_reference() -> None:
    light = count_parameters(LightweightUNet(base_width=64))
    classic = count_parameters(ClassicUNet(base_width=64))
    assert abs(light - 4.3e6) / 4.3e6 < 0.05, light
    assert abs(classic - 20.6e6) / 20.6e6 < 0.05, classic
    assert light == 4_267_203 and classic == 20_551_491  # exact figures quoted in the docs


def test_widths_follow_base_width() -> None:
    net = build_unet("lightweight", base_width=16)
    assert net.widths == (16, 32, 64, 128, 128)
    with pytest.raises(ValueError, match="unknown unet"):
        build_unet("resnet")


def test_expand_conv_training_path_equals_the_grouped_conv() -> None:
    """The depthwise-over-repeated-input path used for CPU training == the grouped conv."""
    from esad_lib.method.blocks import ExpandConv2d

    torch.manual_seed(0)
    conv = ExpandConv2d(6, 12, 3, padding=1, groups=6, bias=False)
    x = torch.randn(2, 6, 9, 7, requires_grad=True)
    with torch.no_grad():
        ref = torch.nn.functional.conv2d(x, conv.weight, None, 1, 1, 1, 6)
    y = conv(x)  # grad enabled: the repeat_interleave path
    assert torch.allclose(y, ref, atol=1e-6)
    y.square().sum().backward()
    gx, gw = x.grad.clone(), conv.weight.grad.clone()
    x.grad = None
    conv.weight.grad = None
    torch.nn.functional.conv2d(x, conv.weight, None, 1, 1, 1, 6).square().sum().backward()
    assert torch.allclose(gx, x.grad, atol=1e-5) and torch.allclose(gw, conv.weight.grad, atol=1e-4)
