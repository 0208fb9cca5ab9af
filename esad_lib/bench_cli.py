"""``esad bench``: the side-by-side speed benchmark of issue 7 (see ``esad_lib.benchmark``)."""

from __future__ import annotations

import argparse


def _run(args: argparse.Namespace) -> int:
    from esad_lib.benchmark import main_from_args

    return main_from_args(args)


def register(subparsers) -> None:
    """Add ``bench [--quick] [--out bench] [--device D] [--profile P] [--sections S]``."""
    from esad_lib.benchmark import build_arg_parser

    p = subparsers.add_parser(
        "bench",
        help="side-by-side speed benchmark: ESAD vs RIAD, masks, inference options, metrics",
        description=(
            "Measures in one run, interleaved, median of repeats: ESAD vs RIAD (parameters, MACs, "
            "peak memory, training step, full scoring), batched vs looped masks, inference options "
            "and the metrics at MVTec LOCO scale. Writes <out>/results.json and <out>/results.md."
        ),
    )
    build_arg_parser(p)
    p.set_defaults(func=_run)
