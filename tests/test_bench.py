"""The side-by-side benchmark (``benchmarks/bench.py``, ``make bench``) runs end to end in
--quick mode, so that it cannot rot.

Speed targets are *reported* by the benchmark, never asserted here: these tests check that
every section runs, that the files are written, that the comparisons it prints are checked
equalities (fast metric == reference, options == eager, the authors' inference re-stated == our
maps), that the training rows are measured or say why not, that its workloads are the library's
own code paths (the training step IS ``esad_lib.method.train_step.train_step``), and that the
library neither contains nor imports the benchmarks.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from benchmarks import (
    bench,
    inference_rows,
    memory,
    metrics_rows,
    report,
    scoring_rows,
    timing,
    training_rows,
    workloads,
)
from esad_lib.config import ESADConfig
from esad_lib.method import build_model, model_fills
from esad_lib.method.loss import ESADLoss
from esad_lib.method.train_step import train_step
from esad_lib.paths import PROJECT_ROOT
from esad_lib.perf.counting import count_parameters
from esad_lib.perf.speed import prepare_for_training, to_training_layout, training_optimizer
from esad_lib.scoring import FAST_PATH_ATOL, anomaly_maps


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
    res = bench.run_benchmark(quick=True, out_dir=out, device="cpu", log=lambda msg: None)
    return out, res


def test_quick_run_writes_every_section(quick_results):
    out, res = quick_results
    assert "errors" not in res, res.get("errors")
    on_disk = json.loads((out / "results.json").read_text())
    for section in bench.SECTIONS:
        assert section in on_disk, section
    md = (out / "results.md").read_text()
    assert md == report.format_markdown(res)
    headings = ("ESAD (two lightweight U-Nets) vs RIAD", "Inference options", "Metrics on", "Targets")
    headings += ("Ours vs a plain re-statement of theirs", "Training step time and peak memory per image")
    for heading in headings + ("Where a U-Net forward spends its time", "`esad score-maps` on 6 maps"):
        assert heading in md
    assert [r["contender"] for r in res["score_maps"]["rows"]][-1] == "esad score-maps (this checkout)"
    assert res["meta"]["quick"] is True and res["meta"]["device"] == "cpu"
    assert len(res["targets"]) == 6


def test_models_section_counts_and_times(quick_results):
    _, res = quick_results
    mo = res["models"]
    esad, riad = mo["count"]["esad"], mo["count"]["riad"]
    assert esad["nets"] == 2 and riad["nets"] == 1
    assert esad["network_forwards_per_image"] == 2 * riad["network_forwards_per_image"]
    cfg = workloads.cfg_for("smoke", "riad", "cpu")
    assert riad["parameters"] == count_parameters(build_model(cfg))
    for batch, paths in (("1", ("fast", "plain")), ("2", ("fast",))):
        assert set(mo["scoring"][batch]) == {f"{m}/{p}" for m in ("esad", "riad") for p in paths}
        for t in mo["scoring"][batch].values():
            assert t["median_s"] > 0 and t["images_per_s"] == pytest.approx(int(batch) / t["median_s"])
    for m in ("esad", "riad"):
        mem = mo["memory"][m]["scoring_b1"]
        assert "status" not in mem, mem
        assert mem["peak_mib"] > 0 and mem["delta_mib"] >= 0


def test_inference_rows_are_checked_equal(quick_results):
    _, res = quick_results
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
    assert me["subset"]["diff"]["au_spro"] <= workloads.TOL_METRIC
    assert me["subset"]["diff"]["pixel_auroc"] <= workloads.TOL_METRIC
    for m in ("au_spro", "pixel_auroc"):
        assert 0.0 <= me["full"][m]["value"] <= 1.0
        assert me["full"][m]["memory"]["peak_mib"] > 0


def test_authors_rows_maps_equal_ours_and_are_timed(quick_results):
    _, res = quick_results
    au = res["authors"]
    assert au["equal"] and au["tolerance"] == FAST_PATH_ATOL
    assert set(au["max_abs_diff"]) == {"1", "2"}
    assert set(au["max_abs_diff"]["1"]) == {scoring_rows.OURS_FAST, scoring_rows.OURS_PLAIN}
    for batch, diffs in au["max_abs_diff"].items():
        assert all(0.0 <= d <= FAST_PATH_ATOL for d in diffs.values()), (batch, diffs)
        t = au["timing"][batch]
        assert {scoring_rows.THEIRS, scoring_rows.OURS_FAST} <= set(t)
        assert all(np.isfinite(v["median_s"]) and v["median_s"] > 0 for v in t.values())
        assert au["speedup"][batch] == pytest.approx(
            t[scoring_rows.THEIRS]["median_s"] / t[scoring_rows.OURS_FAST]["median_s"]
        )
    # the masks target is read from these rows: one at a time vs batched (fast_scoring off)
    target = next(t for t in res["targets"] if "batched masks" in t["target"])
    t1 = au["timing"]["1"]
    ratio = t1[scoring_rows.THEIRS]["median_s"] / t1[scoring_rows.OURS_PLAIN]["median_s"]
    assert target["measured"] == f"{ratio:.2f}x"


def test_train_rows_are_measured_or_say_why(quick_results):
    _, res = quick_results
    tr = res["train"]
    rows = tr["rows"]
    assert [r["option"] for r in rows if r["method"] == "esad"] == list(training_rows.TRAIN_OPTIONS)
    assert [r["option"] for r in rows if r["method"] == "riad"] == ["default"]
    by = {(r["method"], r["option"]): r for r in rows}
    # checkpointing changes no result (it is not in cfg.key()) but it is what the row measures:
    # it must be measured on its own, not shared with the default's row
    assert by[("esad", "checkpointing on")]["status"] == "ok"
    assert by[("esad", "checkpointing on")]["option_values"] == {"checkpointing": True}
    assert by[("esad", "plain grouped conv")]["status"] == "ok"
    fields = {f.name for f in dataclasses.fields(ESADConfig)}
    for r in rows:
        assert not [k for k in r["diff"] if k not in fields and k not in training_rows.MODEL_VARIANTS]
        assert r["status"] == "ok" or r["status"].startswith("same config as"), r
        for b in ("1", "2"):
            d = r["batches"][b]
            assert d["source"] == "measured" and np.isfinite(d["step_s"]) and d["step_s"] > 0
            assert "status" not in d["memory"], d["memory"]
            assert d["memory"]["delta_mib"] >= 0 and np.isfinite(d["memory"]["peak_mib"])
        per, tgt = r["per_image"], r["target"]
        assert tgt["batch"] == tr["target_batch"] == 8
        ext = tgt["extrapolated"]
        assert "extrapolated" in ext["source"]
        # value(8) = value(1) + (value(2) - value(1)) * 7, by hand
        t1, t2 = (r["batches"][b]["timing"]["min_s"] for b in ("1", "2"))
        assert per["step_s_per_image"] == pytest.approx(t2 - t1)
        assert ext["step_s"] == pytest.approx(t1 + 7 * (t2 - t1))
        m1, m2 = (r["batches"][b]["memory"]["delta_mib"] for b in ("1", "2"))
        assert ext["memory_delta_mib"] == pytest.approx(m1 + 7 * (m2 - m1))
        # CPU run: the batch-8-on-GPU row is empty, never estimated
        assert tgt["measured"] == {"source": "measured on GPU", "status": "no GPU (CUDA absent in this run)"}
    md = report.format_markdown(res)
    assert "**extrapolated** from batch 1-2" in md and "no GPU (CUDA absent in this run)" in md


def test_train_option_of_a_missing_field_is_not_available(monkeypatch, quick_results):
    options = {"default": {}, "from the future": {"no_such_field_yet": True}, "same": {"seed": 0}}
    monkeypatch.setattr(training_rows, "TRAIN_OPTIONS", options)
    rows = training_rows._contenders("smoke", torch.device("cpu"))
    by = {(r["method"], r["option"]): r for r in rows}
    assert by[("esad", "from the future")]["status"] == (
        "not available in this build: ESADConfig has no field no_such_field_yet"
    )
    assert by[("esad", "default")]["status"] == "ok"
    assert by[("esad", "same")]["same_as"] == "default"  # the preset's seed is 0: nothing to measure again
    assert training_rows.missing_fields({"seed": 1, "nope": 2, "plain_conv": True}) == ["nope"]
    assert training_rows.linear_fit(10.0, 13.0) == (3.0, 7.0)
    # the whole section with these options: the same config is measured once and shared
    st = bench.bench_settings(True)
    tr = training_rows.section_train(st, torch.device("cpu"), lambda msg: None)
    by = {(r["method"], r["option"]): r for r in tr["rows"]}
    assert by[("esad", "same")]["batches"] == by[("esad", "default")]["batches"]
    assert "batches" not in by[("esad", "from the future")]
    md = report.format_markdown({"meta": quick_results[1]["meta"], "train": tr})
    assert "same config as 'default': see its rows" in md
    assert "not available in this build: ESADConfig has no field no_such_field_yet" in md


def test_train_batches_slope_and_target():
    st = bench.bench_settings(True)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert training_rows._batches("smoke", st, cpu) == ([1, 2], 8, False)
    assert training_rows._batches("smoke", st, cuda) == ([1, 2, 8], 8, True)  # CUDA: measured too
    with pytest.raises(ValueError, match="must start with 1, 2"):
        training_rows._batches("smoke", {**st, "train_batches": (2, 4)}, cpu)


def test_training_step_is_the_library_train_step():
    """``TrainingStep`` is the trainer's step: the same weights after two steps as the library's
    ``train_step`` called by hand with the trainer's set-up (prepared model, fused Adam)."""
    cfg = workloads.cfg_for("smoke", "esad", "cpu").replace(w_feature=0.0)
    step = workloads.TrainingStep(cfg)
    model = prepare_for_training(workloads.seeded_model(cfg).train(), cfg.replace(cpu_malloc_tuning=False))
    loss_fn, opt = ESADLoss(cfg), training_optimizer(model.parameters(), cfg)
    batches = workloads.random_batches(cfg, 2, cfg.batch_size)
    for i, img in enumerate(batches):
        got = step(i, img)
        gen = torch.Generator().manual_seed(cfg.seed * 100_003 + i)
        c = int(cfg.cutout_sizes[i % len(cfg.cutout_sizes)])
        want = train_step(
            model, to_training_layout(img, cfg), c, loss_fn, opt, fill=model_fills(cfg)[0], generator=gen
        )
        assert got == want["total"]
    for (name, a), b in zip(step.model.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), name


def test_plain_grouped_conv_is_the_same_function_by_construction():
    """The plain-grouped-conv variant is a copy with plain ``nn.Conv2d`` layers and the same
    outputs and gradients; the library's model and classes are left as they were."""
    cfg = workloads.cfg_for("smoke", "esad", "cpu")
    model = workloads.seeded_model(cfg).double().train()  # float64: the same function, to rounding
    before = {n: type(m) for n, m in model.named_modules()}
    plain = workloads.plain_grouped_conv(model)
    assert {n: type(m) for n, m in model.named_modules()} == before  # the original is untouched
    expanding = [
        n
        for n, m in plain.named_modules()
        if isinstance(m, torch.nn.Conv2d) and m.groups == m.in_channels < m.out_channels
    ]
    assert expanding  # the lightweight U-Net's blocks have them
    # every expanding grouped conv of the copy is a plain nn.Conv2d (changed, or plain already)
    assert all(type(dict(plain.named_modules())[n]) is torch.nn.Conv2d for n in expanding)
    assert all(type(m) is before[n] for n, m in plain.named_modules() if n not in expanding)
    x = workloads.random_images(2, cfg.image_size, 0).double()
    outs = []
    for net in (model, plain):
        net.zero_grad()
        y = net.recon_net(x)
        y.square().sum().backward()
        outs.append([y.detach()] + [p.grad.clone() for p in net.recon_net.parameters()])
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_inference_module_passes_the_configs_fill_alpha(monkeypatch):
    """The inference rows' module runs the model with the config's test fill AND its mixing
    weight (``cfg.fill_alpha``), not the forward's default: its output follows the config."""
    smoke = workloads.cfg_for("smoke", "esad", "cpu")
    monkeypatch.setattr(inference_rows, "cfg_for", lambda *a: smoke.replace(fill_alpha=0.2))
    case = inference_rows._case("esad", bench.bench_settings(True), torch.device("cpu"))
    assert case.eager.alpha == 0.2 and case.eager.fill == smoke.test_fill == "test"
    with torch.no_grad():
        got = case.eager(case.img)
        ref = case.model(case.img, case.cutout, fill="test", alpha=0.2, masks=case.masks).recon
        default = case.model(case.img, case.cutout, fill="test", masks=case.masks).recon  # alpha 0.5
        copied = case.copy_of_eager()(case.img)
    torch.testing.assert_close(got, ref, atol=0, rtol=0)
    torch.testing.assert_close(copied, ref, atol=0, rtol=0)
    assert not torch.allclose(got, default)  # alpha reaches the model


def test_inference_option_table_checks_then_rows():
    """An option whose output differs beyond its tolerance is NOT equal; one that raises is a
    ``failed:`` row without timing; speed-ups are over eager (by hand)."""
    ref = torch.zeros(1, 3, 2, 2)
    table = inference_rows.OptionTable()
    table.add(inference_rows.EAGER, 0.0, "ok", lambda: ref.clone())
    table.add("off by 0.5", 0.1, "ok", lambda: np.full((1, 3, 2, 2), 0.5, dtype=np.float32))

    def boom():
        raise RuntimeError("no kernel\nsecond line")

    table.add("raises", 0.1, "ok", boom)
    table.add("not here", 0.1, "skipped: why")
    diffs = inference_rows.check_outputs_equal(table, ref)
    assert diffs == {inference_rows.EAGER: 0.0, "off by 0.5": 0.5}
    assert table.status["raises"] == "failed: RuntimeError: no kernel" and "raises" not in table.fns
    table.extra["off by 0.5"] = {"compile_s": 3.0}
    res = {n: {"median_s": t} for n, t in ((inference_rows.EAGER, 2.0), ("off by 0.5", 4.0))}
    rows = inference_rows.rows_from_timings(table, res, diffs)
    assert [r["option"] for r in rows] == [inference_rows.EAGER, "off by 0.5", "raises", "not here"]
    assert rows[0]["speedup_vs_eager"] == 1.0 and rows[0]["equal"] is True
    assert rows[1]["speedup_vs_eager"] == 0.5 and rows[1]["equal"] is False and rows[1]["compile_s"] == 3.0
    assert rows[2] == {"option": "raises", "status": "failed: RuntimeError: no kernel", "tolerance": 0.1}
    assert rows[3] == {"option": "not here", "status": "skipped: why", "tolerance": 0.1}


def test_markdown_sections_in_order_and_each_left_out_when_absent(quick_results):
    _, res = quick_results
    md = report.format_markdown(res)
    keys = [k for k, _ in report.MD_SECTIONS]
    assert [k for k in keys if res.get(k)] == [k for k in keys if k != "errors"]  # all ran, none failed
    lines = md.splitlines()
    for key in ("models", "layers", "targets"):  # without a section: exactly one block of lines is gone
        without = report.format_markdown({k: v for k, v in res.items() if k != key}).splitlines()
        ops = [op for op in difflib.SequenceMatcher(None, without, lines).get_opcodes() if op[0] != "equal"]
        assert len(ops) == 1 and ops[0][0] == "insert", (key, ops)
        block = lines[ops[0][3] : ops[0][4]]
        # one section: its heading, its lines and one blank line (which of two blanks the diff
        # takes as the inserted one does not matter)
        heads = [ln for ln in block if ln.startswith("## ")]
        assert [ln for ln in block if ln][0] == heads[0] and len(heads) == 1, (key, block)
        assert block.count("") >= 1 and len(block) < len(lines) // 2, (key, block)
    errs = report.format_markdown({**res, "errors": {"layers": "RuntimeError: x"}})
    assert errs == md + "\n## Sections that failed\n\n- layers: RuntimeError: x\n"


def test_authors_inference_maps_equal_library_fast_and_plain_maps():
    """The plain re-statement (masks one at a time) == the library's maps, with non-trivial
    BatchNorm statistics (so that folding has something to fold), for both map kinds."""
    for score_map in ("feature", "pixel"):
        cfg = workloads.cfg_for("smoke", "esad", "cpu").replace(score_map=score_map)
        model = workloads.seeded_model(cfg)
        model.train()
        with torch.no_grad():
            for _ in range(3):
                model(workloads.random_images(4, cfg.image_size, 7), 4, fill="train")
        model.eval()
        extractor = workloads.scoring_extractor(model, cfg)
        img = workloads.random_images(2, cfg.image_size, 3)
        theirs = scoring_rows.authors_inference_maps(model, img, cfg, extractor)
        for fast in (True, False):
            ours = anomaly_maps(model, img, cfg.replace(fast_scoring=fast), extractor=extractor)
            torch.testing.assert_close(theirs, ours, atol=FAST_PATH_ATOL, rtol=0)
    with pytest.raises(ValueError, match="fill_alpha"):
        scoring_rows.authors_inference_maps(model, img, cfg.replace(fill_alpha=0.3), extractor)
    riad_cfg = workloads.cfg_for("smoke", "riad", "cpu")
    with pytest.raises(ValueError, match="ESAD model"):
        scoring_rows.authors_inference_maps(workloads.seeded_model(riad_cfg), img, cfg, None)


def test_time_interleaved_rotates_and_counts():
    calls: list[str] = []
    fns = {n: (lambda n=n: calls.append(n)) for n in "abc"}
    res = timing.time_interleaved(fns, repeats=3, warmup=1, device=torch.device("cpu"))
    assert calls[:3] == ["a", "b", "c"]  # warm-up
    assert calls[3:] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]  # start rotates each repeat
    assert all(r["repeats"] == 3 and r["min_s"] <= r["median_s"] <= r["max_s"] for r in res.values())


def test_synthetic_metric_inputs_are_loco_like():
    maps, channels, defects = metrics_rows.synthetic_metric_inputs(10, (60, 90), seed=3)
    assert len(maps) == len(channels) == 10
    assert all(m.dtype == np.float32 and m.shape == (60, 90) for m in maps)
    good = [c for c in channels if c.shape[0] == 0]
    assert len(good) == 3 and all(c.shape[1:] == (60, 90) for c in good)
    values = {d.pixel_value for d in defects}
    for c in channels:
        for ch in c:
            assert set(np.unique(ch)) - {0} <= values and len(set(np.unique(ch)) - {0}) <= 1
    again = metrics_rows.synthetic_metric_inputs(10, (60, 90), seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(maps, again[0]))  # same seed, same data


def test_peak_memory_probe_sees_a_large_allocation():
    # 256 MiB of float64 touched in the subprocess: the probe must report at least most of it
    spec = {"kind": "metric", "metric": "pixel_auroc", "n": 2, "size": [20, 30], "seed": 0, "warmup": False}
    small = memory.peak_memory(spec, torch.device("cpu"))
    assert "status" not in small, small
    big = memory.measure_peak_rss(lambda: np.ones(2**25, dtype=np.float64).sum())
    assert big["delta_mib"] >= 200
    # a workload that cannot be built is a failed measurement that says why, not a crash
    bad = memory.peak_memory({"kind": "no such kind"}, torch.device("cpu"))
    assert bad == {"status": "failed: ValueError: unknown workload kind 'no such kind'"}


def test_the_library_holds_no_benchmark():
    """The benchmarks live outside ``esad_lib``: no ``esad_lib/bench``, no ``esad bench`` command,
    and no module of the library imports ``benchmarks``."""
    from esad_lib.cli import build_parser

    lib = PROJECT_ROOT / "esad_lib"
    assert not (lib / "bench").exists() and not (lib / "cli" / "bench.py").exists()
    importers = [
        str(p.relative_to(PROJECT_ROOT))
        for p in lib.rglob("*.py")
        if any(
            line.lstrip().startswith(("import benchmarks", "from benchmarks"))
            for line in p.read_text().splitlines()
        )
    ]
    assert importers == []
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench"])


def test_script_entry_point_runs(tmp_path):
    """``python benchmarks/bench.py`` (what ``make bench`` runs) works as a script (one section)."""
    out = tmp_path / "b"
    cmd = [sys.executable, str(PROJECT_ROOT / "benchmarks" / "bench.py"), "--quick", "--out", str(out)]
    cmd += ["--device", "cpu", "--sections", "metrics"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "## Metrics on" in proc.stdout
    assert json.loads((out / "results.json").read_text())["metrics"]
    assert "bench.py" in (PROJECT_ROOT / "Makefile").read_text().split("\nbench:", 1)[1].split("\n\n")[0]
