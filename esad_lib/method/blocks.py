"""Building blocks of the lightweight U-Net (the authors' README "2. Proposed Method" and its
figure "structural diagram of the feature extraction block").

``FeatureExtractionBlock`` (the paper's *feature extraction module*), as the authors' reference
code ``Block(kernel, in, expand, out)`` builds it, with ``M`` = ``expand``::

    x [B, C_in, H, W]
      -> group conv k x k, C_in -> M, groups = C_in       -> BN -> ReLU     (expand)
      -> depthwise k x k, groups = M                      -> BN -> ReLU     (spatial mixing)
      -> [ECA channel attention]                                            (optional, off)
      -> 1x1 standard conv, M -> C_out                    -> BN             (channel mixing)
      (+) residual: x itself if C_in == C_out, else 1x1 conv + BN projection of x
      -> ReLU                                                               -> [B, C_out, H, W]

The encoder uses ``M = e * C_in`` (reference e = 2), the decoder ``M = C_in`` (its first conv
is then depthwise).  Also here: ``ECA`` (Wang et al. 2020), ``ConvBNReLU`` (level 1, and the
``block="std"`` ablation) and ``DoubleConv`` (the classic U-Net level of the RIAD baseline).
Convolutions followed by BatchNorm have no bias (BN's shift makes it redundant)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class ExpandConv2d(nn.Conv2d):
    """The block's expanding group conv, ``nn.Conv2d(C_in, e*C_in, k, groups=C_in)``: ``[B, C_in, H, W]
    -> [B, e*C_in, H, W]``.  Deviation (ours, same function): with gradients on the CPU it runs
    as a depthwise conv of the input with each channel repeated ``e`` times (output ``j`` reads
    input ``j // e`` in both forms): PyTorch's CPU backward of a grouped conv with several
    outputs per group is several times slower at the paper's width (``benchmarks/``).  Every
    trained model was trained in this form; inference uses the plain grouped conv."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.out_channels // self.in_channels
        if e > 1 and self.groups == self.in_channels and x.device.type == "cpu" and torch.is_grad_enabled():
            # y_j = w_j * x_{j // e}  ==  depthwise conv of repeat_interleave(x, e)
            xr, w = x.repeat_interleave(e, dim=1), self.weight
            return F.conv2d(xr, w, self.bias, self.stride, self.padding, self.dilation, e * self.groups)
        return super().forward(x)


class ECA(nn.Module):
    """Efficient channel attention: ``x [B, C, H, W] -> x * sigmoid(conv1d_k(avgpool(x)))``, with
    ``k = nearest odd |(log2(C) + b) / gamma|`` (gamma=2, b=1) of the ECA paper."""

    def __init__(self, channels: int, gamma: int = 2, b: int = 1) -> None:
        super().__init__()
        t = int(abs((math.log2(channels) + b) / gamma))
        self.kernel_size = k = t if t % 2 else t + 1
        self.conv = nn.Conv1d(1, 1, k, padding=k // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # y_c = mean_{h,w} x_c                                   -> [B, 1, C]
        y = x.mean(dim=(2, 3)).unsqueeze(1)
        # gate = sigmoid(conv1d(y))                              -> [B, C, 1, 1]
        gate = torch.sigmoid(self.conv(y)).transpose(1, 2).unsqueeze(-1)
        return x * gate


class ConvBNReLU(nn.Sequential):
    """``k x k`` conv (same padding, no bias) -> BN -> ReLU.  ``[B, C_in, H, W] -> [B, C_out, H, W]``."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3) -> None:
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )


class DoubleConv(nn.Sequential):
    """Classic U-Net level: (3x3 conv -> BN -> ReLU) twice.  ``[B, C_in, H, W] -> [B, C_out, H, W]``."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__(ConvBNReLU(in_ch, out_ch, 3), ConvBNReLU(out_ch, out_ch, 3))


class FeatureExtractionBlock(nn.Module):
    """The paper's feature extraction block.  ``[B, C_in, H, W] -> [B, C_out, H, W]``.

    ``kernel_size``: ``k`` of both spatial convs (reference 3); ``expansion``: ``e``, the group
    conv maps ``C_in -> e * C_in`` (reference 2); ``use_eca``: ECA after the depthwise conv
    (reference: off); ``mid_ch``: ``M`` instead of ``e * C_in`` (a multiple of ``C_in``)."""

    def __init__(
        self, in_ch: int, out_ch: int, kernel_size: int = 3, expansion: int = 2, use_eca=False, mid_ch=None
    ) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and >= 1, got {kernel_size}")
        if expansion < 1:
            raise ValueError(f"expansion must be >= 1, got {expansion}")
        mid = expansion * in_ch if mid_ch is None else int(mid_ch)
        if mid < in_ch or mid % in_ch:
            raise ValueError(f"mid_ch must be a multiple of in_ch={in_ch}, got {mid}")
        pad = kernel_size // 2
        self.in_ch, self.out_ch, self.mid_ch = in_ch, out_ch, mid
        # expand: each input channel feeds its own group of e output channels (groups = C_in)
        self.expand = nn.Sequential(
            ExpandConv2d(in_ch, mid, kernel_size, padding=pad, groups=in_ch, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
        )
        # spatial mixing per channel (groups = channels), same kernel as the group conv
        self.depthwise = nn.Sequential(
            nn.Conv2d(mid, mid, kernel_size, padding=pad, groups=mid, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
        )
        self.attention: nn.Module = ECA(mid) if use_eca else nn.Identity()
        # channel mixing: the only dense (all-to-all) conv of the block, 1x1
        self.pointwise = nn.Sequential(nn.Conv2d(mid, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch))
        self.shortcut: nn.Module = nn.Identity()
        if in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, C_in, H, W]`` -> ``[B, C_out, H, W]``."""
        y = self.pointwise(self.attention(self.depthwise(self.expand(x))))
        # out = ReLU(F(x) + shortcut(x)); the sum is formed in F(x)'s buffer (a BatchNorm output,
        # which BatchNorm's backward does not need), saving one full-size tensor per block
        return self.act(y.add_(self.shortcut(x)))
