"""Every performance opt-in of ``esad_lib.perf`` computes what the core (``esad_lib.method``)
computes: per-level activation checkpointing (gradients, BatchNorm statistics), the one-pass
loss (values, parts, gradients), channels_last (outputs), fused Adam (one step), and the
trainer applies each one explicitly (the allocator only when asked, never as a side effect)."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

import esad_lib.perf.speed as speed
from esad_lib.config import PRESETS, get_config, riad_config
from esad_lib.method import build_model
from esad_lib.method.loss import ESADLoss, loss_extractor
from esad_lib.method.masks import disjoint_masks
from esad_lib.perf.checkpointing import bn_buffers, bn_safe_checkpoint, enable_checkpointing
from esad_lib.perf.loss import OnePassLoss
from esad_lib.training import build_training

ATOL = 1e-5


def _img(b: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _step(model, loss_fn, img: torch.Tensor, masks: torch.Tensor):
    """One training step (forward with the train fill, loss, backward, Adam): loss, gradients."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5)
    model.train()
    opt.zero_grad(set_to_none=True)
    out = model(img, 4, fill="zero" if model.inpaint_net is None else "train", masks=masks)
    total, _ = loss_fn(img, out.recon, out.inpaint)
    total.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    opt.step()
    return total.detach(), grads


# ---- activation checkpointing ------------------------------------------------------------


@pytest.mark.parametrize("method", ["esad", "riad"])
def test_one_step_equal_with_and_without_checkpointing(method: str) -> None:
    cfg = get_config("smoke", w_feature=1.0)
    cfg = riad_config(cfg) if method == "riad" else cfg
    torch.manual_seed(0)
    ref = build_model(cfg)
    ck = enable_checkpointing(copy.deepcopy(ref))
    assert all(type(n).__name__.startswith("Checkpointed") for n in (ck.inpaint_net, ck.recon_net) if n)
    loss_fn = ESADLoss(cfg)
    img = _img()
    masks = disjoint_masks(32, 32, 4, cfg.num_masks, generator=torch.Generator().manual_seed(3))
    loss_a, grads_a = _step(ref, loss_fn, img, masks)
    loss_b, grads_b = _step(ck, loss_fn, img, masks)
    torch.testing.assert_close(loss_b, loss_a, atol=ATOL, rtol=0)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], atol=ATOL, rtol=1e-4, msg=name)
    # BatchNorm buffers: running mean/var updated once, num_batches_tracked == 1 (not 2)
    bufs_a, bufs_b = dict(ref.named_buffers()), dict(ck.named_buffers())
    assert bufs_a.keys() == bufs_b.keys()
    for name in bufs_a:
        torch.testing.assert_close(bufs_b[name], bufs_a[name], atol=1e-6, rtol=0, msg=name)
    tracked = [v for k, v in bufs_b.items() if k.endswith("num_batches_tracked")]
    assert tracked and all(int(v) == 1 for v in tracked)
    for (n, p), (_, q) in zip(ref.named_parameters(), ck.named_parameters()):
        torch.testing.assert_close(q, p, atol=ATOL, rtol=0, msg=n)


def test_checkpointing_is_a_no_op_in_eval_and_keeps_the_state_dict() -> None:
    cfg = get_config("smoke")
    torch.manual_seed(0)
    ref = build_model(cfg).eval()
    ck = enable_checkpointing(copy.deepcopy(ref)).eval()
    assert list(ck.state_dict()) == list(ref.state_dict())
    img = _img(seed=1)
    with torch.no_grad():
        a, b = ref.reconstruct_all(img, cfg.cutout_sizes), ck.reconstruct_all(img, cfg.cutout_sizes)
    assert all(torch.equal(a[c].recon, b[c].recon) for c in a)
    x = img.clone().requires_grad_(True)  # eval mode with gradients on: no recomputation either
    assert torch.equal(ck.recon_net(x), ref.recon_net(x))
    # off again: the plain classes
    enable_checkpointing(ck, enabled=False)
    assert type(ck.recon_net) is type(ref.recon_net) and type(ck.inpaint_net) is type(ref.inpaint_net)


def test_trainer_applies_checkpointing_when_the_config_asks() -> None:
    assert PRESETS["paper"].checkpointing is True and PRESETS["demo"].checkpointing is False
    on, _, _ = build_training(get_config("smoke", checkpointing=True), torch.device("cpu"))
    off, _, _ = build_training(get_config("smoke"), torch.device("cpu"))
    assert type(on.recon_net).__name__ == "CheckpointedLightweightUNet"
    assert type(off.recon_net).__name__ == "LightweightUNet"


def test_plain_checkpoint_would_update_batchnorm_twice_the_safe_one_once() -> None:
    """Why ``bn_safe_checkpoint`` exists: non-reentrant checkpointing re-runs BN in train mode."""
    torch.manual_seed(0)
    bn_ref = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()).train()
    bn_plain, bn_safe = copy.deepcopy(bn_ref), copy.deepcopy(bn_ref)
    x = torch.randn(2, 3, 8, 8)
    bn_ref(x).square().sum().backward()
    checkpoint(bn_plain, x, use_reentrant=False).square().sum().backward()
    bn_safe_checkpoint(bn_safe, [bn_safe], x).square().sum().backward()
    assert int(bn_plain[1].num_batches_tracked) == 2  # the problem
    assert not torch.allclose(bn_plain[1].running_mean, bn_ref[1].running_mean)
    for a, b in zip(bn_buffers([bn_ref]), bn_buffers([bn_safe])):
        assert torch.equal(a, b)
    for p, q in zip(bn_ref.parameters(), bn_safe.parameters()):
        torch.testing.assert_close(q.grad, p.grad)


# ---- the one-pass loss ---------------------------------------------------------------------


@pytest.mark.parametrize("with_inpaint", [True, False])
@pytest.mark.parametrize("distance", ["cosine", "mse"])
def test_one_pass_loss_equals_the_core_loss(with_inpaint: bool, distance: str) -> None:
    """Values, parts and gradients, all weights non-zero and distinct (the loss runs in float32)."""
    cfg = get_config("smoke", w_l2=0.5, w_ssim=1.5, w_msgms=2.0, w_feature=0.7, w_inpaint=0.3,
                     feature_loss_distance=distance)
    extractor = loss_extractor(cfg)
    core, one = ESADLoss(cfg, extractor), OnePassLoss(cfg, extractor)
    img = _img(3, seed=5)
    results = []
    for loss in (core, one):
        recon = (_img(3, seed=6) * 0.9).requires_grad_(True)
        inpaint = (_img(3, seed=7) * 0.8).requires_grad_(True)
        total, parts = loss(img, recon, inpaint if with_inpaint else None)
        total.backward()
        results.append((total, parts, recon.grad, inpaint.grad))
    (ta, pa, ra, ia), (tb, pb, rb, ib) = results
    assert pa.keys() == pb.keys() and ("inpaint_ssim" in pa) == with_inpaint
    torch.testing.assert_close(tb, ta, rtol=1e-6, atol=1e-7)
    assert all(pb[k] == pytest.approx(pa[k], rel=1e-6, abs=1e-7) for k in pa)
    torch.testing.assert_close(rb, ra, rtol=1e-5, atol=1e-8)
    if with_inpaint:
        torch.testing.assert_close(ib, ia, rtol=1e-5, atol=1e-8)
    else:
        assert ia is None and ib is None


def test_one_pass_loss_float32_equals_the_core_bit_for_bit_here() -> None:
    """In float32 on the CPU, the stacked maps give the same bits as the per-output ones."""
    cfg = get_config("smoke")
    extractor = loss_extractor(cfg)
    img = _img(2, seed=1)
    outs = []
    for loss in (ESADLoss(cfg, extractor), OnePassLoss(cfg, extractor)):
        recon, inpaint = _img(2, seed=2).requires_grad_(True), _img(2, seed=3).requires_grad_(True)
        total, parts = loss(img, recon, inpaint)
        total.backward()
        outs.append((total, parts, recon.grad, inpaint.grad))
    (ta, pa, ra, ia), (tb, pb, rb, ib) = outs
    assert torch.equal(tb, ta) and pa == pb and torch.equal(rb, ra) and torch.equal(ib, ia)


# ---- channels_last, fused Adam, allocator ------------------------------------------------


def test_channels_last_training_layout_has_the_same_outputs() -> None:
    cfg = get_config("smoke", cpu_malloc_tuning=False, channels_last_training=True)
    torch.manual_seed(0)
    model = build_model(cfg).double().train()
    prepared = speed.prepare_for_training(copy.deepcopy(model), cfg)
    four_d = [p for p in prepared.parameters() if p.dim() == 4]
    assert four_d and all(p.is_contiguous(memory_format=torch.channels_last) for p in four_d)
    img = _img().double()
    x = speed.to_training_layout(img, cfg)
    assert x.is_contiguous(memory_format=torch.channels_last) and torch.equal(x, img)
    masks = torch.ones(3, 1, 32, 32, dtype=torch.float64)
    masks[:, :, :16] = 0
    a, b = model(img, 4, fill="train", masks=masks), prepared(x, 4, fill="train", masks=masks)
    torch.testing.assert_close(b.recon, a.recon, rtol=0, atol=1e-12)
    torch.testing.assert_close(b.inpaint, a.inpaint, rtol=0, atol=1e-12)
    off = cfg.replace(channels_last_training=False)
    assert speed.to_training_layout(img, off) is img
    assert all(p.is_contiguous() for p in speed.prepare_for_training(copy.deepcopy(model), off).parameters())
    with pytest.raises(ValueError, match="batch"):
        speed.to_training_layout(img[0], cfg)


def test_training_optimizer_is_the_configured_adam_fused() -> None:
    cfg = PRESETS["demo"]
    opt = speed.training_optimizer(build_model(cfg).parameters(), cfg)
    group = opt.param_groups[0]
    assert isinstance(opt, torch.optim.Adam) and group["fused"] is True
    assert group["lr"] == cfg.lr and group["weight_decay"] == cfg.weight_decay
    torch.manual_seed(0)  # one step equals the unfused Adam's (float32 rounding aside)
    a, b = nn.Linear(5, 3), nn.Linear(5, 3)
    b.load_state_dict(a.state_dict())
    oa = torch.optim.Adam(a.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ob = speed.training_optimizer(b.parameters(), cfg)
    x = torch.randn(4, 5)
    for m, o in ((a, oa), (b, ob)):
        m(x).square().sum().backward()
        o.step()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-6, atol=1e-7)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_allocator_tuning_is_an_explicit_trainer_call_never_a_side_effect(monkeypatch) -> None:
    # in a subprocess: the setting is process-wide, and this test process is shared
    code = "from esad_lib.perf.speed import tune_cpu_allocator; print(tune_cpu_allocator())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
    calls = []
    monkeypatch.setattr(speed, "tune_cpu_allocator", lambda: calls.append(1) or True)
    model = build_model(get_config("smoke"))
    speed.prepare_for_training(model, get_config("smoke", cpu_malloc_tuning=True))
    assert calls == []  # preparing a model never touches the allocator
    build_training(get_config("smoke", cpu_malloc_tuning=False), torch.device("cpu"))
    assert calls == []
    model, loss_fn, opt = build_training(get_config("smoke", cpu_malloc_tuning=True), torch.device("cpu"))
    assert calls == [1]
    assert isinstance(loss_fn, OnePassLoss) and opt.param_groups[0]["fused"] is True
    assert PRESETS["smoke"].cpu_malloc_tuning is False and PRESETS["demo"].cpu_malloc_tuning is True
