"""Data: the reader of MVTec LOCO AD (the paper's benchmark) and of every dataset in its layout
(``loco``), the structural/logical splitter (``split``), the checker (``check``) and the built-in
synthetic LOCO-like benchmark (``synth``): ``from esad_lib.data import LOCODataset, dataset_root, ...``"""

from esad_lib.data.loco import (
    LABEL_DIRS,
    DatasetLayoutError,
    DefectSpec,
    LOCODataset,
    categories,
    collate_keep_lists,
    image_size,
    list_samples,
    load_channel_masks,
    load_defects_config,
    load_image,
    union_mask,
)
from esad_lib.data.roots import dataset_root, input_size
from esad_lib.data.synth import ensure_synthetic, generate_synthetic, synthetic_size

__all__ = [
    "LABEL_DIRS", "DatasetLayoutError", "DefectSpec", "LOCODataset", "categories", "collate_keep_lists",
    "dataset_root", "ensure_synthetic", "generate_synthetic", "image_size", "input_size", "list_samples",
    "load_channel_masks", "load_defects_config", "load_image", "synthetic_size", "union_mask",
]
