"""Rows "where a U-Net forward spends its time": seconds and MACs per layer kind (forward hooks),
lightweight vs classic U-Net, NCHW vs channels_last."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

import torch

from benchmarks.workloads import cfg_for, random_images, seeded_model
from esad_lib.perf.counting import mac_counter
from esad_lib.perf.speed import sync


def layer_kind(m: torch.nn.Module) -> str | None:
    """The cost category of a leaf module (None: not timed separately)."""
    if isinstance(m, torch.nn.Conv2d):
        k = "x".join(str(v) for v in m.kernel_size)
        if m.groups > 1 and m.groups == m.in_channels == m.out_channels:
            return f"depthwise {k} conv"
        if m.groups > 1:
            return f"grouped {k} conv (groups = C_in, expand)"
        return f"dense {k} conv"
    if isinstance(m, torch.nn.ConvTranspose2d):
        return "transposed 2x2 conv"
    if isinstance(m, torch.nn.BatchNorm2d):
        return "BatchNorm"
    if isinstance(m, torch.nn.ReLU):
        return "ReLU"
    if isinstance(m, torch.nn.MaxPool2d):
        return "max-pool"
    return None


def layer_breakdown(
    net: torch.nn.Module, x: torch.Tensor, device: torch.device, repeats: int = 2
) -> dict[str, dict[str, float]]:
    """Seconds and MACs per layer kind of ``net(x)`` (forward hooks, eval + inference_mode).

    "other" = whole forward minus the timed layers (concatenation, residual adds, padding,
    tanh, Python overhead).  The hooks add a little overhead of their own; shares are what count.
    """
    acc: dict[str, dict[str, float]] = {}
    starts: dict[int, float] = {}

    def pre(m, _inp):
        sync(device)
        starts[id(m)] = time.perf_counter()

    def post(m, _inp, _out):
        sync(device)
        d = acc.setdefault(layer_kind(m), {"s": 0.0, "macs": 0.0, "calls": 0})
        d["s"] += time.perf_counter() - starts.pop(id(m))
        d["calls"] += 1

    handles = []
    for m in net.modules():
        if layer_kind(m) is not None:
            handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    total = 0.0
    kinds = {name: layer_kind(m) for name, m in net.named_modules()}
    macs: dict[str | None, float] = {}
    try:
        with torch.inference_mode():
            with mac_counter(net) as counter:  # the warm-up pass counts the MACs of one forward
                net(x)
            for name, n in counter.by_module.items():
                macs[kinds[name]] = macs.get(kinds[name], 0.0) + n
            acc.clear()
            for _ in range(repeats):
                sync(device)
                t0 = time.perf_counter()
                net(x)
                sync(device)
                total += time.perf_counter() - t0
    finally:
        for h in handles:
            h.remove()
    for kind, d in acc.items():
        d["macs"] = macs.get(kind, 0.0) * repeats
    timed = sum(d["s"] for d in acc.values())
    acc["other (cat, add, pad, tanh, Python)"] = {"s": max(total - timed, 0.0), "macs": 0.0, "calls": 0}
    out = {}
    for kind, d in sorted(acc.items(), key=lambda kv: -kv[1]["s"]):
        out[kind] = {
            "ms": 1000.0 * d["s"] / repeats,
            "share": d["s"] / total if total else 0.0,
            "gmacs": d["macs"] / repeats / 1e9,
            "gmac_per_s": (d["macs"] / d["s"] / 1e9) if d["s"] > 0 and d["macs"] else None,
            "calls": int(d["calls"] / repeats),
        }
    out["total"] = {
        "ms": 1000.0 * total / repeats,
        "share": 1.0,
        "gmacs": sum(v["gmacs"] for v in out.values()),
    }
    return out


def section_layers(st: dict, device: torch.device, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Where one U-Net forward spends its time, per layer kind: lightweight vs classic, NCHW vs
    channels_last, on the K-image batch of one cutout size at the profile's resolution."""
    rows = []
    for method in ("esad", "riad"):
        cfg = cfg_for(st["profile"], method, str(device))
        net = seeded_model(cfg, device).recon_net.eval()
        x = random_images(int(cfg.num_masks), cfg.image_size, cfg.seed + 5).to(device)
        for fmt in ("NCHW", "channels_last"):
            n, xx = net, x
            if fmt == "channels_last":
                n = copy.deepcopy(net).to(memory_format=torch.channels_last)
                xx = x.contiguous(memory_format=torch.channels_last)
            bd = layer_breakdown(n, xx, device, repeats=st["layer_repeats"])
            rows.append(
                {"net": f"{cfg.unet} ({method})", "format": fmt, "batch": int(x.shape[0]), "kinds": bd}
            )
            log(f"layers: {cfg.unet} {fmt} done")
    return rows
