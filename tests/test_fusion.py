"""Inference rewrites (esad_lib.perf.fusion) keep the outputs and never touch the caller's model."""

from __future__ import annotations

import pytest
import torch

from esad_lib.config import get_config, riad_config
from esad_lib.method import build_model, model_fills
from esad_lib.method.model import scoring_masks
from esad_lib.perf.fusion import fold_batchnorm, is_prepared, prepare_for_inference


def _trained_bn(cfg) -> torch.nn.Module:
    """A model whose BatchNorms hold non-trivial running statistics and affine parameters."""
    torch.manual_seed(0)
    model = build_model(cfg)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(4, 3, 32, 32) * 2 - 1, 4, fill=model_fills(cfg)[0])
    return model.eval()


@pytest.mark.parametrize("method", ["esad", "riad"])
def test_prepared_copy_has_same_outputs_and_leaves_the_model_alone(method):
    cfg = get_config("smoke")
    cfg = riad_config(cfg) if method == "riad" else cfg
    model = _trained_bn(cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())

    fast = prepare_for_inference(model)

    assert is_prepared(fast) and not is_prepared(model)
    assert prepare_for_inference(fast) is fast  # idempotent
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    # the caller's model: same modules, same tensors, same (contiguous) memory format
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == n_bn
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.is_contiguous() for p in model.parameters())

    img = torch.rand(2, 3, 32, 32) * 2 - 1
    masks = scoring_masks(32, 32, cfg.cutout_sizes, cfg.num_masks, seed=0)
    with torch.inference_mode():
        for c, m in masks.items():
            fill = model_fills(cfg)[1]
            ref = model(img, c, fill=fill, masks=m).recon
            got = fast(img.contiguous(memory_format=torch.channels_last), c, fill=fill, masks=m).recon
            torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)


def test_fold_skips_batchnorm_without_running_statistics():
    seq = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4, track_running_stats=False)
    ).eval()
    folded = fold_batchnorm(seq)
    assert isinstance(folded[1], torch.nn.BatchNorm2d)


def test_scoring_masks_equal_the_masks_reconstruct_all_uses():
    cfg = get_config("smoke")
    model = build_model(cfg).eval()
    img = torch.rand(1, 3, 32, 32)
    outs = model.reconstruct_all(img, cfg.cutout_sizes, seed=5)
    masks = scoring_masks(32, 32, cfg.cutout_sizes, cfg.num_masks, seed=5)
    assert list(outs) == list(masks)
    for c in masks:
        assert torch.equal(outs[c].masks, masks[c])
