"""``esad bench``: the side-by-side speed benchmark of issue 7 (see ``esad_lib.bench``)."""

from __future__ import annotations

import argparse

from esad_lib.bench.run import build_arg_parser, main_from_args


def _run(args: argparse.Namespace) -> int:
    return main_from_args(args)


def register(subparsers) -> None:
    """Add ``bench [--quick] [--out bench] [--device D] [--profile P] [--sections S]``."""
    p = subparsers.add_parser(
        "bench",
        help="side-by-side speed benchmark: ESAD vs RIAD, masks, inference options, metrics",
        description=(
            "Measures in one run, interleaved, median of repeats: ESAD vs RIAD (parameters, MACs, "
            "peak memory, training step, full scoring), the library's scoring vs a plain "
            "re-statement of the authors' inference, training step time and memory per image, "
            "batched vs looped masks, inference options and the metrics at MVTec LOCO scale. "
            "Writes <out>/results.json and <out>/results.md."
        ),
    )
    build_arg_parser(p)
    p.set_defaults(func=_run)
