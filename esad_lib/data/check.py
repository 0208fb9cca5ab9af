"""Validate a LOCO-layout root (MVTec LOCO AD, a split of it, or the synthetic benchmark;
the paper's benchmark) before training on it: ``esad check ROOT``.

Decodes every image and mask and lists EVERY problem found (it does not stop at the first):
missing folders or defects config, unreadable or truncated images and masks, masks whose size
differs from their image, masks holding several positive values, masks that are empty,
positive values that ``defects_config.json`` does not define, anomalous images without a
ground-truth folder, and ground-truth folders without an image.  It never writes anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from esad_lib.data.loco import (
    DEFECTS_CONFIG,
    DIR_LABELS,
    DatasetLayoutError,
    categories,
    image_files,
    image_size,
    list_samples,
    load_defects_config,
    load_image,
    load_mask,
)

#: the kinds of problem ``check_dataset`` reports.
PROBLEM_KINDS = (
    "layout",
    "missing_folder",
    "defects_config",
    "unreadable_image",
    "unreadable_mask",
    "mask_size",
    "mask_values",
    "empty_mask",
    "unknown_pixel_value",
    "missing_ground_truth",
    "orphan_ground_truth",
    "unknown_folder",
)


@dataclass(frozen=True)
class Problem:
    path: Path
    kind: str  # one of PROBLEM_KINDS
    message: str

    def __str__(self) -> str:
        return f"[{self.kind}] {self.path}: {self.message}"


def _check_category(cdir: Path, root: Path, pbar) -> list[Problem]:
    probs: list[Problem] = []
    cat = cdir.name
    for sub in ("train/good", "validation/good", "test/good"):
        if not (cdir / sub).is_dir():
            probs.append(Problem(cdir / sub, "missing_folder", "required folder is missing"))
    present = [d for d in ("logical_anomalies", "structural_anomalies") if (cdir / "test" / d).is_dir()]
    if not present:
        probs.append(
            Problem(cdir / "test", "missing_folder", "no logical_anomalies/ or structural_anomalies/ folder")
        )
    if (cdir / "test").is_dir():
        for d in sorted((cdir / "test").iterdir()):
            if d.is_dir() and d.name not in DIR_LABELS:
                probs.append(
                    Problem(d, "unknown_folder", "not good/, logical_anomalies/ or structural_anomalies/")
                )
    values: set[int] | None = None
    if not (cdir / DEFECTS_CONFIG).is_file():
        probs.append(Problem(cdir / DEFECTS_CONFIG, "defects_config", "missing (needed for the sPRO metric)"))
    else:
        try:
            values = {d.pixel_value for d in load_defects_config(cdir)}
        except DatasetLayoutError as err:
            probs.append(Problem(cdir / DEFECTS_CONFIG, "defects_config", str(err).split(": ", 1)[-1]))
    samples = list_samples(root, cat)
    for s in samples:
        pbar.update(1)
        try:
            img = load_image(s.path)
        except DatasetLayoutError as err:
            probs.append(Problem(s.path, "unreadable_image", str(err).split(": ", 1)[-1]))
            continue
        if s.label == "good":
            continue
        if not s.mask_paths:
            probs.append(
                Problem(s.path, "missing_ground_truth", f"anomalous image without masks in {s.gt_dir}")
            )
            continue
        h, w = img.shape[:2]
        for mp in s.mask_paths:
            try:
                m = load_mask(mp)
            except DatasetLayoutError as err:
                probs.append(Problem(mp, "unreadable_mask", str(err).split(": ", 1)[-1]))
                continue
            if m.shape != (h, w):
                probs.append(
                    Problem(mp, "mask_size", f"{m.shape[1]}x{m.shape[0]} (WxH) but its image is {w}x{h}")
                )
            pos = [int(v) for v in np.unique(m) if v != 0]
            if not pos:
                probs.append(Problem(mp, "empty_mask", "mask has no positive pixel"))
            elif len(pos) > 1:
                probs.append(
                    Problem(mp, "mask_values", f"several positive values {pos}; one mask = one defect")
                )
            if values is not None:
                unknown = [v for v in pos if v not in values]
                if unknown:
                    probs.append(
                        Problem(mp, "unknown_pixel_value", f"values {unknown} not in {DEFECTS_CONFIG}")
                    )
    # ground-truth folders whose image is missing
    for d in ("logical_anomalies", "structural_anomalies"):
        gt = cdir / "ground_truth" / d
        if not gt.is_dir():
            if (cdir / "test" / d).is_dir() and image_files(cdir / "test" / d):
                probs.append(Problem(gt, "missing_folder", f"ground truth folder for test/{d} is missing"))
            continue
        ids = {p.stem for p in image_files(cdir / "test" / d)}
        for sub in sorted(q for q in gt.iterdir() if q.is_dir() and not q.name.startswith(".")):
            if sub.name not in ids:
                probs.append(Problem(sub, "orphan_ground_truth", f"no image test/{d}/{sub.name}.*"))
    return probs


def check_dataset(root: str | Path, progress: bool = True) -> list[Problem]:
    """All problems of the LOCO-layout root ``root`` (empty list = fine)."""
    from tqdm.auto import tqdm

    root = Path(root).expanduser()
    if not root.is_dir():
        return [Problem(root, "layout", "no such folder")]
    cats = categories(root)
    if not cats:
        return [Problem(root, "layout", "not a LOCO-layout root: no <category>/train/good folders inside")]
    total = sum(len(list_samples(root, c)) for c in cats)
    probs: list[Problem] = []
    with tqdm(total=total, desc="esad check", disable=not progress) as pbar:
        for c in cats:
            probs += _check_category(root / c, root, pbar)
    return probs


def image_sizes(root: str | Path, category: str) -> dict[tuple[int, int], int]:
    """How many images of each (H, W) a category holds (header only)."""
    out: dict[tuple[int, int], int] = {}
    for s in list_samples(root, category):
        hw = image_size(s.path)
        out[hw] = out.get(hw, 0) + 1
    return out


__all__ = ["PROBLEM_KINDS", "Problem", "check_dataset", "image_sizes"]
