"""esad_lib -- the shared library behind the esad-notebooks lessons.

Reproduces *Enhanced Structural Anomaly Detection through Improved Image Inpainting and
Feature-Level Discrimination* (ESAD, Fei & Wu, The Visual Computer): two lightweight U-Nets
(inpainting, then reconstruction) over disjoint masks, a feature loss and feature-level
anomaly maps, evaluated on MVTec LOCO AD (or the built-in synthetic LOCO-like benchmark).
"""

from esad_lib.config import PRESETS, ESADConfig, get_config

__version__ = "0.1.0"
__all__ = ["ESADConfig", "PRESETS", "get_config", "__version__"]
