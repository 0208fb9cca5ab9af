"""The synthetic LOCO-like benchmark (esad_lib.data.synth): deterministic, in LOCO's layout,
readable by the reader, splitter and checker; cached safely."""

from __future__ import annotations

import argparse
import threading

import numpy as np
import pytest

from esad_lib.config import CATEGORIES, get_config
from esad_lib.data import (
    categories,
    ensure_synthetic,
    generate_synthetic,
    list_samples,
    load_channel_masks,
    load_defects_config,
    load_image,
    synthetic_size,
)
from esad_lib.data.check import check_dataset
from esad_lib.data.split import split_dataset
from esad_lib.data.synth import SCENES

COUNTS = (2, 1, 1, 4, 4)  # 4 anomalies of each type: one per defect type


def files(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return generate_synthetic(
        tmp_path_factory.mktemp("s") / "a", seed=3, max_side=48, counts=COUNTS, progress=False
    )


def test_deterministic_byte_identical(synth, tmp_path):
    # rendered in two worker processes (one category per task): the same bytes as in one process
    again = generate_synthetic(tmp_path / "b", seed=3, max_side=48, counts=COUNTS, progress=False, workers=2)
    assert files(synth) == files(again)
    other = generate_synthetic(tmp_path / "c", seed=4, max_side=48, counts=COUNTS, progress=False)
    a, c = files(synth), files(other)
    assert a.keys() == c.keys() and a != c
    # fewer images: the remaining ones are unchanged (per-image seeding)
    fewer = generate_synthetic(
        tmp_path / "d", seed=3, max_side=48, counts=(1, 1, 1, 2, 2), categories=["pushpins"], progress=False
    )
    for rel, data in files(fewer).items():
        if rel.endswith(".png"):
            assert a[rel] == data, rel


def test_layout_sizes_and_defects(synth):
    assert categories(synth) == sorted(CATEGORIES)
    for cat in CATEGORIES:
        w, h = synthetic_size(cat, 48)
        w0, h0 = SCENES[cat].official_size
        assert max(w, h) == 48 and abs(w / h - w0 / h0) < 0.1
        defects = load_defects_config(synth / cat)
        values = [d.pixel_value for d in defects]
        assert len(set(values)) == len(values) and len(defects) >= 7
        counts = [
            len(list_samples(synth, cat, s, [lab]))
            for s, lab in (
                ("train", "good"),
                ("validation", "good"),
                ("test", "good"),
                ("test", "logical"),
                ("test", "structural"),
            )
        ]
        assert tuple(counts) == COUNTS
        seen = set()
        for s in list_samples(synth, cat, "test", ["logical", "structural"]):
            ch = load_channel_masks(s)
            assert ch.shape[0] >= 1 and ch.shape[1:] == (h, w) and load_image(s.path).shape == (h, w, 3)
            vals = {int(v) for c in ch for v in np.unique(c) if v}
            assert len(vals) == 1 and vals <= set(values)
            assert all(c.any() for c in ch)
            seen |= vals
        assert len(seen) == len(SCENES[cat].logical) + len(SCENES[cat].structural)  # every type occurs
    assert check_dataset(synth, progress=False) == []


def test_normal_images_vary(synth):
    imgs = [load_image(s.path).astype(float) for s in list_samples(synth, "breakfast_box", "train")]
    assert np.abs(imgs[0] - imgs[1]).mean() > 2.0


def test_splitter_runs_on_it(synth, tmp_path):
    res = split_dataset(synth, tmp_path / "split", progress=False)
    assert not res["official"]  # synthetic.json marks it as not the released dataset
    assert check_dataset(tmp_path / "split" / "structural", progress=False) == []
    assert check_dataset(tmp_path / "split" / "logical", progress=False) == []


def test_refuses_foreign_output(tmp_path):
    (tmp_path / "x.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        generate_synthetic(tmp_path, max_side=32, counts=(1, 0, 0, 0, 0), progress=False)
    assert (tmp_path / "x.txt").read_text() == "mine"


def test_ensure_synthetic_concurrent_calls(tmp_path, monkeypatch):
    monkeypatch.setenv("ESAD_DATA_ROOT", str(tmp_path))
    cfg = get_config("smoke").replace(synth_max_side=32, synth_counts=(1, 1, 1, 1, 1), synth_seed=7)
    results, errors = [], []

    def run():
        try:
            results.append(ensure_synthetic(cfg))
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 1
    root = results[0]
    assert root.parent == tmp_path / "synthetic"
    assert [p.name for p in root.parent.iterdir()] == [root.name]  # no temp folder left behind
    assert ensure_synthetic(cfg) == root


def test_cli(tmp_path):
    from esad_lib.cli.data import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(
        [
            "synth",
            str(tmp_path / "s"),
            "--max-side",
            "32",
            "--counts",
            "1",
            "0",
            "1",
            "1",
            "1",
            "--categories",
            "juice_bottle",
            "--quiet",
        ]
    )
    assert args.func(args) == 0
    assert categories(tmp_path / "s") == ["juice_bottle"]
    assert args.func(args) == 0  # same parameters: no-op
