"""The training-speed scripts of ``benchmarks/`` run (``--quick``) and print what they promise:
the training-speed table with the loss agreement, the whole trainer against a commit
(``--against``), the GPU check's dry run on CPU, and the retrain check."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import gpu_check, train_speed


def test_train_speed_quick_prints_table_and_loss_agreement(capsys) -> None:
    rc = train_speed.main(["--quick", "--steps", "3"])
    out = capsys.readouterr().out
    assert rc == 0, out
    for variant in (
        train_speed.REFERENCE,
        "channels_last",
        "channels_last, plain grouped conv",
        train_speed.TRAINER,
        "no-opt-ins",
        "all",
    ):
        assert f"| {variant} |" in out
    assert "loss agreement: OK" in out
    # the float64 check of the layouts: the same function, to rounding
    line = next(ln for ln in out.splitlines() if ln.startswith("float64 check"))
    assert float(line.rsplit("=", 1)[1]) < 1e-8


def test_train_speed_loss_curves_agree_and_speedups_are_ratios() -> None:
    cfg = train_speed.PRESETS["smoke"].replace(device="cpu")
    res = train_speed.run_speed(cfg, steps=3)
    rows = {r["variant"]: r for r in res["rows"]}
    assert list(rows) == list(train_speed.variants(cfg, train_speed.seeded_model(cfg)))
    assert rows[train_speed.REFERENCE]["speedup_wall"] == pytest.approx(1.0)
    assert rows[train_speed.REFERENCE]["loss_dev"] == 0.0
    for r in rows.values():
        assert len(r["losses"]) == 3
        assert r["loss_dev"] <= train_speed.LOSS_RTOL
        assert r["images_per_s"] == pytest.approx(cfg.batch_size / r["step_s"])


def test_train_speed_options_are_checked() -> None:
    with pytest.raises(SystemExit, match="--against-only needs --against"):
        train_speed.main(["--quick", "--against-only"])
    with pytest.raises(SystemExit, match="--steps must be >= 2"):
        train_speed.main(["--quick", "--steps", "1"])


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


def test_against_rows_by_hand_and_a_version_without_validation_timing() -> None:
    """Epoch medians exclude each process's first epoch; speed-ups are before / after; a worker
    that could not time validation (``validation_s`` null) counts its whole epoch as training
    and the table says so."""

    def run(epochs, val, images=10, loss=(1.0, 0.5, 0.25)):
        return {"epoch_s": epochs, "validation_s": val, "train_images": images, "train_loss": list(loss)}

    runs = {
        "before": [run([9.0, 4.0, 6.0], None), run([9.0, 6.0, 6.0], None)],
        "after": [run([5.0, 2.0, 3.0], [1.0, 1.0, 1.0]), run([5.0, 3.0, 3.0], [1.0, 1.0, 1.0])],
    }
    before, after = train_speed._against_rows(runs, "473b1cc" + "0" * 33)
    assert before["commit"] == "473b1cc" and before["epoch_s"] == 6.0 and before["train_s"] == 6.0
    assert after["epoch_s"] == 3.0 and after["train_s"] == 2.0
    assert after["speedup_epoch"] == pytest.approx(2.0) and after["speedup_train"] == pytest.approx(3.0)
    # round by round: medians per process, 5/2.5 and 6/3
    assert after["paired_speedup_epoch"] == pytest.approx([2.0, 2.0])
    assert after["images_per_s_epoch"] == pytest.approx(10 / 3.0)
    assert not before["validation_timed"] and after["validation_timed"]
    res = {"rows": [before, after], "rounds": 2, "epochs": 3, "threads": 1}
    res.update(category="breakfast_box", profile="demo")
    assert "validation not timed for: before" in train_speed.format_against(res)


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
