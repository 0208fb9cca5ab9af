"""The benchmark (issue 7) runs end to end in --quick mode, so that it cannot rot.

Speed targets are *reported* by the benchmark, never asserted here: these tests check that
every section runs, that the files are written, that the comparisons it prints are checked
equalities (loop == batched, fast metric == reference, options == eager) and that the helpers
it relies on are right.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from esad_lib import benchmark as bm
from esad_lib.paths import PROJECT_ROOT


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one intra-op thread (a 2-thread pool only adds overhead on a busy CI machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    res = bm.run_benchmark(quick=True, out_dir=out, device="cpu", log=lambda msg: None)
    return out, res


def test_quick_run_writes_every_section(quick_results):
    out, res = quick_results
    assert "errors" not in res, res.get("errors")
    on_disk = json.loads((out / "results.json").read_text())
    for section in bm.SECTIONS:
        assert section in on_disk, section
    md = (out / "results.md").read_text()
    assert md == bm.format_markdown(res)
    headings = ("ESAD (two lightweight U-Nets) vs RIAD", "One training step", "K masks", "Inference options")
    for heading in headings + ("Where a U-Net forward spends its time", "Metrics on", "Targets"):
        assert heading in md
    assert res["meta"]["quick"] is True and res["meta"]["device"] == "cpu"
    assert len(res["targets"]) == 6


def test_models_section_counts_and_times(quick_results):
    _, res = quick_results
    mo = res["models"]
    esad, riad = mo["count"]["esad"], mo["count"]["riad"]
    assert esad["nets"] == 2 and riad["nets"] == 1
    assert esad["network_forwards_per_image"] == 2 * riad["network_forwards_per_image"]
    from esad_lib.models import build_model
    from esad_lib.models.counting import count_parameters

    cfg = bm._cfg_for("smoke", "riad", "cpu")
    assert riad["parameters"] == count_parameters(build_model(cfg))
    for batch, paths in (("1", ("fast", "plain")), ("2", ("fast",))):
        for m in ("esad", "riad"):
            for p in paths:
                t = mo["scoring"][batch][f"{m}/{p}"]
                assert t["median_s"] > 0 and t["images_per_s"] == pytest.approx(int(batch) / t["median_s"])
    for m in ("esad", "riad"):  # networks in ONNX Runtime: runs (maps checked equal) or says why not
        status = mo["onnx_status"][m]
        assert status.startswith("ok") == (f"{m}/onnxruntime" in mo["scoring"]["1"]), status
        assert status.startswith(("ok", "skipped")), status
    for m in ("esad", "riad"):
        mem = mo["memory"][m]["scoring_b1"]
        assert "status" not in mem, mem
        assert mem["peak_mib"] > 0 and mem["delta_mib"] >= 0
    tr = res["train"]
    assert tr["batch"] == bm._cfg_for("smoke", "esad", "cpu").batch_size
    for m in ("esad", "riad"):
        assert tr["train_step"][m]["median_s"] > 0
        assert tr["memory"][m]["peak_mib"] > 0 and tr["memory"][m]["delta_mib"] >= 0


def test_masks_and_inference_rows_are_checked_equal(quick_results):
    _, res = quick_results
    for row in res["masks"]:
        assert row["equal"], row
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401

        have_onnx = True
    except ImportError:
        have_onnx = False
    for method in ("esad", "riad"):
        rows = {r["option"]: r for r in res["inference"] if r["model"] == method}
        for name in ("eager (no_grad)", "inference_mode", "channels_last", "BN folded into conv"):
            assert rows[name]["status"] == "ok" and rows[name]["equal"], rows[name]
        assert rows["eager (no_grad)"]["speedup_vs_eager"] == 1.0
        assert rows["autocast bf16"]["status"].startswith("skipped")  # CPU run: CUDA-only rows skipped
        assert rows["torch.compile"]["status"].startswith("skipped")  # not compiled in --quick
        row = rows["ONNX Runtime (CPU)"]
        if have_onnx:
            assert row["status"].startswith("ok") and row["equal"], row
        else:
            assert row["status"].startswith("skipped"), row


def test_metrics_section_fast_equals_reference(quick_results):
    _, res = quick_results
    me = res["metrics"]
    assert me["subset"]["diff"]["au_spro"] <= bm.TOL_METRIC
    assert me["subset"]["diff"]["pixel_auroc"] <= bm.TOL_METRIC
    for m in ("au_spro", "pixel_auroc"):
        assert 0.0 <= me["full"][m]["value"] <= 1.0
        assert me["full"][m]["memory"]["peak_mib"] > 0


def test_time_interleaved_rotates_and_counts():
    calls: list[str] = []
    fns = {n: (lambda n=n: calls.append(n)) for n in "abc"}
    res = bm.time_interleaved(fns, repeats=3, warmup=1, device=torch.device("cpu"))
    assert calls[:3] == ["a", "b", "c"]  # warm-up
    assert calls[3:] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]  # start rotates each repeat
    assert all(r["repeats"] == 3 and r["min_s"] <= r["median_s"] <= r["max_s"] for r in res.values())


def test_masks_loop_equals_model_forward():
    from esad_lib.masks import disjoint_masks

    for method in ("esad", "riad"):
        cfg = bm._cfg_for("smoke", method, "cpu")
        model = bm._build_model(cfg, torch.device("cpu")).eval()
        img = bm._random_images(2, (20, 28), 0)
        masks = disjoint_masks(20, 28, 4, cfg.num_masks, generator=torch.Generator().manual_seed(1))
        for fill in ("test", "train", "zero") if method == "esad" else ("zero",):
            with torch.no_grad():
                ref = model(img, 4, fill=fill, masks=masks).recon
                loop = bm.masks_loop(model, img, masks, fill)
            torch.testing.assert_close(loop, ref, atol=1e-5, rtol=0)


def test_fold_batchnorm_keeps_outputs_and_removes_bn():
    cfg = bm._cfg_for("smoke", "esad", "cpu")
    model = bm._build_model(cfg, torch.device("cpu"))
    # non-trivial BN statistics, so that folding has something to fold
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(bm._random_images(4, (32, 32), 7), 4, fill="train")
    model.eval()
    img = bm._random_images(1, (32, 32), 3)
    import copy

    from esad_lib.masks import disjoint_masks

    masks = disjoint_masks(32, 32, 4, cfg.num_masks, generator=torch.Generator().manual_seed(0))
    folded = bm.fold_batchnorm(copy.deepcopy(model))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        torch.testing.assert_close(
            folded(img, 4, fill="test", masks=masks).recon,
            model(img, 4, fill="test", masks=masks).recon,
            atol=1e-5,
            rtol=0,
        )


def test_synthetic_metric_inputs_are_loco_like():
    maps, channels, defects = bm.synthetic_metric_inputs(10, (60, 90), seed=3)
    assert len(maps) == len(channels) == 10
    assert all(m.dtype == np.float32 and m.shape == (60, 90) for m in maps)
    good = [c for c in channels if c.shape[0] == 0]
    assert len(good) == 3 and all(c.shape[1:] == (60, 90) for c in good)
    values = {d.pixel_value for d in defects}
    for c in channels:
        for ch in c:
            assert set(np.unique(ch)) - {0} <= values and len(set(np.unique(ch)) - {0}) <= 1
    again = bm.synthetic_metric_inputs(10, (60, 90), seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(maps, again[0]))  # same seed, same data


def test_peak_memory_probe_sees_a_large_allocation():
    # 256 MiB of float64 touched in the subprocess: the probe must report at least most of it
    spec = {"kind": "metric", "metric": "pixel_auroc", "n": 2, "size": [20, 30], "seed": 0, "warmup": False}
    small = bm.peak_memory(spec, torch.device("cpu"))
    assert "status" not in small, small
    big = bm.measure_peak_rss(lambda: np.ones(2**25, dtype=np.float64).sum())
    assert big["delta_mib"] >= 200


def test_cli_registers_bench_and_parses_options():
    from esad_lib import bench_cli

    parser = argparse.ArgumentParser()
    bench_cli.register(parser.add_subparsers(dest="command"))
    argv = ["bench", "--quick", "--out", "x", "--device", "cpu", "--profile", "smoke", "--train-batch", "2"]
    args = parser.parse_args(argv)
    assert args.quick and args.out == "x" and args.device == "cpu" and args.profile == "smoke"
    assert args.train_batch == 2
    assert args.func is bench_cli._run
    assert parser.parse_args(["bench"]).out == "bench"


def test_script_entry_point_runs(tmp_path):
    """benchmarks/bench.py is the script form of the same code (one small section)."""
    out = tmp_path / "b"
    proc = subprocess.run(
        [
            sys.executable,
            str(PROJECT_ROOT / "benchmarks" / "bench.py"),
            "--quick",
            "--out",
            str(out),
            "--device",
            "cpu",
            "--sections",
            "masks",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "K masks" in proc.stdout
    assert json.loads((out / "results.json").read_text())["masks"]
