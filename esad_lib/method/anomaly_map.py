"""The anomaly map of ESAD and RIAD, from an image and its reconstructions (ESAD, "feature-level
anomaly discrimination"; RIAD's MSGMS map).  Pure tensor maths, no I/O:
``esad_lib.scoring`` runs the model over a dataset and calls these.

For one image ``x`` and its reconstruction ``x_c`` per cutout size ``c``::

    pixel map   (RIAD)   M_c = 1 - MSGMS(x, x_c)
    feature map (ESAD)   M_c = mean over layers l of  1/2 || f_l(x)/|f_l(x)| - f_l(x_c)/|f_l(x_c)| ||^2,
                         each layer upsampled bilinearly to the input size
    average              M = (1/|C|) sum_c M_c
    smoothing            "mean" (RIAD's box filter), "gaussian" or "none", at network resolution
    standardisation      (M - mean) / std per pixel, statistics of anomaly-free maps  [ours]
    image score          max of M upsampled to the image's original size (MVTec's definition)

Deviation (ours): the smoothing sizes are in network-input pixels and the smoothing happens
before the upsampling to the original size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from esad_lib.config import ESADConfig
from esad_lib.method.loss import msgms_map

__all__ = [
    "SMOOTHINGS",
    "MapStats",
    "average_over_cutouts",
    "feature_distance_map",
    "feature_map",
    "gaussian_filter",
    "gaussian_kernel1d",
    "image_scores",
    "mean_filter",
    "pixel_map",
    "smooth_maps",
    "upsample_map",
]

#: smoothings ``smooth_maps`` accepts (``cfg.smoothing``).
SMOOTHINGS = ("mean", "gaussian", "none")


# --------------------------------------------------------------------------------------------
# the per-cutout-size maps
# --------------------------------------------------------------------------------------------
def _normalise_channels(f: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return f / f.norm(dim=1, keepdim=True).clamp_min(eps)


def feature_distance_map(
    extractor: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    out_size: tuple[int, int] | None = None,
    layers: Sequence[int] | None = None,
) -> torch.Tensor:
    """Feature-level anomaly map [B, 1, H_out, W_out] between images x and y ([B,3,H,W] in [-1,1]).

    Per layer l and position p, with channel vectors a = f_l(x)[:, :, p] and b = f_l(y)[:, :, p]:
        d_l(p) = 1/2 || a/|a| - b/|b| ||^2  ( = 1 - cos(a, b) for non-zero a, b; in [0, 2] )
    A zero vector stays zero after normalisation, so identical inputs always give d = 0 (plain
    1 - cos would give 1 where a ReLU feature vector is all zero).  Each d_l is upsampled
    bilinearly to ``out_size`` (default: the input size) and the maps are averaged over
    ``layers`` (default: all layers the extractor returns).
    """
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    size = tuple(out_size) if out_size is not None else tuple(x.shape[-2:])
    fx = extractor(x)
    fy = extractor(y)
    idx = list(layers) if layers is not None else list(range(len(fx)))
    total = None
    for i in idx:
        a, b = _normalise_channels(fx[i].float()), _normalise_channels(fy[i].float())
        # d_l = 0.5 * sum_c (a_hat - b_hat)^2
        d = 0.5 * (a - b).pow(2).sum(dim=1, keepdim=True)
        d = F.interpolate(d, size=size, mode="bilinear", align_corners=False)
        total = d if total is None else total + d
    # mean over layers
    return total / len(idx)


def pixel_map(images: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """RIAD's pixel-level map ``1 - MSGMS(img, recon)``: ``[B,3,H,W] x2 -> [B,H,W]``."""
    # M(x, x_hat) = 1 - MSGMS(x, x_hat)   [RIAD eq. for the anomaly map]
    return 1.0 - msgms_map(images, recon)[:, 0]


def feature_map(extractor, images: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """ESAD's feature-level map (feature distance, upsampled to the input size): ``-> [B,H,W]``."""
    return feature_distance_map(extractor, images, recon, tuple(images.shape[-2:]))[:, 0]


def average_over_cutouts(
    images: torch.Tensor, recons: dict[int, torch.Tensor], extractor=None, score_map: str = "feature"
) -> torch.Tensor:
    """Unsmoothed maps from given reconstructions ``{c: [B,3,H,W]}`` of ``images [B,3,H,W]``:
    one map per cutout size, averaged -> ``[B,H,W]``.  (Split from ``raw_maps`` so that
    reconstructions from another runtime -- ONNX Runtime in ``esad bench`` -- are scored by
    the same code.)"""
    if score_map == "feature" and extractor is None:
        raise ValueError("score_map='feature' needs the feature extractor")
    total = None
    for recon in recons.values():
        m = pixel_map(images, recon) if score_map == "pixel" else feature_map(extractor, images, recon)
        total = m if total is None else total + m
    # M = (1 / |C|) sum_c M_c   (average over cutout sizes, RIAD)
    return total / len(recons)


# --------------------------------------------------------------------------------------------
# smoothing
# --------------------------------------------------------------------------------------------
def _pad_same(x: torch.Tensor, size: int) -> torch.Tensor:
    """Replicate-pad ``x [B,1,H,W]`` so that a ``size x size`` window keeps the shape."""
    lo, hi = (size - 1) // 2, size // 2
    return F.pad(x, (lo, hi, lo, hi), mode="replicate")


def mean_filter(maps: torch.Tensor, size: int) -> torch.Tensor:
    """Box filter of ``size x size`` (RIAD's smoothing), border replicated.

    ``maps [B,H,W] -> [B,H,W]``; equals ``scipy.ndimage.uniform_filter(mode="nearest")``.
    """
    if size <= 1:
        return maps
    x = _pad_same(maps[:, None], size)
    # separable: mean over rows then over columns
    k = torch.full((1, 1, 1, size), 1.0 / size, dtype=maps.dtype, device=maps.device)
    x = F.conv2d(x, k)
    x = F.conv2d(x, k.transpose(2, 3))
    return x[:, 0]


def gaussian_kernel1d(sigma: float, truncate: float = 4.0, dtype=torch.float32) -> torch.Tensor:
    """Normalised 1-D Gaussian of radius ``round(truncate * sigma)`` (as scipy.ndimage)."""
    radius = int(truncate * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    # g(t) = exp(-t^2 / (2 sigma^2)) / sum
    g = torch.exp(-(t**2) / (2.0 * sigma**2))
    return (g / g.sum()).to(dtype)


def gaussian_filter(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian smoothing, separable, border replicated.

    ``maps [B,H,W] -> [B,H,W]``; equals ``scipy.ndimage.gaussian_filter(mode="nearest")``.
    """
    if sigma <= 0:
        return maps
    g = gaussian_kernel1d(sigma, dtype=maps.dtype).to(maps.device)
    size = g.numel()
    x = _pad_same(maps[:, None], size)
    x = F.conv2d(x, g.view(1, 1, 1, size))
    x = F.conv2d(x, g.view(1, 1, size, 1))
    return x[:, 0]


def smooth_maps(maps: torch.Tensor, cfg: ESADConfig) -> torch.Tensor:
    """Apply ``cfg.smoothing`` to ``maps [B,H,W]`` (sizes in network-input pixels)."""
    if cfg.smoothing == "mean":
        return mean_filter(maps, int(cfg.smoothing_size))
    if cfg.smoothing == "gaussian":
        return gaussian_filter(maps, float(cfg.smoothing_sigma))
    if cfg.smoothing == "none":
        return maps
    raise ValueError(f"cfg.smoothing={cfg.smoothing!r}: use one of {SMOOTHINGS}")


# --------------------------------------------------------------------------------------------
# per-pixel standardisation with statistics of anomaly-free maps (train/good or validation/good)
# --------------------------------------------------------------------------------------------
@dataclass
class MapStats:
    """Per-pixel mean and std ``[H,W]`` of the smoothed maps of anomaly-free images.

    [ours] The paper does not normalise maps; standardising each pixel by how much it varies
    on normal images removes the fixed pattern of places that are always hard to reconstruct
    (edges of objects that sit in the same place in every image).  The std is floored at 10 %
    of its mean so that pixels that never vary cannot blow up.
    """

    mean: torch.Tensor
    std: torch.Tensor
    num_images: int

    @classmethod
    def from_maps(cls, maps: torch.Tensor) -> MapStats:
        """``maps [N,H,W]`` (N >= 2) -> per-pixel statistics."""
        if maps.shape[0] < 2:
            raise ValueError(
                "map normalisation needs at least 2 anomaly-free images in the split it uses; "
                "add images to it or set map_normalization='none'"
            )
        mean = maps.mean(0)
        std = maps.std(0)
        std = std.clamp_min(0.1 * float(std.mean()) + 1e-12)
        return cls(mean=mean, std=std, num_images=int(maps.shape[0]))

    def apply(self, maps: torch.Tensor) -> torch.Tensor:
        """``(map - mean) / std`` per pixel; ``maps [B,H,W]``."""
        return (maps - self.mean.to(maps.device)) / self.std.to(maps.device)


# --------------------------------------------------------------------------------------------
# image score and original resolution
# --------------------------------------------------------------------------------------------
def image_scores(maps: torch.Tensor) -> torch.Tensor:
    """Max of each network-size map: ``[B,H,W] -> [B]`` (quick looks in the notebooks).

    The reported image score (``ScoreResult.scores``) is the max of the map upsampled to the
    image's original size, MVTec's official definition; ``score_dataset`` computes that.
    """
    return maps.flatten(1).amax(1)


def upsample_map(m: torch.Tensor | np.ndarray, size: tuple[int, int], dtype=np.float32) -> np.ndarray:
    """Bilinear upsampling of one map ``[h,w]`` to the original size ``(H0, W0)`` (numpy)."""
    t = torch.as_tensor(np.asarray(m, dtype=np.float32))[None, None]
    if tuple(t.shape[-2:]) != tuple(size):
        t = F.interpolate(t, size=tuple(int(s) for s in size), mode="bilinear", align_corners=False)
    return t[0, 0].numpy().astype(dtype, copy=False)
