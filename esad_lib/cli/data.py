"""``esad split``, ``esad check``, ``esad synth``: data sub-commands (authors' README "1. Requirements")."""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter

from esad_lib.cli import fail, quiet_flag
from esad_lib.config import CATEGORIES
from esad_lib.data.check import check_dataset
from esad_lib.data.loco import DatasetLayoutError
from esad_lib.data.split import MODES, SplitError, split_dataset
from esad_lib.data.synth import DEFAULT_COUNTS, DEFAULT_MAX_SIDE, generate_synthetic


def _split(args: argparse.Namespace) -> int:
    try:
        res = split_dataset(args.src, args.out, args.mode, args.force, progress=not args.quiet, verbose=True)
    except (SplitError, DatasetLayoutError, ValueError) as err:
        return fail(f"esad split: {err}")
    if res["mismatches"]:
        # a partial download, or the synthetic benchmark named like LOCO: the split itself is fine
        kind = "error" if args.strict else "warning"
        print(f"esad split: {kind}: the per-category counts differ from the official MVTec LOCO AD ones "
              f"({len(res['mismatches'])} difference(s), listed above); the split was written"
              + (" (--strict: exit 1)" if args.strict else ""), file=sys.stderr)
        return 1 if args.strict else 0
    return 0


def _check(args: argparse.Namespace) -> int:
    probs = check_dataset(args.root, progress=not args.quiet)
    for p in probs:
        print(p)
    if probs:
        kinds = sorted(Counter(p.kind for p in probs).items())
        print(f"esad check: {len(probs)} problem(s): " + ", ".join(f"{k} {n}" for k, n in kinds),
              file=sys.stderr)
        return 1
    print(f"esad check: {args.root} is fine")
    return 0


def _synth(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    try:
        counts, cats = tuple(args.counts), tuple(args.categories)
        out = generate_synthetic(args.out, args.seed, args.max_side, counts, cats, progress=not args.quiet)
    except (FileExistsError, ValueError) as err:
        return fail(f"esad synth: {err}")
    print(f"synthetic benchmark in {out} ({time.perf_counter() - t0:.1f} s)")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "split", help="split MVTec LOCO AD into structural/ and logical/ datasets",
        description="Write OUT/structural/<category> and OUT/logical/<category> from a LOCO-layout root. "
        "The source is never modified; re-runs are no-ops; interrupted runs are completed by re-running.")
    p.add_argument("src", help="LOCO-layout root (e.g. mvtec_loco_anomaly_detection/)")
    p.add_argument("out", help="output folder (new, empty, or an earlier 'esad split' output)")
    p.add_argument("--mode", choices=MODES, default="copy",
                   help="copy files (default), hard-link or symlink them")
    p.add_argument("--force", action="store_true", help=(
        "write into a folder 'esad split' did not write, beside its files, if none would be overwritten; or "
        "redo an earlier split of OUT from another source/mode (its own files are rewritten, those the new "
        "split lacks deleted; no other file is touched)"))
    p.add_argument("--strict", action="store_true", help=(
        "exit 1 when the per-category counts differ from the official ones (default: a warning)"))
    quiet_flag(p, _split, "no progress bar")

    p = subparsers.add_parser("check", help="validate a LOCO-layout root; list every problem (exit 1 if any)")
    p.add_argument("root")
    quiet_flag(p, _check, "no progress bar")

    p = subparsers.add_parser("synth", help="render the synthetic LOCO-like benchmark (one per seed)")
    p.add_argument("out", help="output folder (new or empty)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-side", type=int, default=DEFAULT_MAX_SIDE,
                   help=f"longest image side in pixels (default {DEFAULT_MAX_SIDE})")
    p.add_argument("--counts", type=int, nargs=5, default=list(DEFAULT_COUNTS),
                   metavar=("TRAIN", "VAL", "GOOD", "LOGICAL", "STRUCTURAL"),
                   help=f"images per category (default {' '.join(map(str, DEFAULT_COUNTS))})")
    p.add_argument("--categories", nargs="+", default=list(CATEGORIES), choices=CATEGORIES)
    quiet_flag(p, _synth, "no progress bar")
