"""A PatchCore-style reference detector on the project's frozen feature extractors.

PatchCore (Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022) is
the training-free method a user would pick instead of ESAD: no network is trained, a *memory
bank* of patch features of the anomaly-free training images is the whole model, and a test
patch is as anomalous as it is far from its nearest neighbour in the bank.  It is NOT part of
the ESAD paper; it is here so that ESAD's numbers can be read beside the usual alternative,
evaluated by the same protocol (``esad_lib.evaluation.metrics_from_result``).

Pipeline (PatchCore Sec. 3.1-3.3; [PC] marks its choices, [ours] the project's):

1. Frozen extractor ``esad_lib.features.build_feature_extractor(name)`` (any name it accepts);
   images in [-1, 1] -> a list of maps ``[B, C_l, H_l, W_l]``, shallow to deep.  The taps
   used are ``layers`` (default ``(1, 2)``: for the ResNets ``layer2`` + ``layer3`` [PC]; for
   ``random_cnn`` its 1/4 and 1/8 stages).
2. Local neighbourhood aggregation [PC eq. 2-3]: 3 x 3 average pooling, stride 1, per tap at
   its own resolution.
3. The deeper taps are upsampled bilinearly to the first tap's grid and the taps are
   concatenated along channels [PC]; optional reduction to ``target_dim`` channels by
   adaptive average pooling over the channel axis [PC].  One patch feature per grid cell:
   a memory bank ``[N, D]``.
4. Optional coreset subsampling [PC Sec. 3.2, Algorithm 1]: greedy k-center on a seeded
   Johnson-Lindenstrauss random projection, ``coreset_ratio`` of the bank kept (1.0 = off).
5. Scoring [PC Sec. 3.3]: the Euclidean distance of every test patch to its nearest bank
   patch (computed in chunks, bounded memory), a map on the patch grid, upsampled bilinearly
   to the network input resolution and smoothed by a Gaussian of sigma 4 (input pixels) [PC].

Deviations, stated where they happen in the code as well:

* the image score is the max of the smoothed map upsampled to the ORIGINAL image resolution
  (MVTec's definition of image AUROC, the one ESAD is evaluated with here), not PatchCore's
  max patch distance with its re-weighting (PC eq. 7);
* border patches average only the neighbours that exist (``count_include_pad=False``);
  PatchCore's code zero-pads, which pulls border features towards 0;
* the JL projection is a Gaussian matrix, PatchCore's code uses a randomly initialised
  ``nn.Linear``; the coreset starts at one seeded random patch (PC Algorithm 1), PatchCore's
  code starts from the mean distance to 10 random patches;
* the Gaussian filter replicates the border (``esad_lib.anomaly_map.gaussian_filter``, scipy's
  mode "nearest"); PatchCore's code uses scipy's default "reflect".
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from esad_lib.anomaly_map import gaussian_filter
from esad_lib.config import ESADConfig, resolve_device
from esad_lib.data import (
    LOCODataset,
    collate_keep_lists,
    dataset_root,
    input_size,
    list_samples,
    load_defects_config,
)
from esad_lib.evaluation import (
    METRICS_FILE,
    METRICS_SCHEMA,
    SCORES_FILE,
    counts_of,
    metrics_from_result,
    scores_csv,
)
from esad_lib.features import build_feature_extractor
from esad_lib.paths import atomic_write_text
from esad_lib.scoring import ScoreResult

#: [PC] taps: the two intermediate ones (ResNet layer2 + layer3).
PATCHCORE_LAYERS: tuple[int, ...] = (1, 2)
#: [PC] neighbourhood size p of the local aggregation.
PATCHCORE_PATCH_SIZE = 3
#: [PC] Gaussian sigma of the map smoothing, in network-input pixels.
PATCHCORE_SIGMA = 4.0
#: [PC] fraction of the memory bank kept by the coreset (the paper's PatchCore-10 %).
PATCHCORE_CORESET_RATIO = 0.1
#: [PC] dimension of the Johnson-Lindenstrauss projection used by the coreset selection.
PATCHCORE_PROJECTION_DIM = 128


# --------------------------------------------------------------------------------------------
# patch features
# --------------------------------------------------------------------------------------------
def _check_layers(layers: Sequence[int], n_maps: int) -> list[int]:
    idx = [int(i) for i in layers]
    if not idx:
        raise ValueError("layers=() : PatchCore needs at least one feature tap, e.g. layers=(1, 2)")
    bad = [i for i in idx if not -n_maps <= i < n_maps]
    if bad:
        raise ValueError(
            f"layers={tuple(layers)}: tap(s) {bad} out of range; the extractor returns {n_maps} maps "
            f"(indices 0..{n_maps - 1}, shallow to deep)"
        )
    return idx


def local_aggregate(feat: torch.Tensor, patch_size: int = PATCHCORE_PATCH_SIZE) -> torch.Tensor:
    """PatchCore's local neighbourhood aggregation: ``[B,C,h,w] -> [B,C,h,w]``.

    phi(h, w) = mean of f(a, b) over the p x p neighbourhood of (h, w)   [PC eq. 2-3]
    Deviation: at the border only the neighbours that exist are averaged
    (``count_include_pad=False``); PatchCore's code zero-pads.
    """
    if patch_size <= 1:
        return feat
    return F.avg_pool2d(
        feat, kernel_size=patch_size, stride=1, padding=patch_size // 2, count_include_pad=False
    )


def reduce_channels(feats: torch.Tensor, target_dim: int | None) -> torch.Tensor:
    """Adaptive average pooling over the channel axis (PatchCore's dimension reduction).

    ``feats [N, C] -> [N, target_dim]`` (unchanged when ``target_dim`` is None or >= C).
    """
    if target_dim is None or target_dim >= feats.shape[1]:
        return feats
    return F.adaptive_avg_pool1d(feats[:, None, :], int(target_dim))[:, 0, :]


def patch_features(
    maps: Sequence[torch.Tensor],
    layers: Sequence[int] = PATCHCORE_LAYERS,
    patch_size: int = PATCHCORE_PATCH_SIZE,
    target_dim: int | None = None,
) -> torch.Tensor:
    """Locally aware patch features from an extractor's maps: ``-> [B, h, w, D]``.

    ``maps`` is the extractor's list ``[B,C_l,H_l,W_l]`` (shallow to deep); the taps ``layers``
    are aggregated (``local_aggregate``), the deeper ones upsampled bilinearly to the grid
    ``(h, w)`` of the first tap listed [PC], concatenated (``D = sum C_l``) and optionally
    reduced to ``target_dim`` channels (``reduce_channels``).
    """
    idx = _check_layers(layers, len(maps))
    agg = [local_aggregate(maps[i].float(), patch_size) for i in idx]
    h, w = agg[0].shape[-2:]
    up = [
        a
        if tuple(a.shape[-2:]) == (h, w)
        else F.interpolate(a, size=(h, w), mode="bilinear", align_corners=False)
        for a in agg
    ]
    x = torch.cat(up, dim=1)  # [B, D, h, w]
    b, d = x.shape[:2]
    flat = x.permute(0, 2, 3, 1).reshape(-1, d)
    flat = reduce_channels(flat, target_dim)
    return flat.reshape(b, h, w, flat.shape[1])


# --------------------------------------------------------------------------------------------
# coreset
# --------------------------------------------------------------------------------------------
def jl_projection(dim: int, projection_dim: int | None, seed: int) -> torch.Tensor | None:
    """Seeded Gaussian Johnson-Lindenstrauss matrix ``[dim, projection_dim]`` (entries
    N(0, 1/projection_dim)), or None (identity) when ``projection_dim`` is None or >= ``dim``
    (a projection that does not reduce the dimension would only add distortion)."""
    if projection_dim is None or projection_dim >= dim:
        return None
    gen = torch.Generator().manual_seed(int(seed))
    # psi(x) = x R,  R_ij ~ N(0, 1/k)   (JL lemma: distances kept within 1 +- eps w.h.p.)
    return torch.randn(dim, int(projection_dim), generator=gen, dtype=torch.float32) / projection_dim**0.5


def greedy_coreset_indices(
    features: torch.Tensor,
    n_select: int,
    projection_dim: int | None = PATCHCORE_PROJECTION_DIM,
    seed: int = 0,
    first_index: int | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """PatchCore's approximate greedy coreset (PC Algorithm 1): indices ``int64 [n_select]``.

    ``features [N, D]`` are projected by the seeded JL matrix (``jl_projection``; identity when
    ``projection_dim`` is None); the first index is a seeded random patch (or ``first_index``),
    then greedy k-center:

        m* = argmax_{m in M \\ M_C} min_{n in M_C} || psi(m) - psi(n) ||_2      [PC Alg. 1]

    Selected patches are excluded from the argmax (ties: the lowest index).  Distances are
    exact differences (no matrix-product shortcut), so the choice is reproducible.
    """
    n = features.shape[0]
    if not 1 <= n_select <= n:
        raise ValueError(f"n_select={n_select}: choose between 1 and the number of features ({n})")
    feats = features.float()
    proj = jl_projection(feats.shape[1], projection_dim, seed)
    if proj is not None:
        feats = feats @ proj.to(feats.device)
    if first_index is None:
        gen = torch.Generator().manual_seed(int(seed))
        first_index = int(torch.randint(n, (1,), generator=gen))
    chosen = torch.empty(n_select, dtype=torch.int64)
    chosen[0] = int(first_index)
    # min_dist(m) = min_{n in M_C} ||psi(m) - psi(n)||^2  (squared: same argmax)
    min_dist = (feats - feats[first_index]).pow_(2).sum(1)
    min_dist[first_index] = -1.0  # selected: never chosen again
    buf = torch.empty_like(feats)
    for k in tqdm(range(1, n_select), desc="coreset", disable=not progress, leave=False):
        idx = int(torch.argmax(min_dist))
        chosen[k] = idx
        torch.sub(feats, feats[idx], out=buf)
        d = buf.pow_(2).sum(1)
        torch.minimum(min_dist, d, out=min_dist)
        min_dist[idx] = -1.0
    return chosen


# --------------------------------------------------------------------------------------------
# nearest-neighbour search
# --------------------------------------------------------------------------------------------
def nearest_neighbour_distances(
    queries: torch.Tensor,
    bank: torch.Tensor,
    chunk_size: int = 1024,
    bank_chunk_size: int = 8192,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Distance of each query to its nearest bank entry: ``[M,D] x [N,D] -> (float32 [M], int64 [M])``.

    s(q) = min_{m in bank} || q - m ||_2      [PC Sec. 3.3]

    Memory is bounded by one ``chunk_size x bank_chunk_size`` block of ``torch.cdist`` at a
    time (running minimum over the bank chunks).  The search runs in float64 with cdist's
    matrix-product form (fast; float64 so that rounding can only confuse neighbours whose
    distances differ by less than ~1e-8 of the feature norm); the returned distance is then recomputed exactly
    from the difference vector to the chosen neighbour, row by row, so it does not depend on
    the chunk sizes, and a query that is in the bank gets exactly 0.
    """
    if chunk_size < 1 or bank_chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size}, bank_chunk_size={bank_chunk_size}: both must be >= 1")
    if queries.dim() != 2 or bank.dim() != 2 or queries.shape[1] != bank.shape[1]:
        raise ValueError(
            f"queries {tuple(queries.shape)} and bank {tuple(bank.shape)} must be [M, D] and [N, D] "
            "with one D; was the bank fitted with another extractor, layers or target_dim?"
        )
    if bank.shape[0] == 0:
        raise ValueError("the memory bank is empty; fit PatchCore on at least one image")
    m = queries.shape[0]
    dists = torch.empty(m, dtype=torch.float32, device=queries.device)
    index = torch.empty(m, dtype=torch.int64, device=queries.device)
    for q0 in range(0, m, chunk_size):
        q = queries[q0 : q0 + chunk_size].double()
        best = torch.full((q.shape[0],), float("inf"), dtype=torch.float64, device=q.device)
        best_idx = torch.zeros(q.shape[0], dtype=torch.int64, device=q.device)
        for b0 in range(0, bank.shape[0], bank_chunk_size):
            d = torch.cdist(q, bank[b0 : b0 + bank_chunk_size].double())
            v, i = d.min(dim=1)
            better = v < best  # strict: the first (lowest) index wins ties, as torch.min
            best = torch.where(better, v, best)
            best_idx = torch.where(better, i + b0, best_idx)
        # exact distance to the chosen neighbour: sqrt(sum_d (q_d - m_d)^2)
        exact = (q - bank[best_idx].double()).pow_(2).sum(1).sqrt_()
        dists[q0 : q0 + q.shape[0]] = exact.float()
        index[q0 : q0 + q.shape[0]] = best_idx
    return dists, index


# --------------------------------------------------------------------------------------------
# the detector
# --------------------------------------------------------------------------------------------
class PatchCore:
    """Training-free PatchCore-style detector (see the module docstring).

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


# --------------------------------------------------------------------------------------------
# the project's protocol: fit on train/good, score a split, metrics.json
# --------------------------------------------------------------------------------------------
def build_patchcore(
    cfg: ESADConfig, extractor: str | torch.nn.Module | None = None, **params: Any
) -> PatchCore:
    """An unfitted ``PatchCore`` on ``cfg.device`` with extractor ``extractor`` (a name
    ``build_feature_extractor`` accepts, or a module; default ``cfg.feature_extractor``) and
    ``seed=cfg.seed`` unless given; ``params`` go to ``PatchCore``."""
    device = resolve_device(cfg.device)
    if extractor is None:
        extractor = cfg.feature_extractor
    if isinstance(extractor, str):
        if extractor == "recon_encoder":
            raise ValueError(
                "extractor 'recon_encoder' is the encoder of a trained ESAD net; PatchCore is training-free: "
                "use a frozen extractor such as 'random_cnn' or an ImageNet backbone"
            )
        extractor = build_feature_extractor(extractor, weights=cfg.feature_weights, device=device)
    params.setdefault("seed", cfg.seed)
    return PatchCore(extractor.to(device), **params)


def _dataset(cfg: ESADConfig, root: Path, split: str, label: str, channels: bool, max_images: int | None):
    ds = LOCODataset(
        root, cfg.category, split, image_size=input_size(cfg, root), labels=[label], return_channels=channels
    )
    n = len(ds) if max_images is None else min(len(ds), int(max_images))
    return ds if n == len(ds) else torch.utils.data.Subset(ds, list(range(n)))


def _loader(ds, cfg: ESADConfig, batch_size: int):
    return torch.utils.data.DataLoader(
        ds, batch_size=batch_size, shuffle=False, num_workers=cfg.num_workers, collate_fn=collate_keep_lists
    )


def fit_patchcore(
    cfg: ESADConfig,
    extractor: str | torch.nn.Module | None = None,
    root: str | Path | None = None,
    progress: bool = True,
    **params: Any,
) -> PatchCore:
    """``build_patchcore`` + ``fit`` on ``train/good`` of ``cfg.category`` at ``cfg.image_size``."""
    root = Path(root) if root is not None else dataset_root(cfg)
    if not list_samples(root, cfg.category, split="train", labels=["good"]):
        raise FileNotFoundError(
            f"no train/good images in {root / cfg.category}; PatchCore fits its memory bank on them "
            "(check the dataset root with `esad check`)"
        )
    pc = build_patchcore(cfg, extractor, **params)
    loader = _loader(_dataset(cfg, root, "train", "good", False, None), cfg, pc.batch_size)
    pc.fit((b["image"] for b in loader), progress=progress)
    return pc


def score_dataset_patchcore(
    cfg: ESADConfig,
    extractor: str | torch.nn.Module | None = None,
    detector: PatchCore | None = None,
    split: str = "test",
    labels: Sequence[str] | None = None,
    root: str | Path | None = None,
    max_images: int | None = None,
    keep_channels: bool = True,
    progress: bool = True,
    **params: Any,
) -> ScoreResult:
    """Score ``split`` of ``cfg.category`` with PatchCore -> ``esad_lib.scoring.ScoreResult``.

    ``detector``: a fitted ``PatchCore``; when None one is fitted on train/good
    (``fit_patchcore(cfg, extractor, **params)``) and its fit time is in
    ``result.extra["fit_seconds"]``.  Like ``esad_lib.scoring.score_dataset``: labels that
    exist in the root (default good/logical/structural), ``max_images`` per label
    (``cfg.max_test_images`` when None), images at ``cfg.image_size``, ground-truth channels
    at original size with ``keep_channels``.

    ``maps[i]`` is ``float32 [H,W]`` at the network input resolution (smoothed); ``scores[i]``
    is the max of ``full_res_map(i)``, the map upsampled to the image's ORIGINAL size, i.e.
    image AUROC is computed from "the max of the full-resolution map" (the MVTec definition).
    Deviation: PatchCore's own image score is the max patch distance (re-weighted, PC eq. 7).
    ``seconds``: features + nearest neighbours + maps + scores, without image loading.
    """
    root = Path(root) if root is not None else dataset_root(cfg)
    if max_images is None:
        max_images = cfg.max_test_images
    wanted = list(labels) if labels is not None else ["good", "logical", "structural"]
    present = [lab for lab in wanted if list_samples(root, cfg.category, split=split, labels=[lab])]
    if not present:
        raise FileNotFoundError(
            f"no images for labels {wanted} in {root / cfg.category / split}; check the dataset root "
            "(see `esad check`)"
        )
    if detector is None:
        detector = fit_patchcore(cfg, extractor, root=root, progress=progress, **params)
    elif detector.memory_bank is None:
        raise RuntimeError(
            "score_dataset_patchcore got an unfitted PatchCore: fit() it or pass detector=None"
        )
    elif extractor is not None or params:
        raise ValueError("pass either a fitted detector or extractor/params to build one, not both")
    if input_size(cfg, root) != detector.image_size:
        raise ValueError(
            f"the PatchCore was fitted at {detector.image_size} but the input size is {input_size(cfg, root)}"
        )
    out = ScoreResult.empty(
        keep_channels, extra={"fit_seconds": detector.fit_seconds, "patchcore": detector.params()}
    )
    t_wall = time.perf_counter()
    for lab in present:
        loader = _loader(_dataset(cfg, root, split, lab, keep_channels, max_images), cfg, detector.batch_size)
        bar = tqdm(loader, desc=f"patchcore {cfg.category}/{split}/{lab}", disable=not progress, leave=False)
        for batch in bar:
            t0 = time.perf_counter()
            maps = detector.anomaly_maps(batch["image"]).float().cpu().numpy()
            n0 = len(out.maps)
            out.maps += list(maps)
            out.orig_sizes += [(int(s[0]), int(s[1])) for s in batch["orig_size"].tolist()]
            # image score = max of the map at ORIGINAL resolution (what the pixel metrics see)
            s = [float(out.full_res_map(i).max()) for i in range(n0, len(out.maps))]
            out.seconds += time.perf_counter() - t0
            out.scores = np.append(out.scores, np.asarray(s, dtype=np.float64))
            out.labels = np.append(out.labels, np.asarray(batch["label"], dtype=np.int64))
            out.label_names += list(batch["label_name"])
            out.paths += [str(p) for p in batch["path"]]
            if keep_channels:
                out.channels += [np.asarray(c, dtype=np.uint8) for c in batch["channels"]]
    out.wall_seconds = time.perf_counter() - t_wall
    return out


def evaluate_patchcore(
    cfg: ESADConfig,
    out_dir: str | Path,
    extractor: str | torch.nn.Module | None = None,
    root: str | Path | None = None,
    max_images: int | None = None,
    progress: bool = True,
    save_scores: bool = True,
    **params: Any,
) -> dict[str, Any]:
    """Fit PatchCore on train/good, score the test split, write ``out_dir/metrics.json``.

    The layout is that of ESAD's runs (``esad_lib.evaluation.evaluate_run``; read back with
    ``load_metrics``): every metric of ``metrics_from_result``, ``"method": "patchcore"``,
    ``feature_extractor``, ``counts``, ``config``, and ``timing`` with ``fit_seconds`` (memory
    bank + coreset), ``scoring_ms_per_image``, ``scoring_seconds``, ``scoring_wall_seconds``,
    ``metric_seconds``; ``train_seconds`` is None (nothing is trained).  ``patchcore`` holds the
    detector's settings and bank size.  Also writes ``scores.csv`` with ``save_scores``.
    """
    out_dir = Path(out_dir)
    root = Path(root) if root is not None else dataset_root(cfg)
    defects = load_defects_config(root / cfg.category)
    detector = fit_patchcore(cfg, extractor, root=root, progress=progress, **params)
    result = score_dataset_patchcore(
        cfg, detector=detector, root=root, max_images=max_images, progress=progress
    )
    t0 = time.perf_counter()
    metrics = metrics_from_result(result, defects)
    metric_seconds = time.perf_counter() - t0
    info = detector.params()
    # the config as PatchCore used it: its smoothing, no map normalisation, method "patchcore"
    used = cfg.replace(
        method="patchcore",
        feature_extractor=info["extractor"],
        smoothing="gaussian" if detector.sigma > 0 else "none",
        smoothing_sigma=detector.sigma if detector.sigma > 0 else cfg.smoothing_sigma,
        map_normalization="none",
    )
    metrics.update(
        {
            "schema": METRICS_SCHEMA,
            "category": cfg.category,
            "method": "patchcore",
            "profile": cfg.profile,
            "dataset": cfg.dataset,
            "dataset_root": str(root),
            "image_size": list(input_size(cfg, root)),
            "score_map": "nearest_neighbour",
            "smoothing": used.smoothing,
            "map_normalization": "none",
            "feature_extractor": info["extractor"],
            "config_key": used.key(),
            "config": used.to_dict(),
            "counts": counts_of(result.label_names),
            "patchcore": info,
            "timing": {
                "fit_seconds": detector.fit_seconds,
                "train_seconds": None,
                "scoring_ms_per_image": result.ms_per_image,
                "scoring_seconds": result.seconds,
                "scoring_wall_seconds": result.wall_seconds,
                "metric_seconds": metric_seconds,
            },
            "run_dir": str(out_dir),
        }
    )
    atomic_write_text(out_dir / METRICS_FILE, json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    if save_scores:
        atomic_write_text(out_dir / SCORES_FILE, scores_csv(result))
    return metrics


__all__ = [
    "PATCHCORE_CORESET_RATIO",
    "PATCHCORE_LAYERS",
    "PATCHCORE_PATCH_SIZE",
    "PATCHCORE_PROJECTION_DIM",
    "PATCHCORE_SIGMA",
    "PatchCore",
    "build_patchcore",
    "evaluate_patchcore",
    "fit_patchcore",
    "greedy_coreset_indices",
    "jl_projection",
    "local_aggregate",
    "nearest_neighbour_distances",
    "patch_features",
    "reduce_channels",
    "score_dataset_patchcore",
]
