"""U-Nets: the paper's lightweight U-Net and the classic double-conv U-Net of the RIAD baseline
(the authors' README "2. Proposed Method").

Layout shared by both (widths ``w = base_width * (1, 2, 4, 8, 8)``; reference ``64 -> 64, 128,
256, 512, 512``)::

    encoder  level 1: 3x3 conv -> BN -> ReLU (classic: double conv)            [B, w1, H, W]
             level i=2..5: 2x2 max-pool -> block(w_{i-1} -> w_i)               [B, wi, H/2^(i-1), W/2^(i-1)]
    decoder  level i=4..1: 2x2 transposed conv (w_{i+1} -> w_i), concat with encoder level i
             (2 w_i channels) -> block(2 w_i -> w_i)
    head     3x3 conv (w1 -> 3) -> tanh                                        [B, 3, H, W]

Block = ``FeatureExtractionBlock`` (lightweight; the decoder's is the authors' ``Block(k, 2 w_i,
2 w_i, w_i)``, no expansion), one 3x3 ``ConvBNReLU`` (``block="std"``, the ablation) or
``DoubleConv`` (``ClassicUNet``).  At width 64 the lightweight U-Net has 4,267,203 parameters,
the reference's figure (``tests/test_models_reference.py``).

Deviations (ours; the paper is silent): any input size -- sides are padded bottom/right to a
multiple of 16 (*replicate*: reflect fails when the pad exceeds the side) and the output is
cropped back; the classic U-Net ends in the lightweight one's 3x3 conv + tanh head (RIAD's: a
1x1 conv, 1.7 k parameters less), so the two differ only in their levels."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from esad_lib.method.blocks import ConvBNReLU, DoubleConv, FeatureExtractionBlock

#: the names ``ESADConfig.unet`` accepts.
UNET_KINDS = ("lightweight", "lightweight_std", "classic")


def unet_widths(base_width: int) -> tuple[int, int, int, int, int]:
    """Channel widths of the five levels: ``base_width * (1, 2, 4, 8, 8)``."""
    if base_width < 1:
        raise ValueError(f"base_width must be >= 1, got {base_width}")
    w = base_width
    return (w, 2 * w, 4 * w, 8 * w, 8 * w)


class UNetBase(nn.Module):
    """The U-Nets' forward: padding, five encoder and four decoder levels, head.  Subclasses fill
    ``self.enc`` (5 blocks) and ``self.dec`` (4 blocks, deepest first)."""

    def __init__(self, in_ch: int, out_ch: int, base_width: int) -> None:
        super().__init__()
        self.in_ch, self.out_ch = in_ch, out_ch
        self.widths = unet_widths(base_width)
        self.pool = nn.MaxPool2d(2)
        w = self.widths
        # up[j] maps decoder level 5-j -> level 4-j: 2x2 transposed conv, stride 2
        self.up = nn.ModuleList(nn.ConvTranspose2d(w[4 - j], w[3 - j], 2, stride=2) for j in range(4))
        self.head = nn.Conv2d(w[0], out_ch, 3, padding=1)

    def encoder_level(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Encoder level ``i+1``: level 1 maps the input ``[B, C_in, H, W] -> [B, w_1, H, W]``, level
        i+1 > 1 the 2x2 max-pool of level i: ``[B, w_i, h, w] -> [B, w_{i+1}, h/2, w/2]``."""
        return self.enc[i](self.pool(x) if i else x)

    def decoder_level(self, j: int, y: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """Decoder level ``4-j``: up-sample ``y``, concatenate the encoder feature ``skip`` of the
        same level (its width ``w``), block: ``-> [B, w, H_skip, W_skip]``."""
        return self.dec[j](torch.cat([self.up[j](y), skip], dim=1))

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_ch:  # the input checked, then padded
            raise ValueError(f"expected input [B, {self.in_ch}, H, W], got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        # pad bottom/right to a multiple of 16 (four 2x2 poolings), replicating the border pixels
        ph, pw = (-h) % 16, (-w) % 16
        return F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five encoder features of ``x [B, C_in, H, W]``: ``[B, w_i, H'/2^(i-1), W'/2^(i-1)]``,
        ``H', W'`` = ``H, W`` rounded up to a multiple of 16 (features of the padded input)."""
        feats = [self.encoder_level(0, self._pad(x))]
        for i in range(1, 5):
            feats.append(self.encoder_level(i, feats[-1]))
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, C_in, H, W]`` (any H, W >= 1) -> ``[B, C_out, H, W]`` in (-1, 1)."""
        feats = self.encode(x)
        y = feats[4]
        for j in range(4):
            y = self.decoder_level(j, y, feats[3 - j])
        # out = tanh(conv3x3(y)), cropped back to the input size
        return torch.tanh(self.head(y))[..., : x.shape[-2], : x.shape[-1]]


class LightweightUNet(UNetBase):
    """The paper's lightweight U-Net.  ``[B, in_ch, H, W] -> [B, out_ch, H, W]``.

    ``base_width``: level-1 width (reference 64); ``block``: ``"feb"`` (feature extraction
    blocks, the paper) or ``"std"`` (one 3x3 conv-BN-ReLU per level, the ablation);
    ``kernel_size``, ``expansion``, ``use_eca``: of the encoder's ``FeatureExtractionBlock``s."""

    def __init__(
        self, in_ch: int = 3, out_ch: int = 3, base_width: int = 64, block: str = "feb", kernel_size: int = 3,
        expansion: int = 2, use_eca: bool = False,
    ) -> None:
        super().__init__(in_ch, out_ch, base_width)
        if block not in ("feb", "std"):
            raise ValueError(f"block must be 'feb' or 'std', got {block!r}")
        self.block_kind, w = block, self.widths

        def make(i: int, o: int, decoder: bool) -> nn.Module:
            if block == "std":
                return ConvBNReLU(i, o, 3)
            # encoder: Block(k, i, e*i, o); decoder: Block(k, 2o, 2o, o) -- mid = in
            mid = i if decoder else None
            return FeatureExtractionBlock(i, o, kernel_size, expansion, use_eca, mid_ch=mid)

        self.enc = nn.ModuleList([ConvBNReLU(in_ch, w[0], 3)] + [make(a, b, False) for a, b in zip(w, w[1:])])
        self.dec = nn.ModuleList(make(2 * w[i], w[i], True) for i in (3, 2, 1, 0))


class ClassicUNet(UNetBase):
    """Classic double-conv U-Net of the same widths (RIAD-style baseline, ~20.6 M at width 64).
    ``[B, in_ch, H, W] -> [B, out_ch, H, W]``."""

    def __init__(self, in_ch: int = 3, out_ch: int = 3, base_width: int = 64) -> None:
        super().__init__(in_ch, out_ch, base_width)
        self.block_kind, w = "double_conv", self.widths
        self.enc = nn.ModuleList([DoubleConv(in_ch, w[0])] + [DoubleConv(a, b) for a, b in zip(w, w[1:])])
        self.dec = nn.ModuleList(DoubleConv(2 * w[i], w[i]) for i in (3, 2, 1, 0))


def build_unet(
    kind: str = "lightweight", base_width: int = 64, kernel_size: int = 3, expansion: int = 2,
    use_eca: bool = False, in_ch: int = 3, out_ch: int = 3,
) -> UNetBase:
    """A U-Net by ``ESADConfig.unet`` name: ``lightweight`` | ``lightweight_std`` | ``classic``."""
    if kind == "lightweight":
        return LightweightUNet(in_ch, out_ch, base_width, "feb", kernel_size, expansion, use_eca)
    if kind == "lightweight_std":
        return LightweightUNet(in_ch, out_ch, base_width, "std")
    if kind == "classic":
        return ClassicUNet(in_ch, out_ch, base_width)
    raise ValueError(f"unknown unet {kind!r}; choose one of {', '.join(UNET_KINDS)}")
