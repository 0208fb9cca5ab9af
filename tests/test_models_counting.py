"""Parameter and MAC counting: by hand, against FlopCounterMode, per full scoring; the CLI."""

from __future__ import annotations

import argparse

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from esad_lib.cli.models import register
from esad_lib.config import get_config
from esad_lib.method import LightweightUNet, build_model, build_unet
from esad_lib.perf.counting import count_macs, count_parameters, model_info


def test_conv_macs_by_hand() -> None:
    # 3x3 conv 3 -> 8 on 10x10: 8 * 10 * 10 outputs, each 3 * 3 * 3 MACs
    assert count_macs(nn.Conv2d(3, 8, 3, padding=1), (1, 3, 10, 10)) == 8 * 10 * 10 * 3 * 9
    # grouped (depthwise) 3x3 on 16 channels, batch 2: each output needs only 9 MACs
    assert count_macs(nn.Conv2d(16, 16, 3, padding=1, groups=16), (2, 16, 6, 6)) == 2 * 16 * 36 * 9
    # 2x2 transposed conv, stride 2, 4 -> 6 on 5x5: each input pixel feeds 6 * 2 * 2 outputs
    assert count_macs(nn.ConvTranspose2d(4, 6, 2, stride=2), (1, 4, 5, 5)) == 4 * 25 * 6 * 4
    assert count_macs(nn.Linear(10, 7), (3, 10)) == 3 * 7 * 10
    assert count_parameters(nn.Conv2d(3, 8, 3)) == 8 * 3 * 9 + 8


def test_unet_macs_equal_flop_counter_half() -> None:
    for kind in ("lightweight", "lightweight_std", "classic"):
        net = build_unet(kind, base_width=4).eval()
        x = torch.zeros(1, 3, 32, 48)
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            net(x)
        assert count_macs(net, tuple(x.shape)) * 2 == fc.get_total_flops(), kind


def test_count_macs_keeps_training_mode_and_bn_stats() -> None:
    net = LightweightUNet(base_width=4).train()
    before = net.enc[0][1].running_mean.clone()
    count_macs(net, (1, 3, 16, 16))
    assert net.training
    assert torch.equal(before, net.enc[0][1].running_mean)


def test_model_info_scoring_is_passes_times_per_net() -> None:
    cfg = get_config("smoke")
    info = model_info(cfg)
    nets = info["networks"]
    assert set(nets) == {"inpaint_net", "recon_net"}
    assert info["scoring_passes"] == len(cfg.cutout_sizes) * cfg.num_masks
    per_pass = nets["inpaint_net"]["macs"] + nets["recon_net"]["macs"]
    assert info["scoring_macs"] == info["scoring_passes"] * per_pass
    assert info["total_params"] == count_parameters(build_model(cfg))
    # counted on the meta device (default) == counted with a real CPU forward pass
    assert model_info(cfg, device="cpu") == info


def test_model_info_cli_prints_table(capsys) -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["model-info", "--profile", "smoke", "--compare-riad"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "inpaint_net" in out and "recon_net" in out and "full test-time scoring" in out
    assert "unet=classic" in out
