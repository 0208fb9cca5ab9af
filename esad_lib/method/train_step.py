"""One training step of ESAD (the authors' README "2. Proposed Method" and "3. Key Algorithms").

``train_step`` is the method's whole update for one batch and one cutout size; the trainer
(``esad_lib.training``) calls it per batch, notebook 04 reads it line by line.  Which cutout
size and masks, the learning rate, validation and checkpoints are the trainer's business."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import Tensor, nn

from esad_lib.method.masks import disjoint_masks


def autocast(device: torch.device, enabled: bool) -> Any:
    """float16 ``torch.autocast`` on CUDA when ``enabled`` (``cfg.amp``), else a no-op.
    Mixed precision is ours (the paper does not mention it); on the CPU training is float32."""
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def train_step(
    model: nn.Module, batch: Tensor, cutout_size: int, loss_fn: nn.Module, optimizer: torch.optim.Optimizer,
    *, fill: str = "train", generator=None, scaler: torch.amp.GradScaler | None = None, amp: bool = False,
) -> dict[str, float]:
    """One optimiser step on ``batch [B, 3, H, W]`` (in [-1, 1]) with one cutout size.

    ``model``: an ``ESADModel`` (or its DDP wrapper); ``loss_fn``: an ``ESADLoss``; ``fill``: the
    training fill (paper "train", ``select = 0``; RIAD "zero"); ``generator`` seeds the masks;
    ``scaler``/``amp``: mixed precision on CUDA.  Returns the loss parts before the update
    (floats: ``"recon_l2"``, ..., ``"total"``); a non-finite loss is the trainer's to catch."""
    h, w = batch.shape[-2:]
    num_masks = getattr(model, "module", model).num_masks  # DistributedDataParallel keeps it in .module
    # K disjoint masks [K, 1, H, W], 1 = visible, 0 = hidden; the K hidden regions tile the image
    masks = disjoint_masks(h, w, cutout_size, num_masks, generator=generator, device=batch.device)
    with autocast(batch.device, amp):
        # for every mask m_k:  pre_k = G1(img * m_k)                              (inpainting)
        #   filled_k = img * m_k + pre_k * (1 - m_k)                   (training fill, select = 0)
        # recon = sum_k G2(filled_k) * (1 - m_k);  inpaint = sum_k pre_k * (1 - m_k)
        out = model(batch, cutout_size, fill=fill, masks=masks)
        # total = L(img, recon) + w_inpaint * L(img, inpaint),
        # L = w_l2 L2 + w_ssim (1 - SSIM) + w_msgms L_MSGMS + w_feature L_feat
        total, parts = loss_fn(batch, out.recon, out.inpaint)
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        total.backward()
        optimizer.step()
    else:  # mixed precision: scale the loss so that float16 gradients do not underflow
        scaler.scale(total).backward()
        scaler.step(optimizer)
        scaler.update()
    return {**parts, "total": float(total.detach())}
