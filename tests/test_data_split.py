"""``esad split``: structural/logical datasets from a LOCO-layout root (esad_lib.data.split)."""

from __future__ import annotations

import argparse
import hashlib
import json
import os

import pytest
from tiny_loco import TINY_IDS, make_tiny_loco

from esad_lib.data import list_samples, load_channel_masks
from esad_lib.data import split as split_mod
from esad_lib.data.split import MANIFEST, OFFICIAL_COUNTS, SplitError, official_mismatches, split_dataset


def snapshot(root):
    """Every path under root with its bytes hash, mode bits and mtime (detects any change)."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() and not p.is_symlink() else None
        out[str(p.relative_to(root))] = (digest, st.st_mode, st.st_mtime_ns)
    return out


@pytest.fixture()
def tiny(tmp_path):
    return make_tiny_loco(tmp_path / "loco")


def outputs(out):
    return {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.name != MANIFEST}


def test_split_layout_bytes_and_source_untouched(tiny, tmp_path):
    before = snapshot(tiny)
    res = split_dataset(tiny, tmp_path / "out", progress=False)
    assert snapshot(tiny) == before
    out = tmp_path / "out"
    for target, other in (("structural", "logical"), ("logical", "structural")):
        root = out / target
        assert (root / "license.txt").is_file()
        for cat in ("breakfast_box", "pushpins"):
            samples = list_samples(root, cat)
            labels = {s.label for s in samples}
            assert labels == {"good", target}
            assert not (root / cat / "test" / f"{other}_anomalies").exists()
            assert not (root / cat / "ground_truth" / f"{other}_anomalies").exists()
            assert [s.image_id for s in list_samples(root, cat, "test", [target])] == TINY_IDS[
                f"test/{target}_anomalies"
            ]
            for s in samples:  # every output byte-identical to its source
                assert s.path.read_bytes() == (tiny / s.path.relative_to(root)).read_bytes()
                for m in s.mask_paths:
                    assert m.read_bytes() == (tiny / m.relative_to(root)).read_bytes()
                load_channel_masks(s)
            assert (root / cat / "defects_config.json").read_bytes() == (
                tiny / cat / "defects_config.json"
            ).read_bytes()
    # stray files are not copied
    assert not any(n in p for p in outputs(out) for n in (".DS_Store", "Thumbs.db"))
    c = res["counts"]["logical"]["breakfast_box"]
    assert c == {
        "train/good": 4,
        "validation/good": 2,
        "test/good": 2,
        "test/logical_anomalies": 2,
        "masks": 3,
    }
    assert not res["official"] and res["mismatches"] == []
    assert json.loads((out / MANIFEST).read_text())["status"] == "complete"


def test_split_is_idempotent(tiny, tmp_path):
    out = tmp_path / "out"
    first = split_dataset(tiny, out, progress=False)
    snap = snapshot(out)
    again = split_dataset(tiny, out, progress=False)
    assert again["written"] == 0 and again["unchanged"] == first["written"]
    assert snapshot(out) == snap


def test_refuses_foreign_nonempty_folder(tiny, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    snap = snapshot(out)
    with pytest.raises(SplitError, match="not written by 'esad split'"):
        split_dataset(tiny, out, progress=False)
    assert snapshot(out) == snap
    # --force may add the split beside foreign files that it does not overwrite ...
    split_dataset(tiny, out, progress=False, force=True)
    assert (out / "notes.txt").read_text() == "mine"
    # ... but never overwrites a foreign file at one of its paths
    out2 = tmp_path / "out2"
    (out2 / "structural").mkdir(parents=True)
    (out2 / "structural" / "license.txt").write_text("foreign")
    with pytest.raises(SplitError, match="would be overwritten"):
        split_dataset(tiny, out2, progress=False, force=True)
    assert (out2 / "structural" / "license.txt").read_text() == "foreign"
    with pytest.raises(SplitError, match="outside the source"):
        split_dataset(tiny, tiny / "inside", progress=False)


def test_force_rewrites_only_own_outputs(tiny, tmp_path):
    out = tmp_path / "out"
    split_dataset(tiny, out, progress=False)
    (out / "structural" / "my_notes.txt").write_text("keep")
    with pytest.raises(SplitError, match="--force"):
        split_dataset(tiny, out, mode="symlink", progress=False)
    res = split_dataset(tiny, out, mode="symlink", force=True, progress=False)
    assert res["written"] > 0
    link = out / "structural" / "pushpins" / "train" / "good" / "000.png"
    assert link.is_symlink() and os.readlink(link) == str((tiny / "pushpins/train/good/000.png").resolve())
    assert (out / "structural" / "my_notes.txt").read_text() == "keep"
    # a source that lost an image: its stale output is removed, nothing else
    other = make_tiny_loco(tmp_path / "loco2")
    (other / "pushpins" / "train" / "good" / "010.png").unlink()
    res = split_dataset(other, out, mode="copy", force=True, progress=False)
    assert res["removed"] == 2  # structural/ and logical/ copies of 010.png
    assert not (out / "logical" / "pushpins" / "train" / "good" / "010.png").exists()
    assert (out / "structural" / "my_notes.txt").read_text() == "keep"


def test_hardlink_mode(tiny, tmp_path):
    split_dataset(tiny, tmp_path / "out", mode="hardlink", progress=False)
    src = tiny / "breakfast_box" / "ground_truth" / "logical_anomalies" / "000" / "001.png"
    dst = (
        tmp_path
        / "out"
        / "logical"
        / "breakfast_box"
        / "ground_truth"
        / "logical_anomalies"
        / "000"
        / "001.png"
    )
    assert os.stat(src).st_ino == os.stat(dst).st_ino
    assert split_dataset(tiny, tmp_path / "out", mode="hardlink", progress=False)["written"] == 0


def test_interrupted_run_is_completed_by_a_rerun(tiny, tmp_path, monkeypatch):
    fresh = tmp_path / "fresh"
    split_dataset(tiny, fresh, progress=False)
    out = tmp_path / "out"
    real_place = split_mod._place
    calls = {"n": 0}

    def crashing_place(src, dst, mode):
        calls["n"] += 1
        if calls["n"] == 20:
            raise KeyboardInterrupt
        real_place(src, dst, mode)

    monkeypatch.setattr(split_mod, "_place", crashing_place)
    with pytest.raises(KeyboardInterrupt):
        split_dataset(tiny, out, progress=False)
    monkeypatch.setattr(split_mod, "_place", real_place)
    assert json.loads((out / MANIFEST).read_text())["status"] == "in_progress"
    res = split_dataset(tiny, out, progress=False)  # no --force needed: the folder is its own
    assert res["unchanged"] == 19
    assert outputs(out) == outputs(fresh)
    for rel in outputs(out):
        assert (out / rel).read_bytes() == (fresh / rel).read_bytes()
    assert not list(out.rglob("*.esad-tmp"))


def test_official_count_check():
    counts = {t: {} for t in ("structural", "logical")}
    for cat, (tr, va, te) in OFFICIAL_COUNTS.items():
        counts["structural"][cat] = {
            "train/good": tr,
            "validation/good": va,
            "test/good": 100,
            "test/structural_anomalies": 50,
            "masks": 50,
        }
        counts["logical"][cat] = {
            "train/good": tr,
            "validation/good": va,
            "test/good": 100,
            "test/logical_anomalies": te - 150,
            "masks": 0,
        }
    assert official_mismatches(counts) == []
    counts["logical"]["splicing_connectors"]["test/logical_anomalies"] -= 1
    counts["structural"]["splicing_connectors"]["train/good"] = 354  # the paper's wrong number
    (msg,) = official_mismatches(counts)
    assert msg.startswith("splicing_connectors") and "official 360/60/312" in msg


def _data_cli() -> argparse.ArgumentParser:
    """The parser of the data sub-commands (``esad split/check/synth``)."""
    from esad_lib.cli.data import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return parser


def test_cli(tiny, tmp_path, capsys):
    parser = _data_cli()
    args = parser.parse_args(["split", str(tiny), str(tmp_path / "out"), "--quiet"])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "breakfast_box" in printed and "files written" in printed
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "x").write_text("x")
    args = parser.parse_args(["split", str(tiny), str(foreign), "--quiet"])
    assert args.func(args) == 2
    assert "not written by 'esad split'" in capsys.readouterr().err


def test_cli_count_mismatch_is_a_warning_unless_strict(tmp_path, capsys):
    """A split whose counts differ from the official ones (here: the smoke synthetic benchmark,
    named like LOCO) is written and exits 0 with a warning; --strict exits 1."""
    import shutil

    from esad_lib.config import get_config
    from esad_lib.data import dataset_root

    src = tmp_path / "loco_named"  # the synthetic benchmark without its manifest: looks official
    shutil.copytree(dataset_root(get_config("smoke")), src, ignore=shutil.ignore_patterns("synthetic.json"))
    parser = _data_cli()
    args = parser.parse_args(["split", str(src), str(tmp_path / "a"), "--quiet"])
    assert args.func(args) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "differ from the official" in err
    assert (tmp_path / "a" / "structural" / "pushpins" / "train" / "good").is_dir()
    args = parser.parse_args(["split", str(src), str(tmp_path / "b"), "--quiet", "--strict"])
    assert args.func(args) == 1
    assert "error" in capsys.readouterr().err
    assert (tmp_path / "b" / "logical" / "pushpins" / "test" / "logical_anomalies").is_dir()
