"""Networks of ESAD (the authors' README "2. Proposed Method"): the feature extraction block, the
lightweight and classic U-Nets,
and the two-U-Net inpainting -> filling -> reconstruction model (RIAD as its special case).

Masks live in ``esad_lib.masks``; parameter/MAC counting in ``esad_lib.models.counting``;
activation checkpointing in ``esad_lib.models.checkpointing``; training-speed preparation
(channels_last, fused Adam) in ``esad_lib.models.speed``.
"""

from esad_lib.models.blocks import ECA, ConvBNReLU, DoubleConv, FeatureExtractionBlock
from esad_lib.models.checkpointing import CHECKPOINT_MODES
from esad_lib.models.esad import FILLS, ESADModel, ESADOutput, apply_fill, build_model, model_fills
from esad_lib.models.speed import prepare_for_training, to_training_layout, training_optimizer
from esad_lib.models.unet import UNET_KINDS, ClassicUNet, LightweightUNet, UNetBase, build_unet, unet_widths

__all__ = [
    "CHECKPOINT_MODES",
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
    "prepare_for_training",
    "to_training_layout",
    "training_optimizer",
    "unet_widths",
]
