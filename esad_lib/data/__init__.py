"""Data: the reader of MVTec LOCO AD (the paper's benchmark) and of every dataset in its layout,
the structural/logical splitter, the checker and the built-in synthetic LOCO-like benchmark.

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
    list_samples,
    load_channel_masks,
    load_defects_config,
    load_image,
    load_mask,
    network_input_size,
    union_mask,
)
from esad_lib.data.roots import dataset_root, find_loco_root, input_size, validate_root
from esad_lib.data.split import split_dataset
from esad_lib.data.synth import ensure_synthetic, generate_synthetic, synthetic_defects, synthetic_size

__all__ = [
    "DIR_LABELS", "LABELS", "LABEL_DIRS", "SPLITS", "DatasetLayoutError", "DefectSpec", "LOCODataset",
    "Problem", "Sample", "categories", "check_dataset", "collate_keep_lists", "dataset_root",
    "ensure_synthetic", "find_loco_root", "generate_synthetic", "image_size", "input_size", "list_samples",
    "load_channel_masks", "load_defects_config", "load_image", "load_mask", "network_input_size",
    "split_dataset", "synthetic_defects", "synthetic_size", "union_mask", "validate_root",
]
