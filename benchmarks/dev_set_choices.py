"""Choose a profile's settings on the held-out synthetic DEV set (``synth_seed=1``), never on the
reported test set (seed 0).

Each candidate is a config diff of a profile's preset.  For every candidate and category the
model is trained (or loaded from ``train_or_load``'s cache) and scored on the dev set's test
split, once per scoring variant (test-time diffs that share the trained model).  Prints a
markdown table of the mean structural / logical image AUROC with 95 % intervals, and writes
every number to ``--out`` (JSON lines, appended as results come in, so an interrupted sweep keeps
what it measured); ``--summarize FILE...`` prints the table of such files.

    python benchmarks/dev_set_choices.py --profile demo --threads 1 \\
        --candidate square64 '{}' --candidate aspect96 '{"keep_aspect": true, "image_size": [96, 96]}' \\
        --scoring random_cnn '{}' --scoring effnet '{"feature_extractor": "efficientnet_lite0"}'
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from esad_lib.config import CATEGORIES, get_config
from esad_lib.data import input_size
from esad_lib.evaluation import evaluate_model
from esad_lib.report import mean_with_ci
from esad_lib.run_io import read_log, run_dir_for
from esad_lib.training import train_or_load

DEV_SEED = 1


def _diff(text: str) -> dict:
    d = json.loads(text)
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def summarize(paths: list[str]) -> str:
    """The markdown table of JSON-lines files written by this script (a row measured twice:
    the last one counts); only candidates measured on all five categories get a mean."""
    rows: dict[tuple[str, str, str], dict] = {}
    for p in paths:
        for line in Path(p).read_text().splitlines():
            r = json.loads(line)
            rows[(r["candidate"], r["scoring"], r["category"])] = r
    groups: dict[tuple[str, str], list[dict]] = {}
    for (c, s, _), r in rows.items():
        groups.setdefault((c, s), []).append(r)
    threads = sorted({r["threads"] for r in rows.values()})
    lines = [
        f"| candidate | scoring | input size (H x W) | categories | structural image AUROC % | "
        f"logical image AUROC % | s per epoch ({'/'.join(map(str, threads))} thread) |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for (c, s), rs in groups.items():
        complete = len(rs) == len(CATEGORIES)
        cells = []
        for kind in ("structural", "logical"):
            vals = [r["image_auroc"][kind] for r in rs]
            ses = [r["ci"][kind]["se"] for r in rs]
            cells.append(mean_with_ci(vals, ses) if complete else "(incomplete)")
        sizes = ", ".join(sorted({"x".join(map(str, r["input_size"])) for r in rs}))
        epoch = [r["epoch_seconds"] for r in rs if r.get("epoch_seconds")]
        ep = f"{sum(epoch) / len(epoch):.1f}" if epoch else "-"
        lines.append(f"| {c} | {s} | {sizes} | {len(rs)} | {cells[0]} | {cells[1]} | {ep} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "--summarize":
        print(summarize(argv[1:]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="demo")
    ap.add_argument("--categories", nargs="+", default=list(CATEGORIES))
    ap.add_argument("--candidate", nargs=2, action="append", metavar=("NAME", "JSON_DIFF"), required=True)
    ap.add_argument("--scoring", nargs=2, action="append", metavar=("NAME", "JSON_DIFF"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="bench/dev_set_choices.jsonl")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    scorings = args.scoring or [["preset", "{}"]]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table: dict[tuple[str, str], dict[str, list]] = {}
    for cname, ctext in args.candidate:
        for cat in args.categories:
            cfg = get_config(args.profile, category=cat, synth_seed=DEV_SEED, **_diff(ctext))
            t0 = time.perf_counter()
            model = train_or_load(cfg, progress=False)
            train_s = time.perf_counter() - t0
            log = read_log(run_dir_for(cfg))
            epoch_s = sum(float(r["seconds"]) for r in log) / max(len(log), 1) if log else None
            for sname, stext in scorings:
                scfg = cfg.replace(**_diff(stext))
                m, _ = evaluate_model(model, scfg, progress=False)
                row = {
                    "candidate": cname,
                    "scoring": sname,
                    "category": cat,
                    "input_size": list(input_size(scfg)),
                    "image_auroc": m["image_auroc"],
                    "ci": m["ci"]["image_auroc"],
                    "au_spro": m["au_spro"],
                    "epoch_seconds": epoch_s,
                    "seconds_this_call": train_s,
                    "threads": args.threads,
                    "config_key": cfg.key(),
                }
                with out.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                cell = table.setdefault((cname, sname), {"str": [], "str_se": [], "log": [], "log_se": []})
                for k, kind in (("str", "structural"), ("log", "logical")):
                    cell[k].append(m["image_auroc"][kind])
                    cell[f"{k}_se"].append(m["ci"]["image_auroc"][kind]["se"])
                ia = m["image_auroc"]
                print(
                    f"{cname:>12} {sname:>12} {cat:>20} {input_size(scfg)} "
                    f"str {100 * ia['structural']:.1f} log {100 * ia['logical']:.1f}",
                    file=sys.stderr,
                    flush=True,
                )
    print(f"\n### DEV set (synth_seed={DEV_SEED}), profile `{args.profile}`, {args.threads} thread(s)\n")
    print("| candidate | scoring | structural image AUROC % | logical image AUROC % |")
    print("|---|---|---:|---:|")
    for (cname, sname), cell in table.items():
        print(
            f"| {cname} | {sname} | {mean_with_ci(cell['str'], cell['str_se'])} | "
            f"{mean_with_ci(cell['log'], cell['log_se'])} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
