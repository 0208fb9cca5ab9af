"""Looking at a LOCO-layout root (the layout of MVTec LOCO AD, the paper's benchmark): its folder
tree, counts per category and type, and which defects of ``defects_config.json`` occur under
which anomaly type."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from esad_lib.data.loco import (
    LABEL_DIRS,
    categories,
    image_files,
    image_size,
    list_samples,
    load_defects_config,
    load_mask,
)


def format_tree(root: str | Path, max_depth: int = 4, max_dirs: int = 4,
                show: Sequence[str] | None = None) -> str:
    """The folder tree under ``root`` with the number of image files in each folder; sibling folders
    cut after ``max_dirs``; .json/.txt files listed; ``show``: the top-level folders to expand."""
    root = Path(root)
    lines = [f"{root.name}/"]

    def walk(d: Path, prefix: str, depth: int) -> None:
        found = sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
        subdirs = [p for p in found if depth > 1 or show is None or p.name in show]
        hidden = len(found) - len(subdirs)
        files = sorted(p.name for p in d.iterdir() if p.is_file() and p.suffix in (".json", ".txt"))
        entries: list[tuple[str, Path | None]] = [(n, None) for n in files if not n.startswith(".")]
        shown = subdirs if len(subdirs) <= max_dirs + 1 else subdirs[:max_dirs]
        entries += [(p.name, p) for p in shown]
        if len(shown) < len(subdirs) or hidden:
            entries.append((f"... {len(subdirs) - len(shown) + hidden} more folders", None))
        for i, (name, p) in enumerate(entries):
            last = i == len(entries) - 1
            n = len(image_files(p)) if p is not None else 0
            label = name if p is None else f"{name}/" + (f"  ({n} file{'s' * (n > 1)})" if n else "")
            lines.append(prefix + ("└── " if last else "├── ") + label)
            if p is not None and depth < max_depth:
                walk(p, prefix + ("    " if last else "│   "), depth + 1)

    walk(root, "", 1)
    return "\n".join(lines)


def count_table(root: str | Path) -> list[dict]:
    """One row per category: image counts per split/type, mask counts, image size (W x H)."""
    rows = []
    for cat in categories(root):
        samples = list_samples(root, cat)
        row: dict = {"category": cat}
        for split, label in (("train", "good"), ("validation", "good"), ("test", "good")):
            row[f"{split}/{label}"] = sum(s.split == split and s.label == label for s in samples)
        for label in ("logical", "structural"):
            mine = [s for s in samples if s.label == label]
            row[f"test/{LABEL_DIRS[label]}"] = len(mine)
            row[f"masks {label}"] = sum(len(s.mask_paths) for s in mine)
        sizes = sorted({image_size(s.path) for s in samples})
        row["size (WxH)"] = ", ".join(f"{w}x{h}" for h, w in sizes)
        rows.append(row)
    return rows


def defect_table(root: str | Path, category: str) -> list[dict]:
    """``defects_config.json`` of ``category`` plus where each defect occurs: ``type`` (the anomaly
    folders its pixel value was found in), ``images`` and ``regions`` (mask PNGs) showing it."""
    specs = load_defects_config(Path(root) / category)
    seen: dict[int, dict] = {d.pixel_value: {"types": set(), "images": set(), "regions": 0} for d in specs}
    for s in list_samples(root, category, "test", ["logical", "structural"]):
        for mp in s.mask_paths:
            for v in np.unique(load_mask(mp)):
                if v and int(v) in seen:
                    hit = seen[int(v)]
                    hit["types"].add(s.label)
                    hit["images"].add(s.path)
                    hit["regions"] += 1
    return [{**d.to_dict(), "type": "/".join(sorted(seen[d.pixel_value]["types"])) or "-",
             "images": len(seen[d.pixel_value]["images"]), "regions": seen[d.pixel_value]["regions"]}
            for d in specs]


def defect_colours(pixel_values: Sequence[int]) -> dict[int, tuple[int, int, int]]:
    """A distinct RGB colour per defect pixel value (matplotlib's tab10, in the given order)."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return {int(v): tuple(int(255 * c) for c in cmap(i % 10)[:3]) for i, v in enumerate(pixel_values)}


def overlay_channels(image: np.ndarray, channels: np.ndarray, colours: dict[int, tuple[int, int, int]],
                     alpha: float = 0.45) -> np.ndarray:
    """Each defect channel drawn translucent with a 1-px outline in its defect's colour:
    image uint8 [H, W, 3], channels uint8 [C, H, W] -> uint8 [H, W, 3]."""
    out = image.astype(np.float32).copy()
    for ch in channels:
        region = ch > 0
        if not region.any():
            continue
        col = np.array(colours.get(int(ch.max()), (255, 255, 255)), dtype=np.float32)
        out[region] = (1 - alpha) * out[region] + alpha * col
        pad = np.pad(region, 1)
        inner = pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:]
        out[region & ~inner] = col
    return np.clip(out, 0, 255).astype(np.uint8)
