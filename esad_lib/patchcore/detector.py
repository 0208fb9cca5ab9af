"""The ``PatchCore`` detector (``esad_lib.patchcore`` states the pipeline and its deviations)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from esad_lib.config import ESADConfig, PatchCoreConfig, resolve_device
from esad_lib.features import build_feature_extractor
from esad_lib.method.anomaly_map import gaussian_filter
from esad_lib.patchcore.patches import greedy_coreset_indices, nearest_neighbour_distances, patch_features


class PatchCore:
    """Training-free detector: ``fit`` builds ``memory_bank [N, D]``; maps ``[B,3,H,W] -> [B,H,W]``;
    ``config`` (``PatchCoreConfig``) changed by ``settings``."""

    name = "patchcore"

    def __init__(self, extractor: torch.nn.Module, config: PatchCoreConfig | None = None, seed: int = 0,
                 cfg: ESADConfig | None = None, **settings: Any) -> None:
        self.config = (config or PatchCoreConfig()).replace(**settings)
        self.extractor = extractor.eval()
        self.seed = int(seed)
        self.batch_size = self.config.batch_size
        self.cfg = cfg  # the run's config (data, profile) for metrics.json; None outside a run
        self.memory_bank: torch.Tensor | None = None  # [N, D]
        self.full_bank_size = 0
        self.grid: tuple[int, int] | None = None
        self.image_size: tuple[int, int] | None = None
        self.fit_seconds = 0.0

    @classmethod
    def from_config(cls, cfg: ESADConfig, config: PatchCoreConfig | None = None, **kw: Any) -> PatchCore:
        """An unfitted PatchCore on ``cfg.device`` with ``config.extractor`` and ``seed=cfg.seed``."""
        config = (config or PatchCoreConfig()).replace(**kw)
        if config.extractor == "recon_encoder":
            raise ValueError("extractor 'recon_encoder' is the encoder of a trained ESAD net; PatchCore is "
                             "training-free: use a frozen one such as 'random_cnn' or an ImageNet backbone")
        device = resolve_device(cfg.device)
        ext = build_feature_extractor(config.extractor, weights=cfg.feature_weights, device=device)
        return cls(ext, config, seed=cfg.seed, cfg=cfg)

    @property
    def device(self) -> torch.device:
        p = next(self.extractor.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def info(self) -> dict[str, Any]:
        """The metrics.json entries (``esad_lib.evaluation.evaluate``): once fitted, the bank's size too."""
        bank = self.memory_bank
        p = {**self.config.to_dict(), "layers": list(self.config.layers),
             "extractor": str(getattr(self.extractor, "name", type(self.extractor).__name__)),
             "seed": self.seed, "full_bank_size": self.full_bank_size,
             "bank_size": None if bank is None else int(bank.shape[0]),
             "feature_dim": None if bank is None else int(bank.shape[1]),
             "grid": None if self.grid is None else list(self.grid)}
        out: dict[str, Any] = {
            "score_map": "nearest_neighbour", "smoothing": "gaussian" if self.config.sigma > 0 else "none",
            "map_normalization": "none", "feature_extractor": p["extractor"], "patchcore": p}
        if self.cfg is not None:
            out["config_key"] = self.config.key(self.cfg)
        return out

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Patch features of a batch: ``[B,3,H,W] -> [B, h, w, D]``."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"PatchCore expects images [B, 3, H, W] in [-1, 1], got {tuple(images.shape)}")
        maps = self.extractor(images.to(self.device))
        c = self.config
        return patch_features(maps, c.layers, c.patch_size, c.target_dim)

    @torch.no_grad()
    def fit(self, images: torch.Tensor | Iterable[torch.Tensor], progress: bool = False) -> PatchCore:
        """Build the memory bank from anomaly-free images ``[N,3,H,W]`` (or an iterable of batches)."""
        t0 = time.perf_counter()
        feats, size = [], None
        batches = images.split(self.batch_size) if isinstance(images, torch.Tensor) else images
        for batch in tqdm(batches, desc="patchcore: memory bank", disable=not progress, leave=False):
            size = size or tuple(batch.shape[-2:])
            if tuple(batch.shape[-2:]) != size:
                raise ValueError(f"fit images must share one size; got {size} and {tuple(batch.shape[-2:])}")
            f = self.embed(batch)
            self.grid = (int(f.shape[1]), int(f.shape[2]))
            feats.append(f.reshape(-1, f.shape[-1]))
        if not feats:
            raise ValueError("PatchCore.fit got no images; fit it on the train/good images of a category")
        bank = torch.cat(feats)
        self.full_bank_size = int(bank.shape[0])
        if self.config.coreset_ratio < 1.0:
            n_select = max(1, int(self.full_bank_size * self.config.coreset_ratio))
            idx = greedy_coreset_indices(bank, n_select, self.config.projection_dim, self.seed,
                                         progress=progress)
            bank = bank[idx.to(bank.device)]
        self.memory_bank = bank.contiguous()
        self.image_size = size
        self.fit_seconds = time.perf_counter() - t0
        return self

    @torch.no_grad()
    def patch_distances(self, images: torch.Tensor) -> torch.Tensor:
        """Nearest-neighbour distance of every patch to the bank: ``[B,3,H,W] -> [B, h, w]``."""
        if self.memory_bank is None:
            raise RuntimeError("PatchCore is not fitted: call fit(train images) first")
        if self.image_size is not None and tuple(images.shape[-2:]) != self.image_size:
            raise ValueError(f"PatchCore was fitted at {self.image_size}, got {tuple(images.shape[-2:])}")
        f = self.embed(images)
        dist, _ = nearest_neighbour_distances(f.reshape(-1, f.shape[-1]), self.memory_bank)
        return dist.reshape(f.shape[:-1])

    @torch.no_grad()
    def anomaly_maps(self, images: torch.Tensor) -> torch.Tensor:
        """Patch grid -> bilinear to the input size -> Gaussian of ``sigma`` pixels [PC]: ``[B,H,W]``."""
        d = self.patch_distances(images)[:, None]
        m = F.interpolate(d, size=tuple(images.shape[-2:]), mode="bilinear", align_corners=False)[:, 0]
        return gaussian_filter(m, self.config.sigma)
