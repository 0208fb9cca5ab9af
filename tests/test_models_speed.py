"""Training-speed preparation (``esad_lib.models.speed``) changes the memory layout and the
optimiser's kernel, not the function: checked in float64 against the plain model."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch
from torch import nn

from esad_lib.config import PRESETS, get_config
from esad_lib.models import build_model
from esad_lib.models.speed import (
    prepare_for_training,
    to_training_layout,
    training_optimizer,
)


def test_prepare_for_training_layout_and_same_outputs() -> None:
    cfg = get_config("smoke", cpu_malloc_tuning=False)
    torch.manual_seed(0)
    model = build_model(cfg).double().train()
    prepared = prepare_for_training(copy.deepcopy(model), cfg.replace(channels_last_training=True))
    four_d = [p for p in prepared.parameters() if p.dim() == 4]
    assert four_d and all(p.is_contiguous(memory_format=torch.channels_last) for p in four_d)
    img = torch.rand(2, 3, 32, 32, dtype=torch.float64) * 2 - 1
    x = to_training_layout(img, cfg.replace(channels_last_training=True))
    assert x.is_contiguous(memory_format=torch.channels_last) and torch.equal(x, img)
    masks = torch.ones(3, 1, 32, 32, dtype=torch.float64)
    masks[:, :, :16] = 0
    a = model(img, 4, fill="train", masks=masks)
    b = prepared(x, 4, fill="train", masks=masks)
    torch.testing.assert_close(b.recon, a.recon, rtol=0, atol=1e-12)
    torch.testing.assert_close(b.inpaint, a.inpaint, rtol=0, atol=1e-12)
    # off: no-ops
    off = cfg.replace(channels_last_training=False)
    assert to_training_layout(img, off) is img
    assert all(p.is_contiguous() for p in prepare_for_training(copy.deepcopy(model), off).parameters())
    with pytest.raises(ValueError, match="batch"):
        to_training_layout(img[0], cfg)


def test_training_optimizer_is_the_configured_adam() -> None:
    cfg = PRESETS["demo"]
    model = build_model(cfg)
    opt = training_optimizer(model.parameters(), cfg)
    assert isinstance(opt, torch.optim.Adam)
    group = opt.param_groups[0]
    assert group["lr"] == cfg.lr and group["weight_decay"] == cfg.weight_decay
    assert group["fused"] is True
    # one step equals the unfused Adam's (float32 rounding aside)
    torch.manual_seed(0)
    a, b = nn.Linear(5, 3), nn.Linear(5, 3)
    b.load_state_dict(a.state_dict())
    oa = torch.optim.Adam(a.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ob = training_optimizer(b.parameters(), cfg)
    x = torch.randn(4, 5)
    for m, o in ((a, oa), (b, ob)):
        m(x).square().sum().backward()
        o.step()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-6, atol=1e-7)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_cpu_allocator_tuning_applies_on_linux_and_prepare_calls_it(monkeypatch) -> None:
    import esad_lib.models.speed as speed

    # in a subprocess: the setting is process-wide, and this test process is shared
    code = "from esad_lib.models.speed import tune_cpu_allocator; print(tune_cpu_allocator())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
    calls = []
    monkeypatch.setattr(speed, "tune_cpu_allocator", lambda: calls.append(1) or True)
    model = build_model(get_config("smoke"))
    prepare_for_training(model, get_config("smoke", cpu_malloc_tuning=False))
    assert calls == []
    prepare_for_training(model, get_config("smoke", cpu_malloc_tuning=True))
    assert calls == [1]
    assert PRESETS["smoke"].cpu_malloc_tuning is False and PRESETS["demo"].cpu_malloc_tuning is True
