"""The ESAD model: exact fill formulas, batched == looped, gradients, RIAD, reconstruct_all."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from esad_lib.config import get_config, riad_config
from esad_lib.method import ESADModel, LightweightUNet, build_model, model_fills
from esad_lib.method.masks import disjoint_masks


class Const(nn.Module):
    """Stand-in net: outputs a known constant image."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x, self.value)


class Identity(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()


def _img(b: int = 2, h: int = 12, w: int = 20) -> torch.Tensor:
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(3)) * 2 - 1


@pytest.mark.parametrize("alpha", [0.5, 0.0, 0.25, 1.0])
def test_fill_formulas_exact(alpha: float) -> None:
    p = 0.3
    img = _img()
    model = ESADModel(Const(p), Identity(), num_masks=3)
    gen = torch.Generator().manual_seed(0)
    masks = disjoint_masks(12, 20, 4, 3, generator=gen)
    m = masks.unsqueeze(1)
    cutout = img.unsqueeze(0) * m

    out = model(img, 4, fill="train", masks=masks)
    # train: filled = cutout + pre * (1 - m)
    torch.testing.assert_close(out.filled, cutout + p * (1 - m), rtol=0, atol=0)
    # G2 = identity, hidden cells tile the image: recon = p everywhere; inpaint = p everywhere
    torch.testing.assert_close(out.recon, torch.full_like(img, p))
    torch.testing.assert_close(out.inpaint, torch.full_like(img, p))

    out = model(img, 4, fill="test", alpha=alpha, masks=masks)
    # test: filled = cutout + (1-a) * pre * (1 - m) + a * img * (1 - m)
    expected = cutout + (1 - alpha) * p * (1 - m) + alpha * img.unsqueeze(0) * (1 - m)
    torch.testing.assert_close(out.filled, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(out.recon, (1 - alpha) * p + alpha * img)

    out = model(img, 4, fill="zero", masks=masks)
    torch.testing.assert_close(out.filled, cutout, rtol=0, atol=0)
    torch.testing.assert_close(out.recon, torch.zeros_like(img))
    assert out.inpaint is None  # the inpainting net is not run for zero fill

    out = model(img, 4, fill="input", masks=masks)
    torch.testing.assert_close(out.filled, img.unsqueeze(0).expand(3, -1, -1, -1, -1))
    torch.testing.assert_close(out.recon, img)


def test_paper_test_fill_is_half_half() -> None:
    img = _img()
    model = ESADModel(Const(-0.8), Identity())  # default alpha = 0.5 (the paper)
    out = model(img, 2, fill="test", generator=torch.Generator().manual_seed(1))
    hidden = 1 - out.masks.unsqueeze(1)
    cutout = img.unsqueeze(0) * out.masks.unsqueeze(1)
    # the README's line: mb_cutout + 0.5 * pre * (1 - mask) + 0.5 * mb_img * (1 - mask)
    torch.testing.assert_close(out.filled, cutout + 0.5 * -0.8 * hidden + 0.5 * img.unsqueeze(0) * hidden)


def _warmed_model(seed: int = 0) -> ESADModel:
    torch.manual_seed(seed)
    model = ESADModel(LightweightUNet(base_width=4), LightweightUNet(base_width=4))
    model.train()
    with torch.no_grad():  # give BatchNorm non-trivial running statistics
        for c in (2, 4):
            model(_img(4, 16, 16), c, fill="train", generator=torch.Generator().manual_seed(c))
    return model.eval()


@pytest.mark.parametrize("fill", ["train", "test", "zero"])
def test_batched_equals_looped_in_eval_mode(fill: str) -> None:
    model = _warmed_model()
    img = _img(2, 20, 24)
    masks = disjoint_masks(20, 24, 4, 3, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        out = model(img, 4, fill=fill, masks=masks)
        recon = torch.zeros_like(img)
        inpaint = torch.zeros_like(img)
        for k in range(3):  # the naive loop, one mask at a time
            m = masks[k : k + 1]
            cutout = img * m
            pre = model.inpaint_net(cutout)
            if fill == "train":
                filled = cutout + pre * (1 - m)
            elif fill == "test":
                filled = cutout + 0.5 * pre * (1 - m) + 0.5 * img * (1 - m)
            else:
                filled = cutout
            torch.testing.assert_close(out.filled[k], filled)
            recon += model.recon_net(filled) * (1 - m)
            inpaint += pre * (1 - m)
    torch.testing.assert_close(out.recon, recon, rtol=1e-5, atol=1e-5)
    if fill != "zero":
        torch.testing.assert_close(out.inpaint, inpaint, rtol=1e-5, atol=1e-5)


def test_batched_differs_from_looped_in_train_mode_because_of_batchnorm() -> None:
    """Documented behaviour: BatchNorm uses K*B-batch statistics in train mode."""
    model = _warmed_model().train()
    img = _img(2, 16, 16)
    masks = disjoint_masks(16, 16, 4, 3, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        batched = model(img, 4, fill="zero", masks=masks).recon
        looped = sum(model.recon_net(img * masks[k : k + 1]) * (1 - masks[k : k + 1]) for k in range(3))
    assert (batched - looped).abs().max() > 1e-4


def test_gradients_flow_to_both_nets_in_train_mode() -> None:
    torch.manual_seed(0)
    model = ESADModel(LightweightUNet(base_width=4), LightweightUNet(base_width=4)).train()
    img = _img(2, 16, 16)
    out = model(img, 4, fill="train", generator=torch.Generator().manual_seed(0))
    loss = ((out.recon - img) ** 2).mean() + ((out.inpaint - img) ** 2).mean()
    loss.backward()
    for name, net in (("inpaint", model.inpaint_net), ("recon", model.recon_net)):
        grads = [p.grad for p in net.parameters()]
        assert all(g is not None for g in grads), name
        assert sum(g.abs().sum() for g in grads) > 0, name
    # the reconstruction loss alone also reaches G1 through the filled input
    model.zero_grad()
    out = model(img, 4, fill="train", generator=torch.Generator().manual_seed(0))
    ((out.recon - img) ** 2).mean().backward()
    assert sum(p.grad.abs().sum() for p in model.inpaint_net.parameters()) > 0


def test_shapes_non_square_odd() -> None:
    model = build_model(get_config("smoke")).eval()
    for h, w in [(32, 32), (21, 35), (17, 8)]:
        with torch.no_grad():
            out = model(_img(2, h, w), 3, fill="test", generator=torch.Generator().manual_seed(0))
        assert out.recon.shape == out.inpaint.shape == (2, 3, h, w)
        assert out.masks.shape == (3, 1, h, w)
        assert out.filled.shape == (3, 2, 3, h, w)


def test_build_model_from_config_and_riad() -> None:
    cfg = get_config("smoke")
    model = build_model(cfg.replace(num_masks=4, use_eca=True, block_kernel=5))
    assert model.num_masks == 4 and not hasattr(model, "fill_alpha")  # the config holds test-time choices
    assert model.inpaint_net is not None and model.recon_net is not model.inpaint_net
    assert model.recon_net.enc[1].expand[0].kernel_size == (5, 5)
    assert model.recon_net.dec[0].expand[0].groups == model.recon_net.dec[0].in_ch  # reference decoder
    riad = build_model(riad_config(cfg))
    assert riad.inpaint_net is None
    assert type(riad.recon_net).__name__ == "ClassicUNet"
    assert model_fills(riad_config(cfg)) == ("zero", "zero")
    assert model_fills(cfg.replace(method="riad")) == ("zero", "zero")  # RIAD has no inpainting net
    assert model_fills(cfg) == ("train", "test")
    with pytest.raises(ValueError, match="inpainting net"):
        riad(_img(), 2, fill="test")
    with pytest.raises(ValueError, match="unknown method"):
        build_model(cfg.replace(method="gan"))
    with pytest.raises(ValueError, match="unknown fill"):
        build_model(cfg)(_img(), 2, fill="mean")


def test_reconstruct_all_seeded_and_matches_forward() -> None:
    model = _warmed_model()
    img = _img(1, 16, 16)
    a = model.reconstruct_all(img, (2, 4, 8), seed=3)
    b = model.reconstruct_all(img, (2, 4, 8), seed=3)
    assert list(a) == [2, 4, 8]
    for c in a:
        torch.testing.assert_close(a[c].recon, b[c].recon, rtol=0, atol=0)
        with torch.no_grad():
            again = model(img, c, fill="test", masks=a[c].masks)
        torch.testing.assert_close(a[c].recon, again.recon)
    assert not torch.equal(a[2].masks, model.reconstruct_all(img, (2,), seed=4)[2].masks)


def test_per_image_masks_equal_one_pass_per_image_with_its_masks() -> None:
    """``masks [K, B, 1, H, W]`` (one set per image, the trainer's batched validation) gives each
    image what a pass with its own ``[K, 1, H, W]`` set gives it."""
    cfg = get_config("smoke")
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    img = _img(3, 32, 32)
    sets = [disjoint_masks(32, 32, c, 3, generator=torch.Generator().manual_seed(c)) for c in (4, 8, 16)]
    with torch.no_grad():
        batched = model(img, 4, fill="train", masks=torch.stack(sets, dim=1))
        for i, m in enumerate(sets):
            one = model(img[i : i + 1], 4, fill="train", masks=m)
            torch.testing.assert_close(batched.recon[i : i + 1], one.recon, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(batched.inpaint[i : i + 1], one.inpaint, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(batched.filled[:, i : i + 1], one.filled, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"masks must be \[K, 1, 32, 32\] or \[K, 3, 1, 32, 32\]"):
        model(img, 4, masks=torch.stack(sets[:2], dim=1))
