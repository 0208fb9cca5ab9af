"""Workload of the ``esad score-maps`` speed benchmark: one category in MVTec LOCO AD's official layout
(the paper's benchmark, Sec. 4.1) with float32 TIFF anomaly maps, written under a folder you name.

    python benchmarks/score_maps_workload.py OUT [--per-label 20] [--width 1700] [--height 1000] [--seed 0]

Writes ``OUT/dataset/<category>/...`` (images, ground-truth PNGs, ``defects_config.json``) and
``OUT/maps/<category>/test/<label dir>/<id>.tiff``.  Default size: 20 good + 20 logical + 20
structural test images of 1700x1000 px (390 MB of maps), each anomalous image with one or two
ground-truth channels; the defects use absolute and relative saturation.  Deterministic in
``--seed``.  Images are flat grey (only their size matters to the evaluation); maps are
Gaussian noise with the defect regions shifted up, rounded to 1/65536 so that some scores tie
(as maps upsampled from a network's output do).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

CATEGORY = "breakfast_box"  # a name the official evaluation accepts
DEFECTS = [
    {
        "defect_name": "missing_item",
        "pixel_value": 255,
        "saturation_threshold": 2000,
        "relative_saturation": False,
    },
    {
        "defect_name": "extra_item",
        "pixel_value": 200,
        "saturation_threshold": 1.0,
        "relative_saturation": True,
    },
    {"defect_name": "scratch", "pixel_value": 100, "saturation_threshold": 0.5, "relative_saturation": True},
    {"defect_name": "dent", "pixel_value": 50, "saturation_threshold": 800, "relative_saturation": False},
]
LABEL_DIRS = {"good": "good", "logical": "logical_anomalies", "structural": "structural_anomalies"}
#: defect pixel values each anomaly type draws from
TYPE_VALUES = {"logical": (255, 200), "structural": (100, 50)}


def _png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format="PNG", compress_level=1)


def _region(rng: np.random.Generator, h: int, w: int) -> tuple[slice, slice]:
    """A random rectangle of 1 % to 6 % of the image (a defect region)."""
    rh, rw = int(rng.integers(h // 10, h // 4)), int(rng.integers(w // 10, w // 4))
    y, x = int(rng.integers(0, h - rh)), int(rng.integers(0, w - rw))
    return slice(y, y + rh), slice(x, x + rw)


def make_workload(
    out: str | Path, per_label: int = 20, width: int = 1700, height: int = 1000, seed: int = 0
) -> Path:
    """Write the dataset and the maps under ``out``; returns ``out``."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    cdir = out / "dataset" / CATEGORY
    grey = np.full((height, width, 3), 128, np.uint8)
    _png(cdir / "train" / "good" / "000.png", grey)
    (cdir / "defects_config.json").write_text(json.dumps(DEFECTS, indent=1))
    for label, folder in LABEL_DIRS.items():
        for k in range(per_label):
            image_id = f"{k:03d}"
            _png(cdir / "test" / folder / f"{image_id}.png", grey)
            m = rng.normal(size=(height, width)).astype(np.float32)
            if label != "good":
                values = TYPE_VALUES[label]
                for c in range(1 + int(rng.integers(0, 2))):  # one or two channels
                    gt = np.zeros((height, width), np.uint8)
                    box = _region(rng, height, width)
                    gt[box] = values[int(rng.integers(0, len(values)))]
                    m[box] += np.float32(rng.uniform(0.5, 2.0))
                    _png(cdir / "ground_truth" / folder / image_id / f"{c:03d}.png", gt)
            m = np.round(m * 65536.0) / np.float32(65536.0)  # some ties, like upsampled network maps
            p = out / "maps" / CATEGORY / "test" / folder / f"{image_id}.tiff"
            p.parent.mkdir(parents=True, exist_ok=True)
            tifffile.imwrite(p, m.astype(np.float32))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="folder to write dataset/ and maps/ into (created)")
    ap.add_argument("--per-label", type=int, default=20, help="test images per label (default 20)")
    ap.add_argument("--width", type=int, default=1700)
    ap.add_argument("--height", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    out = make_workload(a.out, a.per_label, a.width, a.height, a.seed)
    print(f"wrote {out / 'dataset'} and {out / 'maps'} (category {CATEGORY})")


if __name__ == "__main__":
    main()
