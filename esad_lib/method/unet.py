"""U-Nets: the paper's lightweight U-Net and the classic double-conv U-Net (the authors' README "2.
Proposed Method";
RIAD's U-Net for the baseline).

Layout shared by both (widths ``w = base_width * (1, 2, 4, 8, 8)``, reference ``64 -> 64, 128,
256, 512, 512``)::

    encoder  level 1: 3x3 conv -> BN -> ReLU            (classic: double conv)   [B, w1, H,    W]
             level i=2..5: 2x2 max-pool -> block(w_{i-1} -> w_i)                 [B, wi, H/2^(i-1), ...]
    decoder  level i=4..1: 2x2 transposed conv (w_{i+1}' -> w_i), concat with encoder level i
             (2 w_i channels) -> block(2 w_i -> w_i)
    head     3x3 conv (w1 -> 3) -> tanh                                          [B, 3, H, W]

Block = ``FeatureExtractionBlock`` (lightweight), a single 3x3 ``ConvBNReLU`` (``block="std"``,
the ablation "same net, standard convolutions"), or ``DoubleConv`` (``ClassicUNet``).

The decoder block is the authors' ``Block(k, 2 w_i, 2 w_i, w_i)`` (their reference code):
its group conv maps ``2 w_i -> 2 w_i`` with ``groups = 2 w_i`` (depthwise: no expansion), then
a depthwise k x k, a 1x1 ``2 w_i -> w_i``, and a 1x1 conv + BN projection of the concatenation
as its residual.  At width 64 the lightweight U-Net then has exactly 4,267,203 parameters, the
reference's figure (``tests/test_models_reference.py`` re-states the reference independently
and checks the count and the outputs).

Project choices (the paper is silent; stated here and in notebook 02):

* Any input size.  Inputs whose sides are not multiples of 16 are padded on the bottom/right
  with *replicate* padding (reflect fails when the pad exceeds the side) to the next multiple
  of 16 and the output is cropped back, so LOCO's non-square aspect ratios survive.
* Activation checkpointing in training (``set_checkpointing``, ``cfg.checkpointing``): per
  block, per level or for the whole net, BatchNorm-safe (``esad_lib.perf.checkpointing``);
  the outputs and gradients do not depend on it.
* The classic U-Net ends in the same 3x3 conv + tanh head as the lightweight one (RIAD's ends
  in a 1x1 conv; the difference is 1.7 k parameters), so the two differ only in their levels.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from esad_lib.method.blocks import ConvBNReLU, DoubleConv, FeatureExtractionBlock
from esad_lib.perf.checkpointing import CHECKPOINT_MODES, bn_safe_checkpoint

__all__ = ["UNetBase", "LightweightUNet", "ClassicUNet", "build_unet", "unet_widths", "UNET_KINDS"]

#: the names ``ESADConfig.unet`` accepts.
UNET_KINDS = ("lightweight", "lightweight_std", "classic")

#: input sides are padded to a multiple of this (four 2x2 poolings).
SIZE_MULTIPLE = 16


def unet_widths(base_width: int) -> tuple[int, int, int, int, int]:
    """Channel widths of the five levels: ``base_width * (1, 2, 4, 8, 8)``."""
    if base_width < 1:
        raise ValueError(f"base_width must be >= 1, got {base_width}")
    w = base_width
    return (w, 2 * w, 4 * w, 8 * w, 8 * w)


class UNetBase(nn.Module):
    """Shared forward/encode of the U-Nets (padding, skip connections, head).

    Subclasses fill ``self.enc`` (5 modules: level 1 maps the input, levels 2-5 are preceded by
    max-pooling), ``self.up`` (4 transposed convs, deepest first), ``self.dec`` (4 decoder
    blocks, deepest first) and ``self.head``.
    """

    widths: tuple[int, ...]

    def __init__(self, in_ch: int, out_ch: int, base_width: int) -> None:
        super().__init__()
        self.in_ch, self.out_ch = in_ch, out_ch
        self.widths = unet_widths(base_width)
        self.pool = nn.MaxPool2d(2)
        w = self.widths
        # up[j] maps decoder level (4-j)+1 -> level 4-j: 2x2 transposed conv, stride 2
        ins = (w[4], w[3], w[2], w[1])
        outs = (w[3], w[2], w[1], w[0])
        self.up = nn.ModuleList(nn.ConvTranspose2d(i, o, 2, stride=2) for i, o in zip(ins, outs))
        self.head = nn.Conv2d(w[0], out_ch, 3, padding=1)
        #: activation checkpointing in training (``esad_lib.perf.checkpointing``): one of
        #: ``CHECKPOINT_MODES``; set with ``set_checkpointing``.  Outputs do not depend on it.
        self.checkpointing = "off"

    def set_checkpointing(self, mode: str) -> UNetBase:
        """Recompute activations in backward instead of storing them (``"off"``, ``"block"``,
        ``"level"``, ``"net"``; see ``esad_lib.perf.checkpointing``).  Active only in train mode
        with gradients enabled; a no-op in eval / ``no_grad``.  Returns ``self``."""
        if mode not in CHECKPOINT_MODES:
            raise ValueError(f"checkpointing must be one of {', '.join(CHECKPOINT_MODES)}, got {mode!r}")
        self.checkpointing = mode
        return self

    def _checkpoint_mode(self) -> str:
        return self.checkpointing if (self.training and torch.is_grad_enabled()) else "off"

    # -- size handling ------------------------------------------------------------------
    @staticmethod
    def _pad(x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        h, w = x.shape[-2:]
        ph, pw = (-h) % SIZE_MULTIPLE, (-w) % SIZE_MULTIPLE
        if ph or pw:
            # pad bottom/right, replicating the border pixels
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        return x, h, w

    def _enc_level(self, level: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return level(self.pool(x))

    @staticmethod
    def _dec_level(up: nn.Module, block: nn.Module, y: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        # concat the up-sampled tensor with the encoder feature of the same level
        return block(torch.cat([up(y), skip], dim=1))

    def _encode_padded(self, x: torch.Tensor, mode: str = "off") -> list[torch.Tensor]:
        if mode in ("block", "level"):
            feats = [bn_safe_checkpoint(self.enc[0], [self.enc[0]], x)]
        else:
            feats = [self.enc[0](x)]
        for level in self.enc[1:]:
            if mode == "level":
                feats.append(bn_safe_checkpoint(partial(self._enc_level, level), [level], feats[-1]))
            elif mode == "block":
                feats.append(bn_safe_checkpoint(level, [level], self.pool(feats[-1])))
            else:
                feats.append(self._enc_level(level, feats[-1]))
        return feats

    def _forward_padded(self, xp: torch.Tensor, mode: str = "off") -> torch.Tensor:
        """The net on a padded input ``[B, C_in, H', W']`` (sides multiples of 16)."""
        feats = self._encode_padded(xp, mode)
        y = feats[4]
        for j, (up, block) in enumerate(zip(self.up, self.dec)):
            skip = feats[3 - j]
            if mode == "level":
                y = bn_safe_checkpoint(partial(self._dec_level, up, block), [up, block], y, skip)
            elif mode == "block":
                y = bn_safe_checkpoint(block, [block], torch.cat([up(y), skip], dim=1))
            else:
                y = self._dec_level(up, block, y, skip)
        # out = tanh(conv3x3(y))
        return torch.tanh(self.head(y))

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five encoder features of ``x [B, C_in, H, W]``.

        Returns ``[B, w_i, H'/2^(i-1), W'/2^(i-1)]`` for i = 1..5, where ``H', W'`` are ``H, W``
        rounded up to a multiple of 16 (features of the padded input; not cropped).
        """
        if x.dim() != 4 or x.shape[1] != self.in_ch:
            raise ValueError(f"expected input [B, {self.in_ch}, H, W], got {tuple(x.shape)}")
        return self._encode_padded(self._pad(x)[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, C_in, H, W]`` (any H, W >= 1) -> ``[B, C_out, H, W]`` in (-1, 1)."""
        if x.dim() != 4 or x.shape[1] != self.in_ch:
            raise ValueError(f"expected input [B, {self.in_ch}, H, W], got {tuple(x.shape)}")
        xp, h, w = self._pad(x)
        mode = self._checkpoint_mode()
        if mode == "net":
            out = bn_safe_checkpoint(self._forward_padded, [self], xp)
        else:
            out = self._forward_padded(xp, mode)
        # cropped back to the input size
        return out[..., :h, :w]


class LightweightUNet(UNetBase):
    """The paper's lightweight U-Net.  ``[B, in_ch, H, W] -> [B, out_ch, H, W]``.

    Args:
        in_ch, out_ch: image channels (3, 3).
        base_width: level-1 width; widths ``base_width * (1, 2, 4, 8, 8)`` (reference 64).
        block: ``"feb"`` (feature extraction blocks, the paper) or ``"std"`` (a single 3x3
            conv-BN-ReLU at every level: the ablation without the block).
        kernel_size, expansion, use_eca: passed to ``FeatureExtractionBlock``; ``expansion``
            sets the encoder blocks' ``M = e * C_in``; decoder blocks use ``M = C_in``
            (the reference's ``Block(k, 2 w_i, 2 w_i, w_i)``).
    """

    def __init__(
        self,
        in_ch: int = 3,
        out_ch: int = 3,
        base_width: int = 64,
        block: str = "feb",
        kernel_size: int = 3,
        expansion: int = 2,
        use_eca: bool = False,
    ) -> None:
        super().__init__(in_ch, out_ch, base_width)
        if block not in ("feb", "std"):
            raise ValueError(f"block must be 'feb' or 'std', got {block!r}")
        self.block_kind = block
        w = self.widths

        def make(i: int, o: int, decoder: bool) -> nn.Module:
            if block == "std":
                return ConvBNReLU(i, o, 3)
            # encoder: Block(k, i, e*i, o); decoder: Block(k, 2o, 2o, o) -- mid = in
            mid = i if decoder else None
            return FeatureExtractionBlock(i, o, kernel_size, expansion, use_eca, mid_ch=mid)

        self.enc = nn.ModuleList(
            [ConvBNReLU(in_ch, w[0], 3)] + [make(w[i - 1], w[i], False) for i in range(1, 5)]
        )
        self.dec = nn.ModuleList(make(2 * w[i], w[i], True) for i in (3, 2, 1, 0))


class ClassicUNet(UNetBase):
    """Classic double-conv U-Net of the same widths (RIAD-style baseline, ~20.6 M at width 64).

    ``[B, in_ch, H, W] -> [B, out_ch, H, W]``; same padding, skips, head and ``encode``.
    """

    def __init__(self, in_ch: int = 3, out_ch: int = 3, base_width: int = 64) -> None:
        super().__init__(in_ch, out_ch, base_width)
        self.block_kind = "double_conv"
        w = self.widths
        self.enc = nn.ModuleList(
            [DoubleConv(in_ch, w[0])] + [DoubleConv(w[i - 1], w[i]) for i in range(1, 5)]
        )
        self.dec = nn.ModuleList(DoubleConv(2 * w[i], w[i]) for i in (3, 2, 1, 0))


def build_unet(
    kind: str = "lightweight",
    base_width: int = 64,
    kernel_size: int = 3,
    expansion: int = 2,
    use_eca: bool = False,
    in_ch: int = 3,
    out_ch: int = 3,
) -> UNetBase:
    """A U-Net by ``ESADConfig.unet`` name: ``lightweight`` | ``lightweight_std`` | ``classic``."""
    if kind == "lightweight":
        return LightweightUNet(in_ch, out_ch, base_width, "feb", kernel_size, expansion, use_eca)
    if kind == "lightweight_std":
        return LightweightUNet(in_ch, out_ch, base_width, "std")
    if kind == "classic":
        return ClassicUNet(in_ch, out_ch, base_width)
    raise ValueError(f"unknown unet {kind!r}; choose one of {', '.join(UNET_KINDS)}")
