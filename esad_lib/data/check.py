"""Validate a LOCO-layout root (MVTec LOCO AD, the paper's benchmark; a split of it; or the
synthetic benchmark) before training on it: ``esad check ROOT``.

Decodes every image and mask and lists EVERY problem (the kinds in ``PROBLEM_KINDS``); never writes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from esad_lib.data.loco import (
    DEFECTS_CONFIG,
    DIR_LABELS,
    DatasetLayoutError,
    Sample,
    categories,
    image_files,
    list_samples,
    load_defects_config,
    load_image,
    load_mask,
)

#: the kinds of problem ``check_dataset`` reports.
PROBLEM_KINDS = ("layout", "missing_folder", "defects_config", "unreadable_image", "unreadable_mask",
                 "mask_size", "mask_values", "empty_mask", "unknown_pixel_value", "missing_ground_truth",
                 "orphan_ground_truth", "unknown_folder")
ANOMALY_DIRS = ("logical_anomalies", "structural_anomalies")


@dataclass(frozen=True)
class Problem:
    path: Path
    kind: str  # one of PROBLEM_KINDS
    message: str

    def __str__(self) -> str:
        return f"[{self.kind}] {self.path}: {self.message}"


def _layout_problems(cdir: Path) -> list[Problem]:
    """Required folders missing, unknown folders under ``test/``."""
    missing = [s for s in ("train/good", "validation/good", "test/good") if not (cdir / s).is_dir()]
    probs = [Problem(cdir / s, "missing_folder", "required folder is missing") for s in missing]
    if not any((cdir / "test" / d).is_dir() for d in ANOMALY_DIRS):
        msg = "no logical_anomalies/ or structural_anomalies/ folder"
        probs.append(Problem(cdir / "test", "missing_folder", msg))
    if (cdir / "test").is_dir():
        unknown = [d for d in sorted((cdir / "test").iterdir()) if d.is_dir() and d.name not in DIR_LABELS]
        probs += [Problem(d, "unknown_folder", "not good/, logical_anomalies/ or structural_anomalies/")
                  for d in unknown]
    return probs


def _defect_values(cdir: Path, probs: list[Problem]) -> set[int] | None:
    """The pixel values of ``defects_config.json`` (None if missing/unreadable: a problem in ``probs``)."""
    try:
        return {d.pixel_value for d in load_defects_config(cdir)}
    except DatasetLayoutError as err:
        probs.append(Problem(cdir / DEFECTS_CONFIG, "defects_config", _reason(err)))
        return None


def _reason(err: DatasetLayoutError) -> str:
    """The message of a reader error without its leading path (the problem names the path)."""
    return str(err).split(": ", 1)[-1]


def _mask_problems(mp: Path, hw: tuple[int, int], values: set[int] | None) -> list[Problem]:
    """What is wrong with the mask ``mp`` of an image of size ``hw`` = (H, W)."""
    try:
        m = load_mask(mp)
    except DatasetLayoutError as err:
        return [Problem(mp, "unreadable_mask", _reason(err))]
    probs, (h, w) = [], hw
    if m.shape != (h, w):
        probs.append(Problem(mp, "mask_size", f"{m.shape[1]}x{m.shape[0]} (WxH) but its image is {w}x{h}"))
    pos = [int(v) for v in np.unique(m) if v != 0]
    if not pos:
        probs.append(Problem(mp, "empty_mask", "mask has no positive pixel"))
    elif len(pos) > 1:
        probs.append(Problem(mp, "mask_values", f"several positive values {pos}; one mask = one defect"))
    if unknown := [v for v in pos if values is not None and v not in values]:
        probs.append(Problem(mp, "unknown_pixel_value", f"values {unknown} not in {DEFECTS_CONFIG}"))
    return probs


def _sample_problems(s: Sample, values: set[int] | None) -> list[Problem]:
    """An image that cannot be decoded, an anomaly without masks, the problems of its masks."""
    try:
        img = load_image(s.path)
    except DatasetLayoutError as err:
        return [Problem(s.path, "unreadable_image", _reason(err))]
    if s.label == "good":
        return []
    if not s.mask_paths:
        return [Problem(s.path, "missing_ground_truth", f"anomalous image without masks in {s.gt_dir}")]
    return [p for mp in s.mask_paths for p in _mask_problems(mp, img.shape[:2], values)]


def _ground_truth_problems(cdir: Path) -> list[Problem]:
    """Ground-truth folders missing for an anomaly folder, or left without their image."""
    probs = []
    for d in ANOMALY_DIRS:
        gt, ids = cdir / "ground_truth" / d, {p.stem for p in image_files(cdir / "test" / d)}
        if not gt.is_dir():
            if ids:
                probs.append(Problem(gt, "missing_folder", f"ground truth folder for test/{d} is missing"))
            continue
        for sub in sorted(q for q in gt.iterdir() if q.is_dir() and not q.name.startswith(".")):
            if sub.name not in ids:
                probs.append(Problem(sub, "orphan_ground_truth", f"no image test/{d}/{sub.name}.*"))
    return probs


def check_dataset(root: str | Path, progress: bool = True) -> list[Problem]:
    """All problems of the LOCO-layout root ``root`` (empty list = fine)."""
    from tqdm.auto import tqdm

    root = Path(root).expanduser()
    cats = categories(root)
    if not cats:
        why = "not a LOCO-layout root: no <category>/train/good folders inside"
        return [Problem(root, "layout", why if root.is_dir() else "no such folder")]
    samples = {c: list_samples(root, c) for c in cats}
    probs: list[Problem] = []
    with tqdm(total=sum(map(len, samples.values())), desc="esad check", disable=not progress) as pbar:
        for c in cats:
            probs += _layout_problems(root / c)
            values = _defect_values(root / c, probs)
            for s in samples[c]:
                pbar.update(1)
                probs += _sample_problems(s, values)
            probs += _ground_truth_problems(root / c)
    return probs
