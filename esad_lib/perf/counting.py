"""Parameters and multiply-accumulates (MACs) of the networks (ESAD's abstract: "a lightweight
U-Net to meet industrial requirements"; the paper compares sizes, we measure them).

MACs are counted with forward hooks on the layers that carry almost all of the arithmetic:

    Conv2d           MACs = B * C_out * H_out * W_out * (C_in / groups) * k_h * k_w
    ConvTranspose2d  MACs = B * C_in  * H_in  * W_in  * (C_out / groups) * k_h * k_w
    Linear           MACs = (#output elements) * in_features

BatchNorm, ReLU, pooling, tanh, the fill arithmetic and ECA's 1-D conv (``Conv1d``, a few
MACs per channel) are not counted -- they are element-wise and together well under 1 % here.
The counts are of *the forward pass actually run*, so an input not divisible by 16 is counted
at its padded size.  ``tests/test_models_counting.py`` checks one layer by hand and the whole
U-Net against ``torch.utils.flop_counter.FlopCounterMode`` (MACs = FLOPs / 2).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from esad_lib.method.model import model_fills

__all__ = [
    "count_parameters",
    "count_macs",
    "layer_macs",
    "mac_counter",
    "MacCounter",
    "model_info",
    "format_model_info",
]


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def layer_macs(layer: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    """MACs of one forward call of a Conv2d / ConvTranspose2d / Linear layer (0 for others)."""
    if isinstance(layer, nn.Conv2d):
        kh, kw = layer.kernel_size
        # B * C_out * H_out * W_out * (C_in / groups) * k_h * k_w
        return out.numel() * (layer.in_channels // layer.groups) * kh * kw
    if isinstance(layer, nn.ConvTranspose2d):
        kh, kw = layer.kernel_size
        # B * C_in * H_in * W_in * (C_out / groups) * k_h * k_w
        return inp.numel() * (layer.out_channels // layer.groups) * kh * kw
    if isinstance(layer, nn.Linear):
        # (#outputs) * in_features
        return out.numel() * layer.in_features
    return 0


class MacCounter:
    """Accumulates MACs of every counted layer while active; ``.total`` and ``.by_module``."""

    def __init__(self) -> None:
        self.total = 0
        self.by_module: dict[str, int] = {}

    def hook(self, name: str):
        def fn(layer: nn.Module, inputs: tuple[Any, ...], out: torch.Tensor) -> None:
            macs = layer_macs(layer, inputs[0], out)
            self.total += macs
            self.by_module[name] = self.by_module.get(name, 0) + macs

        return fn


@contextlib.contextmanager
def mac_counter(module: nn.Module) -> Iterator[MacCounter]:
    """Count the MACs of every forward pass of ``module`` run inside the ``with`` block."""
    counter = MacCounter()
    handles = [
        m.register_forward_hook(counter.hook(name))
        for name, m in module.named_modules()
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))
    ]
    try:
        yield counter
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def _eval_no_grad(module: nn.Module) -> Iterator[None]:
    was_training = module.training
    module.eval()  # do not touch BatchNorm running statistics
    try:
        with torch.no_grad():
            yield
    finally:
        module.train(was_training)


def count_macs(module: nn.Module, input_shape: tuple[int, ...], **forward_kwargs: Any) -> int:
    """MACs of one forward pass of ``module`` on a zero input of ``input_shape`` (e.g. [1,3,H,W]).

    Extra keyword arguments go to ``forward`` (e.g. ``cutout_size=8, fill="test"`` for an
    ``ESADModel``).  Runs in eval mode without gradients; the module's mode is restored.
    """
    try:
        p = next(module.parameters())
        device, dtype = p.device, p.dtype
    except StopIteration:
        device, dtype = torch.device("cpu"), torch.float32
    x = torch.zeros(tuple(input_shape), device=device, dtype=dtype)
    with _eval_no_grad(module), mac_counter(module) as counter:
        module(x, **forward_kwargs)
    return counter.total


def model_info(cfg: Any, image_size: tuple[int, int] | None = None, device: str = "meta") -> dict[str, Any]:
    """Size and cost of the model ``build_model(cfg)`` builds.

    Returns a dict with, per network (``inpaint_net``, ``recon_net``): ``params`` and ``macs``
    (one image ``[1, 3, H, W]``); ``total_params``; ``scoring_macs`` -- MACs of the full
    test-time scoring of one image (every cutout size of ``cfg.cutout_sizes`` x ``K`` masks,
    through both nets), measured by running ``reconstruct_all`` under the counter; and
    ``scoring_passes`` -- forward passes per network in that scoring.

    By default the model is built on PyTorch's ``meta`` device: shapes only, no memory and no
    arithmetic, so counting the paper-size nets takes well under a second.  Pass
    ``device="cpu"`` to count with a real forward pass (same numbers; a test checks it).
    """
    from esad_lib.method.model import build_model

    h, w = tuple(image_size or cfg.image_size)
    with torch.device(device):
        model = build_model(cfg)
    nets: dict[str, dict[str, int]] = {}
    for name in ("inpaint_net", "recon_net"):
        net = getattr(model, name)
        if net is not None:
            nets[name] = {"params": count_parameters(net), "macs": count_macs(net, (1, 3, h, w))}
    img = torch.zeros(1, 3, h, w, device=device)
    with _eval_no_grad(model), mac_counter(model) as counter:
        model.reconstruct_all(img, cfg.cutout_sizes, fill=model_fills(cfg)[1], alpha=cfg.fill_alpha)
    return {
        "method": cfg.method,
        "unet": cfg.unet,
        "base_width": cfg.base_width,
        "widths": tuple(cfg.base_width * f for f in (1, 2, 4, 8, 8)),
        "image_size": (h, w),
        "num_masks": model.num_masks,
        "cutout_sizes": tuple(cfg.cutout_sizes),
        "test_fill": model_fills(cfg)[1],
        "networks": nets,
        "total_params": count_parameters(model),
        "scoring_passes": len(tuple(cfg.cutout_sizes)) * model.num_masks,
        "scoring_macs": counter.total,
    }


def _human(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f}"


def format_model_info(info: dict[str, Any]) -> str:
    """A short human-readable table of ``model_info``'s dict."""
    h, w = info["image_size"]
    lines = [
        f"method={info['method']}  unet={info['unet']}  widths={info['widths']}  image={h}x{w}",
        f"{'network':<14}{'parameters':>16}{'MACs / image':>18}",
    ]
    for name, d in info["networks"].items():
        lines.append(f"{name:<14}{d['params']:>16,}{_human(d['macs']):>18}")
    lines.append(f"{'total':<14}{info['total_params']:>16,}")
    lines.append(
        f"full test-time scoring of one image: {len(info['cutout_sizes'])} cutout sizes "
        f"{info['cutout_sizes']} x {info['num_masks']} masks = {info['scoring_passes']} passes per network, "
        f"fill={info['test_fill']}: {_human(info['scoring_macs'])} MACs ({info['scoring_macs']:,})"
    )
    return "\n".join(lines)
