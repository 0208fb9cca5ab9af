"""``esad check``: every planted problem is found, a clean tree passes (esad_lib.data.check)."""

from __future__ import annotations

import argparse
import shutil

import numpy as np
import pytest
from PIL import Image
from tiny_loco import make_tiny_loco

from esad_lib.data.check import check_dataset


@pytest.fixture()
def tiny(tmp_path):
    return make_tiny_loco(tmp_path / "loco")


def found(problems):
    return {(p.kind, p.path) for p in problems}


def test_clean_tree_has_no_problem(tiny):
    assert check_dataset(tiny, progress=False) == []


def test_every_planted_problem_is_listed(tiny):
    c = tiny / "pushpins"
    b = tiny / "breakfast_box"
    w, h = 17, 10
    # unreadable / truncated image
    trunc = c / "train" / "good" / "001.png"
    trunc.write_bytes(trunc.read_bytes()[:60])
    notimg = c / "validation" / "good" / "002.png"
    notimg.write_text("this is not a PNG")
    # mask of the wrong size
    wrong_size = c / "ground_truth" / "structural_anomalies" / "001" / "000.png"
    Image.fromarray(np.full((h + 1, w), 100, np.uint8)).save(wrong_size)
    # mask with several values
    several = c / "ground_truth" / "structural_anomalies" / "002" / "000.png"
    m = np.zeros((h, w), np.uint8)
    m[0, 0], m[1, 1] = 100, 200
    Image.fromarray(m).save(several)
    # unknown pixel value
    unknown = c / "ground_truth" / "logical_anomalies" / "007" / "000.png"
    m = np.zeros((h, w), np.uint8)
    m[2:4, 2:4] = 77
    Image.fromarray(m).save(unknown)
    # empty mask
    empty = b / "ground_truth" / "structural_anomalies" / "005" / "000.png"
    Image.fromarray(np.zeros((16, 20), np.uint8)).save(empty)
    # anomaly without a ground-truth folder
    shutil.rmtree(c / "ground_truth" / "structural_anomalies" / "005")
    # ground truth without an image
    (b / "test" / "logical_anomalies" / "007.png").unlink()
    # missing required folder and a missing defects config
    shutil.rmtree(b / "validation")
    (b / "defects_config.json").unlink()

    probs = check_dataset(tiny, progress=False)
    got = found(probs)
    expected = {
        ("unreadable_image", trunc),
        ("unreadable_image", notimg),
        ("mask_size", wrong_size),
        ("mask_values", several),
        ("unknown_pixel_value", unknown),
        ("empty_mask", empty),
        ("missing_ground_truth", c / "test" / "structural_anomalies" / "005.png"),
        ("orphan_ground_truth", b / "ground_truth" / "logical_anomalies" / "007"),
        ("missing_folder", b / "validation/good"),
        ("defects_config", b / "defects_config.json"),
    }
    assert expected <= got, expected - got
    assert got == expected  # and nothing else (the good files are not flagged)
    assert all(str(p.path) in str(p) for p in probs)


def test_not_a_loco_root(tmp_path):
    (p,) = check_dataset(tmp_path, progress=False)
    assert p.kind == "layout"
    (p,) = check_dataset(tmp_path / "missing", progress=False)
    assert p.kind == "layout"


def test_cli_exit_codes(tiny, capsys):
    from esad_lib.cli.data import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["check", str(tiny), "--quiet"])
    assert args.func(args) == 0
    shutil.rmtree(tiny / "pushpins" / "ground_truth" / "logical_anomalies" / "000")
    assert args.func(args) == 1
    captured = capsys.readouterr()
    assert "[missing_ground_truth]" in captured.out and "1 problem(s)" in captured.err
