"""Reader for MVTec LOCO AD and every dataset in its layout (the paper's benchmark).

The layout (official dataset, its structural/logical splits, and the synthetic benchmark)::

    <root>/<category>/train/good/*.png
    <root>/<category>/validation/good/*.png
    <root>/<category>/test/{good,logical_anomalies,structural_anomalies}/*.png
    <root>/<category>/ground_truth/{logical,structural}_anomalies/<image_id>/000.png, 001.png, ...
    <root>/<category>/defects_config.json

Each anomalous test image has a folder of masks, one PNG per defect region ("channel"), holding
the defect's ``pixel_value``: kept apart for sPRO, united for pixel AUROC / AU-PRO.  A split
dataset lacks one anomaly folder; stray files (``.DS_Store``, non-images) are ignored."""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

SPLITS = ("train", "validation", "test")
LABELS = ("good", "logical", "structural")
#: folder name of each label under ``<split>/`` (and under ``ground_truth/`` for anomalies).
LABEL_DIRS = {"good": "good", "logical": "logical_anomalies", "structural": "structural_anomalies"}
DIR_LABELS = {v: k for k, v in LABEL_DIRS.items()}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
DEFECTS_CONFIG = "defects_config.json"


class DatasetLayoutError(ValueError):
    """A folder is not in the LOCO layout, or a file in it cannot be used (message says which)."""


@dataclass(frozen=True)
class DefectSpec:
    """One entry of ``defects_config.json`` (sPRO): ``saturation_threshold`` is a fraction of the
    region's area if ``relative_saturation``, else a pixel count."""

    defect_name: str
    pixel_value: int
    saturation_threshold: float
    relative_saturation: bool

    to_dict = asdict


@dataclass
class Sample:
    """One image of a LOCO-layout dataset and the paths of its mask channels (none if good)."""

    path: Path
    category: str
    split: str  # "train" | "validation" | "test"
    label: str  # "good" | "logical" | "structural"
    image_id: str
    mask_paths: list[Path] = field(default_factory=list)

    @property
    def gt_dir(self) -> Path | None:
        """Where this image's mask folder is (or should be); None for good images."""
        if self.label == "good":
            return None
        return self.path.parent.parent.parent / "ground_truth" / LABEL_DIRS[self.label] / self.image_id


def image_files(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted naturally; skipped: folders, hidden files (``.DS_Store``),
    non-images (``Thumbs.db``)."""
    if not folder.is_dir():
        return []
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
             and p.suffix.lower() in IMAGE_SUFFIXES]  # natural order below: 2.png before 10.png
    return sorted(files, key=lambda p: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)])


def categories(root: str | Path) -> list[str]:
    """Names of the category folders (holding ``train/good``) under ``root``, sorted."""
    root = Path(root)
    return sorted(p.name for p in root.iterdir() if (p / "train" / "good").is_dir()) if root.is_dir() else []


def load_defects_config(category_dir: str | Path) -> list[DefectSpec]:
    """Parse ``<category>/defects_config.json`` (a list of dicts) into ``DefectSpec``\\ s."""
    path = Path(category_dir) / DEFECTS_CONFIG
    if not path.is_file():
        raise DatasetLayoutError(f"{path}: missing (the sPRO metric needs it); every LOCO category "
                                 "folder holds one: copy it from the original dataset")
    try:
        return [DefectSpec(str(e["defect_name"]), int(e["pixel_value"]), float(e["saturation_threshold"]),
                           bool(e["relative_saturation"])) for e in json.loads(path.read_text())]
    except (ValueError, KeyError, TypeError) as err:
        want = "a JSON list of {defect_name, pixel_value, saturation_threshold, relative_saturation}"
        raise DatasetLayoutError(f"{path}: not a valid defects config ({err}); expected {want}") from err


def list_samples(root: str | Path, category: str, split: str | None = None,
                 labels: Iterable[str] | None = None) -> list[Sample]:
    """All images of ``category`` (one split or all; ``labels`` filters), in split/label/name order.
    Mask paths come from ``ground_truth/<label>_anomalies/<image_id>/`` (empty if it is missing)."""
    root = Path(root)
    cdir = root / category
    if not cdir.is_dir():
        found = ", ".join(categories(root)) or "no LOCO category folders (e.g. breakfast_box/train/good)"
        raise DatasetLayoutError(f"{cdir}: no such category folder; {root} holds {found}")
    splits = SPLITS if split is None else (split,)
    wanted = LABELS if labels is None else tuple(labels)
    for s in (s for s in splits if s not in SPLITS):
        raise ValueError(f"unknown split {s!r}; choose one of {SPLITS}")
    for lab in (lab for lab in wanted if lab not in LABELS):
        raise ValueError(f"unknown label {lab!r}; choose from {LABELS}")
    out: list[Sample] = []
    for s in splits:
        for lab in [lab for lab in LABELS if lab in wanted and (s == "test" or lab == "good")]:
            for p in image_files(cdir / s / LABEL_DIRS[lab]):
                sample = Sample(path=p, category=category, split=s, label=lab, image_id=p.stem)
                if lab != "good":
                    sample.mask_paths = image_files(sample.gt_dir)
                out.append(sample)
    return out


def image_size(path: str | Path) -> tuple[int, int]:
    """(H, W) of an image from its header (no decoding)."""
    try:
        with Image.open(path) as im:
            w, h = im.size
    except (OSError, UnidentifiedImageError) as err:
        raise DatasetLayoutError(f"{path}: cannot read image header ({err})") from err
    return h, w


def load_image(path: str | Path) -> np.ndarray:
    """Decode an image to RGB. Returns uint8 [H0, W0, 3]; clear error if unreadable/truncated."""
    try:
        with Image.open(path) as im:
            im.load()
            rgb = im.convert("RGB")
    except (OSError, UnidentifiedImageError, SyntaxError) as err:
        msg = f"{path}: unreadable or truncated image ({err}); replace it from the original dataset"
        raise DatasetLayoutError(msg) from err
    return np.array(rgb, dtype=np.uint8)


def load_mask(path: str | Path) -> np.ndarray:
    """Decode one mask PNG to uint8 [H0, W0] (first channel if it was saved as RGB)."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode == "P":
                im = im.convert("L")
            arr = np.array(im)
    except (OSError, UnidentifiedImageError, SyntaxError) as err:
        raise DatasetLayoutError(f"{path}: unreadable or truncated mask ({err})") from err
    if arr.ndim == 3:
        arr = arr[..., 0]
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    if arr.max(initial=0) > 255:
        raise DatasetLayoutError(f"{path}: mask values above 255 ({arr.max()}); expected 8-bit masks")
    return arr.astype(np.uint8)


def load_channel_masks(sample: Sample) -> np.ndarray:
    """The defect channels of ``sample``: uint8 [C, H0, W0], one per mask PNG ([0, H0, W0] if good)."""
    h, w = image_size(sample.path)
    if sample.label == "good":
        return np.zeros((0, h, w), dtype=np.uint8)
    if not sample.mask_paths:
        msg = f"{sample.path}: anomalous image without ground truth; expected mask PNGs in {sample.gt_dir}"
        raise DatasetLayoutError(msg)
    chans = []
    for mp in sample.mask_paths:
        m = load_mask(mp)
        if m.shape != (h, w):
            raise DatasetLayoutError(f"{mp}: mask size {m.shape[1]}x{m.shape[0]} (WxH) differs from its "
                                     f"image {sample.path} ({w}x{h})")
        chans.append(m)
    return np.stack(chans)


def union_mask(channels: np.ndarray) -> np.ndarray:
    """Union of the defect channels: bool [H0, W0] (all False for C = 0)."""
    return np.asarray(channels).astype(bool).any(axis=0)


#: network input sides are rounded to a multiple of this (the U-Nets' four 2x2 poolings).
SIDE_MULTIPLE = 16


def network_input_size(root: str | Path, category: str, size: Sequence[int],
                       keep_aspect: bool) -> tuple[int, int]:
    """The network input ``(H, W)`` of ``category``: ``size`` (the paper squashes to 256x256), or with
    ``keep_aspect`` long side ``max(size)`` at the aspect of its first train image, each side
    rounded to a multiple of ``SIDE_MULTIPLE``."""
    if not keep_aspect:
        return int(size[0]), int(size[1])
    train = list_samples(root, category, split="train")
    if not train:
        raise DatasetLayoutError(f"{Path(root) / category}/train/good: no image to take the aspect from")
    h0, w0 = image_size(train[0].path)
    scale = int(max(size)) / max(h0, w0)
    h, w = (max(SIDE_MULTIPLE, int(round(x * scale / SIDE_MULTIPLE)) * SIDE_MULTIPLE) for x in (h0, w0))
    return h, w


#: decoded items kept in memory, least recently used dropped first (0 = none): every method scored on
#: a category reads the same test images, and decoding + resizing them is the part of scoring that
#: does not depend on the method.  Keyed by path, modification time, size and the item's settings.
ITEM_CACHE_SIZE = 1024
_ITEMS: OrderedDict[tuple, dict] = OrderedDict()


class LOCODataset:
    """Images of one category/split as network inputs (a map-style dataset for a torch DataLoader).

    Item: ``image`` float [3, H, W] in [-1, 1] (bilinear, antialiased); ``mask`` float [1, H, W]
    0/1 union of the channels (nearest); ``label`` 0 good / 1 anomalous; ``label_name``; ``path``;
    ``orig_size`` long [2] = (H0, W0); with ``return_channels`` ``channels`` uint8 [C, H0, W0]
    (batch with ``collate_keep_lists``)."""

    def __init__(self, root: str | Path, category: str, split: str, image_size: Sequence[int] = (256, 256),
                 labels: Iterable[str] | None = None, return_channels: bool = False) -> None:
        self.root, self.category, self.split = Path(root), category, split
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.return_channels = return_channels
        self.samples = list_samples(self.root, category, split, labels)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, idx: int) -> dict:
        s = self.samples[idx]
        st = s.path.stat()
        key = (str(s.path), st.st_mtime_ns, st.st_size, self.image_size, self.return_channels)
        item = _ITEMS.get(key)
        if item is None:
            item = self._load(s)
            if ITEM_CACHE_SIZE > 0:
                _ITEMS[key] = item
                while len(_ITEMS) > ITEM_CACHE_SIZE:
                    _ITEMS.popitem(last=False)
        else:
            _ITEMS.move_to_end(key)
        # copies: a caller may change what it gets without touching the cache
        return {k: v.clone() if hasattr(v, "clone") else v.copy() if isinstance(v, np.ndarray) else v
                for k, v in item.items()}

    def _load(self, s: Sample) -> dict:
        import torch
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as tvf

        img = torch.from_numpy(np.ascontiguousarray(load_image(s.path))).permute(2, 0, 1)  # uint8 [3, H0, W0]
        h0, w0 = img.shape[1:]
        size = list(self.image_size)
        x = tvf.resize(img.float(), size, interpolation=InterpolationMode.BILINEAR, antialias=True)
        x = (x / 127.5 - 1.0).clamp_(-1.0, 1.0)
        channels = load_channel_masks(s) if s.label != "good" else np.zeros((0, h0, w0), np.uint8)
        union = torch.from_numpy(union_mask(channels)).to(torch.uint8)[None]
        m = tvf.resize(union, size, interpolation=InterpolationMode.NEAREST).float()
        item = {"image": x, "mask": m, "label": int(s.label != "good"), "label_name": s.label,
                "path": str(s.path), "orig_size": torch.tensor([h0, w0], dtype=torch.long)}
        if self.return_channels:
            item["channels"] = channels
        return item


def collate_keep_lists(batch: list[dict]) -> dict:
    """Collate ``LOCODataset`` items: tensors stacked, ``label`` -> long [B], the rest kept as lists."""
    import torch

    out: dict = {}
    for key in batch[0]:
        vals = [b[key] for b in batch]
        if isinstance(vals[0], torch.Tensor):
            out[key] = torch.stack(vals)
        elif key == "label":
            out[key] = torch.tensor(vals, dtype=torch.long)
        else:
            out[key] = vals
    return out
