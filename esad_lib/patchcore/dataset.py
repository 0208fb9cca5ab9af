"""PatchCore on a category folder, by the project's protocol: build, fit on train/good, score a
split into an ``esad_lib.scoring.ScoreResult``, evaluate into ``out_dir/metrics.json``
(``esad_lib.evaluation.metrics_from_result``)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from esad_lib.config import ESADConfig, resolve_device
from esad_lib.data import (
    LOCODataset,
    collate_keep_lists,
    dataset_root,
    input_size,
    list_samples,
    load_defects_config,
)
from esad_lib.evaluation import (
    METRICS_FILE,
    METRICS_SCHEMA,
    SCORES_FILE,
    counts_of,
    metrics_from_result,
    scores_csv,
)
from esad_lib.features import build_feature_extractor
from esad_lib.patchcore.detector import PatchCore
from esad_lib.paths import atomic_write_text
from esad_lib.scoring import ScoreResult

#: the features of the reference PatchCore row (``esad demo``, the ablation variant
#: "patchcore"): ImageNet-pretrained, as PatchCore is defined (the only ones offline: the wheel's).
REFERENCE_EXTRACTOR = "efficientnet_lite0"
#: [ours] its EfficientNet-Lite0 taps: strides 4 and 8 (PatchCore's own default, the stride-8/16
#: taps, gives 8x8 and 4x4 grids at 64 px).  Chosen on the dev set (synth_seed=1; README,
#: "Choices"), not on the reported test set.
REFERENCE_LAYERS = (0, 1)


def build_patchcore(
    cfg: ESADConfig, extractor: str | torch.nn.Module | None = None, **params: Any
) -> PatchCore:
    """An unfitted ``PatchCore`` on ``cfg.device`` with extractor ``extractor`` (a name
    ``build_feature_extractor`` accepts, or a module; default ``cfg.feature_extractor``) and
    ``seed=cfg.seed`` unless given; ``params`` go to ``PatchCore``."""
    device = resolve_device(cfg.device)
    if extractor is None:
        extractor = cfg.feature_extractor
    if isinstance(extractor, str):
        if extractor == "recon_encoder":
            raise ValueError(
                "extractor 'recon_encoder' is the encoder of a trained ESAD net; PatchCore is training-free: "
                "use a frozen extractor such as 'random_cnn' or an ImageNet backbone"
            )
        extractor = build_feature_extractor(extractor, weights=cfg.feature_weights, device=device)
    params.setdefault("seed", cfg.seed)
    return PatchCore(extractor.to(device), **params)


def _dataset(cfg: ESADConfig, root: Path, split: str, label: str, channels: bool, max_images: int | None):
    ds = LOCODataset(
        root, cfg.category, split, image_size=input_size(cfg, root), labels=[label], return_channels=channels
    )
    n = len(ds) if max_images is None else min(len(ds), int(max_images))
    return ds if n == len(ds) else torch.utils.data.Subset(ds, list(range(n)))


def _loader(ds, cfg: ESADConfig, batch_size: int):
    return torch.utils.data.DataLoader(
        ds, batch_size=batch_size, shuffle=False, num_workers=cfg.num_workers, collate_fn=collate_keep_lists
    )


def fit_patchcore(
    cfg: ESADConfig,
    extractor: str | torch.nn.Module | None = None,
    root: str | Path | None = None,
    progress: bool = True,
    **params: Any,
) -> PatchCore:
    """``build_patchcore`` + ``fit`` on ``train/good`` of ``cfg.category`` at ``cfg.image_size``."""
    root = Path(root) if root is not None else dataset_root(cfg)
    if not list_samples(root, cfg.category, split="train", labels=["good"]):
        raise FileNotFoundError(
            f"no train/good images in {root / cfg.category}; PatchCore fits its memory bank on them "
            "(check the dataset root with `esad check`)"
        )
    pc = build_patchcore(cfg, extractor, **params)
    loader = _loader(_dataset(cfg, root, "train", "good", False, None), cfg, pc.batch_size)
    pc.fit((b["image"] for b in loader), progress=progress)
    return pc


def score_dataset_patchcore(
    cfg: ESADConfig,
    extractor: str | torch.nn.Module | None = None,
    detector: PatchCore | None = None,
    split: str = "test",
    labels: Sequence[str] | None = None,
    root: str | Path | None = None,
    max_images: int | None = None,
    keep_channels: bool = True,
    progress: bool = True,
    **params: Any,
) -> ScoreResult:
    """Score ``split`` of ``cfg.category`` with PatchCore -> ``esad_lib.scoring.ScoreResult``.

    ``detector``: a fitted ``PatchCore``; when None one is fitted on train/good
    (``fit_patchcore(cfg, extractor, **params)``) and its fit time is in
    ``result.extra["fit_seconds"]``.  Like ``esad_lib.scoring.score_dataset``: labels that
    exist in the root (default good/logical/structural), ``max_images`` per label
    (``cfg.max_test_images`` when None), images at ``cfg.image_size``, ground-truth channels
    at original size with ``keep_channels``.

    ``maps[i]`` is ``float32 [H,W]`` at the network input resolution (smoothed); ``scores[i]``
    is the max of ``full_res_map(i)``, the map upsampled to the image's ORIGINAL size, i.e.
    image AUROC is computed from "the max of the full-resolution map" (the MVTec definition).
    Deviation: PatchCore's own image score is the max patch distance (re-weighted, PC eq. 7).
    ``seconds``: features + nearest neighbours + maps + scores, without image loading.
    """
    root = Path(root) if root is not None else dataset_root(cfg)
    if max_images is None:
        max_images = cfg.max_test_images
    wanted = list(labels) if labels is not None else ["good", "logical", "structural"]
    present = [lab for lab in wanted if list_samples(root, cfg.category, split=split, labels=[lab])]
    if not present:
        raise FileNotFoundError(
            f"no images for labels {wanted} in {root / cfg.category / split}; check the dataset root "
            "(see `esad check`)"
        )
    if detector is None:
        detector = fit_patchcore(cfg, extractor, root=root, progress=progress, **params)
    elif detector.memory_bank is None:
        raise RuntimeError(
            "score_dataset_patchcore got an unfitted PatchCore: fit() it or pass detector=None"
        )
    elif extractor is not None or params:
        raise ValueError("pass either a fitted detector or extractor/params to build one, not both")
    if input_size(cfg, root) != detector.image_size:
        raise ValueError(
            f"the PatchCore was fitted at {detector.image_size} but the input size is {input_size(cfg, root)}"
        )
    out = ScoreResult.empty(
        keep_channels, extra={"fit_seconds": detector.fit_seconds, "patchcore": detector.params()}
    )
    t_wall = time.perf_counter()
    for lab in present:
        loader = _loader(_dataset(cfg, root, split, lab, keep_channels, max_images), cfg, detector.batch_size)
        bar = tqdm(loader, desc=f"patchcore {cfg.category}/{split}/{lab}", disable=not progress, leave=False)
        for batch in bar:
            t0 = time.perf_counter()
            maps = detector.anomaly_maps(batch["image"]).float().cpu().numpy()
            n0 = len(out.maps)
            out.maps += list(maps)
            out.orig_sizes += [(int(s[0]), int(s[1])) for s in batch["orig_size"].tolist()]
            # image score = max of the map at ORIGINAL resolution (what the pixel metrics see)
            s = [float(out.full_res_map(i).max()) for i in range(n0, len(out.maps))]
            out.seconds += time.perf_counter() - t0
            out.scores = np.append(out.scores, np.asarray(s, dtype=np.float64))
            out.labels = np.append(out.labels, np.asarray(batch["label"], dtype=np.int64))
            out.label_names += list(batch["label_name"])
            out.paths += [str(p) for p in batch["path"]]
            if keep_channels:
                out.channels += [np.asarray(c, dtype=np.uint8) for c in batch["channels"]]
    out.wall_seconds = time.perf_counter() - t_wall
    return out


def evaluate_patchcore(
    cfg: ESADConfig,
    out_dir: str | Path,
    extractor: str | torch.nn.Module | None = None,
    root: str | Path | None = None,
    max_images: int | None = None,
    progress: bool = True,
    save_scores: bool = True,
    **params: Any,
) -> dict[str, Any]:
    """Fit PatchCore on train/good, score the test split, write ``out_dir/metrics.json``.

    The layout is that of ESAD's runs (``esad_lib.evaluation.evaluate_run``; read back with
    ``load_metrics``): every metric of ``metrics_from_result``, ``"method": "patchcore"``,
    ``feature_extractor``, ``counts``, ``config``, and ``timing`` with ``fit_seconds`` (memory
    bank + coreset), ``scoring_ms_per_image``, ``scoring_seconds``, ``scoring_wall_seconds``,
    ``metric_seconds``; ``train_seconds`` is None (nothing is trained).  ``patchcore`` holds the
    detector's settings and bank size.  Also writes ``scores.csv`` with ``save_scores``.
    """
    out_dir = Path(out_dir)
    root = Path(root) if root is not None else dataset_root(cfg)
    defects = load_defects_config(root / cfg.category)
    detector = fit_patchcore(cfg, extractor, root=root, progress=progress, **params)
    result = score_dataset_patchcore(
        cfg, detector=detector, root=root, max_images=max_images, progress=progress
    )
    t0 = time.perf_counter()
    metrics = metrics_from_result(result, defects)
    metric_seconds = time.perf_counter() - t0
    info = detector.params()
    # the config as PatchCore used it: its smoothing, no map normalisation, method "patchcore"
    used = cfg.replace(
        method="patchcore",
        feature_extractor=info["extractor"],
        smoothing="gaussian" if detector.sigma > 0 else "none",
        smoothing_sigma=detector.sigma if detector.sigma > 0 else cfg.smoothing_sigma,
        map_normalization="none",
    )
    metrics.update(
        {
            "schema": METRICS_SCHEMA,
            "category": cfg.category,
            "method": "patchcore",
            "profile": cfg.profile,
            "dataset": cfg.dataset,
            "dataset_root": str(root),
            "image_size": list(input_size(cfg, root)),
            "score_map": "nearest_neighbour",
            "smoothing": used.smoothing,
            "map_normalization": "none",
            "feature_extractor": info["extractor"],
            "config_key": used.key(),
            "config": used.to_dict(),
            "counts": counts_of(result.label_names),
            "patchcore": info,
            "timing": {
                "fit_seconds": detector.fit_seconds,
                "train_seconds": None,
                "scoring_ms_per_image": result.ms_per_image,
                "scoring_seconds": result.seconds,
                "scoring_wall_seconds": result.wall_seconds,
                "metric_seconds": metric_seconds,
            },
            "run_dir": str(out_dir),
        }
    )
    atomic_write_text(out_dir / METRICS_FILE, json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    if save_scores:
        atomic_write_text(out_dir / SCORES_FILE, scores_csv(result))
    return metrics
