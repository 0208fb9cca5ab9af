"""Networks of ESAD (the authors' README "2. Proposed Method"): the feature extraction block, the
lightweight and classic U-Nets,
and the two-U-Net inpainting -> filling -> reconstruction model (RIAD as its special case).

Masks live in ``esad_lib.method.masks``; parameter/MAC counting in ``esad_lib.perf.counting``;
activation checkpointing in ``esad_lib.perf.checkpointing``; training-speed preparation
(channels_last, fused Adam) in ``esad_lib.perf.speed``.
"""

from esad_lib.method.blocks import ECA, ConvBNReLU, DoubleConv, FeatureExtractionBlock
from esad_lib.method.model import FILLS, ESADModel, ESADOutput, apply_fill, build_model, model_fills
from esad_lib.method.unet import UNET_KINDS, ClassicUNet, LightweightUNet, UNetBase, build_unet, unet_widths

__all__ = [
    "ECA",
    "FILLS",
    "UNET_KINDS",
    "ClassicUNet",
    "ConvBNReLU",
    "DoubleConv",
    "ESADModel",
    "ESADOutput",
    "FeatureExtractionBlock",
    "LightweightUNet",
    "UNetBase",
    "apply_fill",
    "build_model",
    "build_unet",
    "model_fills",
    "unet_widths",
]
