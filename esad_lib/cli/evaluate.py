"""``esad evaluate``, ``score-maps``, ``report``, ``demo`` and ``demo-power`` (the paper's experiments:
the authors' README "5. result"): metrics.json of a run or of maps on disk, the table beside the paper's
numbers, and the test-set size a demo's comparison needs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from esad_lib.cli import fail, quiet_flag
from esad_lib.config import CATEGORIES
from esad_lib.data.loco import DatasetLayoutError, categories
from esad_lib.evaluation import evaluate_run, score_maps
from esad_lib.maps_io import MapsError
from esad_lib.overrides import parse_overrides
from esad_lib.paths import atomic_write_text
from esad_lib.report import format_report, summary_line


def cmd_evaluate(args: argparse.Namespace) -> int:
    from esad_lib.run_io import RunFileError  # loads torch: score-maps never does

    named = {"score_map": args.score_map, "smoothing": args.smoothing,
             "map_normalization": args.normalization, "device": args.device}
    overrides = {k: v for k, v in named.items() if v}
    if args.no_fast:
        overrides["fast_scoring"] = False
    for run in args.runs:
        try:
            m = evaluate_run(run, args.max_images, not args.quiet, not args.no_scores, overrides or None,
                             export_maps_dir=args.export_maps)
        except RunFileError as e:  # a damaged model.pt: the message says how to recover
            return fail(str(e))
        print(summary_line(m))
        print(f"wrote {Path(run) / 'metrics.json'}")
        if args.export_maps:
            print(f"wrote maps to {m['exported_maps']} (MVTec LOCO AD layout, float32 TIFF)")
    return 0


def cmd_score_maps(args: argparse.Namespace) -> int:
    maps_dir, root = Path(args.maps_dir), Path(args.dataset)
    if not maps_dir.is_dir():
        return fail(f"{maps_dir}: no such folder of anomaly maps")
    cats = args.category or [c for c in categories(root) if (maps_dir / c).is_dir()]
    if not cats:
        return fail(f"{maps_dir}: no category folder that {root} also holds")
    try:
        results = score_maps(maps_dir, root, cats, out=args.out, method=args.method, progress=not args.quiet)
    except (MapsError, DatasetLayoutError) as e:
        return fail(str(e))
    for cat in cats:
        print(summary_line(results[cat]))
    print(format_report(results, title=f"{args.method} (maps from {maps_dir}) vs reported"))
    if args.out:
        print(f"wrote {Path(args.out)}/<category>/metrics.json")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from esad_lib.demo import report_from_runs

    text = report_from_runs(args.runs)
    if args.out:
        atomic_write_text(args.out, text)
    print(text)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from esad_lib.demo import run_demo

    if bad := [c for c in args.categories if c not in CATEGORIES]:
        return fail(f"unknown category {bad[0]!r}; choose from {', '.join(CATEGORIES)}")
    try:
        overrides = parse_overrides(args.set or [])
    except ValueError as e:
        return fail(f"esad demo: {e}")
    if args.seeds is not None and (len(set(args.seeds)) < 2 or "seed" in overrides):
        return fail("esad demo: --seeds takes two or more training seeds, without --set seed=N")
    res = run_demo(profile=args.profile, out=args.out, categories=args.categories, with_riad=args.with_riad,
                   with_naive=not args.no_naive, with_patchcore=args.with_patchcore, progress=not args.quiet,
                   overrides=overrides, seeds=args.seeds)
    print(res.text)
    print(f"wrote {res.report_dir / 'report.md'} and {res.report_dir / 'demo.json'}", file=sys.stderr)
    return 0


def cmd_demo_power(args: argparse.Namespace) -> int:
    from esad_lib.demo import default_report_dir, demo_power

    path = Path(args.demo_json or default_report_dir("demo") / "demo.json")
    try:
        rows = demo_power(path, args.half_width, args.level)
    except (FileNotFoundError, ValueError) as e:
        return fail(f"esad demo-power: {e}")
    target = f"Needed for ±{args.half_width:g} ({100 * args.level:g} %)"
    print(f"{path}: the mean over categories of ESAD minus each method, structural image AUROC (points)\n\n"
          f"| Comparison | Now | Half-width | SE | of it seeds | z SE | Images per type | {target} |\n"
          "|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| ESAD − {r['method']} | {r['diff']:+.1f} [{r['low']:.1f}, {r['high']:.1f}] | "
              f"{r['half_width_now']:.2f} | {r['se']:.2f} | {r['se_seed']:.2f} | {r['z_se']:.2f} | "
              f"{r['n_now']} | {r['n_needed']:.0f} |")
    print("\nSE ~ 1/sqrt(images per type): n = ceil(n_now z² se_image² / (h² - z² se_seed²)); inf: add seeds")
    return 0


def register(subparsers) -> None:
    """Add ``evaluate``, ``score-maps``, ``report``, ``demo`` and ``demo-power`` to ``esad``."""
    p = subparsers.add_parser("evaluate", help="score a trained run's test split; write RUN/metrics.json")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folder(s) written by `esad train`")
    p.add_argument("--max-images", type=int, default=None, help="cap on test images per type")
    p.add_argument("--score-map", choices=("pixel", "feature"), help="override the run's cfg.score_map")
    p.add_argument("--smoothing", choices=("mean", "gaussian", "none"), help="override cfg.smoothing")
    p.add_argument("--normalization", choices=("none", "train", "validation"),
                   help="override cfg.map_normalization")
    p.add_argument("--no-fast", action="store_true", help="plain eager scoring (cfg.fast_scoring=False)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: the run's)")
    p.add_argument("--no-scores", action="store_true", help="do not write RUN/scores.csv")
    p.add_argument("--export-maps", metavar="DIR",
                   help="also write every test map as float32 TIFF in MVTec LOCO AD's layout "
                   "DIR/<category>/test/<label dir>/<image id>.tiff (for MVTec's evaluation script)")
    quiet_flag(p, cmd_evaluate)

    p = subparsers.add_parser("score-maps", help="metrics.json and the report table from anomaly maps of "
                              "any method on disk")
    p.add_argument("maps_dir", metavar="MAPS_DIR",
                   help="maps laid out <MAPS_DIR>/<category>/test/<label>/<id>.tiff|.npy")
    p.add_argument("--dataset", required=True, metavar="LOCO_ROOT", help="the dataset the maps are of")
    p.add_argument("--category", nargs="+", metavar="C", help="categories (default: all MAPS_DIR holds)")
    p.add_argument("--out", metavar="DIR", help="write DIR/<category>/metrics.json")
    p.add_argument("--method", default="external", help="the method's name, for the table (default external)")
    quiet_flag(p, cmd_score_maps)

    p = subparsers.add_parser("report", help="per-category table (markdown) from runs' metrics.json")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders (or metrics.json files)")
    p.add_argument("--out", help="also write the table to this file")
    p.set_defaults(func=cmd_report)

    p = subparsers.add_parser("demo",
                              help="train + evaluate ESAD on every synthetic category; print the table")
    p.add_argument("--profile", default="demo", help="smoke, demo or paper (default demo)")
    p.add_argument("--out", default=None, help="runs folder (default: train_or_load's cache, shared with the "
                   "notebooks; the table goes to <data root>/runs/<profile>/report.md)")
    p.add_argument("--categories", nargs="+", default=list(CATEGORIES), metavar="CATEGORY")
    p.add_argument("--with-riad", action="store_true", help="also train/evaluate the RIAD baseline")
    p.add_argument("--no-naive", action="store_true", help="skip the naive z-score baseline column")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="change a config field in every run (repeatable)")
    p.add_argument("--with-patchcore", action="store_true",
                   help="also the PatchCore-style reference on ImageNet features "
                   "(efficientnet_lite0; no training)")
    p.add_argument("--seeds", nargs="+", type=int, metavar="SEED",
                   help="two or more training seeds (cfg.seed): the comparison once per seed and the paired "
                   "differences over seeds and test images, in <data root>/runs/<profile>/seeds/")
    quiet_flag(p, cmd_demo)

    p = subparsers.add_parser("demo-power", help="test images per type a finished demo needs for a "
                              "given half-width of its mean paired differences' intervals")
    p.add_argument("demo_json", nargs="?", metavar="DEMO_JSON",
                   help="demo.json of `esad demo` (default <data root>/runs/demo/demo.json)")
    p.add_argument("--half-width", type=float, default=3.5, help="target half-width in points (default 3.5)")
    p.add_argument("--level", type=float, default=0.95, help="interval level (default 0.95)")
    p.set_defaults(func=cmd_demo_power)

