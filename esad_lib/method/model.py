"""The ESAD model: inpainting -> filling -> reconstruction over disjoint masks (the authors' README "2.
Proposed Method" and
and the authors' README "Key algorithms"); RIAD (its baseline) is the same class with no
inpainting net and zero fill.

For one cutout size ``c`` and ``K`` disjoint masks ``m_k`` (1 visible, 0 hidden; see
``esad_lib.method.masks``), with ``G1`` the inpainting net and ``G2`` the reconstruction net::

    cutout_k = img * m_k
    pre_k    = G1(cutout_k)
    filled_k = cutout_k + pre_k * (1 - m_k)                                   fill="train" (select=0)
    filled_k = cutout_k + (1-a) * pre_k * (1 - m_k) + a * img * (1 - m_k)     fill="test"  (select=1)
    filled_k = cutout_k                                                       fill="zero"  (RIAD)
    filled_k = img                                                            fill="input" (no hiding)
    recon    = sum_k G2(filled_k) * (1 - m_k)
    inpaint  = sum_k pre_k * (1 - m_k)

The paper's test fill is ``a = 0.5`` (``fill_alpha``, swept by an ablation).  With ``a = 0`` the
test fill equals the train fill; ``a = 1`` fills with the input itself.

Batched, not looped: the ``K`` masked copies of a batch ``[B, 3, H, W]`` are stacked into one
batch ``[K*B, 3, H, W]`` and each network runs *once*.  In eval mode this equals running the
``K`` masks one by one (tested).  In train mode BatchNorm normalises with the statistics of
the whole ``K*B`` batch instead of each ``B``-sized chunk, so batched and looped outputs differ
there -- by design (it is also what a larger batch would do).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from esad_lib.method.masks import disjoint_masks
from esad_lib.method.unet import build_unet

__all__ = [
    "FILLS",
    "TRAIN_CHECKPOINT_MODE",
    "ESADOutput",
    "ESADModel",
    "apply_fill",
    "build_model",
    "model_fills",
    "scoring_masks",
]

#: fill modes ``ESADModel.forward`` accepts.
FILLS = ("train", "test", "zero", "input")

#: the checkpointing granularity ``cfg.checkpointing = True`` selects: per U-Net level, the
#: smallest training memory per image of the three granularities at the paper's size, for the
#: same recomputation (one forward) as the others (``benchmarks/train_memory.py --all``; the
#: granularities are described in ``esad_lib.perf.checkpointing``).
TRAIN_CHECKPOINT_MODE = "level"


@dataclass
class ESADOutput:
    """What one forward pass returns (shapes for a batch of ``B`` images, ``K`` masks).

    recon:   ``[B, 3, H, W]`` the reconstruction, assembled from the hidden cells of each pass.
    inpaint: ``[B, 3, H, W]`` the inpainting net's prediction assembled likewise (None for RIAD).
    masks:   ``[K, 1, H, W]`` the masks used (1 visible, 0 hidden), or ``[K, B, 1, H, W]`` when
             each image had its own (``forward(masks=...)``).
    filled:  ``[K, B, 3, H, W]`` the filled inputs given to the reconstruction net.
    """

    recon: torch.Tensor
    inpaint: torch.Tensor | None
    masks: torch.Tensor
    filled: torch.Tensor


def _broadcastable(masks: torch.Tensor) -> torch.Tensor:
    """``[K, 1, H, W]`` -> ``[K, 1, 1, H, W]``; per-image ``[K, B, 1, H, W]`` as it is."""
    return masks.unsqueeze(1) if masks.dim() == 4 else masks


def apply_fill(
    img: torch.Tensor,
    cutout: torch.Tensor,
    pre: torch.Tensor | None,
    masks: torch.Tensor,
    fill: str,
    alpha: float = 0.5,
) -> torch.Tensor:
    """The fill step.  ``img [B,3,H,W]``, ``cutout``/``pre [K,B,3,H,W]``, ``masks [K,1,H,W]``
    (or per image ``[K,B,1,H,W]``) -> ``filled [K,B,3,H,W]`` (formulas in the module docstring)."""
    m = _broadcastable(masks)  # [K, 1 or B, 1, H, W], broadcasts against [K, B, 3, H, W]
    hidden = 1.0 - m
    if fill in ("train", "test") and pre is None:
        raise ValueError(
            f"fill={fill!r} needs an inpainting net; this model has none (use 'zero' or 'input')"
        )
    if fill == "train":
        # filled = cutout + pre * (1 - m)
        return cutout + pre * hidden
    if fill == "test":
        # filled = cutout + (1 - alpha) * pre * (1 - m) + alpha * img * (1 - m)
        return cutout + (1.0 - alpha) * pre * hidden + alpha * img.unsqueeze(0) * hidden
    if fill == "zero":
        # filled = cutout  (hidden cells stay 0: RIAD)
        return cutout
    if fill == "input":
        # filled = img  (nothing hidden: a plain auto-encoder pass, for comparison)
        return img.unsqueeze(0).expand_as(cutout)
    raise ValueError(f"unknown fill {fill!r}; choose one of {', '.join(FILLS)}")


class ESADModel(nn.Module):
    """Inpainting U-Net ``G1`` (None for RIAD) + reconstruction U-Net ``G2``: the networks only.

    The fill and its mixing weight are arguments of ``forward`` / ``reconstruct_all``; the
    trainer and the scorer take them from the config (``model_fills(cfg)``, ``cfg.fill_alpha``),
    so one trained model can be scored with any test-time setting.

    Args:
        inpaint_net: ``G1`` or None (RIAD).
        recon_net: ``G2``.
        num_masks: ``K`` disjoint masks per cutout size (3).
    """

    def __init__(self, inpaint_net: nn.Module | None, recon_net: nn.Module, num_masks: int = 3) -> None:
        super().__init__()
        if num_masks < 1:
            raise ValueError(f"num_masks must be >= 1, got {num_masks}")
        self.inpaint_net = inpaint_net
        self.recon_net = recon_net
        self.num_masks = int(num_masks)

    @property
    def is_riad(self) -> bool:
        return self.inpaint_net is None

    def set_checkpointing(self, mode: str) -> ESADModel:
        """Activation checkpointing of both U-Nets in training (``"off"``, ``"block"``,
        ``"level"``, ``"net"``; see ``esad_lib.perf.checkpointing``).  Returns ``self``."""
        for net in (self.inpaint_net, self.recon_net):
            if net is not None:
                net.set_checkpointing(mode)
        return self

    def forward(
        self,
        img: torch.Tensor,
        cutout_size: int,
        fill: str = "train",
        alpha: float = 0.5,
        generator: torch.Generator | None = None,
        masks: torch.Tensor | None = None,
    ) -> ESADOutput:
        """One inpainting -> filling -> reconstruction pass for one cutout size.

        Args:
            img: ``[B, 3, H, W]`` in [-1, 1].
            cutout_size: cell size ``c`` of the masks.
            fill: ``"train" | "test" | "zero" | "input"``.
            alpha: the test fill's mixing weight ``a`` (paper 0.5; ``cfg.fill_alpha``).
            generator: seeds the masks (ignored when ``masks`` is given; None = global RNG).
            masks: optional ``[K, 1, H, W]`` masks to use instead of drawing new ones, or
                ``[K, B, 1, H, W]``: a set of ``K`` masks per image (the trainer's validation
                batches images whose masks were drawn apart; ``cutout_size`` is then unused).
                Per image the pass is the same with either form.
        """
        if img.dim() != 4:
            raise ValueError(f"expected img [B, C, H, W], got {tuple(img.shape)}")
        b, ch, h, w = img.shape
        if masks is None:
            masks = disjoint_masks(h, w, cutout_size, self.num_masks, generator=generator, device=img.device)
        elif masks.shape[-2:] != (h, w) or not (
            (masks.dim() == 4 and masks.shape[1] == 1) or (masks.dim() == 5 and masks.shape[1:3] == (b, 1))
        ):
            raise ValueError(
                f"masks must be [K, 1, {h}, {w}] or [K, {b}, 1, {h}, {w}], got {tuple(masks.shape)}"
            )
        masks = masks.to(device=img.device, dtype=img.dtype)
        k = masks.shape[0]
        m = _broadcastable(masks)  # [K, 1 or B, 1, H, W]
        hidden = 1.0 - m

        # cutout_k = img * m_k                                          [K, B, 3, H, W]
        cutout = img.unsqueeze(0) * m
        pre = None
        if self.inpaint_net is not None and fill in ("train", "test"):
            # pre_k = G1(cutout_k), all K masks in one batch of K*B
            pre = self.inpaint_net(cutout.reshape(k * b, ch, h, w)).reshape(k, b, -1, h, w)
        filled = apply_fill(img, cutout, pre, masks, fill, alpha)
        # rec_k = G2(filled_k), one batch of K*B
        rec = self.recon_net(filled.reshape(k * b, ch, h, w)).reshape(k, b, -1, h, w)
        # recon = sum_k rec_k * (1 - m_k)
        recon = (rec * hidden).sum(0)
        # inpaint = sum_k pre_k * (1 - m_k)
        inpaint = (pre * hidden).sum(0) if pre is not None else None
        return ESADOutput(recon=recon, inpaint=inpaint, masks=masks, filled=filled)

    @torch.no_grad()
    def reconstruct_all(
        self,
        img: torch.Tensor,
        cutout_sizes: Iterable[int],
        fill: str = "test",
        alpha: float = 0.5,
        seed: int = 0,
    ) -> dict[int, ESADOutput]:
        """Reconstruct ``img [B, 3, H, W]`` once per cutout size (test-time scoring).

        The masks come from a CPU ``torch.Generator`` seeded with ``seed`` and drawn in the
        order of ``cutout_sizes`` (cell shuffles are tiny; the pixel masks are built on
        ``img``'s device), so the same seed gives the same masks on CPU and GPU.  ``fill`` and
        ``alpha`` as in ``forward``.  Runs under ``no_grad``; call ``.eval()`` first.
        """
        masks = scoring_masks(img.shape[-2], img.shape[-1], cutout_sizes, self.num_masks, seed, img.device)
        return {c: self(img, c, fill=fill, alpha=alpha, masks=m) for c, m in masks.items()}


def scoring_masks(
    h: int,
    w: int,
    cutout_sizes: Iterable[int],
    num_masks: int,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> dict[int, torch.Tensor]:
    """The masks test-time scoring uses: ``{c: [K, 1, h, w]}`` for each cutout size ``c``.

    Drawn from one CPU ``torch.Generator`` seeded with ``seed``, in the order of
    ``cutout_sizes``, so that every image (and every device, and an exported graph) sees the
    same masks.
    """
    gen = torch.Generator().manual_seed(int(seed))
    return {
        int(c): disjoint_masks(h, w, int(c), num_masks, generator=gen, device=device) for c in cutout_sizes
    }


def model_fills(cfg: Any) -> tuple[str, str]:
    """``(train fill, test fill)`` of ``cfg`` for its method.

    A RIAD model has no inpainting net, so a fill that needs one ("train"/"test", the ESAD
    defaults) becomes "zero" (RIAD's); ``esad_lib.config.RIAD_DIFF`` sets both to "zero" anyway.
    """
    fills = (cfg.train_fill, cfg.test_fill)
    for f in fills:
        if f not in FILLS:
            raise ValueError(f"unknown fill {f!r}; choose one of {', '.join(FILLS)}")
    if cfg.method == "riad":
        return tuple("zero" if f in ("train", "test") else f for f in fills)  # type: ignore[return-value]
    return fills


def build_model(cfg: Any) -> ESADModel:
    """An ``ESADModel`` from an ``ESADConfig``: ``method`` ("esad" | "riad"), ``unet``,
    ``base_width``, ``block_kernel``, ``block_expansion``, ``use_eca``, ``num_masks``.

    For ``method="riad"`` there is no inpainting net.  The U-Net kind is taken from ``cfg.unet``
    for both methods, so use ``esad_lib.config.riad_config(cfg)`` for the baseline.
    ``checkpointing`` (True: ``TRAIN_CHECKPOINT_MODE`` in both U-Nets, training only).
    """

    def net() -> nn.Module:
        return build_unet(
            cfg.unet,
            base_width=cfg.base_width,
            kernel_size=cfg.block_kernel,
            expansion=cfg.block_expansion,
            use_eca=cfg.use_eca,
        )

    if cfg.method == "esad":
        model = ESADModel(net(), net(), cfg.num_masks)
    elif cfg.method == "riad":
        model = ESADModel(None, net(), cfg.num_masks)
    else:
        raise ValueError(f"unknown method {cfg.method!r}; choose 'esad' or 'riad'")
    return model.set_checkpointing(TRAIN_CHECKPOINT_MODE if cfg.checkpointing else "off")
