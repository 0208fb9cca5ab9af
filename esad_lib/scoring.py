"""Test-time scoring: anomaly maps and image scores (the authors' README "3. Key Algorithms": select = 1).

Per cutout size ``c`` the model reconstructs the image in *test-fill* mode (hidden cells filled with
``0.5 * inpainting + 0.5 * input``); input and reconstruction are compared (``score_map="pixel"``:
RIAD's ``1 - MSGMS``; ``"feature"``: ESAD's feature-level distance, ``esad_lib.method.anomaly_map``),
the maps are averaged over the sizes, smoothed at network resolution (``cfg.smoothing``),
optionally standardised per pixel with anomaly-free maps (``cfg.map_normalization``, our
addition); the image score is the max of the map upsampled to the ORIGINAL resolution (MVTec's
definition), one image at a time.  The same masks (seed ``cfg.seed``) serve every test image.

``score_dataset(detector, cfg)`` is THE loop that scores a split, for every method
(``esad_lib.detectors``).  Fast path (``cfg.fast_scoring``): prepared copies of the model and
extractor (``esad_lib.perf.fusion``: BatchNorm folded, channels_last), batches under
``torch.inference_mode``; the eager path scores one image at a time under ``torch.no_grad``.
Both agree within ``FAST_PATH_ATOL``; ``make bench`` measures them (``benchmarks/README.md``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from esad_lib.config import CHOICES, ESADConfig
from esad_lib.data import LOCODataset, collate_keep_lists, dataset_root, input_size, list_samples
from esad_lib.features import build_feature_extractor
from esad_lib.method import model_fills
from esad_lib.method.anomaly_map import MapStats, average_over_cutouts, smooth_maps, upsample_map
from esad_lib.perf.fusion import prepare_for_inference

#: the map kinds: their one definition is ``esad_lib.config.CHOICES``.
SCORE_MAPS = CHOICES["score_map"]
FAST_PATH_ATOL = 1e-4


def _model_device(model: torch.nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def build_scoring_extractor(model: torch.nn.Module, cfg: ESADConfig):
    """The frozen feature extractor of ``cfg.feature_extractor`` on the model's device."""
    return build_feature_extractor(cfg.feature_extractor, weights=cfg.feature_weights,
                                   device=str(_model_device(model)), model=model)


def reconstructions(model, images: torch.Tensor, cfg: ESADConfig) -> dict[int, torch.Tensor]:
    """Test-fill reconstructions, one per cutout size: ``{c: recon [B,3,H,W]}``."""
    outs = model.reconstruct_all(images, tuple(cfg.cutout_sizes), fill=model_fills(cfg)[1],  # the test fill
                                 alpha=cfg.fill_alpha, seed=cfg.seed)
    return {int(c): o.recon for c, o in outs.items()}


def raw_maps(model, images: torch.Tensor, cfg: ESADConfig, extractor=None,
             score_map: str | None = None) -> torch.Tensor:
    """Unsmoothed maps averaged over cutout sizes: ``[B,3,H,W] -> [B,H,W]`` (``score_map``: override)."""
    kind = score_map or cfg.score_map
    if kind not in SCORE_MAPS:
        raise ValueError(f"score_map={kind!r}: use one of {SCORE_MAPS}")
    if kind == "feature" and extractor is None:
        extractor = build_scoring_extractor(model, cfg)
    return average_over_cutouts(images, reconstructions(model, images, cfg), extractor, kind)


def prepare_scoring(model, extractor=None) -> tuple[torch.nn.Module, torch.nn.Module | None]:
    """The fast path's prepared copies (``prepare_for_inference``) of ``model`` and ``extractor``."""
    model = prepare_for_inference(model.eval())
    return model, None if extractor is None else prepare_for_inference(extractor)


def anomaly_maps(model, images: torch.Tensor, cfg: ESADConfig, extractor=None, stats: MapStats | None = None,
                 score_map: str | None = None) -> torch.Tensor:
    """Smoothed (and, with ``stats``, standardised) anomaly maps: ``[B,3,H,W]`` in [-1, 1] -> ``[B,H,W]``."""
    model.eval()
    kind = score_map or cfg.score_map
    if kind == "feature" and extractor is None:
        extractor = build_scoring_extractor(model, cfg)
    images = images.to(_model_device(model))
    fast = bool(cfg.fast_scoring)
    if fast:
        # (preparing happens outside inference mode: the copies' parameters stay normal tensors)
        model, extractor = prepare_scoring(model, extractor)
    with torch.inference_mode() if fast else torch.no_grad():
        if fast:
            images = images.contiguous(memory_format=torch.channels_last)
            maps = raw_maps(model, images, cfg, extractor, kind).contiguous()
        else:
            maps = torch.cat([raw_maps(model, im[None], cfg, extractor, kind) for im in images])
        maps = smooth_maps(maps.float(), cfg)
        if stats is not None:
            maps = stats.apply(maps)
    return maps.clone() if fast else maps  # leave inference mode: a normal tensor


@dataclass
class ScoreResult:
    """Scores and maps (``float32 [H,W]``, network size) of a split; ``channels[i]``: ``uint8 [C,H0,W0]``."""

    scores: np.ndarray  # float64 [N]: max of each full-resolution map (official definition)
    labels: np.ndarray  # int64 [N] (0 good, 1 anomalous)
    label_names: list[str]
    paths: list[str]
    maps: list[np.ndarray]
    orig_sizes: list[tuple[int, int]]
    channels: list[np.ndarray] | None = None
    seconds: float = 0.0  # model + maps, without image loading
    wall_seconds: float = 0.0  # including image loading

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def ms_per_image(self) -> float:
        return 1000.0 * self.seconds / max(len(self), 1)

    def full_res_map(self, i: int, dtype=np.float32) -> np.ndarray:
        """Map ``i`` upsampled bilinearly to its original image size: ``[H0,W0]``."""
        return upsample_map(self.maps[i], self.orig_sizes[i], dtype)

    def indices(self, label_names: Sequence[str]) -> list[int]:
        """Indices of the images whose label name is in ``label_names`` (in order)."""
        keep = set(label_names)
        return [i for i, n in enumerate(self.label_names) if n in keep]

    def gt_mask(self, i: int) -> np.ndarray:
        """Union of the ground-truth channels of image ``i`` at original size: ``bool [H0,W0]``."""
        if self.channels is None:
            raise ValueError("scored without channels; pass keep_channels=True to score_dataset")
        return (self.channels[i] > 0).any(0)  # [0,H0,W0] (no region) -> all False

    def to_rows(self) -> list[dict]:
        """One dict per image (path, label, score) -- for scores.csv."""
        return [
            {"path": p, "label": ln, "anomalous": int(lab), "score": float(s)}
            for p, ln, lab, s in zip(self.paths, self.label_names, self.labels, self.scores)
        ]


def _label_loader(cfg: ESADConfig, root: Path, split: str, label: str, keep: bool, max_images, bs: int):
    size = input_size(cfg, root)
    ds = LOCODataset(root, cfg.category, split, image_size=size, labels=[label], return_channels=keep)
    if max_images is not None and int(max_images) < len(ds):
        ds = torch.utils.data.Subset(ds, list(range(int(max_images))))
    return torch.utils.data.DataLoader(ds, batch_size=bs, shuffle=False, num_workers=cfg.num_workers,
                                       collate_fn=collate_keep_lists)


def train_images(cfg: ESADConfig, root: str | Path | None = None) -> torch.Tensor:
    """The ``train/good`` images of ``cfg.category`` at the network input size: ``[N,3,H,W]``
    in [-1, 1] (what ``fit`` of a detector gets)."""
    root = Path(root) if root is not None else dataset_root(cfg)
    if not list_samples(root, cfg.category, split="train", labels=["good"]):
        raise FileNotFoundError(f"no train/good images in {root / cfg.category}; a detector is fitted on "
                                "them (check the dataset root with `esad check`)")
    loader = _label_loader(cfg, root, "train", "good", False, None, 64)
    return torch.cat([b["image"] for b in loader])


def fit_detector(detector, cfg: ESADConfig, root: str | Path | None = None):
    """The ``detector`` fitted on ``train_images(cfg, root)``."""
    return detector.fit(train_images(cfg, root))


def score_dataset(detector, cfg: ESADConfig, split: str = "test", labels: Sequence[str] | None = None,
                  root: str | Path | None = None, max_images: int | None = None, keep_channels: bool = True,
                  progress: bool = True) -> ScoreResult:
    """THE scoring loop: every image of ``split`` of ``cfg.category`` through a fitted ``detector``,
    ``detector.batch_size`` images a call (default ``cfg.eval_batch_size``); ``labels`` present in the root
    (default good/logical/structural); ``max_images`` per label (default ``cfg.max_test_images``)."""
    root = Path(root) if root is not None else dataset_root(cfg)
    max_images = cfg.max_test_images if max_images is None else max_images
    wanted = list(labels) if labels is not None else ["good", "logical", "structural"]
    present = [lab for lab in wanted if list_samples(root, cfg.category, split=split, labels=[lab])]
    if not present:
        raise FileNotFoundError(f"no images for labels {wanted} in {root / cfg.category / split}; check the "
                                "dataset root (see `esad check`)")
    bs = int(getattr(detector, "batch_size", None) or cfg.eval_batch_size)
    out = ScoreResult(np.zeros(0), np.zeros(0, dtype=np.int64), [], [], [], [], [] if keep_channels else None)
    t_wall = time.perf_counter()
    for lab in present:
        loader = _label_loader(cfg, root, split, lab, keep_channels, max_images, bs)
        desc = f"score {cfg.category}/{split}/{lab}"
        for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
            t0 = time.perf_counter()
            maps = torch.as_tensor(detector.anomaly_maps(batch["image"])).float().cpu().numpy()
            sizes = [(int(h), int(w)) for h, w in batch["orig_size"]]
            s = np.asarray([float(upsample_map(m, sz).max()) for m, sz in zip(maps, sizes)])
            out.seconds += time.perf_counter() - t0
            out.scores = np.append(out.scores, s)
            out.labels = np.append(out.labels, np.asarray(batch["label"], dtype=np.int64))
            out.label_names += list(batch["label_name"])
            out.paths += [str(p) for p in batch["path"]]
            out.maps += list(maps)
            out.orig_sizes += sizes
            if keep_channels:
                out.channels += [np.asarray(c, dtype=np.uint8) for c in batch["channels"]]
    out.wall_seconds = time.perf_counter() - t_wall
    return out


def normalization_stats(detector, cfg: ESADConfig, split: str = "validation", root: str | Path | None = None,
                        progress: bool = True) -> MapStats:
    """Per-pixel statistics of ``detector``'s maps of ``split``/good (for ``cfg.map_normalization``)."""
    res = score_dataset(detector, cfg, split, ["good"], root, None, keep_channels=False, progress=progress)
    if len(res.maps) < 2:
        raise ValueError(f"map_normalization={split!r} needs at least 2 images in {split}/good of "
                         f"{cfg.category}; found {len(res.maps)}. Add images or set it to 'none'.")
    return MapStats.from_maps(torch.as_tensor(np.stack(res.maps)))
