"""Training memory per image of ESAD (each memory option) and RIAD on CPU (issue 16).

    python benchmarks/train_memory.py [--quick] [--all] [--jobs J] [--threads T] [--time] [--json PATH]

Each case is one training step (forward over the K masks with the train fill, ``ESADLoss``,
backward, Adam) in a FRESH subprocess, at batch 1 and at batch 2.  The probe reads the peak
resident set of the step (``esad_lib.bench.memory.measure_peak_rss``: the kernel's high-water
mark reset right before the step, read after it) minus the resident set before it.  The
per-image figure is the slope ``delta(batch 2) - delta(batch 1)``: what one more image costs,
with the model, the optimiser state, the allocator's caches and the interpreter cancelled out.
"batch 8" is the linear extension ``delta(1) + 7 * slope`` (labelled as such; not measured).

Cases (``--all`` adds the rest):

* ``esad``               -- the model as the library builds it without checkpointing.
* ``esad + ckpt level``  -- checkpointing per U-Net level (what ``cfg.checkpointing`` selects).
* ``riad``               -- the classic-U-Net baseline.
* ``--all``: ``esad (plain grouped conv)`` / ``esad + ckpt level (plain grouped conv)``
  (``ExpandConv2d``'s repeated-input form off), ``esad + ckpt block``, ``esad + ckpt net``,
  ``riad + ckpt level``.

``--time`` also measures the step time of ``esad`` and ``esad + ckpt level`` side by side in
THIS process (interleaved, batch 1, after one warm-up step each): the checkpointing overhead.
Memory does not depend on the machine's load; the times in the table do (they come from
separate processes), so only the ``--time`` ratio compares times.

Full size: 256x256, width 64 (the paper's); ``--quick``: 64x64, width 16 (seconds; tests).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from benchmarks.train_speed import TrainStep, interleaved, random_batches  # noqa: E402
from esad_lib.bench.memory import measure_peak_rss  # noqa: E402
from esad_lib.config import (  # noqa: E402
    PRESETS,
    ESADConfig,
    riad_config,  # noqa: E402
)
from esad_lib.method import build_model  # noqa: E402

__all__ = ["CASES", "EXTRA_CASES", "case_config", "main", "probe", "run_memory"]

ROOT = Path(__file__).resolve().parents[1]

#: name -> (method, checkpointing granularity, repeated-input form of ExpandConv2d,
#: channels_last training layout of esad_lib.perf.speed)
CASES: dict[str, tuple[str, str, bool, bool]] = {
    "esad": ("esad", "off", True, False),
    "esad + ckpt level": ("esad", "level", True, False),
    "riad": ("riad", "off", True, False),
}
EXTRA_CASES: dict[str, tuple[str, str, bool, bool]] = {
    "esad (plain grouped conv)": ("esad", "off", False, False),
    "esad + ckpt level (plain grouped conv)": ("esad", "level", False, False),
    "esad + ckpt block": ("esad", "block", True, False),
    "esad + ckpt net": ("esad", "net", True, False),
    "esad + ckpt level (channels_last)": ("esad", "level", True, True),
    "riad + ckpt level": ("riad", "level", True, False),
}


def case_config(method: str, quick: bool, batch: int) -> ESADConfig:
    """The paper preset at the probe's size (quick: 64x64, width 16), for ESAD or RIAD."""
    size, width = (64, 16) if quick else (256, 64)
    cfg = PRESETS["paper"].replace(
        image_size=(size, size), base_width=width, batch_size=batch, device="cpu", checkpointing=False
    )
    return riad_config(cfg) if method == "riad" else cfg


def _model(cfg: ESADConfig, mode: str) -> torch.nn.Module:
    torch.manual_seed(cfg.seed)
    return build_model(cfg).set_checkpointing(mode)


def probe(spec: dict) -> dict:
    """Subprocess side: build the case, measure one training step's peak RSS delta."""
    torch.set_num_threads(int(spec["threads"]))
    cfg = case_config(spec["method"], bool(spec["quick"]), int(spec["batch"]))
    model = _model(cfg, spec["mode"])
    step = TrainStep(cfg, model, torch.device("cpu"), prepared=spec["prepared"], repeat=spec["repeat"])
    del model
    img = random_batches(cfg, 1, cfg.batch_size)[0]
    out = measure_peak_rss(lambda: step(1, img))
    out.update(spec)
    return out


def _run_probe(spec: dict) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    cmd = [sys.executable, str(Path(__file__).resolve()), "--probe", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        why = (
            "killed (out of memory?)"
            if proc.returncode == -9
            else (proc.stderr.strip().splitlines() or ["?"])[-1]
        )
        return {**spec, "status": f"failed: {why[:200]}"}
    return json.loads(lines[-1])


def run_memory(
    quick: bool, cases: dict[str, tuple[str, str, bool, bool]], threads: int = 1, jobs: int = 1
) -> list[dict]:
    """Probe every case at batch 1 and 2 (a subprocess each, ``jobs`` at a time)."""
    specs = [
        {
            "case": name,
            "method": m,
            "mode": mode,
            "repeat": rep,
            "prepared": cl,
            "batch": b,
            "quick": quick,
            "threads": threads,
        }
        for name, (m, mode, rep, cl) in cases.items()
        for b in (2, 1)  # the long ones first, so that parallel jobs finish together
    ]
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        results = list(tqdm(pool.map(_run_probe, specs), total=len(specs), desc="train_memory", leave=False))
    rows = []
    for name, (m, mode, rep, _cl) in cases.items():
        by_b = {r["batch"]: r for r in results if r["case"] == name}
        row = {"case": name, "method": m, "checkpointing": mode, "repeated_input": rep}
        failed = [r["status"] for r in by_b.values() if "status" in r]
        if failed:
            row["status"] = failed[0]
        else:
            d1, d2 = by_b[1]["delta_mib"], by_b[2]["delta_mib"]
            row.update(
                delta_b1_mib=d1,
                delta_b2_mib=d2,
                per_image_mib=d2 - d1,
                batch8_mib=d1 + 7 * (d2 - d1),
                step_s_b1=by_b[1]["seconds"],
                method_rss=by_b[1]["method"],
            )
        rows.append(row)
    return rows


def time_checkpointing(quick: bool, threads: int, steps: int = 2) -> dict:
    """Step time of ESAD without and with level checkpointing, interleaved in this process."""
    torch.set_num_threads(threads)
    cfg = case_config("esad", quick, 1)
    variants = {
        mode: TrainStep(cfg, _model(cfg, mode), torch.device("cpu"), prepared=False)
        for mode in ("off", "level")
    }
    res = interleaved(dict(variants), random_batches(cfg, steps + 1, 1), torch.device("cpu"), warmup=1)
    wall = {k: statistics.median(v["wall"]) for k, v in res.items()}
    cpu = {k: statistics.median(v["cpu"]) for k, v in res.items()}
    return {
        "step_s": wall,
        "cpu_s": cpu,
        "ratio_wall": wall["level"] / wall["off"],
        "ratio_cpu": cpu["level"] / cpu["off"],
        "losses": {k: v["losses"] for k, v in res.items()},
        "steps": steps,
    }


def format_markdown(rows: list[dict], quick: bool, threads: int, timing: dict | None) -> str:
    size, width = (64, 16) if quick else (256, 64)
    base = next((r for r in rows if r["case"] == "esad" and "per_image_mib" in r), None)
    lines = [
        f"Training memory per image (CPU, {size}x{size}, width {width}, K = 3, one step, "
        f"{threads} thread(s); "
        "fresh subprocess per case; peak-RSS delta of the step)",
        "",
        "| case | checkpointing | repeated input | peak delta b=1 (MiB) | peak delta b=2 (MiB) "
        "| per image (GiB) | vs esad | batch 8, linear (GiB) | step b=1 (s, not side by side) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "status" in r:
            lines.append(
                f"| {r['case']} | {r['checkpointing']} | {r['repeated_input']} | {r['status']} |||||| "
            )
            continue
        rel = f"{r['per_image_mib'] / base['per_image_mib']:.2f}x" if base else "-"
        lines.append(
            f"| {r['case']} | {r['checkpointing']} | {r['repeated_input']} | {r['delta_b1_mib']:.0f} "
            f"| {r['delta_b2_mib']:.0f} | {r['per_image_mib'] / 1024:.2f} | {rel} "
            f"| {r['batch8_mib'] / 1024:.1f} | {r['step_s_b1']:.1f} |"
        )
    if timing is not None:
        lines += [
            "",
            f"Step time, esad without vs with level checkpointing, side by side in one process "
            f"(batch 1, median of {timing['steps']} interleaved steps after a warm-up): "
            f"{timing['step_s']['off']:.2f} s vs {timing['step_s']['level']:.2f} s wall, "
            f"ratio {timing['ratio_wall']:.2f} (CPU time ratio {timing['ratio_cpu']:.2f}).",
        ]
    lines.append("Memory does not depend on the machine's load; times do (shared machine).")
    return "\n".join(lines)


def build_arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="64x64, width 16 (seconds; for tests)")
    p.add_argument("--all", action="store_true", help="also the other granularities and options")
    p.add_argument("--cases", default=None, help="comma-separated case names (default: the main three)")
    p.add_argument("--jobs", type=int, default=2, help="probes at a time (default 2; memory is unaffected)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per probe (default 1)")
    p.add_argument("--time", action="store_true", help="also time esad without/with checkpointing")
    p.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    p.add_argument("--probe", default=None, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_arg_parser().parse_args(argv)
    if args.probe is not None:
        print(json.dumps(probe(json.loads(args.probe))))
        return 0
    if args.jobs < 1 or args.threads < 1:
        raise SystemExit(f"--jobs and --threads must be >= 1, got {args.jobs} and {args.threads}")
    known = {**CASES, **EXTRA_CASES}
    cases = {**CASES, **(EXTRA_CASES if args.all else {})}
    if args.cases is not None:
        names = [c.strip() for c in args.cases.split(",") if c.strip()]
        unknown = [c for c in names if c not in known]
        if unknown or not names:
            raise SystemExit(f"--cases: unknown case(s) {unknown}; choose from {', '.join(known)}")
        cases = {c: known[c] for c in names}
    t0 = time.perf_counter()
    rows = run_memory(args.quick, cases, args.threads, args.jobs)
    timing = time_checkpointing(args.quick, args.threads) if args.time else None
    print(format_markdown(rows, args.quick, args.threads, timing))
    print(f"({time.perf_counter() - t0:.0f} s)")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"rows": rows, "timing": timing, "quick": args.quick}, indent=2) + "\n"
        )
    return 0 if all("status" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
