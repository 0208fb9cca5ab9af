"""Disjoint masks: exact tiling, RIAD's grouping rule, determinism, odd sizes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from esad_lib.method.masks import cell_groups, disjoint_masks, hidden_fraction


@pytest.mark.parametrize("h,w", [(32, 32), (37, 50), (5, 7), (64, 48)])
@pytest.mark.parametrize("c", [1, 2, 3, 4, 8, 16])
@pytest.mark.parametrize("k", [1, 3, 5])
def test_masks_tile_image_exactly_once(h: int, w: int, c: int, k: int) -> None:
    m = disjoint_masks(h, w, c, k, generator=torch.Generator().manual_seed(1))
    assert m.shape == (k, 1, h, w) and m.dtype == torch.float32
    assert set(m.unique().tolist()) <= {0.0, 1.0}
    # every pixel hidden by exactly one mask
    assert torch.equal((1 - m).sum(0), torch.ones(1, h, w))


@pytest.mark.parametrize("h,w,c", [(32, 32, 4), (37, 50, 8), (10, 9, 3)])
def test_masks_are_constant_on_cells_and_balanced(h: int, w: int, c: int) -> None:
    k = 3
    m = disjoint_masks(h, w, c, k, generator=torch.Generator().manual_seed(2))
    gh, gw = math.ceil(h / c), math.ceil(w / c)
    # pad to whole cells by replicating, then every c x c cell must be constant
    padded = torch.nn.functional.pad(m, (0, gw * c - w, 0, gh * c - h), mode="replicate")
    cells = padded.view(k, gh, c, gw, c)
    assert torch.equal(cells.amax(dim=(2, 4)), cells.amin(dim=(2, 4)))
    # hidden cells per mask differ by at most one (equal split)
    hidden_cells = (1 - cells[:, :, 0, :, 0]).sum(dim=(1, 2))
    assert hidden_cells.sum() == gh * gw
    assert hidden_cells.max() - hidden_cells.min() <= 1


def test_grouping_equals_riads_array_split() -> None:
    """Our closed-form grouping == RIAD's np.array_split(permutation, K) on the same permutation."""
    for n, k in [(64, 3), (10, 3), (7, 5), (2, 3), (1, 1), (100, 4)]:
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(n))
        groups = cell_groups(n, k, generator=torch.Generator().manual_seed(n))
        expected = np.empty(n, dtype=np.int64)
        for g, ids in enumerate(np.array_split(perm.numpy(), k)):
            expected[ids] = g
        np.testing.assert_array_equal(groups.numpy(), expected)


def test_masks_seeded_and_deterministic() -> None:
    a = disjoint_masks(40, 24, 4, generator=torch.Generator().manual_seed(7))
    b = disjoint_masks(40, 24, 4, generator=torch.Generator().manual_seed(7))
    c = disjoint_masks(40, 24, 4, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_hidden_fraction_about_one_over_k() -> None:
    m = disjoint_masks(64, 64, 2, 3, generator=torch.Generator().manual_seed(0))
    frac = hidden_fraction(m)
    assert torch.allclose(frac.sum(), torch.tensor(1.0))
    assert (frac - 1 / 3).abs().max() < 1e-2


def test_masks_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="cutout_size"):
        disjoint_masks(8, 8, 0)
    with pytest.raises(ValueError, match="image size"):
        disjoint_masks(0, 8, 2)
    with pytest.raises(ValueError, match="num_masks"):
        disjoint_masks(8, 8, 2, num_masks=0)
