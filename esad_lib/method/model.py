"""The ESAD model: inpainting -> filling -> reconstruction over disjoint masks (the authors'
README "2. Proposed Method" and "3. Key Algorithms"); RIAD, the baseline, is the same class with
no inpainting net and the zero fill.

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

The paper's test fill is ``a = 0.5`` (``cfg.fill_alpha``; ``a = 0``: the train fill).

Batched, not looped (ours): the ``K`` masked copies of ``[B, 3, H, W]`` form one batch
``[K*B, 3, H, W]`` and each net runs once.  In eval mode this equals the masks one by one
(tested); in train mode BatchNorm normalises over all ``K*B`` images (as a larger batch would)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from esad_lib.method.masks import disjoint_masks
from esad_lib.method.unet import build_unet

#: fill modes ``ESADModel.forward`` accepts.
FILLS = ("train", "test", "zero", "input")


@dataclass
class ESADOutput:
    """One forward pass for ``B`` images, ``K`` masks: ``recon``, ``inpaint`` (None for RIAD)
    ``[B, 3, H, W]``; ``masks`` ``[K, 1, H, W]`` (or ``[K, B, 1, H, W]``); ``filled`` ``[K, B, 3, H, W]``."""

    recon: Tensor
    inpaint: Tensor | None
    masks: Tensor
    filled: Tensor


def apply_fill(
    img: Tensor, cutout: Tensor, pre: Tensor | None, masks: Tensor, fill: str, alpha: float = 0.5
) -> Tensor:
    """The fill step.  ``img [B,3,H,W]``, ``cutout``/``pre [K,B,3,H,W]``, ``masks [K,1,H,W]``
    (or per image ``[K,B,1,H,W]``) -> ``filled [K,B,3,H,W]`` (formulas in the module docstring)."""
    hidden = 1.0 - (masks.unsqueeze(1) if masks.dim() == 4 else masks)
    if fill in ("train", "test") and pre is None:
        raise ValueError(f"fill={fill!r} needs an inpainting net; this model has none (use 'zero', 'input')")
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
    """Inpainting U-Net ``G1`` (None for RIAD) + reconstruction U-Net ``G2``, and ``K`` (``num_masks``).

    The fill and its weight ``a`` are arguments of ``forward`` / ``reconstruct_all``: one trained
    model can be scored with any test-time setting (``model_fills(cfg)``, ``cfg.fill_alpha``)."""

    def __init__(self, inpaint_net: nn.Module | None, recon_net: nn.Module, num_masks: int = 3) -> None:
        super().__init__()
        if num_masks < 1:
            raise ValueError(f"num_masks must be >= 1, got {num_masks}")
        self.inpaint_net, self.recon_net = inpaint_net, recon_net
        self.num_masks = int(num_masks)

    def forward(
        self, img: Tensor, cutout_size: int, fill: str = "train", alpha: float = 0.5,
        generator: torch.Generator | None = None, masks: Tensor | None = None,
    ) -> ESADOutput:
        """One inpainting -> filling -> reconstruction pass for one cutout size.

        ``img [B, 3, H, W]`` in [-1, 1]; ``cutout_size``: the cells' size ``c``; ``fill``: "train" |
        "test" | "zero" | "input", ``alpha`` the test fill's ``a``; ``generator`` seeds the masks
        (None: the global RNG).  ``masks``: ``[K, 1, H, W]`` to use instead of drawing new ones,
        or ``[K, B, 1, H, W]``, one set per image (batched validation; ``cutout_size`` unused)."""
        if img.dim() != 4:
            raise ValueError(f"expected img [B, C, H, W], got {tuple(img.shape)}")
        b, ch, h, w = img.shape
        if masks is None:
            masks = disjoint_masks(h, w, cutout_size, self.num_masks, generator, img.device)
        elif masks.shape[-2:] != (h, w) or masks.shape[1:-2] not in ((1,), (b, 1)):
            raise ValueError(f"masks must be [K, 1, {h}, {w}] or [K, {b}, 1, {h}, {w}], got {masks.shape}")
        masks = masks.to(device=img.device, dtype=img.dtype)
        k = masks.shape[0]
        m = masks.unsqueeze(1) if masks.dim() == 4 else masks  # [K, 1 or B, 1, H, W]
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
        self, img: Tensor, cutout_sizes: Iterable[int], fill: str = "test", alpha: float = 0.5, seed: int = 0
    ) -> dict[int, ESADOutput]:
        """Reconstruct ``img [B, 3, H, W]`` once per cutout size (test-time scoring), with the
        masks ``scoring_masks(..., seed)``; ``fill`` and ``alpha`` as in ``forward``.  Runs under
        ``no_grad``; call ``.eval()`` first."""
        masks = scoring_masks(img.shape[-2], img.shape[-1], cutout_sizes, self.num_masks, seed, img.device)
        return {c: self(img, c, fill=fill, alpha=alpha, masks=m) for c, m in masks.items()}


def scoring_masks(
    h: int, w: int, cutout_sizes: Iterable[int], num_masks: int, seed: int = 0, device=None
) -> dict[int, Tensor]:
    """The masks of test-time scoring: ``{c: [K, 1, h, w]}`` per cutout size ``c``, drawn from one
    CPU ``torch.Generator`` seeded with ``seed`` in the order of ``cutout_sizes`` -- the same
    masks for every image, on every device and in an exported graph."""
    gen = torch.Generator().manual_seed(int(seed))
    return {int(c): disjoint_masks(h, w, int(c), num_masks, gen, device) for c in cutout_sizes}


def model_fills(cfg: Any) -> tuple[str, str]:
    """``(train fill, test fill)`` of ``cfg`` for its method.  A RIAD model has no inpainting net,
    so a fill that needs one ("train"/"test") becomes "zero" (RIAD's)."""
    fills = (cfg.train_fill, cfg.test_fill)
    for f in fills:
        if f not in FILLS:
            raise ValueError(f"unknown fill {f!r}; choose one of {', '.join(FILLS)}")
    if cfg.method == "riad":
        return tuple("zero" if f in ("train", "test") else f for f in fills)  # type: ignore[return-value]
    return fills


def build_model(cfg: Any) -> ESADModel:
    """An ``ESADModel`` from an ``ESADConfig`` (``method``: "esad" | "riad", ``unet``, ``base_width``,
    ``block_kernel``, ``block_expansion``, ``use_eca``, ``num_masks``).  RIAD has no inpainting
    net; its U-Net kind is also ``cfg.unet``, so build the baseline from ``riad_config(cfg)``."""

    def net() -> nn.Module:
        return build_unet(cfg.unet, cfg.base_width, cfg.block_kernel, cfg.block_expansion, cfg.use_eca)

    if cfg.method == "esad":
        return ESADModel(net(), net(), cfg.num_masks)
    if cfg.method == "riad":
        return ESADModel(None, net(), cfg.num_masks)
    raise ValueError(f"unknown method {cfg.method!r}; choose 'esad' or 'riad'")
