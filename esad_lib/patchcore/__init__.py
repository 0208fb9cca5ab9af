"""A PatchCore-style reference detector on the project's frozen feature extractors.

PatchCore (Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022) is
the training-free method a user would pick instead of ESAD: no network is trained, a *memory
bank* of patch features of the anomaly-free training images is the whole model, and a test
patch is as anomalous as it is far from its nearest neighbour in the bank.  It is NOT part of
the ESAD paper; it is here so that ESAD's numbers can be read beside the usual alternative,
evaluated by the same protocol (``esad_lib.evaluation.evaluate``, as every detector).

Layout: :mod:`.patches` (the tensor maths: patch features, coreset, nearest neighbours),
:mod:`.detector` (the :class:`PatchCore` detector).  Its settings are ``esad_lib.config.PatchCoreConfig``.

Pipeline (PatchCore Sec. 3.1-3.3; [PC] marks its choices, [ours] the project's):

1. Frozen extractor ``esad_lib.features.build_feature_extractor(name)`` (any name it accepts);
   images in [-1, 1] -> a list of maps ``[B, C_l, H_l, W_l]``, shallow to deep.  The taps
   used are ``PatchCoreConfig.layers`` (default ``(0, 1)``, the stride-4 and stride-8 stages [ours];
   PatchCore's own are the stride-8/16 ResNet ``layer2`` + ``layer3``).
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
* the Gaussian filter replicates the border (``esad_lib.method.anomaly_map.gaussian_filter``, scipy's
  mode "nearest"); PatchCore's code uses scipy's default "reflect".
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

__all__ = [
    "PatchCore",
    "greedy_coreset_indices",
    "jl_projection",
    "local_aggregate",
    "nearest_neighbour_distances",
    "patch_features",
    "reduce_channels",
]
