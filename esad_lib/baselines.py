"""A naive baseline that shows how hard a LOCO-layout benchmark is (not part of the paper).

Per-pixel statistics of the defect-free training images: mean ``mu(p)`` and standard deviation
``sigma(p)`` per pixel p and colour channel; a test image x gets the z-score map
``z(p) = max_c |x_c(p) - mu_c(p)| / max(sigma_c(p), sigma_min)`` and the image score
``max_p z(p)``.  It has no notion of objects: any position jitter, rotation or lighting change
of a normal image raises its score, which is exactly why a benchmark with such natural
variation is not solved by it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from esad_lib.data.loco import categories as list_categories
from esad_lib.data.loco import list_samples, load_channel_masks, load_defects_config, load_image


def _as_stack(images) -> np.ndarray:
    arr = (
        np.stack([np.asarray(im, dtype=np.float32) for im in images])
        if not isinstance(images, np.ndarray)
        else images
    )
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim == 3:
        arr = arr[..., None]
    return arr


def naive_zscore_scores(
    train_images: Sequence[np.ndarray] | np.ndarray,
    test_images: Sequence[np.ndarray] | np.ndarray,
    sigma_min: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel z-score baseline.

    Args:
      train_images: [N, H, W, C] (or a list of [H, W, C] / [H, W]) defect-free images, any scale.
      test_images: [M, H, W, C] images of the same size and scale.
      sigma_min: floor on sigma (same units as the images; 1 grey level for uint8 input) so a
        pixel that never varied in training does not divide by zero.
    Returns:
      scores float64 [M] (max of each map) and maps float32 [M, H, W].
    """
    tr, te = _as_stack(train_images), _as_stack(test_images)
    if tr.shape[1:] != te.shape[1:]:
        raise ValueError(f"train images {tr.shape[1:]} and test images {te.shape[1:]} differ in size")
    # mu(p), sigma(p) over the N training images, per channel
    mu = tr.mean(axis=0, dtype=np.float64).astype(np.float32)
    sigma = np.maximum(tr.std(axis=0, dtype=np.float64).astype(np.float32), sigma_min)
    # z(p) = max_c |x_c(p) - mu_c(p)| / sigma_c(p)
    maps = (np.abs(te - mu) / sigma).max(axis=-1)
    scores = maps.reshape(len(maps), -1).max(axis=1).astype(np.float64)
    return scores, maps


def _load_resized(paths, max_side: int | None) -> np.ndarray:
    from PIL import Image

    out = []
    for p in paths:
        img = load_image(p)
        h, w = img.shape[:2]
        if max_side and max(h, w) > max_side:
            s = max_side / max(h, w)
            img = np.asarray(Image.fromarray(img).resize((round(w * s), round(h * s)), Image.BILINEAR))
        out.append(img)
    return np.stack(out)


def naive_baseline_table(
    root: str | Path,
    categories: Sequence[str] | None = None,
    max_side: int | None = 256,
    by_defect: bool = False,
    progress: bool = True,
) -> list[dict]:
    """Image AUROC of the naive baseline per category and anomaly type on a LOCO-layout root.

    Rows: ``dict(category, type, defect (only with by_defect), n_good, n_anomalous, auroc)``;
    ``type`` is "logical"/"structural"; each AUROC is test/good against that type's images.
    Images larger than ``max_side`` are downscaled first (memory).
    """
    from sklearn.metrics import roc_auc_score
    from tqdm.auto import tqdm

    cats = list(categories) if categories is not None else list_categories(root)
    rows: list[dict] = []
    for cat in tqdm(cats, desc="naive baseline", disable=not progress):
        train = list_samples(root, cat, "train")
        test = list_samples(root, cat, "test")
        tr = _load_resized([s.path for s in train], max_side)
        te = _load_resized([s.path for s in test], max_side)
        scores, _ = naive_zscore_scores(tr, te)
        labels = np.array([s.label for s in test])
        good = scores[labels == "good"]
        names: dict[int, str] = {}
        if by_defect:
            names = {d.pixel_value: d.defect_name for d in load_defects_config(Path(root) / cat)}
        for typ in ("logical", "structural"):
            sel = labels == typ
            if not sel.any() or not len(good):
                continue
            groups = {None: sel}
            if by_defect:
                kinds = np.array(
                    [names.get(int(load_channel_masks(s).max()), "?") if s.label == typ else "" for s in test]
                )
                groups = {k: kinds == k for k in sorted(set(kinds[sel]))}
            for defect, g in groups.items():
                y = np.r_[np.zeros(len(good)), np.ones(int(g.sum()))]
                row = {"category": cat, "type": typ}
                if by_defect:
                    row["defect"] = defect
                row.update(
                    n_good=len(good),
                    n_anomalous=int(g.sum()),
                    auroc=float(roc_auc_score(y, np.r_[good, scores[g]])),
                )
                rows.append(row)
    return rows
