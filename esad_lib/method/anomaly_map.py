"""The anomaly map (ESAD's "feature-level anomaly discrimination"; RIAD's MSGMS map), pure tensor
maths (``esad_lib.scoring`` runs the model).  For an image ``x``, its reconstruction ``x_c``::

    pixel map   (RIAD)   M_c = 1 - MSGMS(x, x_c)
    feature map (ESAD)   M_c = mean_l  1/2 || f_l(x)/|f_l(x)| - f_l(x_c)/|f_l(x_c)| ||^2,
                         each layer upsampled bilinearly to the input size
    average              M = (1/|C|) sum_c M_c
    smoothing            "mean" (RIAD's box filter), "gaussian" or "none"
    standardisation      (M - mean) / std per pixel, statistics of anomaly-free maps   [ours]
    image score          max of M upsampled to the image's original size (MVTec's definition)

Deviation (ours): smoothing sizes are in network-input pixels, and smoothing happens before the
upsampling to the original size."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from esad_lib.method.loss import msgms_map

#: smoothings ``smooth_maps`` accepts (``cfg.smoothing``).
SMOOTHINGS = ("mean", "gaussian", "none")


def feature_distance_map(
    extractor: nn.Module, x: Tensor, y: Tensor, out_size: tuple[int, int] | None = None, layers=None
) -> Tensor:
    """Feature-level anomaly map ``[B, 1, H_out, W_out]`` between images x and y ``[B, 3, H, W]``:
    per layer l, d_l(p) = 1/2 || a/|a| - b/|b| ||^2 with a, b the channel vectors of f_l(x), f_l(y)
    at p (= 1 - cos(a, b) for non-zero a, b; a zero vector stays zero, so identical inputs give
    0), upsampled bilinearly to ``out_size`` (default: input size), mean over ``layers``."""
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    size = tuple(out_size) if out_size is not None else tuple(x.shape[-2:])
    fx, fy = extractor(x), extractor(y)
    idx = list(layers) if layers is not None else list(range(len(fx)))
    total = None
    for i in idx:
        # a_hat = a / max(|a|, eps) over channels
        a, b = (f[i].float() / f[i].float().norm(dim=1, keepdim=True).clamp_min(1e-8) for f in (fx, fy))
        # d_l = 0.5 * sum_c (a_hat - b_hat)^2
        d = 0.5 * (a - b).pow(2).sum(dim=1, keepdim=True)
        d = F.interpolate(d, size=size, mode="bilinear", align_corners=False)
        total = d if total is None else total + d
    # mean over layers
    return total / len(idx)


def pixel_map(images: Tensor, recon: Tensor) -> Tensor:
    """RIAD's pixel-level map ``1 - MSGMS(img, recon)``: ``[B,3,H,W] x2 -> [B,H,W]``."""
    return 1.0 - msgms_map(images, recon)[:, 0]


def feature_map(extractor: nn.Module, images: Tensor, recon: Tensor) -> Tensor:
    """ESAD's feature-level map at the input size: ``[B,3,H,W] x2 -> [B,H,W]``."""
    return feature_distance_map(extractor, images, recon, tuple(images.shape[-2:]))[:, 0]


def average_over_cutouts(
    images: Tensor, recons: dict[int, Tensor], extractor: nn.Module | None = None, score_map: str = "feature"
) -> Tensor:
    """Unsmoothed map of ``images [B,3,H,W]`` from reconstructions ``{c: [B,3,H,W]}``: one map
    per cutout size, averaged -> ``[B,H,W]`` (also for reconstructions from another runtime)."""
    if score_map == "feature" and extractor is None:
        raise ValueError("score_map='feature' needs the feature extractor")
    total = None
    for recon in recons.values():
        m = pixel_map(images, recon) if score_map == "pixel" else feature_map(extractor, images, recon)
        total = m if total is None else total + m
    # M = (1 / |C|) sum_c M_c   (average over cutout sizes, RIAD)
    return total / len(recons)


def _separable(maps: Tensor, g: Tensor) -> Tensor:
    """``maps [B,H,W]`` filtered by ``g [k]`` along rows then columns, border replicated."""
    k = g.numel()
    lo, hi = (k - 1) // 2, k // 2
    x = F.pad(maps[:, None], (lo, hi, lo, hi), mode="replicate")
    x = F.conv2d(x, g.view(1, 1, 1, k))
    return F.conv2d(x, g.view(1, 1, k, 1))[:, 0]


def mean_filter(maps: Tensor, size: int) -> Tensor:
    """``size x size`` box filter (RIAD's smoothing): ``[B,H,W] -> [B,H,W]``, as
    ``scipy.ndimage.uniform_filter(mode="nearest")``."""
    if size <= 1:
        return maps
    return _separable(maps, torch.full((size,), 1.0 / size, dtype=maps.dtype, device=maps.device))


def gaussian_filter(maps: Tensor, sigma: float) -> Tensor:
    """Gaussian smoothing of radius ``round(4 sigma)``: ``[B,H,W] -> [B,H,W]``, as
    ``scipy.ndimage.gaussian_filter(mode="nearest")``."""
    if sigma <= 0:
        return maps
    t = torch.arange(-int(4.0 * sigma + 0.5), int(4.0 * sigma + 0.5) + 1, dtype=torch.float64)
    # g(t) = exp(-t^2 / (2 sigma^2)) / sum
    g = torch.exp(-(t**2) / (2.0 * sigma**2))
    return _separable(maps, (g / g.sum()).to(maps.dtype).to(maps.device))


def smooth_maps(maps: Tensor, cfg) -> Tensor:
    """``cfg.smoothing`` applied to ``maps [B,H,W]`` (sizes in network-input pixels)."""
    if cfg.smoothing == "mean":
        return mean_filter(maps, int(cfg.smoothing_size))
    if cfg.smoothing == "gaussian":
        return gaussian_filter(maps, float(cfg.smoothing_sigma))
    if cfg.smoothing == "none":
        return maps
    raise ValueError(f"cfg.smoothing={cfg.smoothing!r}: use one of {SMOOTHINGS}")


@dataclass
class MapStats:
    """Per-pixel mean and std ``[H,W]`` of the smoothed maps of anomaly-free images.  [ours, the
    paper does not normalise] It removes the fixed pattern of places that are always hard to
    reconstruct; the std is floored at 10 % of its mean (pixels that never vary)."""

    mean: Tensor
    std: Tensor
    num_images: int

    @classmethod
    def from_maps(cls, maps: Tensor) -> MapStats:
        """``maps [N,H,W]`` (N >= 2) -> per-pixel statistics."""
        if maps.shape[0] < 2:
            raise ValueError(
                "map normalisation needs at least 2 anomaly-free images in the split it uses; "
                "add images to it or set map_normalization='none'"
            )
        std = maps.std(0)
        std = std.clamp_min(0.1 * float(std.mean()) + 1e-12)
        return cls(mean=maps.mean(0), std=std, num_images=int(maps.shape[0]))

    def apply(self, maps: Tensor) -> Tensor:
        """``(map - mean) / std`` per pixel; ``maps [B,H,W]``."""
        return (maps - self.mean.to(maps.device)) / self.std.to(maps.device)


def image_scores(maps: Tensor) -> Tensor:
    """Max of each network-size map, ``[B,H,W] -> [B]`` (quick looks; the reported image score is
    the max of the map upsampled to the original size, MVTec's definition)."""
    return maps.flatten(1).amax(1)


def upsample_map(m: Tensor | np.ndarray, size: tuple[int, int], dtype=np.float32) -> np.ndarray:
    """Bilinear upsampling of one map ``[h,w]`` to the original size ``(H0, W0)`` (numpy)."""
    t = torch.as_tensor(np.asarray(m, dtype=np.float32))[None, None]
    if tuple(t.shape[-2:]) != tuple(size):
        t = F.interpolate(t, size=tuple(int(s) for s in size), mode="bilinear", align_corners=False)
    return t[0, 0].numpy().astype(dtype, copy=False)
