"""Rows "K masks": the K masks of one cutout size as one batched forward (``ESADModel.forward``)
vs a Python loop with one U-Net call per mask, eval + no_grad, outputs checked equal."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from esad_lib.bench.settings import TOL_FP32, cfg_for
from esad_lib.bench.workloads import build_model, random_images
from esad_lib.method import apply_fill, model_fills
from esad_lib.method.masks import disjoint_masks
from esad_lib.perf.timing import time_interleaved


def masks_loop(model, img: torch.Tensor, masks: torch.Tensor, fill: str, alpha: float = 0.5) -> torch.Tensor:
    """``ESADModel.forward``'s reconstruction with one U-Net call per mask (the naive loop).

    ``img [B,3,H,W]``, ``masks [K,1,H,W]`` -> ``recon [B,3,H,W]``; same formulas as the model
    (``esad_lib.method.apply_fill``), only the K masks are not stacked into the batch.
    """
    recon = torch.zeros_like(img)
    for k in range(masks.shape[0]):
        m = masks[k : k + 1]  # [1,1,H,W]
        # cutout_k = img * m_k                                   [1,B,3,H,W]
        cutout = (img * m).unsqueeze(0)
        pre = None
        if model.inpaint_net is not None and fill in ("train", "test"):
            # pre_k = G1(cutout_k)
            pre = model.inpaint_net(cutout[0]).unsqueeze(0)
        filled = apply_fill(img, cutout, pre, m, fill, alpha)
        # recon = sum_k G2(filled_k) * (1 - m_k)
        recon = recon + model.recon_net(filled[0]) * (1.0 - m)
    return recon


def section_masks(st: dict, device: torch.device, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """K masks as one batched forward (``ESADModel.forward``) vs a Python loop, eval + no_grad."""
    rows = []
    for method in ("esad", "riad"):
        cfg = cfg_for(st["profile"], method, str(device))
        model = build_model(cfg, device).eval()
        h, w = cfg.image_size
        img = random_images(1, (h, w), cfg.seed + 3).to(device)
        cut = int(sorted(cfg.cutout_sizes)[0])
        masks = disjoint_masks(h, w, cut, cfg.num_masks, generator=torch.Generator().manual_seed(0)).to(
            device
        )
        fill = model_fills(cfg)[1]
        with torch.no_grad():
            batched = model(img, cut, fill=fill, alpha=cfg.fill_alpha, masks=masks).recon
            diff = float((masks_loop(model, img, masks, fill, cfg.fill_alpha) - batched).abs().max())
            fns = {
                "loop over masks": lambda: masks_loop(model, img, masks, fill, cfg.fill_alpha),  # noqa: B023
                "batched (ESADModel.forward)": lambda: model(  # noqa: B023
                    img, cut, fill=fill, alpha=cfg.fill_alpha, masks=masks  # noqa: B023
                ),
            }
            res = time_interleaved(fns, st["repeats"], st["warmup"], device)
        loop_s = res["loop over masks"]["median_s"]
        for name, r in res.items():
            rows.append(
                {
                    "model": method,
                    "variant": name,
                    "masks": int(cfg.num_masks),
                    "cutout": cut,
                    **r,
                    "speedup_vs_loop": loop_s / r["median_s"],
                    "max_abs_diff_loop_vs_batched": diff,
                    "tolerance": TOL_FP32,
                    "equal": diff <= TOL_FP32,
                }
            )
        log(f"masks: {method} done")
    return rows
