"""Training losses: RIAD's L2 + SSIM + MSGMS and ESAD's feature loss (the authors' README
"2. Proposed Method"; RIAD, Zavrtanik et al. 2021, its loss).

RIAD's three image terms plus ESAD's *feature loss* (the distance between the features of the
input and of the output, from a frozen extractor, ``esad_lib.features``), for both outputs:

    L(I, o) = w_l2 L2(I, o) + w_ssim (1 - SSIM(I, o)) + w_msgms L_MSGMS(I, o) + w_feature L_feat(I, o)
    total   = L(I, recon) + w_inpaint L(I, inpaint)

Deviation: ``w_inpaint`` and ``w_feature`` are ours (the paper gives no weights).

Conventions, stated once:
* Images are in [-1, 1] (the U-Nets end in ``tanh``): SSIM's data range is ``L = 2``, so
  C1 = (0.01 L)^2, C2 = (0.03 L)^2 (Wang et al. 2004).
* SSIM: 11x11 Gaussian window (sigma 1.5) per colour channel, *valid* positions only (Wang et
  al.'s reference, scikit-image).  Deviation from RIAD's code, which zero-pads.
* MSGMS: on the grey image (channel mean, RIAD), Prewitt filters / 3 (GMSD, Xue et al. 2014),
  replicate padding.  Deviation: magnitude sqrt(gx^2 + gy^2 + 1e-12) (finite gradient on flat
  regions; the value changes by at most 1e-6).

The trainer uses ``esad_lib.perf.loss.OnePassLoss``: this loss, each term computed once over
both outputs stacked (same values and gradients, tested; fewer small operations)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from esad_lib.features import FeatureExtractor, build_feature_extractor


def _check_pair(x: Tensor, y: Tensor) -> None:
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"images must be [B, C, H, W] of one shape, got {list(x.shape)}, {list(y.shape)}")


def l2_loss(x: Tensor, y: Tensor) -> Tensor:
    """Mean squared error over all elements (a scalar).  x, y: [B, C, H, W]."""
    _check_pair(x, y)
    # L2 = mean_{b,c,i,j} (x - y)^2
    return F.mse_loss(x, y)


def gaussian_window(window_size: int = 11, sigma: float = 1.5, dtype=torch.float32, device=None) -> Tensor:
    """Normalised 2-D Gaussian window ``[window_size, window_size]`` (sums to 1): ``g g^T``."""
    k = torch.arange(window_size, dtype=torch.float64) - (window_size - 1) / 2.0
    # g(k) = exp(-k^2 / (2 sigma^2)) / sum_k exp(...)
    g = torch.exp(-(k**2) / (2.0 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g).to(dtype=dtype, device=device)


def ssim_map(x: Tensor, y: Tensor, window_size=11, sigma=1.5, data_range=2.0) -> Tensor:
    """Local SSIM per channel and valid position: ``[B, C, H, W] x2 -> [B, C, H-ws+1, W-ws+1]``,
    with Gaussian-weighted local means, variances and covariance."""
    _check_pair(x, y)
    b, c, h, w = x.shape
    if h < window_size or w < window_size:
        msg = f"SSIM needs images of at least {window_size}x{window_size} (its window), got {h}x{w}"
        raise ValueError(f"{msg}; use a larger image_size or a smaller window_size")
    win = gaussian_window(window_size, sigma, dtype=x.dtype, device=x.device)
    win = win.expand(c, 1, window_size, window_size).contiguous()
    # the five local statistics mu_x, mu_y, E[x^2], E[y^2], E[xy] of every channel, one grouped conv
    stacked = torch.cat([x, y, x * x, y * y, x * y], dim=1)  # [B, 5C, H, W]
    stats = F.conv2d(stacked, win.repeat(5, 1, 1, 1), groups=5 * c)
    mu_x, mu_y, e_xx, e_yy, e_xy = stats.split(c, dim=1)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    # sigma_x^2 = E[x^2] - mu_x^2 ; sigma_xy = E[xy] - mu_x mu_y
    var_x = e_xx - mu_x * mu_x
    var_y = e_yy - mu_y * mu_y
    cov_xy = e_xy - mu_x * mu_y
    # SSIM = (2 mu_x mu_y + C1)(2 sigma_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(sigma_x^2 + sigma_y^2 + C2))
    num = (2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)
    den = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    return num / den


def ssim(x: Tensor, y: Tensor, window_size=11, sigma=1.5, data_range=2.0) -> Tensor:
    """Mean SSIM per image, ``[B]`` (mean over channels and valid positions).  x, y: [B, C, H, W]."""
    return ssim_map(x, y, window_size, sigma, data_range).flatten(1).mean(dim=1)


def ssim_loss(x: Tensor, y: Tensor, window_size=11, sigma=1.5, data_range=2.0) -> Tensor:
    """``1 - SSIM`` averaged over the batch (a scalar)."""
    # L_SSIM = mean_b (1 - SSIM(x_b, y_b))
    return (1.0 - ssim(x, y, window_size, sigma, data_range)).mean()


def _gradient_magnitude(gray: Tensor) -> Tensor:
    """Prewitt gradient magnitude of ``[B, 1, H, W]`` (replicate padding), same size."""
    # Prewitt kernels / 3 (GMSD): horizontal and vertical derivative, [2, 1, 3, 3]
    px = torch.tensor([[1.0, 0.0, -1.0]] * 3, dtype=gray.dtype, device=gray.device) / 3.0
    g = F.conv2d(F.pad(gray, (1, 1, 1, 1), mode="replicate"), torch.stack([px, px.t()]).unsqueeze(1))
    # m = sqrt(gx^2 + gy^2 + eps)
    return torch.sqrt(g.pow(2).sum(dim=1, keepdim=True) + 1e-12)


def msgms_map(x: Tensor, y: Tensor, scales: int = 4, c: float = 0.0026) -> Tensor:
    """Multi-scale gradient magnitude similarity map ``[B, 1, H, W]`` (1 = identical structure).

    Scale s = 0..S-1 halves the grey images s times (2x2 average pooling); each scale's GMS map
    is upsampled bilinearly to H x W:  MSGMS = (1/S) sum_s up(GMS(pool^s(x), pool^s(y)))."""
    _check_pair(x, y)
    h, w = x.shape[-2:]
    if min(h, w) < 2 ** (scales - 1):
        raise ValueError(f"MSGMS ({scales} scales) needs sides >= {2 ** (scales - 1)} px, got {h}x{w}")
    # grey image = mean over colour channels (RIAD)
    xg = x.mean(dim=1, keepdim=True)
    yg = y.mean(dim=1, keepdim=True)
    total = torch.zeros_like(xg)
    for s in range(scales):
        if s > 0:
            xg = F.avg_pool2d(xg, 2)
            yg = F.avg_pool2d(yg, 2)
        m_x, m_y = _gradient_magnitude(xg), _gradient_magnitude(yg)
        # GMS = (2 m_x m_y + c) / (m_x^2 + m_y^2 + c)
        g = (2 * m_x * m_y + c) / (m_x * m_x + m_y * m_y + c)
        if s > 0:
            g = F.interpolate(g, size=(h, w), mode="bilinear", align_corners=False)
        total = total + g
    # MSGMS = mean over scales
    return total / scales


def msgms_loss(x: Tensor, y: Tensor, scales: int = 4, c: float = 0.0026) -> Tensor:
    """``mean(1 - MSGMS)`` over batch and positions (a scalar)."""
    # L_MSGMS = mean_{b,i,j} (1 - MSGMS(x, y)_{b,i,j})
    return (1.0 - msgms_map(x, y, scales, c)).mean()


class FeatureLoss(nn.Module):
    """ESAD's feature loss between frozen-extractor features of the input and of an output.

    distance="cosine" (ours): per layer, the mean over positions of 1 - cos(p, t) of the channel
    vectors -- what scoring measures (``esad_lib.method.anomaly_map.feature_distance_map``), on
    a scale ([0, 2]) independent of the backbone; "mse": the mean squared error.  Mean over
    layers.  The input's features (the target) carry no gradient."""

    def __init__(self, extractor: nn.Module, distance: str = "cosine"):
        super().__init__()
        if distance not in ("cosine", "mse"):
            raise ValueError(f"FeatureLoss distance must be 'cosine' or 'mse', got {distance!r}")
        self.extractor, self.distance = extractor, distance

    @torch.no_grad()
    def target_features(self, img: Tensor) -> list[Tensor]:
        """The features of the input ``[B, 3, H, W]`` (the target; no gradient)."""
        return self.extractor(img)

    def forward(self, img: Tensor, out: Tensor, target: list[Tensor] | None = None) -> Tensor:
        """``L_feat(img, out)`` for ``[B, 3, H, W]`` images; ``target``: ``target_features(img)``
        when already computed (``ESADLoss`` computes it once for both outputs)."""
        _check_pair(img, out)
        target = self.target_features(img) if target is None else target
        return self.feature_distance(self.extractor(out), target)

    def feature_distance(self, pred: list[Tensor], target: list[Tensor]) -> Tensor:
        """``L_feat`` of the features ``pred`` (of one output) against ``target`` (of the input)."""
        terms = []
        for p, t in zip(pred, target):
            if self.distance == "cosine":
                # d = mean over positions of 1 - <p, t> / (|p| |t|)  (channel vectors)
                terms.append((1.0 - F.cosine_similarity(p, t, dim=1, eps=1e-8)).mean())
            else:
                # d = mean (p - t)^2
                terms.append(F.mse_loss(p, t))
        # L_feat = mean over layers
        return torch.stack(terms).mean()


class ESADLoss(nn.Module):
    """The training loss of ESAD (RIAD's: no ``inpaint`` and ``w_feature = 0``), term by term.

    ``forward(img, recon, inpaint=None) -> (total, parts)`` for ``[B, 3, H, W]`` tensors;
    ``parts`` maps ``"recon_l2"``, ..., ``"inpaint_feature"`` (the terms with non-zero weight)
    and ``"total"`` to Python floats.  ``extractor``: the frozen extractor of the feature loss;
    None builds ``loss_extractor(cfg)`` (when ``cfg.w_feature > 0``)."""

    def __init__(self, cfg, extractor: nn.Module | None = None):
        super().__init__()
        self.weights = {"l2": float(cfg.w_l2), "ssim": float(cfg.w_ssim), "msgms": float(cfg.w_msgms)}
        self.weights["feature"] = float(cfg.w_feature)
        self.w_inpaint = float(cfg.w_inpaint)
        self.feature_loss: FeatureLoss | None = None
        if self.weights["feature"] > 0:
            extractor = loss_extractor(cfg) if extractor is None else extractor
            self.feature_loss = FeatureLoss(extractor, distance=cfg.feature_loss_distance)

    def terms(self, img: Tensor, out: Tensor, target: list[Tensor] | None) -> dict[str, Tensor]:
        """The unweighted terms of one output ``out`` against ``img`` (those with non-zero weight)."""
        terms: dict[str, Tensor] = {}
        if self.weights["l2"]:
            terms["l2"] = l2_loss(out, img)
        if self.weights["ssim"]:
            terms["ssim"] = ssim_loss(out, img)
        if self.weights["msgms"]:
            terms["msgms"] = msgms_loss(out, img)
        if self.feature_loss is not None:
            terms["feature"] = self.feature_loss(img, out, target)
        return terms

    def output_terms(self, img: Tensor, outputs: list[Tensor], target: list[Tensor] | None) -> list[dict]:
        """``terms`` of each output, in order."""
        return [self.terms(img, out, target) for out in outputs]

    def forward(self, img: Tensor, recon: Tensor, inpaint: Tensor | None = None) -> tuple[Tensor, dict]:
        parts: dict[str, float] = {}
        # Deviation (ours): computed in float32 even inside a float16 autocast region (the
        # trainer's mixed precision on CUDA): SSIM's E[x^2] - mu^2 loses its digits in float16.
        with torch.autocast(device_type=img.device.type, enabled=False):
            img = img.float()
            # the input's features, once for both outputs (they carry no gradient)
            target = self.feature_loss.target_features(img) if self.feature_loss is not None else None
            named = {"recon": recon.float()}
            if inpaint is not None and self.w_inpaint:
                named["inpaint"] = inpaint.float()
            sums = []
            for prefix, terms in zip(named, self.output_terms(img, list(named.values()), target)):
                # L(I, o) = w_l2 L2 + w_ssim (1 - SSIM) + w_msgms L_MSGMS + w_feature L_feat
                sub = img.new_zeros(())
                for name, value in terms.items():
                    parts[f"{prefix}_{name}"] = float(value.detach())
                    sub = sub + self.weights[name] * value
                sums.append(sub)
            # total = L(I, recon) + w_inpaint * L(I, inpaint)
            total = sums[0] if len(sums) == 1 else sums[0] + self.w_inpaint * sums[1]
        parts["total"] = float(total.detach())
        return total, parts


def loss_extractor(cfg, device: str | torch.device = "cpu") -> FeatureExtractor:
    """The frozen extractor of the feature LOSS, ``cfg.loss_feature_extractor`` (weights:
    ``cfg.feature_weights``; ``cfg.feature_extractor`` is the SCORING one).  Not "recon_encoder":
    while training there is no trained net to take it from."""
    name = cfg.loss_feature_extractor
    if name == "recon_encoder":
        msg = "there is no trained net while training; use e.g. 'random_cnn' or 'efficientnet_lite0'"
        raise ValueError(f"loss_feature_extractor='recon_encoder' is not allowed: {msg}")
    return build_feature_extractor(name, weights=cfg.feature_weights, device=device)
