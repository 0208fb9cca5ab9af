"""A tiny hand-built tree in the exact MVTec LOCO AD layout, for tests and for teaching the
layout (paper Sec. 4.1).  It has what the real dataset has and the synthetic one does not: a
top-level ``license.txt``, non-contiguous image ids, an image with TWO mask PNGs (two defect
regions with different pixel values), and stray ``.DS_Store`` / ``Thumbs.db`` files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

#: the two categories of the tiny tree and their (W, H).
TINY_SIZES = {"breakfast_box": (20, 16), "pushpins": (17, 10)}
TINY_DEFECTS = [
    {
        "defect_name": "missing_item",
        "pixel_value": 255,
        "saturation_threshold": 30,
        "relative_saturation": False,
    },
    {
        "defect_name": "wrong_colour",
        "pixel_value": 200,
        "saturation_threshold": 1.0,
        "relative_saturation": True,
    },
    {"defect_name": "scratch", "pixel_value": 100, "saturation_threshold": 0.5, "relative_saturation": True},
]
#: ids per folder (non-contiguous on purpose).
TINY_IDS = {
    "train/good": ["000", "001", "003", "010"],
    "validation/good": ["000", "002"],
    "test/good": ["000", "004"],
    "test/logical_anomalies": ["000", "007"],
    "test/structural_anomalies": ["001", "002", "005"],
}


def _png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format="PNG")


def make_tiny_loco(root: str | Path, seed: int = 0) -> Path:
    """Write the tiny tree under ``root`` (created) and return it.

    Masks: logical 000 has two masks (values 255 and 200), logical 007 one (255); structural
    001/002/005 one each (100).  Returns ``root``.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "license.txt").write_text("tiny test tree; CC BY-NC-SA 4.0 applies to the real dataset\n")
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    for cat, (w, h) in TINY_SIZES.items():
        cdir = root / cat
        for folder, ids in TINY_IDS.items():
            for i in ids:
                _png(cdir / folder / f"{i}.png", rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8))
            (cdir / folder / ".DS_Store").write_bytes(b"junk")
        (cdir / "test" / "good" / "Thumbs.db").write_bytes(b"junk")
        (cdir / "defects_config.json").write_text(json.dumps(TINY_DEFECTS))
        gt = cdir / "ground_truth"
        m = np.zeros((h, w), np.uint8)
        m[1:4, 2:6] = 255
        _png(gt / "logical_anomalies" / "000" / "000.png", m)
        m2 = np.zeros((h, w), np.uint8)
        m2[5:8, 3:9] = 200
        _png(gt / "logical_anomalies" / "000" / "001.png", m2)
        _png(gt / "logical_anomalies" / "007" / "000.png", m)
        for i in TINY_IDS["test/structural_anomalies"]:
            s = np.zeros((h, w), np.uint8)
            s[2:5, 1 + int(i) : 4 + int(i)] = 100
            _png(gt / "structural_anomalies" / i / "000.png", s)
        (gt / "logical_anomalies" / "Thumbs.db").write_bytes(b"junk")
        (gt / "logical_anomalies" / "000" / ".DS_Store").write_bytes(b"junk")
    return root
