"""``esad ablate``: run a grid of named ablation variants (``esad_lib.ablation``), e.g.
``esad ablate --variants esad,riad --categories pushpins --seeds 0,1 --out runs/ablation``;
``--devices cuda:0,cuda:1``: one worker each; a re-run skips finished runs and resumes training."""

from __future__ import annotations

import argparse
from pathlib import Path

from esad_lib.cli import fail
from esad_lib.config import CATEGORIES, PRESETS, PROFILES, ESADConfig, profile_name
from esad_lib.overrides import parse_overrides
from esad_lib.paths import cache_dir


def base_config(profile: str | None, dataset: str | None, sets: list[str]) -> ESADConfig:
    """The profile preset (explicit ``--profile`` wins over ``ESAD_PROFILE``) plus overrides."""
    cfg = PRESETS[profile or profile_name(None)]
    overrides = parse_overrides(sets)
    if dataset:
        overrides["dataset"] = dataset
    try:
        return cfg.replace(**overrides)
    except KeyError as e:
        raise ValueError(f"--set: {e.args[0]}; see the fields of esad_lib.config.ESADConfig") from e


def run_ablate(args: argparse.Namespace) -> int:
    from esad_lib import ablation  # torch loads only when a sub-command needs it

    if not args.list and not args.out:
        return fail("esad ablate: --out DIR is required (the folder that holds the grid's runs)")
    if args.list:
        for v in ablation.variant_registry().values():
            what = f"detector {getattr(v.detector, '__qualname__', v.detector)}" if v.detector else v.diff
            print(f"{v.name:24s} {v.group:20s} {what}")
        return 0
    try:
        base = base_config(args.profile, args.dataset, args.set or [])
        variants = ablation.variant_names() if args.variants == "all" else ablation.parse_list(args.variants)
        cats = list(CATEGORIES) if args.categories == "all" else ablation.parse_list(args.categories)
        seeds = ablation.parse_list(args.seeds, int)
        devices = ablation.parse_list(args.devices) if args.devices else None
        ablation.expand_grid(base, variants, cats, seeds)  # validate names before any work
    except (KeyError, ValueError) as e:
        return fail(f"esad ablate: {e.args[0] if e.args else e}")
    models = cache_dir() / "runs" if args.models == "cache" else args.models or None
    out = Path(args.out)
    report = ablation.run_grid(base, variants, cats, seeds, out, devices=devices, models_dir=models)
    print(
        f"ablation grid: {len(report.evaluated)} run(s) evaluated, {len(report.skipped)} already finished, "
        f"{len(set(report.trained))} model(s) trained, {len(set(report.resumed))} resumed "
        f"in {report.seconds:.1f} s"
    )
    print(f"results: {report.results_csv}\nsummary: {report.summary_md}\n")
    print(report.summary_md.read_text())
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    help_ = "run a grid of ablation variants x categories x seeds"
    p = subparsers.add_parser("ablate", help=help_, description=(
        "Train and evaluate named ablation variants (config diffs of the profile's base config). "
        "Writes OUT/results.csv (tidy) and OUT/summary.md; finished runs are skipped, "
        "unfinished training is resumed. `esad ablate --list` shows the variants."))
    p.add_argument("--variants", default="esad,riad", help="comma-separated variant names, or 'all'")
    p.add_argument("--categories", default="all", help="comma-separated categories, or 'all'")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    p.add_argument("--profile", choices=PROFILES, help="scale profile (default: $ESAD_PROFILE or demo)")
    p.add_argument("--dataset", help="LOCO-layout dataset root (default: the profile's, synthetic)")
    p.add_argument("--out", help="output folder of the grid (required unless --list)")
    p.add_argument("--devices", help="comma-separated devices, e.g. cuda:0,cuda:1: one worker process each "
                   "(default: sequential)")
    p.add_argument("--set", action="append", metavar="FIELD=VALUE",
                   help="override a config field of the base (JSON value), e.g. --set epochs=5; repeatable")
    p.add_argument("--models", help="folder for trained models (default OUT/models); 'cache' shares "
                   "train_or_load's model cache")
    p.add_argument("--list", action="store_true", help="list the registered variants and exit")
    p.set_defaults(func=run_ablate)
