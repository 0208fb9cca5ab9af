"""Disjoint cutout masks (RIAD's cutouts; the authors' README "2. Proposed Method": masking).
The image is cut into a grid of ``c x c`` cells (``c`` = cutout size).  The cells are shuffled
and split into ``K`` groups; mask ``k`` hides group ``k``:

    mask_k[y, x] = 0  if the cell holding pixel (y, x) is in group k   (hidden)
    mask_k[y, x] = 1  otherwise                                         (visible)

so the ``K`` hidden regions *tile* the image exactly once:  sum_k (1 - mask_k) == 1.

RIAD's grouping rule (its reference code) is ``np.array_split(np.random.permutation(n), K)``.
We reproduce exactly that rule without a Python loop: one ``randperm`` over the cells, a
closed-form "which chunk does rank j fall in", a scatter, then cells -> pixels.

Deviation from RIAD, stated here: RIAD's grid is ``ceil(h/c) x ceil(w/c)`` cells and it does
*not* crop the up-sampled mask, so a size not divisible by ``c`` gives a mask larger than the
image.  We crop the pixel mask back to ``h x w``, so every size works (LOCO's non-square images)."""

from __future__ import annotations

import math

import torch


def cell_groups(num_cells: int, num_masks: int, generator=None, device=None) -> torch.Tensor:
    """Group index (0..K-1) of each cell, RIAD's shuffled equal split: ``[num_cells]``.  Sizes
    ``q+1`` for the first ``r`` groups, ``q`` for the rest (``q, r = divmod(num_cells, K)``), as
    ``np.array_split``.  Drawn on the generator's device (a CPU generator gives the same masks
    on any device), else on ``device``."""
    if num_cells < 1 or num_masks < 1:
        raise ValueError(f"need num_cells >= 1 and num_masks >= 1, got {num_cells}, {num_masks}")
    perm_device = generator.device if generator is not None else device
    # perm[j] = the cell that gets rank j after shuffling
    perm = torch.randperm(num_cells, generator=generator, device=perm_device)
    q, r = divmod(num_cells, num_masks)
    rank = torch.arange(num_cells, device=perm.device)
    # chunk of rank j in array_split: the first r chunks have q+1 ranks, the others q ranks
    big = r * (q + 1)
    group_of_rank = torch.where(rank < big, rank // (q + 1), r + (rank - big) // max(q, 1))
    groups = torch.empty(num_cells, dtype=torch.long, device=perm.device)
    # scatter: cell perm[j] belongs to the group of rank j
    groups[perm] = group_of_rank
    return groups.to(device) if device is not None else groups


def disjoint_masks(
    h: int, w: int, cutout_size: int, num_masks: int = 3, generator=None, device=None
) -> torch.Tensor:
    """``K = num_masks`` disjoint masks ``[K, 1, h, w]`` (1 visible, 0 hidden) over an ``h x w``
    image (any size) for cells of side ``c = cutout_size``; ``generator`` seeds the shuffle (None:
    the global RNG); built on ``device`` (default: the generator's, else CPU)."""
    if h < 1 or w < 1:
        raise ValueError(f"image size must be positive, got {h}x{w}")
    if cutout_size < 1:
        raise ValueError(f"cutout_size must be >= 1, got {cutout_size}")
    if device is None:
        device = generator.device if generator is not None else torch.device("cpu")
    c = int(cutout_size)
    grid_h, grid_w = math.ceil(h / c), math.ceil(w / c)
    groups = cell_groups(grid_h * grid_w, num_masks, generator=generator, device=device)
    k = torch.arange(num_masks, device=device)
    # mask_k(cell) = 0 if group(cell) == k else 1            -> [K, grid_h, grid_w]
    cell_masks = (groups.view(1, grid_h, grid_w) != k.view(-1, 1, 1)).float()
    # cells -> pixels: every cell becomes a c x c block, then crop the partial last row/column
    pix = cell_masks.repeat_interleave(c, dim=1).repeat_interleave(c, dim=2)[:, :h, :w]
    return pix.unsqueeze(1).contiguous()


def hidden_fraction(masks: torch.Tensor) -> torch.Tensor:
    """Fraction of pixels each mask hides: ``[K, 1, H, W] -> [K]`` (about 1/K each)."""
    return (1.0 - masks).flatten(1).mean(1)
