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
    for variant in ("today", "prepared", "prepared, plain grouped conv", "prepared + fused Adam", "all"):
        assert f"| {variant} |" in out
    assert "loss agreement: OK" in out
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


def test_one_pass_loss_candidate_equals_esad_loss() -> None:
    """The benchmark's one-pass loss computes ESADLoss's value, parts and gradients (up to float
    rounding), with and without the inpainting output."""
    from esad_lib.losses import ESADLoss

    cfg = train_speed.PRESETS["smoke"].replace(device="cpu", w_inpaint=0.4, w_feature=0.3)
    torch.manual_seed(0)
    img = torch.rand(2, 3, 32, 32) * 2 - 1
    base = [(img + 0.3 * torch.randn_like(img)).clamp(-1, 1) for _ in range(2)]
    for with_inpaint in (True, False):
        results = []
        for cls in (ESADLoss, train_speed.OnePassLoss):
            torch.manual_seed(1)  # the same seeded random extractor
            loss = cls(cfg)
            r, i = (b.clone().requires_grad_(True) for b in base)
            total, parts = loss(img, r, i if with_inpaint else None)
            total.backward()
            results.append((total.item(), parts, r.grad, i.grad))
        (va, pa, ra, ia), (vb, pb, rb, ib) = results
        assert vb == pytest.approx(va, rel=1e-6) and pa.keys() == pb.keys()
        assert all(pb[k] == pytest.approx(pa[k], rel=1e-5, abs=1e-7) for k in pa)
        torch.testing.assert_close(rb, ra, rtol=1e-5, atol=1e-7)
        assert (ia is None) == (ib is None) == (not with_inpaint)
