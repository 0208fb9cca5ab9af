"""The :class:`PatchCore` detector: fit a memory bank on anomaly-free images, score test images
as patch-to-bank distances, upsampled and smoothed (:mod:`esad_lib.patchcore` states the pipeline
and its deviations)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from esad_lib.method.anomaly_map import gaussian_filter
from esad_lib.patchcore.patches import (
    PATCHCORE_CORESET_RATIO,
    PATCHCORE_LAYERS,
    PATCHCORE_PATCH_SIZE,
    PATCHCORE_PROJECTION_DIM,
    PATCHCORE_SIGMA,
    greedy_coreset_indices,
    nearest_neighbour_distances,
    patch_features,
)


class PatchCore:
    """Training-free PatchCore-style detector (see :mod:`esad_lib.patchcore`).

    ``fit(train images)`` builds ``memory_bank [N, D]``; ``patch_distances(images)`` gives the
    nearest-neighbour distance per patch ``[B, h, w]``; ``anomaly_maps(images)`` the smoothed
    maps at the input resolution ``[B, H, W]``.  Images are ``[B, 3, H, W]`` in [-1, 1].

    Parameters: ``extractor`` (a module from ``build_feature_extractor``), ``layers`` (taps),
    ``patch_size`` (aggregation neighbourhood), ``target_dim`` (channel reduction, None = off),
    ``coreset_ratio`` (1.0 = keep the whole bank), ``projection_dim`` (JL dimension of the
    coreset selection, None = no projection), ``sigma`` (Gaussian smoothing, input pixels;
    0 = off), ``chunk_size`` / ``bank_chunk_size`` (nearest-neighbour blocks), ``batch_size``
    (images per extractor call), ``seed`` (coreset projection and first patch).
    """

    def __init__(
        self,
        extractor: torch.nn.Module,
        layers: Sequence[int] = PATCHCORE_LAYERS,
        patch_size: int = PATCHCORE_PATCH_SIZE,
        target_dim: int | None = None,
        coreset_ratio: float = PATCHCORE_CORESET_RATIO,
        projection_dim: int | None = PATCHCORE_PROJECTION_DIM,
        sigma: float = PATCHCORE_SIGMA,
        chunk_size: int = 1024,
        bank_chunk_size: int = 8192,
        batch_size: int = 8,
        seed: int = 0,
    ) -> None:
        if not 0.0 < coreset_ratio <= 1.0:
            raise ValueError(f"coreset_ratio={coreset_ratio}: use a fraction in (0, 1] (1.0 = no coreset)")
        if patch_size < 1 or patch_size % 2 == 0:
            raise ValueError(f"patch_size={patch_size}: use an odd size >= 1 (PatchCore: 3)")
        if target_dim is not None and target_dim < 1:
            raise ValueError(f"target_dim={target_dim}: use None (no reduction) or a size >= 1")
        if projection_dim is not None and projection_dim < 1:
            raise ValueError(f"projection_dim={projection_dim}: use None (no projection) or a size >= 1")
        if sigma < 0:
            raise ValueError(f"sigma={sigma}: use 0 (no smoothing) or a positive Gaussian sigma")
        if chunk_size < 1 or bank_chunk_size < 1 or batch_size < 1:
            raise ValueError(
                f"chunk_size={chunk_size}, bank_chunk_size={bank_chunk_size}, batch_size={batch_size}: "
                "all must be >= 1"
            )
        self.extractor = extractor.eval()
        self.layers = tuple(int(i) for i in layers)
        self.patch_size = int(patch_size)
        self.target_dim = None if target_dim is None else int(target_dim)
        self.coreset_ratio = float(coreset_ratio)
        self.projection_dim = None if projection_dim is None else int(projection_dim)
        self.sigma = float(sigma)
        self.chunk_size = int(chunk_size)
        self.bank_chunk_size = int(bank_chunk_size)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.memory_bank: torch.Tensor | None = None  # [N, D]
        self.full_bank_size = 0
        self.grid: tuple[int, int] | None = None
        self.image_size: tuple[int, int] | None = None
        self.fit_seconds = 0.0

    @property
    def device(self) -> torch.device:
        p = next(self.extractor.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def params(self) -> dict[str, Any]:
        """The settings (and, once fitted, the bank's size) as a JSON-serialisable dict."""
        return {
            "extractor": str(getattr(self.extractor, "name", type(self.extractor).__name__)),
            "layers": list(self.layers),
            "patch_size": self.patch_size,
            "target_dim": self.target_dim,
            "coreset_ratio": self.coreset_ratio,
            "projection_dim": self.projection_dim,
            "sigma": self.sigma,
            "seed": self.seed,
            "chunk_size": self.chunk_size,
            "bank_chunk_size": self.bank_chunk_size,
            "full_bank_size": self.full_bank_size,
            "bank_size": None if self.memory_bank is None else int(self.memory_bank.shape[0]),
            "feature_dim": None if self.memory_bank is None else int(self.memory_bank.shape[1]),
            "grid": None if self.grid is None else list(self.grid),
        }

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Patch features of a batch: ``[B,3,H,W] -> [B, h, w, D]``."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"PatchCore expects images [B, 3, H, W] in [-1, 1], got {tuple(images.shape)}")
        maps = self.extractor(images.to(self.device))
        return patch_features(maps, self.layers, self.patch_size, self.target_dim)

    def _batches(self, images: torch.Tensor | Iterable[torch.Tensor]) -> Iterable[torch.Tensor]:
        if isinstance(images, torch.Tensor):
            return images.split(self.batch_size)
        return images

    @torch.no_grad()
    def fit(self, images: torch.Tensor | Iterable[torch.Tensor], progress: bool = False) -> PatchCore:
        """Build the memory bank from anomaly-free images (a tensor ``[N,3,H,W]``, split into
        ``batch_size`` batches, or an iterable of batches).  Sets ``fit_seconds``."""
        t0 = time.perf_counter()
        feats, size = [], None
        for batch in tqdm(
            self._batches(images), desc="patchcore: memory bank", disable=not progress, leave=False
        ):
            if size is None:
                size = tuple(batch.shape[-2:])
            elif tuple(batch.shape[-2:]) != size:
                raise ValueError(f"fit images must share one size; got {size} and {tuple(batch.shape[-2:])}")
            f = self.embed(batch)
            self.grid = (int(f.shape[1]), int(f.shape[2]))
            feats.append(f.reshape(-1, f.shape[-1]))
        if not feats:
            raise ValueError("PatchCore.fit got no images; fit it on the train/good images of a category")
        bank = torch.cat(feats)
        self.full_bank_size = int(bank.shape[0])
        if self.coreset_ratio < 1.0:
            n_select = max(1, int(self.full_bank_size * self.coreset_ratio))
            idx = greedy_coreset_indices(bank, n_select, self.projection_dim, self.seed, progress=progress)
            bank = bank[idx.to(bank.device)]
        self.memory_bank = bank.contiguous()
        self.image_size = size
        self.fit_seconds = time.perf_counter() - t0
        return self

    @torch.no_grad()
    def patch_distances(self, images: torch.Tensor) -> torch.Tensor:
        """Nearest-neighbour distance of every patch to the bank: ``[B,3,H,W] -> [B, h, w]``
        (before upsampling and smoothing)."""
        if self.memory_bank is None:
            raise RuntimeError("PatchCore is not fitted: call fit(train images) first")
        f = self.embed(images)
        b, h, w, d = f.shape
        dist, _ = nearest_neighbour_distances(
            f.reshape(-1, d), self.memory_bank, self.chunk_size, self.bank_chunk_size
        )
        return dist.reshape(b, h, w)

    @torch.no_grad()
    def anomaly_maps(self, images: torch.Tensor) -> torch.Tensor:
        """Smoothed anomaly maps at the input resolution: ``[B,3,H,W] -> [B,H,W]``.

        patch grid -> bilinear upsampling to (H, W) -> Gaussian of ``sigma`` input pixels [PC].
        """
        d = self.patch_distances(images)
        size = tuple(images.shape[-2:])
        m = F.interpolate(d[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
        return gaussian_filter(m, self.sigma)
