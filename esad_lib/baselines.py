"""A naive baseline that shows how hard a LOCO-layout benchmark is (not part of the paper).

Per-pixel mean ``mu(p)`` and std ``sigma(p)`` of the defect-free training images per colour
channel; the z-score map ``z(p) = max_c |x_c(p) - mu_c(p)| / max(sigma_c(p), sigma_min)`` and the
image score ``max_p z(p)``.  No notion of objects: any jitter or lighting change raises a score.
``size=None``: the stored images (downscaled to ``max_side``); ``size=(H, W)``: the networks' input
path, the z-map upsampled to the original size -- exactly ``esad_lib.detectors.NaiveDetector``,
the "naive (ours)" column of ``esad demo``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from esad_lib.data.loco import categories as list_categories
from esad_lib.data.loco import (
    list_samples,
    load_channel_masks,
    load_defects_config,
    load_image,
    network_input_size,
)
from esad_lib.metrics import type_groups
from esad_lib.uncertainty import DEFAULT_N_BOOT, image_auroc_ci


def _as_stack(images) -> np.ndarray:
    if not isinstance(images, np.ndarray):
        images = np.stack([np.asarray(im, dtype=np.float32) for im in images])
    arr = np.asarray(images, dtype=np.float32)
    return arr[..., None] if arr.ndim == 3 else arr


def zscore_stats(train: np.ndarray, sigma_min: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """``mu``, ``sigma`` (floored at ``sigma_min``) of ``train [N,H,W,C]``: float32 ``[H,W,C]`` each."""
    mu = train.mean(axis=0, dtype=np.float64).astype(np.float32)
    sigma = np.maximum(train.std(axis=0, dtype=np.float64).astype(np.float32), sigma_min)
    return mu, sigma


def zscore_maps(test: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """z(p) = max_c |x_c(p) - mu_c(p)| / sigma_c(p):  ``[M,H,W,C] -> float32 [M,H,W]``."""
    return (np.abs(test - mu) / sigma).max(axis=-1)


def naive_zscore_scores(train_images: Sequence[np.ndarray] | np.ndarray,
                        test_images: Sequence[np.ndarray] | np.ndarray,
                        sigma_min: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Train ``[N,H,W,C]`` (or ``[H,W(,C)]`` each), test ``[M,H,W,C]`` -> scores ``[M]``, maps ``[M,H,W]``."""
    tr, te = _as_stack(train_images), _as_stack(test_images)
    if tr.shape[1:] != te.shape[1:]:
        raise ValueError(f"train images {tr.shape[1:]} and test images {te.shape[1:]} differ in size")
    maps = zscore_maps(te, *zscore_stats(tr, sigma_min))
    scores = maps.reshape(len(maps), -1).max(axis=1).astype(np.float64)
    return scores, maps


def _load_resized(samples, max_side: int | None) -> np.ndarray:
    from PIL import Image

    out = []
    for s in samples:
        img = load_image(s.path)
        h, w = img.shape[:2]
        if max_side and max(h, w) > max_side:
            s = max_side / max(h, w)
            img = np.asarray(Image.fromarray(img).resize((round(w * s), round(h * s)), Image.BILINEAR))
        out.append(img)
    return np.stack(out)


@dataclass
class NaiveScores:
    """Scores float64 ``[N]`` of a category's test split; ``resolution``: (H, W) of the z-maps."""

    scores: np.ndarray
    label_names: list[str]
    paths: list[str]
    resolution: tuple[int, int]
    size: tuple[int, int] | None


def network_image_255(x) -> np.ndarray:
    """A network input ``[3,H,W]`` in [-1, 1] -> ``float32 [H,W,3]`` in grey levels 0..255."""
    return ((np.asarray(x, dtype=np.float32) + 1.0) * 127.5).transpose(1, 2, 0)


def naive_category_scores(root: str | Path, category: str, size: Sequence[int] | None = None,
                          keep_aspect: bool = False, max_side: int | None = 256) -> NaiveScores:
    """Naive z-score image scores of ``category``'s test images against its ``train/good`` statistics."""
    root = Path(root)
    train, test = list_samples(root, category, "train"), list_samples(root, category, "test")
    paths = [str(s.path) for s in test]
    if not test:
        raise FileNotFoundError(f"{root / category / 'test'}: no test images; check it with `esad check`")
    if not train:
        raise FileNotFoundError(f"{root / category / 'train' / 'good'}: no training images for the per-pixel "
                                "statistics")
    if size is None:
        te = _load_resized(test, max_side)
        scores, _ = naive_zscore_scores(_load_resized(train, max_side), te)
        resolution, net_size = te.shape[1:3], None
    else:
        if len(size) != 2 or min(int(v) for v in size) < 1:
            raise ValueError(f"size must be (H, W) with positive sides, e.g. cfg.image_size; got {size!r}")
        # the naive detector through the one scoring loop (score = max of the full-resolution map)
        from esad_lib.config import ESADConfig
        from esad_lib.detectors.naive import NaiveDetector
        from esad_lib.scoring import fit_detector, score_dataset

        hw = tuple(int(v) for v in size)
        cfg = ESADConfig(category=category, dataset=str(root), image_size=hw, keep_aspect=keep_aspect)
        det = fit_detector(NaiveDetector(cfg), cfg, root)
        res = score_dataset(det, cfg, root=root, keep_channels=False, progress=False)
        if res.paths != paths:
            raise RuntimeError(f"{root / category}: the scored test images are not those listed")
        scores = res.scores
        resolution = net_size = network_input_size(root, category, list(cfg.image_size), keep_aspect)
    return NaiveScores(scores=np.asarray(scores, dtype=np.float64), label_names=[s.label for s in test],
                       paths=paths, resolution=(int(resolution[0]), int(resolution[1])), size=net_size)


def naive_baseline_table(root: str | Path, categories: Sequence[str] | None = None,
                         max_side: int | None = 256, by_defect: bool = False, progress: bool = True,
                         size: Sequence[int] | None = None, keep_aspect: bool = False,
                         n_boot: int = DEFAULT_N_BOOT, seed: int = 0) -> list[dict]:
    """Image AUROC (test/good vs each type; ``by_defect``: each defect) of the naive baseline per category.
    Rows: ``category, type, [defect], resolution, n_good, n_anomalous, auroc, auroc_low/high/se``
    (95 % stratified bootstrap, ``n_boot=0``: None)."""
    from sklearn.metrics import roc_auc_score
    from tqdm.auto import tqdm

    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0 (0 = no interval), got {n_boot}")
    cats = list(categories) if categories is not None else list_categories(root)
    rows: list[dict] = []
    for cat in tqdm(cats, desc="naive baseline", disable=not progress):
        res = naive_category_scores(root, cat, size=size, keep_aspect=keep_aspect, max_side=max_side)
        labels = np.array(res.label_names)
        n_good = int((labels == "good").sum())
        if by_defect:  # each anomalous image's defect name (from its channels' pixel value)
            names = {d.pixel_value: d.defect_name for d in load_defects_config(Path(root) / cat)}
            defect = np.array([names.get(int(load_channel_masks(s).max()), "?") if s.label != "good" else ""
                               for s in list_samples(root, cat, "test")])
        for typ in ("logical", "structural"):
            if (idx := type_groups(labels)[typ]) is None or not n_good:
                continue
            subsets = sorted(set(defect[labels == typ])) if by_defect else [None]
            for d in subsets:  # good vs the type's images (or those of one of its defects)
                keep = [i for i in idx if d is None or labels[i] == "good" or defect[i] == d]
                s, y = res.scores[keep], (labels[keep] != "good").astype(int)
                ci = image_auroc_ci(s, y, n_boot=n_boot, seed=seed) if n_boot else {}
                rows.append({"category": cat, "type": typ, **({"defect": d} if by_defect else {}),
                             "resolution": f"{res.resolution[0]}x{res.resolution[1]}", "n_good": n_good,
                             "n_anomalous": int(y.sum()), "auroc": float(roc_auc_score(y, s)),
                             **{f"auroc_{k}": ci.get(k) for k in ("low", "high", "se")}})
    return rows
