"""Data: MVTec LOCO AD reader, structural/logical splitter, checker and the synthetic
LOCO-like benchmark (the paper's benchmark).

``from esad_lib.data import LOCODataset, dataset_root, list_samples, ...``
"""

from esad_lib.data.check import Problem, check_dataset
from esad_lib.data.loco import (
    DIR_LABELS,
    LABEL_DIRS,
    LABELS,
    SPLITS,
    DatasetLayoutError,
    DefectSpec,
    LOCODataset,
    Sample,
    categories,
    collate_keep_lists,
    image_size,
    network_input_size,
    is_loco_root,
    list_samples,
    load_channel_masks,
    load_defects_config,
    load_image,
    load_mask,
    union_mask,
)
from esad_lib.data.roots import dataset_root, find_loco_root, input_size, validate_root
from esad_lib.data.split import split_dataset
from esad_lib.data.synth import ensure_synthetic, generate_synthetic, synthetic_defects, synthetic_size

__all__ = [
    "DIR_LABELS",
    "LABELS",
    "LABEL_DIRS",
    "SPLITS",
    "DatasetLayoutError",
    "DefectSpec",
    "LOCODataset",
    "Problem",
    "Sample",
    "categories",
    "check_dataset",
    "collate_keep_lists",
    "dataset_root",
    "input_size",
    "ensure_synthetic",
    "find_loco_root",
    "generate_synthetic",
    "image_size",
    "network_input_size",
    "is_loco_root",
    "list_samples",
    "load_channel_masks",
    "load_defects_config",
    "load_image",
    "load_mask",
    "split_dataset",
    "synthetic_defects",
    "synthetic_size",
    "union_mask",
    "validate_root",
]
