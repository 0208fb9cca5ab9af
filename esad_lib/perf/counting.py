"""Parameters and multiply-accumulates (MACs) of the networks (ESAD's abstract: "a lightweight
U-Net to meet industrial requirements"; we measure the sizes).  Forward hooks count the layers
that carry almost all of the arithmetic (not the element-wise ones, < 1 % here), in the pass
actually run (padded sizes); ``tests/test_models_counting.py`` checks them by hand and against
``torch.utils.flop_counter.FlopCounterMode``::

    Conv2d           MACs = B * C_out * H_out * W_out * (C_in / groups) * k_h * k_w
    ConvTranspose2d  MACs = B * C_in  * H_in  * W_in  * (C_out / groups) * k_h * k_w
    Linear           MACs = (#output elements) * in_features"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from esad_lib.method.model import build_model, model_fills
from esad_lib.method.unet import unet_widths


def count_parameters(module: nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in module.parameters())


def layer_macs(layer: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    """MACs of one forward call of a Conv2d / ConvTranspose2d / Linear layer (0 for others)."""
    if isinstance(layer, nn.Linear):
        return out.numel() * layer.in_features  # (#outputs) * in_features
    if not isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
        return 0
    kernel = layer.kernel_size[0] * layer.kernel_size[1]
    if isinstance(layer, nn.Conv2d):
        # B * C_out * H_out * W_out * (C_in / groups) * k_h * k_w
        return out.numel() * (layer.in_channels // layer.groups) * kernel
    # B * C_in * H_in * W_in * (C_out / groups) * k_h * k_w
    return inp.numel() * (layer.out_channels // layer.groups) * kernel


class MacCounter:
    """MACs of every counted layer while active: ``.total`` and ``.by_module`` (name -> MACs)."""

    def __init__(self) -> None:
        self.total, self.by_module = 0, {}

    def add(self, name: str, layer: nn.Module, inputs: tuple[Any, ...], out: torch.Tensor) -> None:
        """A forward hook's body (``functools.partial(add, name)``)."""
        macs = layer_macs(layer, inputs[0], out)
        self.total += macs
        self.by_module[name] = self.by_module.get(name, 0) + macs


@contextlib.contextmanager
def mac_counter(module: nn.Module) -> Iterator[MacCounter]:
    """Count the MACs of every forward pass of ``module`` run inside the ``with`` block."""
    counter, kinds = MacCounter(), (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
    handles = [m.register_forward_hook(functools.partial(counter.add, n))
               for n, m in module.named_modules() if isinstance(m, kinds)]
    try:
        yield counter
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def _eval_no_grad(module: nn.Module) -> Iterator[nn.Module]:
    was_training = module.training
    try:
        with torch.no_grad():
            yield module.eval()  # eval: BatchNorm running statistics untouched
    finally:
        module.train(was_training)


def count_macs(module: nn.Module, input_shape: tuple[int, ...], **forward_kwargs: Any) -> int:
    """MACs of one eval-mode, no-grad forward of ``module`` on zeros of ``input_shape`` ([1,3,H,W]);
    keyword arguments go to ``forward``."""
    p = next(module.parameters(), None)
    device, dtype = (p.device, p.dtype) if p is not None else (torch.device("cpu"), torch.float32)
    with _eval_no_grad(module), mac_counter(module) as counter:
        module(torch.zeros(tuple(input_shape), device=device, dtype=dtype), **forward_kwargs)
    return counter.total


def model_info(cfg: Any, image_size: tuple[int, int] | None = None, device: str = "meta") -> dict[str, Any]:
    """Size and cost of ``build_model(cfg)``: per network ``params`` and ``macs`` (one image), the
    ``total_params``, the ``scoring_macs`` of scoring one image (``scoring_passes`` per net).
    Built on the ``meta`` device by default: shapes only (``"cpu"``: the same numbers)."""
    h, w = tuple(image_size or cfg.image_size)
    with torch.device(device):
        model = build_model(cfg)
    pairs = (("inpaint_net", model.inpaint_net), ("recon_net", model.recon_net))
    nets = {name: {"params": count_parameters(net), "macs": count_macs(net, (1, 3, h, w))}
            for name, net in pairs if net is not None}
    test_fill = model_fills(cfg)[1]
    img = torch.zeros(1, 3, h, w, device=device)
    with _eval_no_grad(model), mac_counter(model) as counter:
        model.reconstruct_all(img, cfg.cutout_sizes, test_fill, cfg.fill_alpha)
    return {"method": cfg.method, "unet": cfg.unet, "base_width": cfg.base_width,
            "widths": unet_widths(cfg.base_width), "image_size": (h, w), "num_masks": model.num_masks,
            "cutout_sizes": tuple(cfg.cutout_sizes), "test_fill": test_fill, "networks": nets,
            "total_params": count_parameters(model),
            "scoring_passes": len(tuple(cfg.cutout_sizes)) * model.num_masks, "scoring_macs": counter.total}


def _human(n: float) -> str:
    scaled = (f"{n / s:.2f} {u}" for u, s in (("G", 1e9), ("M", 1e6), ("k", 1e3)) if abs(n) >= s)
    return next(scaled, f"{n:.0f}")


def format_model_info(info: dict[str, Any]) -> str:
    """A short human-readable table of ``model_info``'s dict."""
    h, w = info["image_size"]
    return "\n".join([
        f"method={info['method']}  unet={info['unet']}  widths={info['widths']}  image={h}x{w}",
        f"{'network':<14}{'parameters':>16}{'MACs / image':>18}",
        *(f"{name:<14}{d['params']:>16,}{_human(d['macs']):>18}" for name, d in info["networks"].items()),
        f"{'total':<14}{info['total_params']:>16,}",
        f"full test-time scoring of one image: {len(info['cutout_sizes'])} cutout sizes "
        f"{info['cutout_sizes']} x {info['num_masks']} masks = {info['scoring_passes']} passes per network, "
        f"fill={info['test_fill']}: {_human(info['scoring_macs'])} MACs ({info['scoring_macs']:,})",
    ])
