"""The training loss in one pass over both outputs (a speed opt-in: the trainer's loss).

``OnePassLoss`` is ``esad_lib.method.loss.ESADLoss`` with ``output_terms`` replaced: each map
(squared error, SSIM, MSGMS, extractor features) is computed ONCE over both outputs stacked
(``[2B, 3, H, W]``), then reduced per output over its own slice as the core reduces a batch.
Per-image maps do not depend on the rest of the batch: the same values and gradients as the
core (``tests/test_perf_optins.py``) with half the small operations a 64 px step is made of."""

from __future__ import annotations

import torch

from esad_lib.method.loss import ESADLoss, _check_pair, msgms_map, ssim_map


class OnePassLoss(ESADLoss):
    """``ESADLoss`` whose terms are computed once over all outputs (same constructor, same results)."""

    def output_terms(self, img: torch.Tensor, outputs: list[torch.Tensor],
                     target: list[torch.Tensor] | None) -> list[dict[str, torch.Tensor]]:
        """Per output ``o`` of ``outputs`` (``k`` tensors like ``img [B, 3, H, W]``) its terms."""
        k, b = len(outputs), img.shape[0]
        for out in outputs:
            _check_pair(out, img)
        out = outputs[0] if k == 1 else torch.cat(outputs)  # [k*B, 3, H, W]
        ref = img if k == 1 else torch.cat([img] * k)
        rows = [slice(j * b, (j + 1) * b) for j in range(k)]
        per_rows = {}  # term -> its value on the rows of one output
        if self.weights["l2"]:
            sq = (out - ref).square()
            per_rows["l2"] = lambda r: sq[r].mean()  # L2 = mean_{b,c,i,j} (o - I)^2
        if self.weights["ssim"]:
            smap = ssim_map(out, ref)
            per_rows["ssim"] = lambda r: (1.0 - smap[r].flatten(1).mean(dim=1)).mean()  # mean_b (1 - SSIM)
        if self.weights["msgms"]:
            dmap = 1.0 - msgms_map(out, ref)
            per_rows["msgms"] = lambda r: dmap[r].mean()  # mean_{b,i,j} (1 - MSGMS)
        if self.feature_loss is not None:
            pred = self.feature_loss.extractor(out)
            per_rows["feature"] = lambda r: self.feature_loss.feature_distance([p[r] for p in pred], target)
        return [{name: value(r) for name, value in per_rows.items()} for r in rows]
