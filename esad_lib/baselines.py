"""A naive baseline that shows how hard a LOCO-layout benchmark is (not part of the paper).

Per-pixel statistics of the defect-free training images: mean ``mu(p)`` and standard deviation
``sigma(p)`` per pixel p and colour channel; a test image x gets the z-score map
``z(p) = max_c |x_c(p) - mu_c(p)| / max(sigma_c(p), sigma_min)`` and the image score
``max_p z(p)``.  It has no notion of objects: any position jitter, rotation or lighting change
of a normal image raises its score, which is exactly why a benchmark with such natural
variation is not solved by it.

Two resolutions (``naive_category_scores``'s ``size``):

* ``size=None``: the images as stored (larger ones downscaled to ``max_side``, memory); the
  image score is the max of that map;
* ``size=(H, W)``: the images go through the networks' input path (``esad_lib.data.LOCODataset``:
  bilinear, antialiased resize to ``network_input_size(root, category, size, keep_aspect)``),
  the z-map is computed at that size, upsampled bilinearly to the original size
  (``esad_lib.method.anomaly_map.upsample_map``) and the image score is its max -- exactly
  ``esad_lib.detectors.NaiveDetector``, the "naive (ours)" column of ``esad demo``.  This is
  the figure a model trained at ``cfg.image_size`` must be compared with: downscaling alone
  averages pixel noise and small misalignments away, so it changes the baseline's AUROC.
"""

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
from esad_lib.uncertainty import DEFAULT_N_BOOT, image_auroc_ci


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


def zscore_stats(train: np.ndarray, sigma_min: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """``mu(p)``, ``sigma(p)`` per pixel and channel of ``train [N,H,W,C]`` (float32 each ``[H,W,C]``);
    ``sigma`` is floored at ``sigma_min`` so a pixel that never varied does not divide by zero."""
    mu = train.mean(axis=0, dtype=np.float64).astype(np.float32)
    sigma = np.maximum(train.std(axis=0, dtype=np.float64).astype(np.float32), sigma_min)
    return mu, sigma


def zscore_maps(test: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """z(p) = max_c |x_c(p) - mu_c(p)| / sigma_c(p):  ``[M,H,W,C] -> float32 [M,H,W]``."""
    return (np.abs(test - mu) / sigma).max(axis=-1)


def naive_zscore_scores(
    train_images: Sequence[np.ndarray] | np.ndarray,
    test_images: Sequence[np.ndarray] | np.ndarray,
    sigma_min: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel z-score baseline: scores float64 [M] (max of each map) and maps float32 [M, H, W].

    ``train_images`` [N, H, W, C] (or a list of [H, W, C] / [H, W]) defect-free images, any scale;
    ``test_images`` [M, H, W, C] of the same size and scale; ``sigma_min`` in the images' units.
    """
    tr, te = _as_stack(train_images), _as_stack(test_images)
    if tr.shape[1:] != te.shape[1:]:
        raise ValueError(f"train images {tr.shape[1:]} and test images {te.shape[1:]} differ in size")
    maps = zscore_maps(te, *zscore_stats(tr, sigma_min))
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


@dataclass
class NaiveScores:
    """Naive-baseline image scores of one category's test split (``list_samples`` order).

    ``scores`` float64 [N], ``label_names`` / ``paths`` [N]; ``resolution`` the (H, W) the z-maps
    were computed at (the first image's, for the stored images), ``size`` the requested network
    size or None for the stored images.
    """

    scores: np.ndarray
    label_names: list[str]
    paths: list[str]
    resolution: tuple[int, int]
    size: tuple[int, int] | None


def network_image_255(x) -> np.ndarray:
    """A network input ``[3,H,W]`` in [-1, 1] -> ``float32 [H,W,3]`` in grey levels 0..255 (the
    z-score's units): ``(x + 1) * 127.5``."""
    return ((np.asarray(x, dtype=np.float32) + 1.0) * 127.5).transpose(1, 2, 0)


def naive_category_scores(
    root: str | Path,
    category: str,
    size: Sequence[int] | None = None,
    keep_aspect: bool = False,
    max_side: int | None = 256,
) -> NaiveScores:
    """Naive z-score image scores of ``category``'s test images against its ``train/good`` statistics.

    ``size=None``: the stored images (downscaled to ``max_side`` if larger), score = max of the
    map.  ``size=(H, W)``: the networks' input path at ``network_input_size(root, category, size,
    keep_aspect)``; score = max of the z-map upsampled to the original size (as
    every detector's evaluation defines it).
    """
    root = Path(root)
    test = list_samples(root, category, "test")
    if not test:
        raise FileNotFoundError(
            f"{root / category / 'test'}: no test images; check the root with `esad check`"
        )
    if not list_samples(root, category, "train"):
        raise FileNotFoundError(
            f"{root / category / 'train' / 'good'}: no training images for the per-pixel statistics"
        )
    if size is None:
        tr = _load_resized([s.path for s in list_samples(root, category, "train")], max_side)
        te = _load_resized([s.path for s in test], max_side)
        scores, _ = naive_zscore_scores(tr, te)
        resolution = (int(te.shape[1]), int(te.shape[2]))
        net_size = None
    else:
        if len(size) != 2 or min(int(v) for v in size) < 1:
            raise ValueError(f"size must be (H, W) with positive sides, e.g. cfg.image_size; got {size!r}")
        # the naive detector through the one scoring loop: score(x) = max_p up(z)(p), the map at
        # the image's original resolution (MVTec's definition), as in `esad demo`
        from esad_lib.config import ESADConfig
        from esad_lib.detectors.naive import NaiveDetector
        from esad_lib.scoring import fit_detector, score_dataset

        cfg = ESADConfig(
            category=category,
            dataset=str(root),
            image_size=tuple(int(v) for v in size),
            keep_aspect=keep_aspect,
            max_test_images=None,
        )
        res = score_dataset(
            fit_detector(NaiveDetector(cfg), cfg, root), cfg, root=root, keep_channels=False, progress=False
        )
        if res.paths != [str(s.path) for s in test]:
            raise RuntimeError(f"{root / category}: the scored test images are not those listed")
        scores = res.scores
        resolution = net_size = network_input_size(root, category, list(cfg.image_size), keep_aspect)
    return NaiveScores(
        scores=np.asarray(scores, dtype=np.float64),
        label_names=[s.label for s in test],
        paths=[str(s.path) for s in test],
        resolution=(int(resolution[0]), int(resolution[1])),
        size=net_size,
    )


def naive_baseline_table(
    root: str | Path,
    categories: Sequence[str] | None = None,
    max_side: int | None = 256,
    by_defect: bool = False,
    progress: bool = True,
    size: Sequence[int] | None = None,
    keep_aspect: bool = False,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
) -> list[dict]:
    """Image AUROC of the naive baseline per category and anomaly type on a LOCO-layout root.

    Rows: ``dict(category, type, defect (only with by_defect), resolution ("HxW" of the z-maps),
    n_good, n_anomalous, auroc, auroc_low, auroc_high, auroc_se)``; ``type`` is
    "logical"/"structural"; each AUROC is test/good against that type's images.  ``size`` /
    ``keep_aspect`` / ``max_side``: see ``naive_category_scores`` (None = the stored images;
    ``cfg.image_size`` / ``cfg.keep_aspect`` = the model's input resolution).  The interval is
    the 95 % stratified-bootstrap percentile interval (``esad_lib.uncertainty.image_auroc_ci``,
    ``n_boot`` resamples, ``seed``); ``n_boot=0`` leaves the three ``auroc_*`` fields None.
    """
    from sklearn.metrics import roc_auc_score
    from tqdm.auto import tqdm

    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0 (0 = no interval), got {n_boot}")
    cats = list(categories) if categories is not None else list_categories(root)
    rows: list[dict] = []
    for cat in tqdm(cats, desc="naive baseline", disable=not progress):
        res = naive_category_scores(root, cat, size=size, keep_aspect=keep_aspect, max_side=max_side)
        test = list_samples(root, cat, "test")
        scores = res.scores
        labels = np.array(res.label_names)
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
                s = np.r_[good, scores[g]]
                row = {"category": cat, "type": typ}
                if by_defect:
                    row["defect"] = defect
                ci = image_auroc_ci(s, y.astype(int), n_boot=n_boot, seed=seed) if n_boot else None
                row.update(
                    resolution=f"{res.resolution[0]}x{res.resolution[1]}",
                    n_good=len(good),
                    n_anomalous=int(g.sum()),
                    auroc=float(roc_auc_score(y, s)),
                    auroc_low=None if ci is None else ci["low"],
                    auroc_high=None if ci is None else ci["high"],
                    auroc_se=None if ci is None else ci["se"],
                )
                rows.append(row)
    return rows
