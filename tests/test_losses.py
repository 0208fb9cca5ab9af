"""Losses against hand-computed values and brute-force numpy loops; gradients flow."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from esad_lib.config import get_config
from esad_lib.features import build_feature_extractor
from esad_lib.method.loss import (
    ESADLoss,
    FeatureLoss,
    gaussian_window,
    l2_loss,
    loss_extractor,
    msgms_loss,
    msgms_map,
    ssim,
    ssim_loss,
)

C1 = (0.01 * 2.0) ** 2
C2 = (0.03 * 2.0) ** 2


def _rand(shape, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1


def test_l2_hand_computed() -> None:
    x = torch.zeros(2, 3, 4, 4)
    y = torch.full((2, 3, 4, 4), 0.5)
    y[0, 0, 0, 0] = 2.5
    # 95 squared differences of 0.25 and one of 2.5^2 = 6.25, mean over 96 elements
    assert l2_loss(x, y).item() == pytest.approx((95 * 0.25 + 6.25) / 96)


def test_ssim_identity_and_constant_images() -> None:
    x = _rand((2, 3, 16, 16), 0)
    torch.testing.assert_close(ssim(x, x), torch.ones(2, dtype=torch.float64))
    # constant images a, b: variances and covariance vanish ->
    # SSIM = (2ab + C1) C2 / ((a^2 + b^2 + C1) C2) = (2ab + C1) / (a^2 + b^2 + C1)
    a, b = 0.5, -0.25
    xa = torch.full((1, 3, 12, 12), a, dtype=torch.float64)
    xb = torch.full((1, 3, 12, 12), b, dtype=torch.float64)
    want = (2 * a * b + C1) / (a * a + b * b + C1)
    assert ssim(xa, xb).item() == pytest.approx(want, rel=1e-12)
    assert ssim_loss(xa, xb).item() == pytest.approx(1 - want, rel=1e-12)


def _ssim_numpy(x: np.ndarray, y: np.ndarray, ws: int = 11, sigma: float = 1.5) -> float:
    """Textbook SSIM with explicit loops over channels and valid window positions."""
    k = np.arange(ws) - (ws - 1) / 2
    g = np.exp(-(k**2) / (2 * sigma**2))
    win = np.outer(g, g) / np.outer(g, g).sum()
    vals = []
    for c in range(x.shape[0]):
        for i in range(x.shape[1] - ws + 1):
            for j in range(x.shape[2] - ws + 1):
                px, py = x[c, i : i + ws, j : j + ws], y[c, i : i + ws, j : j + ws]
                mx, my = (win * px).sum(), (win * py).sum()
                vx = (win * (px - mx) ** 2).sum()
                vy = (win * (py - my) ** 2).sum()
                cxy = (win * (px - mx) * (py - my)).sum()
                vals.append((2 * mx * my + C1) * (2 * cxy + C2) / ((mx**2 + my**2 + C1) * (vx + vy + C2)))
    return float(np.mean(vals))


def test_ssim_matches_numpy_loop() -> None:
    x = _rand((2, 2, 14, 15), 1)
    y = (x + 0.3 * _rand((2, 2, 14, 15), 2)).clamp(-1, 1)
    got = ssim(x, y)
    for b in range(2):
        assert got[b].item() == pytest.approx(_ssim_numpy(x[b].numpy(), y[b].numpy()), abs=1e-10)


def test_gaussian_window() -> None:
    w = gaussian_window(11, 1.5, dtype=torch.float64)
    assert w.shape == (11, 11)
    assert w.sum().item() == pytest.approx(1.0)
    assert w[5, 5] == w.max() and w[0, 0] == w.min()
    # separable: w[i, j] = g_i g_j with g_i proportional to exp(-(i-5)^2 / 4.5)
    assert (w[5, 6] / w[5, 5]).item() == pytest.approx(np.exp(-1 / 4.5))


def _gms_numpy(x: np.ndarray, y: np.ndarray, c: float = 0.0026) -> np.ndarray:
    """GMS map of two grey images with explicit loops: Prewitt/3, replicate border."""
    h, w = x.shape

    def grad(img: np.ndarray, i: int, j: int) -> float:
        p = lambda a, b: img[min(max(a, 0), h - 1), min(max(b, 0), w - 1)]
        gx = sum(p(i + d, j - 1) - p(i + d, j + 1) for d in (-1, 0, 1)) / 3
        gy = sum(p(i - 1, j + d) - p(i + 1, j + d) for d in (-1, 0, 1)) / 3
        return np.sqrt(gx * gx + gy * gy + 1e-12)

    out = np.zeros((h, w))
    for i in range(h):
        for j in range(w):
            mx, my = grad(x, i, j), grad(y, i, j)
            out[i, j] = (2 * mx * my + c) / (mx * mx + my * my + c)
    return out


def test_msgms_single_scale_matches_numpy_loop() -> None:
    x, y = _rand((2, 3, 9, 10), 3), _rand((2, 3, 9, 10), 4)
    got = msgms_map(x, y, scales=1)
    for b in range(2):
        want = _gms_numpy(x[b].mean(0).numpy(), y[b].mean(0).numpy())
        np.testing.assert_allclose(got[b, 0].numpy(), want, atol=1e-12)


def test_msgms_multi_scale_is_mean_of_upsampled_scales() -> None:
    x, y = _rand((1, 3, 16, 16), 5), _rand((1, 3, 16, 16), 6)
    xg, yg = x.mean(1, keepdim=True), y.mean(1, keepdim=True)
    maps = []
    for _scale in range(4):
        g = torch.from_numpy(_gms_numpy(xg[0, 0].numpy(), yg[0, 0].numpy()))[None, None]
        maps.append(F.interpolate(g, size=(16, 16), mode="bilinear", align_corners=False))
        xg, yg = F.avg_pool2d(xg, 2), F.avg_pool2d(yg, 2)
    want = torch.stack(maps).mean(0)
    torch.testing.assert_close(msgms_map(x, y), want, atol=1e-12, rtol=0)
    assert msgms_loss(x, y).item() == pytest.approx((1 - want).mean().item(), abs=1e-12)


def test_msgms_analytic_ramp() -> None:
    # horizontal ramps x = a*j, y = b*j: interior Prewitt/3 gradient 2|a|, so
    # GMS = (2 * 2a * 2b + c) / (4a^2 + 4b^2 + c); at the first/last column (replicate border) |a|.
    a, b, c = 0.1, 0.05, 0.0026
    j = torch.arange(8, dtype=torch.float64)
    x = (a * j).expand(1, 3, 6, 8).clone()
    y = (b * j).expand(1, 3, 6, 8).clone()
    m = msgms_map(x, y, scales=1)[0, 0]
    inner = (8 * a * b + c) / (4 * a * a + 4 * b * b + c)
    border = (2 * a * b + c) / (a * a + b * b + c)
    assert torch.allclose(m[:, 1:-1], torch.full_like(m[:, 1:-1], inner), atol=1e-9)
    assert torch.allclose(m[:, 0], torch.full_like(m[:, 0], border), atol=1e-9)


def test_msgms_constant_images_are_identical_structure() -> None:
    # constant images have zero gradient everywhere: GMS = c / c = 1, loss 0 (replicate padding)
    x = torch.full((1, 3, 16, 16), 0.7)
    y = torch.full((1, 3, 16, 16), -0.3)
    assert msgms_loss(x, y).item() == pytest.approx(0.0, abs=1e-6)
    assert msgms_loss(x, x).item() == pytest.approx(0.0, abs=1e-7)


class _Identity(nn.Module):
    """'Extractor' returning the image itself and a 2x downsampled copy (hand-checkable)."""

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x, F.avg_pool2d(x, 2)]


def test_feature_loss_hand_computed() -> None:
    x = _rand((2, 3, 8, 8), 7)
    assert FeatureLoss(_Identity())(x, x).item() == pytest.approx(0.0, abs=1e-12)
    # cosine: y = 2x -> cos 1 -> 0 ; y = -x -> cos -1 -> 2 (per position, both layers)
    assert FeatureLoss(_Identity())(x, 2 * x).item() == pytest.approx(0.0, abs=1e-12)
    assert FeatureLoss(_Identity())(x, -x).item() == pytest.approx(2.0, abs=1e-12)
    # mse: y = x + 0.5 -> both layers 0.25
    assert FeatureLoss(_Identity(), distance="mse")(x, x + 0.5).item() == pytest.approx(0.25)


def test_esad_loss_is_weighted_sum_of_parts() -> None:
    cfg = get_config("smoke").replace(w_l2=2.0, w_ssim=0.5, w_msgms=3.0, w_feature=0.7, w_inpaint=0.25)
    loss = ESADLoss(cfg, extractor=_Identity())
    img = _rand((2, 3, 16, 16), 8).float()
    recon = (img + 0.2 * _rand((2, 3, 16, 16), 9).float()).requires_grad_(True)
    inpaint = (img + 0.4 * _rand((2, 3, 16, 16), 10).float()).requires_grad_(True)
    total, parts = loss(img, recon, inpaint)

    def terms(out: torch.Tensor) -> float:
        return (
            2.0 * l2_loss(out, img).item()
            + 0.5 * ssim_loss(out, img).item()
            + 3.0 * msgms_loss(out, img).item()
            + 0.7 * FeatureLoss(_Identity())(img, out).item()
        )

    want = terms(recon) + 0.25 * terms(inpaint)
    assert total.item() == pytest.approx(want, rel=1e-5)
    assert parts["total"] == pytest.approx(want, rel=1e-5)
    assert set(parts) == {
        f"{o}_{t}" for o in ("recon", "inpaint") for t in ("l2", "ssim", "msgms", "feature")
    } | {"total"}
    assert all(isinstance(v, float) for v in parts.values())
    total.backward()
    for t in (recon, inpaint):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def test_riad_loss_without_inpaint_or_features() -> None:
    cfg = get_config("smoke").replace(w_feature=0.0)
    loss = ESADLoss(cfg)
    img = _rand((1, 3, 16, 16), 11).float()
    total, parts = loss(img, img.clone())
    assert set(parts) == {"recon_l2", "recon_ssim", "recon_msgms", "total"}
    assert total.item() == pytest.approx(0.0, abs=1e-5)


def test_gradients_finite_at_perfect_reconstruction() -> None:
    # sqrt(gx^2 + gy^2 + eps) keeps MSGMS differentiable on flat regions and at x == y
    cfg = get_config("smoke")
    loss = ESADLoss(cfg)  # builds the default offline extractor from the config
    img = torch.zeros(1, 3, 16, 16)
    recon = img.clone().requires_grad_(True)
    total, _ = loss(img, recon, recon)
    total.backward()
    assert torch.isfinite(recon.grad).all()


def test_loss_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="of one shape"):
        l2_loss(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 9))
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="loss_feature_extractor='recon_encoder' is not allowed"):
        ESADLoss(get_config("smoke").replace(loss_feature_extractor="recon_encoder"))


def test_feature_loss_extractor_is_loss_feature_extractor_only() -> None:
    """The loss reads ``cfg.loss_feature_extractor``; ``cfg.feature_extractor`` is scoring's alone."""
    cfg = get_config("smoke")
    img = _rand((2, 3, 16, 16), 14).float()
    recon = (img + 0.3 * _rand((2, 3, 16, 16), 15).float()).clamp(-1, 1)
    extractor = build_feature_extractor(cfg.loss_feature_extractor)
    want, want_parts = ESADLoss(cfg, extractor=extractor)(img, recon)
    # another SCORING extractor (one that cannot even be built without a model) changes nothing
    got, got_parts = ESADLoss(cfg.replace(feature_extractor="recon_encoder"))(img, recon)
    assert got.item() == want.item() and got_parts == want_parts
    # the trainer's path, loss_extractor(cfg), builds the same extractor; "recon_encoder" cannot
    # be the LOSS extractor (there is no trained net while training; config.py says so too)
    assert ESADLoss(cfg, loss_extractor(cfg))(img, recon)[1] == want_parts
    with pytest.raises(ValueError, match="no trained net"):
        loss_extractor(cfg.replace(loss_feature_extractor="recon_encoder"))


def test_loss_is_float32_inside_autocast() -> None:
    # mixed precision (the trainer's autocast) must not change the loss: it is computed in float32
    cfg = get_config("smoke").replace(w_feature=0.0)  # SSIM's variances are the fragile part
    loss = ESADLoss(cfg)
    img = _rand((2, 3, 16, 16), 12).float()
    recon = (img + 0.1 * _rand((2, 3, 16, 16), 13).float()).clamp(-1, 1)
    want, _ = loss(img, recon, recon)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, _ = loss(img.bfloat16(), recon, recon)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(want.item(), rel=1e-2)


@pytest.mark.parametrize("distance", ["cosine", "mse"])
def test_esad_loss_equals_public_terms_values_and_gradients(distance: str) -> None:
    """``ESADLoss``'s value and gradients equal the weighted sum of the public terms computed
    one output at a time with a real extractor (the docstring's formula, term by term)."""
    cfg = get_config("smoke").replace(
        w_l2=1.5, w_ssim=0.5, w_msgms=2.0, w_feature=0.3, w_inpaint=0.4, feature_loss_distance=distance
    )
    extractor = build_feature_extractor(cfg.loss_feature_extractor)
    loss = ESADLoss(cfg, extractor=extractor)
    img = _rand((3, 3, 24, 24), 21).float()
    base_r = (img + 0.3 * _rand((3, 3, 24, 24), 22).float()).clamp(-1, 1)
    base_i = (img + 0.5 * _rand((3, 3, 24, 24), 23).float()).clamp(-1, 1)
    feat = FeatureLoss(extractor, distance=distance)

    def one_by_one(recon: torch.Tensor, inpaint: torch.Tensor) -> torch.Tensor:
        def terms(out: torch.Tensor) -> torch.Tensor:
            return (
                1.5 * l2_loss(out, img)
                + 0.5 * ssim_loss(out, img)
                + 2.0 * msgms_loss(out, img)
                + 0.3 * feat(img, out)
            )

        return terms(recon) + 0.4 * terms(inpaint)

    grads = []
    values = []
    for fn in (lambda r, i: loss(img, r, i)[0], one_by_one):
        r, i = base_r.clone().requires_grad_(True), base_i.clone().requires_grad_(True)
        v = fn(r, i)
        v.backward()
        values.append(v.item())
        grads.append((r.grad, i.grad))
    assert values[0] == pytest.approx(values[1], rel=1e-6)
    for a, b in zip(grads[0], grads[1]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
