"""The tensor maths of PatchCore (steps 1-5 of ``esad_lib.patchcore``): patch features, the greedy
k-center coreset on a JL projection, chunked nearest-neighbour distances."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from esad_lib.config import PatchCoreConfig

#: the defaults of every setting: ``esad_lib.config.PatchCoreConfig`` (one place).
DEFAULTS = PatchCoreConfig()


def local_aggregate(feat: torch.Tensor, patch_size: int = DEFAULTS.patch_size) -> torch.Tensor:
    """Local neighbourhood aggregation ``[B,C,h,w] -> [B,C,h,w]``; at the border only existing neighbours:
    phi(h, w) = mean of f(a, b) over the p x p neighbourhood of (h, w)   [PC eq. 2-3]"""
    if patch_size <= 1:
        return feat
    return F.avg_pool2d(feat, patch_size, stride=1, padding=patch_size // 2, count_include_pad=False)


def reduce_channels(feats: torch.Tensor, target_dim: int | None) -> torch.Tensor:
    """Adaptive average pooling over channels: ``[N, C] -> [N, target_dim]`` (None or >= C: unchanged)."""
    if target_dim is None or target_dim >= feats.shape[1]:
        return feats
    return F.adaptive_avg_pool1d(feats[:, None, :], int(target_dim))[:, 0, :]


def patch_features(
    maps: Sequence[torch.Tensor], layers: Sequence[int] = DEFAULTS.layers,
    patch_size: int = DEFAULTS.patch_size, target_dim: int | None = None,
) -> torch.Tensor:
    """Patch features from the extractor's maps ``[B,C_l,H_l,W_l]``: ``-> [B, h, w, D]``, first tap's grid."""
    n = len(maps)
    if not layers or any(not -n <= int(i) < n for i in layers):
        raise ValueError(f"layers={tuple(layers)}: PatchCore needs at least one tap, in range; the extractor "
                         f"returns {n} maps (indices 0..{n - 1}, shallow to deep)")
    agg = [local_aggregate(maps[int(i)].float(), patch_size) for i in layers]
    h, w = agg[0].shape[-2:]
    up = [a if a.shape[-2:] == (h, w) else F.interpolate(a, (h, w), mode="bilinear", align_corners=False)
          for a in agg]
    x = torch.cat(up, dim=1)  # [B, D, h, w]
    flat = reduce_channels(x.permute(0, 2, 3, 1).reshape(-1, x.shape[1]), target_dim)
    return flat.reshape(x.shape[0], h, w, flat.shape[1])


def jl_projection(dim: int, projection_dim: int | None, seed: int) -> torch.Tensor | None:
    """Seeded Gaussian JL matrix ``[dim, projection_dim]``, or None when it would not reduce ``dim``."""
    if projection_dim is None or projection_dim >= dim:
        return None
    gen = torch.Generator().manual_seed(int(seed))
    # psi(x) = x R,  R_ij ~ N(0, 1/k)   (JL lemma: distances kept within 1 +- eps w.h.p.)
    return torch.randn(dim, int(projection_dim), generator=gen, dtype=torch.float32) / projection_dim**0.5


def greedy_coreset_indices(
    features: torch.Tensor, n_select: int, projection_dim: int | None = DEFAULTS.projection_dim,
    seed: int = 0, first_index: int | None = None, progress: bool = False,
) -> torch.Tensor:
    """Greedy coreset of ``features [N, D]`` (PC Algorithm 1): indices ``int64 [n_select]``:
        m* = argmax_{m in M \\ M_C} min_{n in M_C} || psi(m) - psi(n) ||_2      [PC Alg. 1]
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


def nearest_neighbour_distances(
    queries: torch.Tensor, bank: torch.Tensor, chunk_size: int = 1024, bank_chunk_size: int = 8192
) -> tuple[torch.Tensor, torch.Tensor]:
    """Distance of each query to its nearest bank entry: ``[M,D] x [N,D] -> (float32 [M], int64 [M])``:
    s(q) = min_{m in bank} || q - m ||_2      [PC Sec. 3.3]
    Float64 cdist search in chunks (they bound the memory only), the distance recomputed exactly."""
    if chunk_size < 1 or bank_chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size}, bank_chunk_size={bank_chunk_size}: both must be >= 1")
    if queries.dim() != 2 or bank.dim() != 2 or queries.shape[1] != bank.shape[1]:
        raise ValueError(f"queries {tuple(queries.shape)}, bank {tuple(bank.shape)}: need [M, D] and [N, D] "
                         "with one D; was the bank fitted with another extractor, layers or target_dim?")
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
