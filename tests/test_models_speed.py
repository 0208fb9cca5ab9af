"""The inference-latency helpers of ``esad_lib.perf.speed`` (notebook 02) time the same function
in every layout, interleaved, and summarise the repeats correctly (the training opt-ins of the
same module are tested in ``tests/test_perf_optins.py``)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from esad_lib.method import build_unet
from esad_lib.perf.speed import (
    LATENCY_LAYOUTS,
    forward_latency,
    interleaved_samples,
    latency_spread,
    layout_variant,
)


def _tiny_nets(dtype: torch.dtype = torch.float32) -> dict[str, nn.Module]:
    """The lightweight and the classic U-Net at width 4, with non-trivial BatchNorm statistics
    (so that folding them changes the weights)."""
    torch.manual_seed(0)
    nets = {kind: build_unet(kind, 4).to(dtype) for kind in ("lightweight", "classic")}
    for net in nets.values():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.uniform_(-0.1, 0.1)
    return nets


def test_layout_variants_compute_the_same_function_and_leave_the_inputs_alone() -> None:
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64) * 2 - 1
    for net in _tiny_nets(torch.float64).values():
        net.train()  # the variants are eval-mode copies; the caller's module keeps its mode
        before = copy.deepcopy(net.state_dict())
        with torch.no_grad():
            ref = copy.deepcopy(net).eval()(x)
        for layout in LATENCY_LAYOUTS:
            module, xx = layout_variant(net, x, layout)
            assert not module.training and module is not net
            fmt = torch.contiguous_format if layout == "NCHW" else torch.channels_last
            assert xx.is_contiguous(memory_format=fmt) and torch.equal(xx, x)
            # (a 1x1 kernel or a one-pixel tensor is contiguous in both layouts: check the wanted one)
            assert all(p.is_contiguous(memory_format=fmt) for p in module.parameters() if p.dim() == 4)
            if layout != "NCHW":
                assert not xx.is_contiguous()
            folded = layout.endswith("BN folded")
            assert any(isinstance(m, nn.BatchNorm2d) for m in module.modules()) != folded
            with torch.no_grad():
                torch.testing.assert_close(module(xx), ref, rtol=0, atol=1e-10)
        assert net.training and x.is_contiguous()
        for k, v in net.state_dict().items():
            assert torch.equal(v, before[k]), k
    with pytest.raises(ValueError, match="NHWC"):
        layout_variant(net, x, "NHWC")
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        layout_variant(net, x[0], "NCHW")


def test_forward_latency_rows_are_well_formed_and_timed_in_one_interleaved_loop() -> None:
    nets = _tiny_nets()
    calls: list[str] = []
    for name, net in nets.items():  # hooks travel with the copies: they record every forward
        net.register_forward_hook(lambda m, i, o, name=name: calls.append(name))
    rows = forward_latency(nets, (1, 3, 32, 32), repeats=3, warmup=1, seed=0)
    assert len(rows) == len(nets) * len(LATENCY_LAYOUTS) * 3
    assert {(r["net"], r["layout"]) for r in rows} == {(n, lay) for n in nets for lay in LATENCY_LAYOUTS}
    assert sorted(r["repeat"] for r in rows if r["net"] == "classic" and r["layout"] == "NCHW") == [0, 1, 2]
    assert all(math.isfinite(r["ms"]) and r["ms"] > 0 for r in rows)
    # one loop: warm-up round, then every repeat runs all six pairs, the starting pair rotating
    pairs = [n for n in nets for _ in LATENCY_LAYOUTS]
    expected = pairs + [p for r in range(3) for p in pairs[r:] + pairs[:r]]
    assert calls == expected
    # only the requested layouts; the summary has one row per pair with ordered statistics
    rows = forward_latency(nets, (2, 3, 16, 16), layouts=("NCHW", "channels_last"), repeats=2, warmup=0)
    spread = latency_spread(rows)
    wanted = [(n, lay) for n in nets for lay in ("NCHW", "channels_last")]
    assert [(s["net"], s["layout"]) for s in spread] == wanted
    for s in spread:
        assert s["n"] == 2 and s["min_ms"] <= s["q1_ms"] <= s["median_ms"] <= s["q3_ms"] <= s["max_ms"]
    for bad, match in (
        ({"repeats": 0}, "repeats"),
        ({"input_shape": (3, 16, 16)}, "input_shape"),
        ({"layouts": ("NHWC",)}, "NHWC"),
    ):
        kwargs = {"input_shape": (1, 3, 16, 16), **bad}
        with pytest.raises(ValueError, match=match):
            forward_latency(nets, **kwargs)
    with pytest.raises(ValueError, match="a net"):
        forward_latency({}, (1, 3, 16, 16))


def test_latency_spread_is_the_hand_computed_median_and_quartiles() -> None:
    ms = [4.0, 1.0, 10.0, 3.0, 2.0]
    rows = [{"net": "a", "layout": "NCHW", "repeat": r, "ms": v} for r, v in enumerate(ms)]
    rows.append({"net": "b", "layout": "channels_last", "repeat": 0, "ms": 7.0})
    a, b = latency_spread(rows)
    # sorted 1, 2, 3, 4, 10: median 3; quartiles at positions 1 + p (n - 1) = 2 and 4 -> 2 and 4
    assert (a["net"], a["layout"], a["n"]) == ("a", "NCHW", 5)
    assert (a["median_ms"], a["q1_ms"], a["q3_ms"], a["min_ms"], a["max_ms"]) == (3.0, 2.0, 4.0, 1.0, 10.0)
    assert (a["q1_ms"], a["q3_ms"]) == tuple(np.percentile(ms, [25, 75]))
    even = latency_spread([{"net": "c", "layout": "NCHW", "ms": v} for v in (1.0, 2.0, 4.0, 8.0)])[0]
    quartiles = tuple(np.percentile([1, 2, 4, 8], [25, 50, 75]))  # 1.75, 3.0, 5.0
    assert (even["q1_ms"], even["median_ms"], even["q3_ms"]) == quartiles
    assert (b["n"], b["median_ms"], b["q1_ms"], b["q3_ms"]) == (1, 7.0, 7.0, 7.0)


def test_interleaved_samples_keeps_every_repeat_with_or_without_a_progress_bar() -> None:
    for progress in (None, "timing"):
        calls: list[str] = []
        fns = {n: (lambda n=n, calls=calls: calls.append(n)) for n in "ab"}
        times = interleaved_samples(fns, repeats=3, warmup=0, device=torch.device("cpu"), progress=progress)
        assert calls == ["a", "b", "b", "a", "a", "b"]
        assert {n: len(t) for n, t in times.items()} == {"a": 3, "b": 3}
        assert all(t >= 0 for ts in times.values() for t in ts)
