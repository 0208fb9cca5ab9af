"""Our lightweight U-Net against an independent re-statement of the authors' reference network.

The classes below restate the authors' reference code as the project documents it, in the style of the
authors'
code -- ``Block(kernel, in, expand, out)`` with ``conv1/bn1``, ``conv2/bn2``, ``conv3/bn3`` and a
``shortcut`` -- and share no code with ``esad_lib.method``.  The tests check the parameter
count (4,267,203 at width 64), and that one block and one whole U-Net give the same outputs as
this re-statement once its weights are copied into ours, in eval and in train mode.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from esad_lib.method import FeatureExtractionBlock, LightweightUNet


class RefBlock(nn.Module):
    """``Block(kernel_size, in_size, expand_size, out_size)`` as in the reference code."""

    def __init__(self, kernel_size: int, in_size: int, expand_size: int, out_size: int) -> None:
        super().__init__()
        p = kernel_size // 2
        k = kernel_size
        self.conv1 = nn.Conv2d(in_size, expand_size, k, padding=p, groups=in_size, bias=False)
        self.bn1 = nn.BatchNorm2d(expand_size)
        self.conv2 = nn.Conv2d(expand_size, expand_size, k, padding=p, groups=expand_size, bias=False)
        self.bn2 = nn.BatchNorm2d(expand_size)
        self.conv3 = nn.Conv2d(expand_size, out_size, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_size)
        self.shortcut = nn.Sequential()
        if in_size != out_size:
            proj = nn.Conv2d(in_size, out_size, 1, bias=False)
            self.shortcut = nn.Sequential(proj, nn.BatchNorm2d(out_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class RefUNet(nn.Module):
    """Five-level encoder/decoder with ``RefBlock``; widths 64, 128, 256, 512, 512 at w = 64."""

    def __init__(self, w: int = 64) -> None:
        super().__init__()
        c = [w, 2 * w, 4 * w, 8 * w, 8 * w]
        conv = nn.Conv2d(3, c[0], 3, padding=1, bias=False)
        self.inc = nn.Sequential(conv, nn.BatchNorm2d(c[0]), nn.ReLU())
        self.down = nn.ModuleList(RefBlock(3, c[i], 2 * c[i], c[i + 1]) for i in range(4))
        self.upconv = nn.ModuleList(nn.ConvTranspose2d(c[i + 1], c[i], 2, stride=2) for i in (3, 2, 1, 0))
        self.updec = nn.ModuleList(RefBlock(3, 2 * c[i], 2 * c[i], c[i]) for i in (3, 2, 1, 0))
        self.outc = nn.Conv2d(c[0], 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.inc(x)]
        for blk in self.down:
            skips.append(blk(F.max_pool2d(skips[-1], 2)))
        y = skips.pop()
        for up, blk in zip(self.upconv, self.updec):
            y = blk(torch.cat([up(y), skips.pop()], dim=1))
        return torch.tanh(self.outc(y))


def _n(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _copy_block(ref: RefBlock, ours: FeatureExtractionBlock) -> None:
    pairs = [
        (ref.conv1, ours.expand[0]),
        (ref.bn1, ours.expand[1]),
        (ref.conv2, ours.depthwise[0]),
        (ref.bn2, ours.depthwise[1]),
        (ref.conv3, ours.pointwise[0]),
        (ref.bn3, ours.pointwise[1]),
    ]
    if len(ref.shortcut):
        pairs += [(ref.shortcut[0], ours.shortcut[0]), (ref.shortcut[1], ours.shortcut[1])]
    for a, b in pairs:
        b.load_state_dict(a.state_dict(), strict=True)


def _copy_unet(ref: RefUNet, ours: LightweightUNet) -> None:
    ours.enc[0][0].load_state_dict(ref.inc[0].state_dict())
    ours.enc[0][1].load_state_dict(ref.inc[1].state_dict())
    for i, blk in enumerate(ref.down):
        _copy_block(blk, ours.enc[i + 1])
    for j in range(4):
        ours.up[j].load_state_dict(ref.upconv[j].state_dict())
        _copy_block(ref.updec[j], ours.dec[j])
    ours.head.load_state_dict(ref.outc.state_dict())


def _randomise_bn(m: nn.Module, gen: torch.Generator) -> None:
    """Non-trivial BN statistics and affine parameters, so that eval mode tests them too."""
    for bn in m.modules():
        if isinstance(bn, nn.BatchNorm2d):
            n = bn.num_features
            bn.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            bn.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            bn.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            bn.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)


def test_reference_parameter_count_at_width_64() -> None:
    ref = _n(RefUNet(64))
    assert ref == 4_267_203  # the reference net's count
    assert _n(LightweightUNet(base_width=64)) == ref


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize(("c_in", "mid", "c_out"), [(8, 16, 16), (16, 16, 8), (8, 16, 8)])
def test_block_equals_reference(mode: str, c_in: int, mid: int, c_out: int) -> None:
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    ref = RefBlock(3, c_in, mid, c_out)
    _randomise_bn(ref, gen)
    ours = FeatureExtractionBlock(c_in, c_out, kernel_size=3, mid_ch=mid)
    assert _n(ours) == _n(ref)
    _copy_block(ref, ours)
    ref.train(mode == "train")
    ours.train(mode == "train")
    x = torch.randn(3, c_in, 9, 11, generator=gen)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)


def test_block_kernel_sets_both_spatial_convs() -> None:
    blk = FeatureExtractionBlock(4, 8, kernel_size=5)
    assert blk.expand[0].kernel_size == blk.depthwise[0].kernel_size == (5, 5)
    ref = RefBlock(5, 4, 8, 8)
    assert _n(blk) == _n(ref)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_unet_equals_reference(mode: str) -> None:
    gen = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    ref = RefUNet(8)
    _randomise_bn(ref, gen)
    ours = LightweightUNet(base_width=8)
    assert _n(ours) == _n(ref)
    _copy_unet(ref, ours)
    ref.train(mode == "train")
    ours.train(mode == "train")
    x = torch.rand(2, 3, 32, 48, generator=gen) * 2 - 1
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-5)
