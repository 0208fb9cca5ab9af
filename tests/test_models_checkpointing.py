"""Activation checkpointing changes memory, not maths: one training step with and without it
gives the same gradients (every parameter) and the same BatchNorm running statistics; eval
outputs are unchanged; a plain (BN-unaware) checkpoint would update the statistics twice."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from esad_lib.config import PRESETS, get_config, riad_config
from esad_lib.method import build_model
from esad_lib.method.loss import ESADLoss
from esad_lib.method.masks import disjoint_masks
from esad_lib.method.model import TRAIN_CHECKPOINT_MODE
from esad_lib.perf.checkpointing import CHECKPOINT_MODES, bn_buffers, bn_safe_checkpoint

ATOL = 1e-5


def _img(b: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, size, size, generator=g) * 2 - 1


def _step(model, loss_fn, img: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """One training step (forward with the train fill, ESADLoss, backward, Adam)."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5)
    model.train()
    opt.zero_grad(set_to_none=True)
    out = model(img, 4, fill="zero" if model.is_riad else "train", masks=masks)
    total, _ = loss_fn(img, out.recon, out.inpaint)
    total.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    opt.step()
    return total.detach(), grads


@pytest.mark.parametrize("method", ["esad", "riad"])
@pytest.mark.parametrize("mode", [m for m in CHECKPOINT_MODES if m != "off"])
def test_one_step_equal_with_and_without_checkpointing(method: str, mode: str) -> None:
    cfg = get_config("smoke", w_feature=1.0)
    cfg = riad_config(cfg) if method == "riad" else cfg
    torch.manual_seed(0)
    ref = build_model(cfg)
    ck = copy.deepcopy(ref).set_checkpointing(mode)
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
    # parameters after the Adam step
    for (n, p), (_, q) in zip(ref.named_parameters(), ck.named_parameters()):
        torch.testing.assert_close(q, p, atol=ATOL, rtol=0, msg=n)


def test_eval_outputs_unchanged_and_checkpointing_is_a_no_op_there() -> None:
    cfg = get_config("smoke")
    torch.manual_seed(0)
    ref = build_model(cfg).eval()
    ck = copy.deepcopy(ref).set_checkpointing("level").eval()
    img = _img(seed=1)
    with torch.no_grad():
        a = ref.reconstruct_all(img, cfg.cutout_sizes)
        b = ck.reconstruct_all(img, cfg.cutout_sizes)
    for c in a:
        assert torch.equal(a[c].recon, b[c].recon)
    # eval mode with gradients on: no recomputation either (buffers untouched, same output)
    x = img.clone().requires_grad_(True)
    assert ck.recon_net._checkpoint_mode() == "off"
    assert torch.equal(ck.recon_net(x), ref.recon_net(x))


def test_config_switches_checkpointing() -> None:
    assert PRESETS["paper"].checkpointing is True
    assert PRESETS["demo"].checkpointing is False
    assert PRESETS["smoke"].checkpointing is False
    m = build_model(get_config("smoke", checkpointing=True))
    assert m.inpaint_net.checkpointing == TRAIN_CHECKPOINT_MODE
    assert m.recon_net.checkpointing == TRAIN_CHECKPOINT_MODE
    assert build_model(get_config("smoke")).recon_net.checkpointing == "off"
    with pytest.raises(ValueError, match="checkpointing"):
        m.set_checkpointing("everything")


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
