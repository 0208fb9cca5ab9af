"""A PatchCore-style reference detector on the project's frozen feature extractors (not in the paper).

PatchCore (Roth et al., CVPR 2022) is training-free: a *memory bank* of patch features of the
anomaly-free training images is the model, and a test patch is as anomalous as it is far from its
nearest bank patch.  ``.patches``: the tensor maths; ``.detector``: ``PatchCore``; settings:
``esad_lib.config.PatchCoreConfig``.  Pipeline ([PC] its choices, [ours] the project's):

1. frozen extractor (``esad_lib.features``), taps ``PatchCoreConfig.layers`` (default ``(0, 1)``,
   strides 4 and 8 [ours]; PatchCore uses ResNet ``layer2`` + ``layer3``);
2. 3 x 3 local average per tap [PC eq. 2-3]; 3. deeper taps upsampled to the first tap's grid,
   concatenated, optionally pooled to ``target_dim`` channels [PC]: a bank ``[N, D]``;
4. greedy k-center coreset on a seeded JL projection [PC Sec. 3.2, Alg. 1] (``coreset_ratio``);
5. nearest-bank-patch Euclidean distance [PC Sec. 3.3], upsampled to the input size and
   Gaussian-smoothed (sigma 4) [PC].

Deviations: the image score is the max of the map at the ORIGINAL resolution (MVTec's definition),
not PC eq. 7; border patches average only existing neighbours (PatchCore zero-pads); the JL matrix
is Gaussian and the coreset starts at one seeded random patch; the Gaussian filter replicates the
border (scipy "nearest", PatchCore's code "reflect").
"""

from __future__ import annotations

from esad_lib.patchcore.detector import PatchCore
from esad_lib.patchcore.patches import (
    greedy_coreset_indices,
    jl_projection,
    local_aggregate,
    nearest_neighbour_distances,
    patch_features,
    reduce_channels,
)

__all__ = ["PatchCore", "greedy_coreset_indices", "jl_projection", "local_aggregate",
           "nearest_neighbour_distances", "patch_features", "reduce_channels"]
