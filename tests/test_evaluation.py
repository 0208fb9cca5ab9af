"""evaluate_run writes the metrics.json schema on a smoke run; the report shows reported values."""

from __future__ import annotations

import argparse
import csv
import json

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from esad_lib.config import CATEGORIES, get_config
from esad_lib.evaluation import RUN_KEYS, evaluate_run, load_metrics
from esad_lib.metrics import image_auroc_by_type
from esad_lib.report import REPORTED, format_report


@pytest.fixture(scope="module")
def smoke_run(smoke_run_dir, session_data_root):
    """The session's tiny trained model (smoke profile), evaluated: (run dir, metrics)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ESAD_PROFILE", "smoke")
        mp.setenv("ESAD_DATA_ROOT", str(session_data_root))
        metrics = evaluate_run(smoke_run_dir, progress=False)
    return smoke_run_dir, metrics


def _in_unit(x):
    return x is not None and 0.0 <= x <= 1.0


def test_evaluate_run_writes_metrics_json_schema(smoke_run):
    run, metrics = smoke_run
    on_disk = json.loads((run / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(metrics))
    for kind in ("structural", "logical", "mean"):
        assert _in_unit(on_disk["image_auroc"][kind])
        assert _in_unit(on_disk["au_spro"][kind])
    assert on_disk["image_auroc"]["mean"] == pytest.approx(
        (on_disk["image_auroc"]["structural"] + on_disk["image_auroc"]["logical"]) / 2
    )
    assert _in_unit(on_disk["pixel_auroc"]) and _in_unit(on_disk["au_pro"])
    t = on_disk["timing"]
    assert t["scoring_ms_per_image"] > 0
    assert t["train_seconds"] is None or t["train_seconds"] > 0
    assert on_disk["category"] == "pushpins" and on_disk["method"] == "esad"
    assert set(RUN_KEYS) <= set(on_disk)  # the one schema of every metrics.json
    counts = on_disk["counts"]
    assert counts["good"] > 0 and counts["logical"] > 0 and counts["structural"] > 0
    rows = list(csv.DictReader((run / "scores.csv").open()))
    assert len(rows) == sum(counts.values())
    # the image AUROC in the file is the AUROC of the scores in scores.csv
    s = np.array([float(r["score"]) for r in rows])
    names = [r["label"] for r in rows]
    keep = [i for i, n in enumerate(names) if n in ("good", "structural")]
    want = roc_auc_score([names[i] == "structural" for i in keep], s[keep])
    assert on_disk["image_auroc"]["structural"] == pytest.approx(want)
    assert load_metrics(run) == on_disk
    # every AUROC / AU-sPRO carries its 95 % bootstrap interval around the point estimate
    ci = on_disk["ci"]
    assert ci["n_boot"] > 100 and "bootstrap" in ci["method"]
    for metric in ("image_auroc", "au_spro"):
        for kind in ("structural", "logical", "mean"):
            c = ci[metric][kind]
            assert c["value"] == pytest.approx(on_disk[metric][kind], abs=2e-3 if metric == "au_spro" else 0)
            assert 0.0 <= c["low"] <= c["value"] + 1e-9 and c["value"] - 1e-9 <= c["high"] <= 1.0


def test_evaluate_run_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="esad train"):
        evaluate_run(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="esad evaluate"):
        load_metrics(tmp_path)


def test_image_auroc_by_type_matches_sklearn_and_handles_missing_type():
    rng = np.random.default_rng(0)
    names = ["good"] * 5 + ["structural"] * 4 + ["logical"] * 3
    s = rng.normal(size=len(names))
    m = image_auroc_by_type(s, names)
    sl = [i for i, n in enumerate(names) if n != "logical"]
    assert m["structural"] == pytest.approx(roc_auc_score([names[i] == "structural" for i in sl], s[sl]))
    assert m["mean"] == pytest.approx((m["structural"] + m["logical"]) / 2)
    only_str = image_auroc_by_type(s[:9], names[:9])
    assert only_str["logical"] is None and only_str["mean"] == only_str["structural"]


def _fake_metrics(cat, s, lg):
    return {
        "category": cat,
        "method": "esad",
        "dataset": "synthetic",
        "profile": "smoke",
        "image_size": [32, 32],
        "score_map": "feature",
        "image_auroc": {"structural": s, "logical": lg, "mean": (s + lg) / 2},
        "au_spro": {"structural": 0.5, "logical": 0.25, "mean": 0.375},
        "config": {"epochs": 2},
    }


def test_format_report_contains_reported_values_and_labels():
    ours = {c: _fake_metrics(c, 0.9, 0.6) for c in CATEGORIES}
    ours["pushpins"]["image_auroc"]["structural"] = 0.7
    text = format_report(ours)
    for cat in CATEGORIES:
        assert f"{REPORTED['ESAD'][cat]:.1f}" in text and f"{REPORTED['RIAD'][cat]:.1f}" in text
    assert "89.3" in text and "84.0" in text
    assert "reported" in text.lower() and "SYNTHETIC" in text and "`smoke`" in text
    lines = [ln for ln in text.splitlines() if ln.startswith("| ")]
    assert len(lines) == 1 + len(CATEGORIES) + 1  # header, five categories, average
    pushpins = next(ln for ln in lines if ln.startswith("| Pushpins"))
    assert "| 70.0 | 60.0 | 50.0 | 25.0 | 96.6 | 86.2 |" in pushpins
    avg = lines[-1]
    assert avg.startswith("| Average |") and "| 86.0 |" in avg  # (4 * 90 + 70) / 5


def test_format_report_partial_and_extra_columns():
    ours = [_fake_metrics("juice_bottle", 0.8, 0.5)]
    riad = {"juice_bottle": _fake_metrics("juice_bottle", 0.7, 0.4)}
    text = format_report(ours, extra={"RIAD (ours)": riad})
    assert "Average (1 of 5 ours)" in text
    assert "RIAD (ours) str." in text
    row = next(ln for ln in text.splitlines() if ln.startswith("| Juice bottle"))
    assert "| 80.0 | 50.0 |" in row and "| 70.0 | 40.0 |" in row


def test_report_cli_reads_metrics_json(smoke_run, capsys):
    from esad_lib.cli import evaluate as eval_cli

    run, metrics = smoke_run
    parser = argparse.ArgumentParser()
    eval_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["report", str(run)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert f"{100 * metrics['image_auroc']['structural']:.1f}" in out
    assert "ESAD str. (reported)" in out


def test_evaluate_cli_with_scoring_override(smoke_run, capsys):
    from esad_lib.cli import evaluate as eval_cli

    run, _ = smoke_run
    parser = argparse.ArgumentParser()
    eval_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["evaluate", str(run), "--score-map", "pixel", "--quiet", "--no-scores"])
    assert args.func(args) == 0
    m = load_metrics(run)
    assert m["score_map"] == "pixel" and m["config"]["score_map"] == "pixel"
    assert "image AUROC str" in capsys.readouterr().out


def test_demo_trains_evaluates_and_skips_finished_runs(tmp_path):
    from esad_lib.demo import run_demo

    res = run_demo(profile="smoke", categories=["pushpins"], progress=False, out=tmp_path / "demo")
    text = res.text
    assert "| Pushpins |" in text and "naive (ours) str." in text and "96.6" in text
    # every measured cell carries its interval; the paired table compares ESAD with naive
    row = next(ln for ln in text.splitlines() if ln.startswith("| Pushpins |"))
    assert row.count("[") >= 4
    assert "ESAD − naive" in text and "95 % confidence interval" in text
    blob = json.loads((tmp_path / "demo" / "demo.json").read_text())
    prov = blob["provenance"]
    assert prov["profile"] == "smoke" and prov["torch_threads"] >= 1 and prov["seconds"] > 0
    assert {"commit", "date", "seed", "synth_seed"} <= set(prov)
    d = blob["paired"]["structural_image_auroc"]["per_category"]["naive"]["pushpins"]
    want = res.metrics["esad"]["pushpins"]["image_auroc"]["structural"]
    want -= res.metrics["naive"]["pushpins"]["image_auroc"]["structural"]
    assert d["diff"] == pytest.approx(want) and d["low"] <= d["diff"] <= d["high"]
    # a second call finds the finished runs (metrics.json with the same config key) and skips them
    cfg = get_config("smoke", category="pushpins")
    run = tmp_path / "demo" / "pushpins" / "esad"
    before = (run / "metrics.json").stat().st_mtime_ns
    again = run_demo(profile="smoke", categories=["pushpins"], progress=False, out=tmp_path / "demo")
    assert (run / "metrics.json").stat().st_mtime_ns == before
    assert load_metrics(run)["config_key"] == cfg.key()
    assert again.text.split("\nMeasured ")[0] == text.split("\nMeasured ")[0]


def test_demo_with_riad_and_patchcore_gives_paired_rows(tmp_path):
    from esad_lib.demo import run_demo

    res = run_demo(
        profile="smoke",
        categories=["juice_bottle"],
        progress=False,
        out=tmp_path / "d",
        with_riad=True,
        with_patchcore=True,
    )
    assert set(res.metrics) == {"esad", "riad", "naive", "patchcore"}
    assert res.metrics["patchcore"]["juice_bottle"]["feature_extractor"] == "efficientnet_lite0"
    for label in ("ESAD − RIAD", "ESAD − PatchCore", "ESAD − naive", "PatchCore-style (ours) str."):
        assert label in res.text
    means = res.paired["structural_image_auroc"]["mean"]
    assert set(means) == {"RIAD", "PatchCore", "naive"}


def test_describe_setting_names_the_normalisation_and_the_untrained_baseline():
    from esad_lib.report import describe_setting

    esad = _fake_metrics("juice_bottle", 0.8, 0.5)
    esad["map_normalization"] = "validation"
    naive = _fake_metrics("juice_bottle", 0.7, 0.4)
    naive.update(method="naive", score_map="naive z-score")
    mine = _fake_metrics("juice_bottle", 0.6, 0.4) | {"method": "blurdiff", "score_map": None}
    assert "standardised with validation/good statistics" in describe_setting({"juice_bottle": esad})
    esad["map_normalization"] = "train"
    assert "standardised with train/good statistics" in describe_setting({"juice_bottle": esad})
    esad["map_normalization"] = "none"
    assert "standardised" not in describe_setting({"juice_bottle": esad})
    text = describe_setting({"juice_bottle": naive})
    assert "naive z-score maps, no training" in text and "epochs" not in text
    text = describe_setting({"juice_bottle": mine})  # a reader's detector: fitted, never trained
    assert "blurdiff maps, no training" in text and "epochs" not in text


def test_demo_cli_set_changes_every_run_and_refuses_unknown_fields(tmp_path, capsys):
    from esad_lib.cli import main

    out = tmp_path / "aspect"
    argv = ["demo", "--profile", "smoke", "--categories", "juice_bottle", "--quiet", "--no-naive"]
    assert main([*argv, "--out", str(out), "--set", "keep_aspect=true"]) == 0
    m = json.loads((out / "juice_bottle" / "esad" / "metrics.json").read_text())
    assert m["config"]["keep_aspect"] is True
    h, w = m["image_size"]
    assert h > w and max(h, w) == 32  # juice bottles are tall: the aspect ratio is kept
    blob = json.loads((out / "demo.json").read_text())
    assert blob["provenance"]["overrides"] == {"keep_aspect": True}
    capsys.readouterr()
    assert main([*argv, "--out", str(tmp_path / "bad"), "--set", "keep_aspekt=true"]) == 2
    assert "did you mean keep_aspect" in capsys.readouterr().err


def test_esad_detector_fit_trains_through_the_model_cache_and_riad_is_a_config_diff():
    from esad_lib.config import riad_config
    from esad_lib.detectors import Detector, EsadDetector
    from esad_lib.run_io import run_dir_for
    from esad_lib.scoring import fit_detector, score_dataset
    from esad_lib.training import train_or_load

    cfg = get_config("smoke", category="pushpins", epochs=1)
    det = fit_detector(EsadDetector(cfg, progress=False), cfg)
    assert isinstance(det, Detector) and det.name == "esad" and (run_dir_for(cfg) / "model.pt").exists()
    ref = EsadDetector(cfg, train_or_load(cfg, progress=False), progress=False)  # the cached model
    a = score_dataset(det, cfg, max_images=2, progress=False)
    assert np.array_equal(a.scores, score_dataset(ref, cfg, max_images=2, progress=False).scores)
    riad = EsadDetector(riad_config(cfg), progress=False)
    assert riad.name == "riad" and riad.cfg.key() == riad_config(cfg).key() != cfg.key()
    with pytest.raises(RuntimeError, match="not fitted"):
        riad.anomaly_maps(torch.zeros(1, 3, *cfg.image_size))
