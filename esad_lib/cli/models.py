"""``esad model-info``: parameters and MACs of the networks of a profile (the paper's lightweight U-Net)."""

from __future__ import annotations

import argparse
import json

from esad_lib.config import CHOICES, PROFILES, get_config, riad_config


def model_info_main(args: argparse.Namespace) -> int:
    from esad_lib.perf.counting import format_model_info, model_info

    size = None if args.image_size is None else tuple(args.image_size)
    named = (("base_width", args.width), ("unet", args.unet), ("image_size", size))
    overrides = {k: v for k, v in named if v is not None}
    cfg = get_config(args.profile, **overrides)
    infos = [model_info(c) for c in ([cfg, riad_config(cfg)] if args.compare_riad else [cfg])]
    if args.json:
        print(json.dumps(infos if len(infos) > 1 else infos[0], indent=2, default=list))
    else:
        print(f"profile: {cfg.profile}")
        print("\n\n".join(format_model_info(i) for i in infos))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "model-info", help="parameters and MACs per network and per full test-time scoring of one image",
        description="Print parameters and multiply-accumulates (MACs) of the inpainting and reconstruction "
        "U-Nets for one image, and of the full test-time scoring of one image (all cutout sizes x all masks, "
        "both networks).")
    p.add_argument("--profile", choices=PROFILES, help="scale profile (default: $ESAD_PROFILE or demo)")
    p.add_argument("--width", type=int, help="override base_width")
    p.add_argument("--unet", choices=CHOICES["unet"], help="override the U-Net kind")
    p.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"), help="override the image size")
    p.add_argument("--compare-riad", action="store_true",
                   help="also print the RIAD baseline (one classic U-Net, zero fill)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=model_info_main)
