"""Which LOCO-layout root a notebook or run uses (the paper's MVTec LOCO AD, or the synthetic stand-in).

``cfg.dataset``: ``"synthetic"`` the built-in benchmark (generated on first use); ``"auto"`` the real
dataset when the data root holds it (itself or its ``mvtec_loco_anomaly_detection/``), else synthetic;
any other string: a path to a LOCO-layout root (the official dataset or a split of it)."""

from __future__ import annotations

from pathlib import Path

from esad_lib.config import CATEGORIES
from esad_lib.data.loco import DatasetLayoutError, categories, network_input_size
from esad_lib.data.synth import ensure_synthetic
from esad_lib.paths import data_root

#: folder names under the data root where the real dataset is looked for by ``"auto"``.
OFFICIAL_DIRNAMES = ("mvtec_loco_anomaly_detection", "mvtec_loco_ad", "mvtec_loco")


def find_loco_root() -> Path | None:
    """The real MVTec LOCO AD under the data root (holding an official category), or None."""
    base = data_root()
    for cand in (base, *(base / n for n in OFFICIAL_DIRNAMES)):
        if set(categories(cand)) & set(CATEGORIES):
            return cand
    return None


def validate_root(root: str | Path, category: str | None = None) -> Path:
    """``root`` as a Path after checking it is a LOCO-layout root (holding ``category``)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetLayoutError(f"dataset {root}: no such folder; set cfg.dataset to a LOCO-layout root "
                                 "(e.g. the extracted mvtec_loco_anomaly_detection/) or to 'synthetic'")
    found = categories(root)
    if not found:
        raise DatasetLayoutError(f"dataset {root}: not a LOCO-layout root (no <category>/train/good folders "
                                 "inside); point it at the folder holding breakfast_box/, juice_bottle/, ...")
    if category is not None and category not in found:
        raise DatasetLayoutError(f"dataset {root}: has no category {category!r} (it holds "
                                 f"{', '.join(found)}); change cfg.category or the dataset path")
    return root


def dataset_root(cfg) -> Path:
    """The LOCO-layout root for ``cfg`` (see the module docstring for the rule)."""
    ds = str(cfg.dataset)
    real = find_loco_root() if ds == "auto" else (None if ds == "synthetic" else ds)
    return ensure_synthetic(cfg) if real is None else validate_root(real, cfg.category)


def input_size(cfg, root: str | Path | None = None) -> tuple[int, int]:
    """``(H, W)`` of the network input for ``cfg.category`` (``esad_lib.data.loco.network_input_size``)."""
    root = Path(root) if root is not None else dataset_root(cfg)
    return network_input_size(root, cfg.category, cfg.image_size, cfg.keep_aspect)
