"""The paper's method in reading order (the authors' README "2. Proposed Method"): ``masks``,
``blocks``, ``unet``, ``model`` (inpaint -> fill -> reconstruct), ``loss``, ``train_step``,
``anomaly_map``.  Performance opt-ins are applied from outside, by ``esad_lib.perf``."""

from esad_lib.method.blocks import ECA, ConvBNReLU, DoubleConv, FeatureExtractionBlock
from esad_lib.method.model import FILLS, ESADModel, ESADOutput, apply_fill, build_model, model_fills
from esad_lib.method.unet import UNET_KINDS, ClassicUNet, LightweightUNet, UNetBase, build_unet, unet_widths

__all__ = [
    "ECA", "FILLS", "UNET_KINDS", "ClassicUNet", "ConvBNReLU", "DoubleConv", "ESADModel", "ESADOutput",
    "FeatureExtractionBlock", "LightweightUNet", "UNetBase", "apply_fill", "build_model", "build_unet",
    "model_fills", "unet_widths",
]
