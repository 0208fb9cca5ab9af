"""``esad train``: train ESAD (or RIAD) on one category into a run folder.

    esad train --data synthetic --category breakfast_box --profile demo --out runs/bb
    esad train --data /data/loco_structural --category pushpins --profile paper --out runs/pp \
        --set lr=2e-4 --set cutout_sizes=2,4,8,16
    esad train ... --out runs/pp --resume            # continue an interrupted run
    torchrun --nproc_per_node=4 -m esad_lib.cli train ...   # DistributedDataParallel

``--set key=value`` sets any ``ESADConfig`` field (converted by ``esad_lib.overrides``).  The module
also runs on its own: ``python -m esad_lib.cli.train ...``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from esad_lib.config import PRESETS, PROFILES, ESADConfig, profile_name
from esad_lib.overrides import parse_overrides

_DESCRIPTION = (__doc__ or "").split("\n\n")[0]


def build_config(args: argparse.Namespace) -> ESADConfig:
    """The config an ``esad train`` command line asks for (explicit ``--profile`` beats ESAD_PROFILE)."""
    name = args.profile or profile_name(None)  # both checked: argparse choices, profile_name
    flags = {"dataset": args.data, "category": args.category, "epochs": args.epochs, "device": args.device,
             "seed": args.seed}
    changes: dict[str, Any] = {k: v for k, v in flags.items() if v is not None}
    changes.update(parse_overrides(args.set or []))
    cfg = PRESETS[name].replace(**changes)
    if cfg.dataset != "synthetic":
        cfg = cfg.replace(dataset=str(Path(cfg.dataset).expanduser().resolve()))
    return cfg


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help='LOCO-layout dataset root, or "synthetic" (default: the profile\'s)')
    p.add_argument("--category", help="category to train on (default: the profile's)")
    p.add_argument("--profile", choices=PROFILES, help="scale profile (default: $ESAD_PROFILE or demo)")
    p.add_argument("--out", required=True,
                   help="run folder to write (config.json, log.csv, checkpoint.pt, model.pt)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint.pt")
    p.add_argument("--epochs", type=int, help="number of epochs (may be raised when resuming)")
    p.add_argument("--device", help='"auto", "cpu", "cuda", "cuda:1" (under torchrun: one GPU per process)')
    p.add_argument("--seed", type=int, help="seed of every random draw")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="set any config field (repeatable)")
    p.add_argument("--tensorboard", action="store_true", help="also log to RUN/tb (needs tensorboard)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from esad_lib.distributed import dist_info
    from esad_lib.training import train

    main_rank = dist_info().is_main
    try:
        cfg = build_config(args)
        result = train(cfg, args.out, resume=args.resume, progress=not args.no_progress,
                       tensorboard=args.tensorboard)
    except (ValueError, FileExistsError, FileNotFoundError, FloatingPointError) as e:
        if main_rank:
            print(f"esad train: error: {e}", file=sys.stderr)
        return 2 if not isinstance(e, FloatingPointError) else 1
    if main_rank:
        extra = result.extra
        print(f"trained {cfg.method} on {cfg.category} ({cfg.profile} profile): {result.epochs_run} epochs "
              f"in {result.train_seconds:.1f} s on {extra['device']}"
              + (f" x {extra['world_size']} processes" if extra["world_size"] > 1 else "")
              + f"; best epoch {result.best_epoch} (validation loss {result.best_val_loss:.4f})"
              + ("; stopped early" if result.stopped_early else ""))
        print(f"run folder: {result.run_dir}")
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("train", help="train a model on one category", description=_DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=run)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="esad train", description=_DESCRIPTION)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
