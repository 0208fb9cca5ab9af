"""Maps out (``esad evaluate --export-maps``), maps in (``esad score-maps``): the official layout,
the exact round trip, and a clear error for every kind of bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from tiny_loco import TINY_IDS, TINY_SIZES, make_tiny_loco

from esad_lib.cli import main
from esad_lib.config import get_config
from esad_lib.data import list_samples, load_image
from esad_lib.data.split import split_dataset
from esad_lib.evaluation import evaluate_run, score_maps
from esad_lib.maps_io import MapsError, map_path, read_maps


@pytest.fixture(scope="module")
def exported(tmp_path_factory, smoke_run_dir, session_data_root):
    """The session's smoke run evaluated with --export-maps: (run dir, metrics, maps dir, root)."""
    from esad_lib.data import dataset_root

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ESAD_PROFILE", "smoke")
        mp.setenv("ESAD_DATA_ROOT", str(session_data_root))
        maps = tmp_path_factory.mktemp("maps")
        metrics = evaluate_run(smoke_run_dir, progress=False, export_maps_dir=maps)
        root = dataset_root(get_config("smoke", category="pushpins"))
    return smoke_run_dir, metrics, maps, root


def test_export_writes_float32_tiffs_at_original_size_in_the_official_layout(exported):
    _, metrics, maps, root = exported
    samples = list_samples(root, "pushpins", split="test")
    assert samples
    dirs = {"good": "good", "logical": "logical_anomalies", "structural": "structural_anomalies"}
    for s in samples:
        p = maps / "pushpins" / "test" / dirs[s.label] / f"{s.image_id}.tiff"
        assert p == map_path(maps, "pushpins", s.label, s.image_id)
        arr = tifffile.imread(p)
        assert arr.dtype == np.float32
        h, w = load_image(s.path).shape[:2]
        assert arr.shape == (h, w)
    n_files = len(list((maps / "pushpins" / "test").rglob("*.tiff")))
    assert n_files == sum(metrics["counts"].values()) == len(samples)


def test_score_maps_reproduces_evaluate_exactly(exported, tmp_path):
    _, metrics, maps, root = exported
    got = score_maps(maps, root, ["pushpins"], out=tmp_path / "out", progress=False)["pushpins"]
    keys = ("image_auroc", "pixel_auroc", "au_pro", "au_spro", "au_spro_limits", "au_spro_by_defect", "ci")
    for key in keys:
        assert got[key] == metrics[key], key  # exact: the same float32 maps, the same code
    assert set(got["au_spro_limits"]["structural"]) == {"0.01", "0.05", "0.1", "0.3", "1.0"}
    assert got["au_spro_limits"]["structural"]["0.05"] == metrics["au_spro"]["structural"]
    assert got["au_spro_by_defect"], "per-defect AU-sPRO from defects_config.json"
    on_disk = json.loads((tmp_path / "out" / "pushpins" / "metrics.json").read_text())
    assert on_disk["image_auroc"] == metrics["image_auroc"]
    assert on_disk["counts"] == metrics["counts"]


def test_score_maps_cli_prints_the_table(exported, tmp_path, capsys):
    _, metrics, maps, root = exported
    rc = main(["score-maps", str(maps), "--dataset", str(root), "--out", str(tmp_path), "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "pushpins" in out and "| Pushpins |" in out.replace("pushpins", "Pushpins")
    assert (tmp_path / "pushpins" / "metrics.json").exists()


# ---- bad input, on the tiny LOCO tree -------------------------------------------------------------
def _tiny_maps(root, maps_dir, suffix=".tiff"):
    rng = np.random.default_rng(0)
    for cat, (w, h) in TINY_SIZES.items():
        for s in list_samples(root, cat, split="test"):
            p = map_path(maps_dir, cat, s.label, s.image_id, suffix)
            p.parent.mkdir(parents=True, exist_ok=True)
            arr = rng.random((h, w), dtype=np.float32)
            if suffix == ".npy":
                np.save(p, arr)
            else:
                tifffile.imwrite(p, arr)


@pytest.fixture
def tiny(tmp_path):
    root = make_tiny_loco(tmp_path / "loco")
    maps = tmp_path / "maps"
    _tiny_maps(root, maps)
    return root, maps


def test_valid_maps_of_any_method_score(tiny, tmp_path):
    root, maps = tiny
    res = score_maps(maps, root, sorted(TINY_SIZES), out=tmp_path / "o", progress=False)
    assert set(res) == set(TINY_SIZES)
    n_test = sum(len(v) for k, v in TINY_IDS.items() if k.startswith("test/"))
    assert sum(res["pushpins"]["counts"].values()) == n_test
    # .npy maps score the same way
    npy = tmp_path / "npy"
    _tiny_maps(root, npy, ".npy")
    again = score_maps(npy, root, ["pushpins"], progress=False)["pushpins"]
    assert again["counts"] == res["pushpins"]["counts"]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("missing", "missing map"),
        ("size", "but its image is"),
        ("nan", "NaN or inf"),
        ("unknown", "unknown image id"),
        ("truncated", "cannot be read"),
        ("other format", "cannot be read"),
        ("truncated npy", "cannot be read"),
    ],
)
def test_bad_maps_are_refused_naming_the_file_and_nothing_is_written(tiny, tmp_path, damage, message):
    root, maps = tiny
    folder = maps / "pushpins" / "test" / "structural_anomalies"
    victim = folder / "002.tiff"
    if damage == "missing":
        victim.unlink()
    elif damage == "size":
        tifffile.imwrite(victim, np.zeros((3, 4), np.float32))
    elif damage == "truncated":
        victim.write_bytes(victim.read_bytes()[:100])
    elif damage == "other format":
        victim.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)  # a PNG header, not a TIFF
    elif damage == "truncated npy":
        victim.unlink()
        victim = victim.with_suffix(".npy")
        np.save(victim, np.zeros((10, 17), np.float32))
        victim.write_bytes(victim.read_bytes()[:90])
    elif damage == "nan":
        arr = tifffile.imread(victim)
        arr[0, 0] = np.nan
        tifffile.imwrite(victim, arr)
    else:
        victim = folder / "999.tiff"
        tifffile.imwrite(victim, np.zeros((2, 2), np.float32))
    out = tmp_path / "out"
    with pytest.raises(MapsError, match=message) as err:
        score_maps(maps, root, ["breakfast_box", "pushpins"], out=out, progress=False)
    assert str(victim) in str(err.value)
    assert not out.exists()  # breakfast_box was valid, yet nothing was written
    rc = main(["score-maps", str(maps), "--dataset", str(root), "--out", str(out), "--quiet"])
    assert rc == 2 and not out.exists()


def test_maps_of_a_structural_split_run_score_against_both_layouts(tiny, tmp_path):
    root, maps = tiny
    split = tmp_path / "split"
    split_dataset(root, split)
    # a run trained on the structural split exports good + structural maps only
    for lab_dir in ("logical_anomalies",):
        for cat in TINY_SIZES:
            for p in (maps / cat / "test" / lab_dir).iterdir():
                p.unlink()
            (maps / cat / "test" / lab_dir).rmdir()
    on_split = read_maps(maps, split / "structural", "pushpins", progress=False)
    assert on_split.skipped_labels == [] and "logical" not in on_split.label_names
    on_full = read_maps(maps, root, "pushpins", progress=False)
    assert on_full.skipped_labels == ["logical"]
    assert on_full.label_names == on_split.label_names


def test_score_maps_never_loads_torch():
    """Scoring maps on disk needs no network: the command line and the metrics load without torch."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from esad_lib.cli import build_parser\n"
        "build_parser().parse_args(['score-maps', 'maps', '--dataset', 'root'])\n"
        "import esad_lib.evaluation, esad_lib.maps_io, esad_lib.report\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
