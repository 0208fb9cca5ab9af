"""Retrain the cached models and compare them bit for bit (speed-ups must keep the numbers).

    python benchmarks/retrain_check.py [--profile demo] [--categories a,b,...] [--methods esad,riad]

For each category and method, the model ``train_or_load`` has cached for the profile
(``cache_dir()/runs/<key>/``, written by ``make demo`` or a lesson) is trained again from
scratch with the working tree's trainer into a temporary folder -- the cache itself is only
read -- and its weights are compared with the cached ones, tensor by tensor
(``torch.equal``), as are the per-epoch training losses of the two ``log.csv`` files.  When
every model is bit-identical, a change to the trainer (say, a faster loss or validation) has
left every trained model, and so every number computed from them, as it was.  Models not in
the cache are listed as such, not trained.  Exit status 1 when any model differs.

The cached run must come from the same machine type and thread count: float rounding of CPU
kernels differs between CPUs, so bit-identity is a statement about one machine.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from esad_lib.config import CATEGORIES, PRESETS, ESADConfig, riad_config  # noqa: E402
from esad_lib.run_io import LOG_FILE, MODEL_FILE, run_dir_for  # noqa: E402
from esad_lib.training import train  # noqa: E402

__all__ = ["compare_run", "main"]


def _train_losses(log: Path) -> list[str]:
    with log.open(newline="") as f:
        return [row["train_loss"] for row in csv.DictReader(f)]


def compare_run(cfg: ESADConfig) -> dict:
    """Retrain ``cfg`` into a temporary folder and compare with its cached run (see module
    docstring).  Returns ``{"cached": bool, "identical": bool | None, "max_abs_diff": float | None,
    "losses_identical": bool | None, "run_dir": str}``."""
    cached = run_dir_for(cfg)
    out = {"run_dir": str(cached), "cached": (cached / MODEL_FILE).exists()}
    if not out["cached"]:
        return {**out, "identical": None, "max_abs_diff": None, "losses_identical": None}
    want = torch.load(cached / MODEL_FILE, weights_only=True, map_location="cpu")
    with tempfile.TemporaryDirectory(prefix="esad_retrain_check_") as tmp:
        run = Path(tmp) / "run"
        train(cfg, run, progress=False)
        got = torch.load(run / MODEL_FILE, weights_only=True, map_location="cpu")
        losses = _train_losses(run / LOG_FILE) == _train_losses(cached / LOG_FILE)
    same_keys = want.keys() == got.keys()
    diff = (
        max(float((want[k].double() - got[k].double()).abs().max()) if want[k].numel() else 0.0 for k in want)
        if same_keys
        else float("inf")
    )
    identical = same_keys and all(torch.equal(want[k], got[k]) for k in want)
    return {**out, "identical": identical, "max_abs_diff": diff, "losses_identical": losses}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default="demo", choices=sorted(PRESETS))
    p.add_argument("--categories", default=",".join(CATEGORIES), help="comma-separated (all five)")
    p.add_argument("--methods", default="esad,riad", help="comma-separated: esad, riad")
    p.add_argument("--threads", type=int, default=2, help="torch threads (the cached runs' count; 2)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    methods = [m for m in args.methods.split(",") if m]
    if bad := [m for m in methods if m not in ("esad", "riad")]:
        raise SystemExit(f"--methods: unknown {', '.join(bad)}; choose from esad, riad")
    rows = []
    cases = [(c, m) for c in args.categories.split(",") if c for m in methods]
    for category, method in tqdm(cases, desc="retrain_check"):
        cfg = PRESETS[args.profile].replace(category=category)
        rows.append((category, method, compare_run(riad_config(cfg) if method == "riad" else cfg)))
    print(
        f"Cached models of profile {args.profile} retrained with the working tree, "
        f"{args.threads} thread(s):\n"
    )
    print("| category | method | weights bit-identical | max abs diff | training losses identical |")
    print("|---|---|---|---|---|")
    for category, method, r in rows:
        if not r["cached"]:
            print(f"| {category} | {method} | not cached ({r['run_dir']}) | | |")
            continue
        print(
            f"| {category} | {method} | {'yes' if r['identical'] else 'NO'} | {r['max_abs_diff']:.1e} "
            f"| {'yes' if r['losses_identical'] else 'NO'} |"
        )
    checked = [r for *_, r in rows if r["cached"]]
    print(f"\n{sum(r['identical'] for r in checked)} of {len(checked)} cached models bit-identical")
    return 0 if all(r["identical"] for r in checked) else 1


if __name__ == "__main__":
    sys.exit(main())
