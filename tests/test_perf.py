"""The issue-16 scripts run (``--quick``) and print what they promise: the training-speed table
with the loss agreement, the training-memory table, and the GPU check's dry run on CPU."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import gpu_check, train_memory, train_speed


def test_train_speed_quick_prints_table_and_loss_agreement(capsys) -> None:
    rc = train_speed.main(["--quick", "--steps", "3"])
    out = capsys.readouterr().out
    assert rc == 0, out
    for variant in (
        "today",
        "in-place residual, input features once",
        "prepared",
        "prepared, plain grouped conv",
        "prepared + fused Adam",
        "trainer step (prepared + fused Adam + one-pass loss)",
        "all",
    ):
        assert f"| {variant} |" in out
    assert "loss agreement: OK" in out
    assert "one-pass loss vs term by term (same layout and optimiser), weights after 3 steps:" in out
    # the float64 check of the layouts: the same function, to rounding
    line = next(ln for ln in out.splitlines() if ln.startswith("float64 check"))
    assert float(line.rsplit("=", 1)[1]) < 1e-8


def test_train_speed_loss_curves_agree_and_speedups_are_ratios() -> None:
    cfg = train_speed.PRESETS["smoke"].replace(device="cpu")
    res = train_speed.run_speed(cfg, steps=3)
    rows = {r["variant"]: r for r in res["rows"]}
    assert rows["today"]["speedup_wall"] == pytest.approx(1.0)
    assert rows["today"]["loss_dev"] == 0.0
    for r in rows.values():
        assert len(r["losses"]) == 3
        assert r["loss_dev"] <= train_speed.LOSS_RTOL
        assert r["images_per_s"] == pytest.approx(cfg.batch_size / r["step_s"])


def test_train_memory_quick_prints_table(capsys, tmp_path) -> None:
    path = tmp_path / "mem.json"
    cases = ["esad + ckpt level"]
    rc = train_memory.main(["--quick", "--jobs", "2", "--cases", ",".join(cases), "--json", str(path)])
    out = capsys.readouterr().out
    assert rc == 0, out
    for case in cases:
        assert f"| {case} |" in out
    rows = json.loads(path.read_text())["rows"]
    assert [r["case"] for r in rows] == cases
    for r in rows:
        assert r["delta_b1_mib"] > 0 and r["delta_b2_mib"] > 0
        assert r["per_image_mib"] == pytest.approx(r["delta_b2_mib"] - r["delta_b1_mib"])


def test_train_memory_rejects_unknown_case() -> None:
    with pytest.raises(SystemExit, match="unknown case"):
        train_memory.main(["--quick", "--cases", "esad,nonsense"])


def test_gpu_check_dry_run_on_cpu(tmp_path, capsys) -> None:
    rc = gpu_check.main(["--out", str(tmp_path), "--device", "cpu", "--quick", "--steps", "1"])
    out = capsys.readouterr().out
    assert rc == 0, out
    res = json.loads((tmp_path / "gpu_check.json").read_text())
    assert set(res["checks"]) == {"amp_train_step", "fast_scoring", "checkpointing_gradients"}
    assert all(c["ok"] for c in res["checks"].values())
    assert set(res["train"]) == {"esad, checkpointing off", "esad, checkpointing on", "riad"}
    assert all(r["step_s"] > 0 for r in res["train"].values())
    assert all(r["images_per_s"] > 0 for r in res["scoring"].values())
    md = (tmp_path / "gpu_check.md").read_text()
    assert md.startswith("# GPU check") and "torch " + torch.__version__ in md


@pytest.mark.skipif(torch.cuda.is_available(), reason="the no-CUDA message is for machines without CUDA")
def test_gpu_check_without_cuda_exits_nonzero_with_one_line(tmp_path, capsys) -> None:
    rc = gpu_check.main(["--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert rc != 0
    assert len(err.splitlines()) == 1 and "CUDA is not available" in err
    assert not (tmp_path / "gpu_check.json").exists()


@pytest.mark.parametrize("features_per_output", [True, False])
def test_term_by_term_loss_of_today_equals_the_one_pass_esad_loss(features_per_output: bool) -> None:
    """The benchmark's "today" loss (one output at a time, the input's features per output or
    once) and the library's one-pass ``ESADLoss`` give the same value, parts and gradients,
    with and without the inpainting output."""
    from esad_lib.method.loss import ESADLoss

    cfg = train_speed.PRESETS["smoke"].replace(device="cpu", w_inpaint=0.4, w_feature=0.3)
    torch.manual_seed(0)
    img = torch.rand(2, 3, 32, 32) * 2 - 1
    base = [(img + 0.3 * torch.randn_like(img)).clamp(-1, 1) for _ in range(2)]
    for with_inpaint in (True, False):
        results = []
        for make in (
            ESADLoss,
            lambda c: train_speed.TermByTermLoss(c, features_per_output=features_per_output),
        ):
            torch.manual_seed(1)  # the same seeded random extractor
            loss = make(cfg)
            r, i = (b.clone().requires_grad_(True) for b in base)
            total, parts = loss(img, r, i if with_inpaint else None)
            total.backward()
            results.append((total.item(), parts, r.grad, i.grad))
        (va, pa, ra, ia), (vb, pb, rb, ib) = results
        assert vb == pytest.approx(va, rel=1e-6) and list(pa) == list(pb)
        assert all(pb[k] == pytest.approx(pa[k], rel=1e-6, abs=1e-7) for k in pa)
        torch.testing.assert_close(rb, ra, rtol=1e-5, atol=1e-7)
        assert (ia is None) == (ib is None) == (not with_inpaint)


def test_residual_in_place_switch_keeps_outputs_and_restores_the_block() -> None:
    from esad_lib.method import build_model
    from esad_lib.method.blocks import FeatureExtractionBlock

    cfg = train_speed.PRESETS["smoke"].replace(device="cpu")
    torch.manual_seed(0)
    model = build_model(cfg).train()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    forward = FeatureExtractionBlock.forward
    outs = []
    for on in (True, False):
        with train_speed.residual_in_place(on):
            outs.append(model.recon_net(x))
        assert FeatureExtractionBlock.forward is forward
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)


def test_against_a_commit_runs_both_trainers_and_compares_them() -> None:
    """``--against``: the trainer of an exported commit and the working tree's, in alternating
    processes (smoke profile here); each process imports its own copy of esad_lib."""
    import subprocess

    head = subprocess.run(
        ["git", "-C", str(train_speed.ROOT), "rev-parse", "HEAD"], capture_output=True, check=False
    )
    if head.returncode != 0:
        pytest.skip("not a git checkout: --against exports a commit of the repository's history")
    res = train_speed.run_against("HEAD", epochs=2, rounds=1, threads=1, profile="smoke")
    before, after = res["rows"]
    assert (before["version"], after["version"]) == ("before", "after")
    for r in res["rows"]:
        assert r["train_images"] > 0 and r["epochs_timed"] == 1 and len(r["train_loss"]) == 2
        assert r["images_per_s_epoch"] == pytest.approx(r["train_images"] / r["epoch_s"])
        assert 0 < r["train_s"] < r["epoch_s"]
    assert before["speedup_epoch"] == pytest.approx(1.0)
    # HEAD's trainer and the working tree's compute the same training
    assert after["loss_dev_first_epoch"] <= after["loss_dev"] <= train_speed.LOSS_RTOL
    md = train_speed.format_against(res)
    assert "| before |" in md and "| after |" in md


def test_against_rejects_an_unknown_commit() -> None:
    with pytest.raises(SystemExit, match="not a commit"):
        train_speed.run_against("no-such-revision-xyz", epochs=2, rounds=1, profile="smoke")


def test_retrain_check_finds_a_cached_smoke_model_bit_identical(capsys) -> None:
    """A model trained into the cache (train_or_load) and trained again by the check is the
    same bit for bit (CPU determinism); an uncached one is reported, not trained."""
    from benchmarks import retrain_check
    from esad_lib.config import PRESETS
    from esad_lib.training import train_or_load

    cfg = PRESETS["smoke"].replace(category="pushpins", epochs=1)
    train_or_load(cfg, progress=False)
    r = retrain_check.compare_run(cfg)
    assert r["cached"] and r["identical"] and r["losses_identical"] and r["max_abs_diff"] == 0.0
    assert retrain_check.compare_run(cfg.replace(seed=12345))["cached"] is False
