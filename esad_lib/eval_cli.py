"""``esad evaluate``, ``esad report`` and ``esad demo`` (paper Sec. "Experiments").

* ``esad evaluate RUN``      -- score the run's test split, write ``RUN/metrics.json``;
* ``esad evaluate RUN --export-maps DIR`` -- also the maps, as MVTec's evaluation reads them;
* ``esad score-maps DIR --dataset ROOT`` -- the same metrics from maps of any method on disk;
* ``esad report RUN...``     -- the per-category markdown table (ours beside the paper's
  reported numbers) from the runs' ``metrics.json``;
* ``esad demo --profile P``  -- train (or reuse) and evaluate ESAD on every synthetic category,
  plus the naive baseline, and print the table (``make demo``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from esad_lib.config import CATEGORIES, ESADConfig, get_config, riad_config
from esad_lib.data.loco import DatasetLayoutError, categories
from esad_lib.evaluation import evaluate_run, score_maps
from esad_lib.maps_io import MapsError
from esad_lib.paths import atomic_write_text, data_root
from esad_lib.report import format_report


# --------------------------------------------------------------------------------------------
# evaluate
# --------------------------------------------------------------------------------------------
def _summary_line(m: dict) -> str:
    def p(x):
        return "-" if x is None else f"{100 * x:.1f}"

    ia, sp = m["image_auroc"], m["au_spro"]
    timing = m.get("timing")
    return (
        f"{m['category']} ({m['method']}): image AUROC str {p(ia['structural'])} log {p(ia['logical'])} "
        f"mean {p(ia['mean'])} | pixel AUROC {p(m['pixel_auroc'])} | AU-PRO {p(m['au_pro'])} | "
        f"AU-sPRO str {p(sp['structural'])} log {p(sp['logical'])}"
        + (f" | scoring {timing['scoring_ms_per_image']:.1f} ms/image" if timing else "")
    )


def cmd_evaluate(args: argparse.Namespace) -> int:
    overrides = {}
    if args.score_map:
        overrides["score_map"] = args.score_map
    if args.smoothing:
        overrides["smoothing"] = args.smoothing
    if args.normalization:
        overrides["map_normalization"] = args.normalization
    if args.no_fast:
        overrides["fast_scoring"] = False
    if args.device:
        overrides["device"] = args.device
    for run in args.runs:
        m = evaluate_run(
            run,
            max_images=args.max_images,
            progress=not args.quiet,
            save_scores=not args.no_scores,
            overrides=overrides or None,
            export_maps_dir=args.export_maps,
        )
        print(_summary_line(m))
        print(f"wrote {Path(run) / 'metrics.json'}")
        if args.export_maps:
            print(f"wrote maps to {m['exported_maps']} (MVTec LOCO AD layout, float32 TIFF)")
    return 0


# --------------------------------------------------------------------------------------------
# score-maps
# --------------------------------------------------------------------------------------------
def cmd_score_maps(args: argparse.Namespace) -> int:
    maps_dir, root = Path(args.maps_dir), Path(args.dataset)
    if not maps_dir.is_dir():
        print(f"{maps_dir}: no such folder of anomaly maps", file=sys.stderr)
        return 2
    cats = args.category or [c for c in categories(root) if (maps_dir / c).is_dir()]
    if not cats:
        print(f"{maps_dir}: no category folder that {root} also holds", file=sys.stderr)
        return 2
    try:
        results = score_maps(maps_dir, root, cats, out=args.out, method=args.method, progress=not args.quiet)
    except (MapsError, DatasetLayoutError) as e:
        print(str(e), file=sys.stderr)
        return 2
    for cat in cats:
        print(_summary_line(results[cat]))
    print(format_report(results, title=f"{args.method} (maps from {maps_dir}) vs reported"))
    if args.out:
        print(f"wrote {Path(args.out)}/<category>/metrics.json")
    return 0


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------
def report_from_runs(runs: Sequence[str | Path]) -> str:
    """The markdown table for runs' metrics.json; ESAD runs are "ours", other methods extra columns."""
    from esad_lib.evaluation import load_metrics
    from esad_lib.report import format_report

    by_method: dict[str, dict[str, dict]] = {}
    for run in runs:
        m = load_metrics(run)
        method = m.get("method", "esad")
        cat = m["category"]
        if cat in by_method.setdefault(method, {}):
            raise ValueError(f"two {method} runs for category {cat!r} ({run}); report one per category")
        by_method[method][cat] = m
    main_method = "esad" if "esad" in by_method else next(iter(by_method))
    extra = {f"{k.upper()} (ours)" if k != "naive" else "naive (ours)": v for k, v in by_method.items()}
    extra.pop(f"{main_method.upper()} (ours)", None)
    return format_report(
        by_method[main_method], extra=extra, title=f"{main_method.upper()} (ours) vs reported"
    )


def cmd_report(args: argparse.Namespace) -> int:
    text = report_from_runs(args.runs)
    if args.out:
        atomic_write_text(args.out, text)
    print(text)
    return 0


# --------------------------------------------------------------------------------------------
# demo
# --------------------------------------------------------------------------------------------
def _finished(run_dir: Path, cfg: ESADConfig) -> bool:
    p = run_dir / "metrics.json"
    if not p.exists():
        return False
    try:
        return json.loads(p.read_text()).get("config_key") == cfg.key()
    except json.JSONDecodeError:
        return False


def train_and_evaluate(cfg: ESADConfig, run_dir: Path | None = None, progress: bool = True) -> dict:
    """Train ``cfg`` (unless already trained) and evaluate it; a finished run is skipped.

    ``run_dir=None`` uses ``train_or_load``'s cache folder (``cache_dir()/runs/<cfg.key()>``),
    so the notebooks reuse the models ``esad demo`` trained.  An interrupted training resumes.
    """
    from esad_lib.evaluation import evaluate_run, load_metrics
    from esad_lib.training import MODEL_FILE, run_dir_for, train, train_or_load

    if run_dir is None:
        run_dir = run_dir_for(cfg)
    if _finished(run_dir, cfg):
        return load_metrics(run_dir)
    if run_dir == run_dir_for(cfg):
        train_or_load(cfg, progress=progress)
    elif not (run_dir / MODEL_FILE).exists():
        train(cfg, run_dir, resume=True, progress=progress)
    return evaluate_run(run_dir, progress=progress)


def naive_metrics(cfg: ESADConfig, out_dir: Path) -> dict:
    """Naive baseline metrics for ``cfg.category`` cached in ``out_dir/metrics.json``."""
    from esad_lib.evaluation import evaluate_naive

    key = cfg.key()
    p = out_dir / "metrics.json"
    if p.exists():
        try:
            m = json.loads(p.read_text())
            if m.get("config_key") == key:
                return m
        except json.JSONDecodeError:
            pass
    m = evaluate_naive(cfg)
    m.update({"config_key": key, "dataset": cfg.dataset, "profile": cfg.profile, "config": cfg.to_dict()})
    m["image_size"] = list(cfg.image_size)
    m["score_map"] = "naive z-score"
    atomic_write_text(p, json.dumps(m, indent=2, sort_keys=True) + "\n")
    return m


def run_demo(
    profile: str = "demo",
    out: str | Path | None = None,
    categories: Sequence[str] = CATEGORIES,
    with_riad: bool = False,
    with_naive: bool = True,
    progress: bool = True,
) -> str:
    """Train + evaluate ESAD (and optionally RIAD, naive) per synthetic category; the table."""
    from esad_lib.report import format_report

    report_dir = Path(out) if out is not None else data_root() / "runs" / profile

    def run_dir(cat: str, method: str) -> Path | None:
        return None if out is None else Path(out) / cat / method

    esad, riad, naive = {}, {}, {}
    t0 = time.perf_counter()
    for cat in categories:
        cfg = get_config(profile, category=cat, dataset="synthetic")
        esad[cat] = train_and_evaluate(cfg, run_dir(cat, "esad"), progress)
        if with_riad:
            riad[cat] = train_and_evaluate(riad_config(cfg), run_dir(cat, "riad"), progress)
        if with_naive:
            naive[cat] = naive_metrics(cfg, report_dir / cat / "naive")
        print(f"[{time.perf_counter() - t0:6.0f} s] {_summary_line(esad[cat])}", file=sys.stderr)
    extra = {}
    if riad:
        extra["RIAD (ours)"] = riad
    if naive:
        extra["naive (ours)"] = naive
    text = format_report(esad, extra=extra, title=f"ESAD (ours, `{profile}` profile) vs reported")
    where = out if out is not None else f"{data_root() / 'cache' / 'runs'} (train_or_load's cache)"
    text += f"\nTotal time: {time.perf_counter() - t0:.0f} s (runs under {where}).\n"
    atomic_write_text(report_dir / "report.md", text)
    return text


def cmd_demo(args: argparse.Namespace) -> int:
    for c in args.categories:
        if c not in CATEGORIES:
            print(f"unknown category {c!r}; choose from {', '.join(CATEGORIES)}", file=sys.stderr)
            return 2
    text = run_demo(
        profile=args.profile,
        out=args.out,
        categories=args.categories,
        with_riad=args.with_riad,
        with_naive=not args.no_naive,
        progress=not args.quiet,
    )
    print(text)
    return 0


def register(subparsers) -> None:
    """Add ``evaluate``, ``report`` and ``demo`` to the ``esad`` command line."""
    p = subparsers.add_parser("evaluate", help="score a trained run's test split; write RUN/metrics.json")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folder(s) written by `esad train`")
    p.add_argument("--max-images", type=int, default=None, help="cap on test images per type")
    p.add_argument("--score-map", choices=("pixel", "feature"), help="override the run's cfg.score_map")
    p.add_argument("--smoothing", choices=("mean", "gaussian", "none"), help="override cfg.smoothing")
    p.add_argument(
        "--normalization", choices=("none", "train", "validation"), help="override cfg.map_normalization"
    )
    p.add_argument("--no-fast", action="store_true", help="plain eager scoring (cfg.fast_scoring=False)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: the run's)")
    p.add_argument("--no-scores", action="store_true", help="do not write RUN/scores.csv")
    p.add_argument(
        "--export-maps",
        metavar="DIR",
        help="also write every test map as float32 TIFF in MVTec LOCO AD's layout "
        "DIR/<category>/test/<label dir>/<image id>.tiff (for MVTec's evaluation script)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_evaluate)

    p = subparsers.add_parser(
        "score-maps", help="metrics.json and the report table from anomaly maps of any method on disk"
    )
    p.add_argument(
        "maps_dir", metavar="MAPS_DIR", help="maps laid out <MAPS_DIR>/<category>/test/<label>/<id>.tiff|.npy"
    )
    p.add_argument("--dataset", required=True, metavar="LOCO_ROOT", help="the dataset the maps are of")
    p.add_argument("--category", nargs="+", metavar="C", help="categories (default: all MAPS_DIR holds)")
    p.add_argument("--out", metavar="DIR", help="write DIR/<category>/metrics.json")
    p.add_argument("--method", default="external", help="the method's name, for the table (default external)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_score_maps)

    p = subparsers.add_parser("report", help="per-category table (markdown) from runs' metrics.json")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders (or metrics.json files)")
    p.add_argument("--out", help="also write the table to this file")
    p.set_defaults(func=cmd_report)

    p = subparsers.add_parser(
        "demo", help="train + evaluate ESAD on every synthetic category; print the table"
    )
    p.add_argument("--profile", default="demo", help="smoke, demo or paper (default demo)")
    p.add_argument(
        "--out",
        default=None,
        help="runs folder (default: train_or_load's cache, shared with the notebooks; "
        "the table goes to <data root>/runs/<profile>/report.md)",
    )
    p.add_argument("--categories", nargs="+", default=list(CATEGORIES), metavar="CATEGORY")
    p.add_argument("--with-riad", action="store_true", help="also train/evaluate the RIAD baseline")
    p.add_argument("--no-naive", action="store_true", help="skip the naive z-score baseline column")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_demo)


__all__ = ["register", "report_from_runs", "run_demo", "train_and_evaluate"]
