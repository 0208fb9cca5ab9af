"""Training losses: RIAD's L2 + SSIM + MSGMS and ESAD's feature loss (the authors' abstract).

RIAD (Zavrtanik et al., 2021) trains its reconstruction net with three image losses,

    L = w_l2 * L2(I, I_r) + w_ssim * (1 - SSIM(I, I_r)) + w_msgms * L_MSGMS(I, I_r),

and ESAD adds a *feature loss*, the distance between multi-layer features of the input and of
the reconstruction taken from a frozen extractor (``esad_lib.features``).  ESAD applies the
same terms to the final reconstruction and to the inpainting net's output; ``ESADLoss`` sums
both, the inpainting output weighted by ``cfg.w_inpaint`` (a project choice: the paper does
not give the weight).

Conventions (stated once, used everywhere below):

* Images are in [-1, 1] (the U-Nets end in ``tanh``), so the SSIM data range is ``L = 2`` and
  its stabilising constants are C1 = (0.01 L)^2, C2 = (0.03 L)^2 (Wang et al. 2004 with L = 2).
* SSIM uses an 11x11 Gaussian window (sigma 1.5) applied per colour channel *without padding*
  ("valid" positions only, as in Wang et al.'s reference and scikit-image), averaged over
  channels and positions.  Deviation from RIAD's code (which zero-pads): padding mixes the
  zero border into the local statistics; "valid" is the textbook definition.
* MSGMS works on the channel mean (grey image) like RIAD's code, with Prewitt filters scaled by
  1/3 (GMSD, Xue et al. 2014) and replicate padding (so a constant image has zero gradient
  everywhere; zero padding would create artificial edges on the border).  The gradient
  magnitude is sqrt(gx^2 + gy^2 + 1e-12): the 1e-12 keeps the gradient of sqrt finite at
  flat regions and changes the value by at most 1e-6.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from esad_lib.config import ESADConfig
from esad_lib.features import FeatureExtractor, build_feature_extractor

__all__ = [
    "ESADLoss",
    "FeatureLoss",
    "build_loss",
    "gaussian_window",
    "l2_loss",
    "loss_extractor",
    "msgms_loss",
    "msgms_map",
    "ssim",
    "ssim_loss",
    "ssim_map",
]

_GRAD_EPS = 1e-12


def _check_pair(x: Tensor, y: Tensor) -> None:
    if x.shape != y.shape:
        raise ValueError(f"images must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.dim() != 4:
        raise ValueError(f"images must be [B, C, H, W], got shape {tuple(x.shape)}")


def l2_loss(x: Tensor, y: Tensor) -> Tensor:
    """Mean squared error over all elements (a scalar).  x, y: [B, C, H, W]."""
    _check_pair(x, y)
    # L2 = mean_{b,c,i,j} (x - y)^2
    return F.mse_loss(x, y)


def gaussian_window_1d(window_size: int = 11, sigma: float = 1.5, dtype=torch.float32, device=None) -> Tensor:
    """Normalised 1-D Gaussian [window_size] (sums to 1)."""
    coords = torch.arange(window_size, dtype=torch.float64) - (window_size - 1) / 2.0
    # g(k) = exp(-k^2 / (2 sigma^2)) / sum_k exp(...)
    g = torch.exp(-(coords**2) / (2.0 * sigma**2))
    return (g / g.sum()).to(dtype=dtype, device=device)


def gaussian_window(window_size: int = 11, sigma: float = 1.5, dtype=torch.float32, device=None) -> Tensor:
    """Normalised 2-D Gaussian window [window_size, window_size] (sums to 1): ``g g^T``."""
    g = gaussian_window_1d(window_size, sigma, dtype=torch.float64)
    return torch.outer(g, g).to(dtype=dtype, device=device)


def ssim_map(
    x: Tensor, y: Tensor, window_size: int = 11, sigma: float = 1.5, data_range: float = 2.0
) -> Tensor:
    """Local SSIM per channel and valid position: [B, C, H-ws+1, W-ws+1].

    SSIM(x, y) = (2 mu_x mu_y + C1)(2 sigma_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(sigma_x^2 + sigma_y^2 + C2))
    with Gaussian-weighted local means/variances and C1 = (0.01 L)^2, C2 = (0.03 L)^2, L = data_range.
    """
    _check_pair(x, y)
    b, c, h, w = x.shape
    if h < window_size or w < window_size:
        raise ValueError(
            f"SSIM needs images at least {window_size}x{window_size} (the Gaussian window), got {h}x{w}; "
            f"use a larger image_size or a smaller window_size"
        )
    # (a separable pair of 1-D passes was measured slower at the demo's sizes: kept 2-D)
    win = gaussian_window(window_size, sigma, dtype=x.dtype, device=x.device)
    win = win.expand(c, 1, window_size, window_size).contiguous()
    # one grouped convolution for the five local statistics of every channel
    stacked = torch.cat([x, y, x * x, y * y, x * y], dim=1)  # [B, 5C, H, W]
    stats = F.conv2d(stacked, win.repeat(5, 1, 1, 1), groups=5 * c)
    mu_x, mu_y, e_xx, e_yy, e_xy = stats.split(c, dim=1)
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    # sigma_x^2 = E[x^2] - mu_x^2 ; sigma_xy = E[xy] - mu_x mu_y
    var_x = e_xx - mu_x * mu_x
    var_y = e_yy - mu_y * mu_y
    cov_xy = e_xy - mu_x * mu_y
    # SSIM = (2 mu_x mu_y + C1)(2 sigma_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(sigma_x^2 + sigma_y^2 + C2))
    num = (2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)
    den = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    return num / den


def ssim(x: Tensor, y: Tensor, window_size: int = 11, sigma: float = 1.5, data_range: float = 2.0) -> Tensor:
    """Mean SSIM per image, [B] (mean over channels and valid positions).  x, y: [B, C, H, W]."""
    return ssim_map(x, y, window_size, sigma, data_range).flatten(1).mean(dim=1)


def ssim_loss(
    x: Tensor, y: Tensor, window_size: int = 11, sigma: float = 1.5, data_range: float = 2.0
) -> Tensor:
    """1 - SSIM averaged over the batch (a scalar)."""
    # L_SSIM = mean_b (1 - SSIM(x_b, y_b))
    return (1.0 - ssim(x, y, window_size, sigma, data_range)).mean()


def _prewitt_kernels(dtype, device) -> Tensor:
    """Prewitt kernels scaled by 1/3 (GMSD), [2, 1, 3, 3]: horizontal then vertical derivative."""
    px = torch.tensor([[1.0, 0.0, -1.0]] * 3, dtype=dtype, device=device) / 3.0
    return torch.stack([px, px.t()]).unsqueeze(1)


def _gradient_magnitude(gray: Tensor) -> Tensor:
    """Prewitt gradient magnitude of [B, 1, H, W] with replicate padding, same size."""
    k = _prewitt_kernels(gray.dtype, gray.device)
    g = F.conv2d(F.pad(gray, (1, 1, 1, 1), mode="replicate"), k)  # [B, 2, H, W]
    # m = sqrt(gx^2 + gy^2 + eps)
    return torch.sqrt(g.pow(2).sum(dim=1, keepdim=True) + _GRAD_EPS)


def _gms(x_gray: Tensor, y_gray: Tensor, c: float) -> Tensor:
    m_x = _gradient_magnitude(x_gray)
    m_y = _gradient_magnitude(y_gray)
    # GMS = (2 m_x m_y + c) / (m_x^2 + m_y^2 + c)
    return (2 * m_x * m_y + c) / (m_x * m_x + m_y * m_y + c)


def msgms_map(x: Tensor, y: Tensor, scales: int = 4, c: float = 0.0026) -> Tensor:
    """Multi-scale gradient magnitude similarity map [B, 1, H, W] (1 = identical structure).

    Scale s (s = 0..scales-1) halves the grey images s times with 2x2 average pooling; the GMS
    map of each scale is upsampled bilinearly to H x W and the maps are averaged:
    MSGMS = (1/S) sum_s up(GMS(pool^s(x), pool^s(y))).
    """
    _check_pair(x, y)
    h, w = x.shape[-2:]
    if min(h, w) < 2 ** (scales - 1):
        raise ValueError(
            f"MSGMS with {scales} scales needs images of at least {2 ** (scales - 1)} px, got {h}x{w}"
        )
    # grey image = mean over colour channels (RIAD)
    xg = x.mean(dim=1, keepdim=True)
    yg = y.mean(dim=1, keepdim=True)
    total = torch.zeros_like(xg)
    for s in range(scales):
        if s > 0:
            xg = F.avg_pool2d(xg, 2)
            yg = F.avg_pool2d(yg, 2)
        g = _gms(xg, yg, c)
        if s > 0:
            g = F.interpolate(g, size=(h, w), mode="bilinear", align_corners=False)
        total = total + g
    # MSGMS = mean over scales
    return total / scales


def msgms_loss(x: Tensor, y: Tensor, scales: int = 4, c: float = 0.0026) -> Tensor:
    """mean(1 - MSGMS) over batch and positions (a scalar)."""
    # L_MSGMS = mean_{b,i,j} (1 - MSGMS(x, y)_{b,i,j})
    return (1.0 - msgms_map(x, y, scales, c)).mean()


class FeatureLoss(nn.Module):
    """ESAD's feature loss: distance between frozen-extractor features of input and reconstruction.

    distance="cosine" (default): per layer, mean over positions of (1 - cosine similarity) of the
    channel vectors -- the same quantity ``features.feature_distance_map`` uses for scoring, so
    the network is trained on what it is scored with, and the loss scale ([0, 2]) does not depend
    on the backbone's activation magnitudes.  distance="mse": per-layer mean squared error.
    Both are averaged over layers.  The features of the input (the target) carry no gradient;
    the gradient flows through the frozen extractor into the reconstruction.
    """

    def __init__(self, extractor: nn.Module, distance: str = "cosine", layers: list[int] | None = None):
        super().__init__()
        if distance not in ("cosine", "mse"):
            raise ValueError(f"FeatureLoss distance must be 'cosine' or 'mse', got {distance!r}")
        self.extractor = extractor
        self.distance = distance
        self.layers = layers

    @torch.no_grad()
    def target_features(self, img: Tensor) -> list[Tensor]:
        """The features of the input (the target; no gradient)."""
        return self.extractor(img)

    def forward(self, img: Tensor, recon: Tensor, target: list[Tensor] | None = None) -> Tensor:
        """``target``: ``target_features(img)`` when already computed (ESADLoss computes it once
        for the reconstruction and the inpainting)."""
        _check_pair(img, recon)
        if target is None:
            target = self.target_features(img)
        return self.feature_distance(self.extractor(recon), target)

    def feature_distance(self, pred: list[Tensor], target: list[Tensor]) -> Tensor:
        """L_feat of the features ``pred`` (of one output) against ``target`` (of the input)."""
        idx = self.layers if self.layers is not None else range(len(pred))
        terms = []
        for i in idx:
            p, t = pred[i], target[i]
            if self.distance == "cosine":
                # d = 1 - <p, t> / (|p| |t|) per position (channel vectors), mean over positions
                terms.append((1.0 - F.cosine_similarity(p, t, dim=1, eps=1e-8)).mean())
            else:
                # d = mean (p - t)^2
                terms.append(F.mse_loss(p, t))
        # L_feat = mean over layers
        return torch.stack(terms).mean()


class ESADLoss(nn.Module):
    """Total training loss of ESAD (and RIAD when ``inpaint`` is None and ``w_feature`` = 0).

    total = sum_{o in outputs} w_o * [w_l2 L2(I, o) + w_ssim (1 - SSIM(I, o)) + w_msgms L_MSGMS(I, o)
                                      + w_feature L_feat(I, o)]
    with outputs = {recon (w = 1), inpaint (w = cfg.w_inpaint)}.

    ``extractor``: a frozen ``FeatureExtractor``; when None and ``cfg.w_feature`` > 0 one is built
    from ``cfg.loss_feature_extractor`` / ``cfg.feature_weights`` (``cfg.feature_extractor`` is
    the SCORING extractor and plays no part in the loss).  ``build_loss`` is the one way the
    trainer makes it.
    ``forward(img, recon, inpaint=None) -> (total, parts)``; ``parts`` maps names such as
    ``"recon_l2"``, ``"inpaint_ssim"``, ``"total"`` to Python floats (for logging).
    """

    def __init__(self, cfg: ESADConfig, extractor: nn.Module | None = None):
        super().__init__()
        self.w_l2 = float(cfg.w_l2)
        self.w_ssim = float(cfg.w_ssim)
        self.w_msgms = float(cfg.w_msgms)
        self.w_feature = float(cfg.w_feature)
        self.w_inpaint = float(cfg.w_inpaint)
        self.feature_loss: FeatureLoss | None = None
        if self.w_feature > 0:
            if extractor is None:
                extractor = loss_extractor(cfg)
            self.feature_loss = FeatureLoss(extractor, distance=cfg.feature_loss_distance)

    def _one_pass(
        self, img: Tensor, outputs: list[Tensor], target: list[Tensor] | None
    ) -> list[dict[str, Tensor]]:
        """Every term of every output, each map computed ONCE over all outputs stacked along the
        batch (``[k*B, 3, H, W]``), then reduced per output.  ``img [B, 3, H, W]``; ``outputs``:
        ``k`` tensors like ``img``.  Returns per output ``{"l2": ..., "ssim": ..., "msgms": ...,
        "feature": ...}`` (the terms whose weight is non-zero; scalars).

        The per-image maps (squared error, local SSIM, MSGMS, extractor features) do not depend
        on what else is in the batch, and each output's reduction runs over its own slice
        exactly as ``l2_loss`` / ``ssim_loss`` / ``msgms_loss`` / ``FeatureLoss`` reduce a
        batch of ``B``: the same values and gradients as computing the outputs one at a time
        (``tests/test_losses.py``; bit for bit on this project's CPU,
        ``benchmarks/train_speed.py``), with half the number of small operations.  Why:
        at the demo's 64 px a step is many small memory-bound operations (README, "Training
        memory and speed")."""
        k, b = len(outputs), img.shape[0]
        for out in outputs:
            _check_pair(out, img)
        out = outputs[0] if k == 1 else torch.cat(outputs)
        ref = img if k == 1 else torch.cat([img] * k)
        rows = [slice(j * b, (j + 1) * b) for j in range(k)]
        terms: list[dict[str, Tensor]] = [{} for _ in outputs]
        if self.w_l2:
            # L2 = mean_{b,c,i,j} (o - I)^2
            sq = (out - ref).square()
            for t, r in zip(terms, rows):
                t["l2"] = sq[r].mean()
        if self.w_ssim:
            # L_SSIM = mean_b (1 - SSIM(o_b, I_b))
            smap = ssim_map(out, ref)
            for t, r in zip(terms, rows):
                t["ssim"] = (1.0 - smap[r].flatten(1).mean(dim=1)).mean()
        if self.w_msgms:
            # L_MSGMS = mean_{b,i,j} (1 - MSGMS(o, I)_{b,i,j})
            dmap = 1.0 - msgms_map(out, ref)
            for t, r in zip(terms, rows):
                t["msgms"] = dmap[r].mean()
        if self.feature_loss is not None:
            assert target is not None
            pred = self.feature_loss.extractor(out)
            for t, r in zip(terms, rows):
                t["feature"] = self.feature_loss.feature_distance([p[r] for p in pred], target)
        return terms

    def forward(
        self, img: Tensor, recon: Tensor, inpaint: Tensor | None = None
    ) -> tuple[Tensor, dict[str, float]]:
        parts: dict[str, float] = {}
        weights = {"l2": self.w_l2, "ssim": self.w_ssim, "msgms": self.w_msgms, "feature": self.w_feature}
        # The losses are computed in float32 even inside a float16 autocast region (the trainer's
        # mixed precision on CUDA): SSIM's E[x^2] - mu^2 loses its digits in float16.
        with torch.autocast(device_type=img.device.type, enabled=False):
            img = img.float()
            # the input's features, once for both outputs (they carry no gradient)
            target = self.feature_loss.target_features(img) if self.feature_loss is not None else None
            named = [("recon", recon.float())]
            if inpaint is not None and self.w_inpaint:
                named.append(("inpaint", inpaint.float()))
            sums = []
            for (prefix, _), terms in zip(named, self._one_pass(img, [o for _, o in named], target)):
                # L(I, o) = w_l2 L2 + w_ssim (1 - SSIM) + w_msgms L_MSGMS + w_feature L_feat
                sub = img.new_zeros(())
                for name, value in terms.items():
                    parts[f"{prefix}_{name}"] = float(value.detach())
                    sub = sub + weights[name] * value
                sums.append(sub)
            # total = L(I, recon) + w_inpaint * L(I, inpaint)
            total = sums[0] if len(sums) == 1 else sums[0] + self.w_inpaint * sums[1]
        parts["total"] = float(total.detach())
        return total, parts


def loss_extractor(
    cfg: ESADConfig, model: nn.Module | None = None, device: str | torch.device = "cpu"
) -> FeatureExtractor:
    """The frozen extractor of the feature LOSS, ``cfg.loss_feature_extractor`` (``cfg.feature_weights``).

    ``"recon_encoder"`` needs ``model``: the extractor is then a frozen copy of the
    reconstruction net's encoder as it is when the loss is built -- at the start of training,
    a seeded random CNN with the U-Net's architecture, since no trained net exists yet.
    """
    name = cfg.loss_feature_extractor
    if name == "recon_encoder" and model is None:
        raise ValueError(
            "loss_feature_extractor='recon_encoder' needs the model: use build_loss(cfg, model=model) "
            "or pass extractor=build_feature_extractor('recon_encoder', model=model)"
        )
    return build_feature_extractor(
        name, weights=cfg.feature_weights, device=device, model=model if name == "recon_encoder" else None
    )


def build_loss(
    cfg: ESADConfig, model: nn.Module | None = None, device: str | torch.device = "cpu"
) -> ESADLoss:
    """The training loss of ``cfg`` on ``device``: ``ESADLoss`` with ``loss_extractor(cfg, model)``
    when the feature loss is on (``cfg.w_feature > 0``).  The trainer builds its loss here."""
    extractor = loss_extractor(cfg, model, device) if cfg.w_feature > 0 else None
    return ESADLoss(cfg, extractor).to(device)
