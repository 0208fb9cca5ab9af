"""Overview helpers of notebook 01 (esad_lib.data.overview) on the hand-built tiny tree."""

from __future__ import annotations

import numpy as np
from tiny_loco import make_tiny_loco

from esad_lib.data.overview import count_table, defect_colours, defect_table, format_tree, overlay_channels


def test_tree_counts_and_defects(tmp_path):
    root = make_tiny_loco(tmp_path / "loco")
    tree = format_tree(root, show=["pushpins"], max_dirs=5)
    assert "license.txt" in tree and "000/  (2 files)" in tree and "train/" in tree
    assert "breakfast_box" not in tree and "... 1 more folders" in tree
    rows = {r["category"]: r for r in count_table(root)}
    assert rows["pushpins"]["train/good"] == 4 and rows["pushpins"]["test/structural_anomalies"] == 3
    assert rows["pushpins"]["masks logical"] == 3 and rows["pushpins"]["size (WxH)"] == "17x10"
    table = {r["defect_name"]: r for r in defect_table(root, "pushpins")}
    assert table["missing_item"]["type"] == "logical" and table["missing_item"]["images"] == 2
    assert table["wrong_colour"]["regions"] == 1 and table["scratch"]["type"] == "structural"


def test_overlay_fills_and_outlines():
    img = np.zeros((6, 6, 3), np.uint8)
    ch = np.zeros((1, 6, 6), np.uint8)
    ch[0, 1:5, 1:5] = 9
    out = overlay_channels(img, ch, defect_colours([9]), alpha=0.5)
    col = np.array(defect_colours([9])[9])
    assert (out[1, 1] == col).all()  # outline pixel: the defect's colour
    assert np.allclose(out[2, 2], 0.5 * col, atol=1)  # interior: half-transparent fill
    assert (out[0, 0] == 0).all()  # outside untouched
