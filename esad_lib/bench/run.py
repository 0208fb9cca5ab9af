"""Entry point of the benchmark (``esad bench``, ``benchmarks/bench.py``): runs the sections,
writes ``<out>/results.json`` and ``<out>/results.md`` after every section."""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import os
import platform
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from esad_lib.bench.authors_rows import section_authors
from esad_lib.bench.inference_rows import section_inference
from esad_lib.bench.layers_rows import section_layers
from esad_lib.bench.masks_rows import section_masks
from esad_lib.bench.memory import probe_main
from esad_lib.bench.metrics_rows import section_metrics
from esad_lib.bench.report import format_markdown, write_results
from esad_lib.bench.scoring_rows import section_models
from esad_lib.bench.settings import bench_settings, cfg_for
from esad_lib.bench.train_scaling_rows import section_train_scaling
from esad_lib.bench.training_rows import section_train
from esad_lib.config import PRESETS, resolve_device

DESCRIPTION = "Side-by-side speed benchmark: ESAD's lightweight U-Nets against the RIAD baseline (issue 7)."

#: run order: cheap sections first, torch.compile (long compilation) last.
SECTIONS = ("metrics", "masks", "models", "authors", "train", "train_scaling", "layers", "inference")

SECTION_FUNCS: dict[str, Callable[[dict, torch.device, Callable[[str], None]], Any]] = {
    "models": section_models,
    "authors": section_authors,
    "train": section_train,
    "train_scaling": section_train_scaling,
    "masks": section_masks,
    "inference": section_inference,
    "layers": section_layers,
    "metrics": section_metrics,
}


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    return f"CPU {name} ({os.cpu_count()} logical cores)"


def run_benchmark(
    quick: bool,
    out_dir: str | os.PathLike = "bench",
    device: str | torch.device | None = None,
    profile: str | None = None,
    sections: tuple[str, ...] = SECTIONS,
    log: Callable[[str], None] | None = None,
    train_batch: int | None = None,
) -> dict[str, Any]:
    """Run the benchmark, write ``out_dir/results.json`` and ``out_dir/results.md``, return the results.

    ``quick``: tiny sizes, seconds (the test suite); else the profile ``paper`` (256x256, width 64,
    batch 8) and LOCO-scale metrics.  ``device``: "auto" (default), "cpu", "cuda", ...
    ``profile`` overrides the model scale profile; ``train_batch`` the training step's batch
    (default: the profile's).  A section that raises is reported under ``errors`` (the others
    still run); the files are rewritten after every section.
    """
    dev = resolve_device(str(device) if device is not None else "auto")
    st = bench_settings(quick, profile)
    st["train_batch"] = train_batch
    cfg = PRESETS[st["profile"]] if st["profile"] in PRESETS else cfg_for(st["profile"], "esad", "cpu")
    unknown = [n for n in sections if n not in SECTION_FUNCS]
    if unknown:
        raise ValueError(f"unknown section(s) {unknown}; choose from {SECTIONS}")
    t_start = time.perf_counter()

    def _default_log(msg: str) -> None:
        cpu = time.process_time() + resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
        print(f"[bench {time.perf_counter() - t_start:7.1f} s wall, {cpu:7.1f} s cpu] {msg}", flush=True)

    say = log or _default_log
    res: dict[str, Any] = {
        "meta": {
            "quick": bool(quick),
            "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "device": str(dev),
            "device_name": _device_name(dev),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "threads": torch.get_num_threads(),
            "profile": st["profile"],
            "image_size": list(cfg.image_size),
            "base_width": cfg.base_width,
            "cutout_sizes": list(cfg.cutout_sizes),
            "num_masks": cfg.num_masks,
            "batched": st["batched"],
            "warmup": st["warmup"],
            "repeats": st["repeats"],
            "heavy_repeats": st["heavy_repeats"],
            "heavy_warmup": st["heavy_warmup"],
            "train_batch": train_batch or cfg.batch_size,
        }
    }
    errors: dict[str, str] = {}
    out = Path(out_dir)
    old_threads = torch.get_num_threads()
    if st["threads"]:
        torch.set_num_threads(int(st["threads"]))
    res["meta"]["threads"] = torch.get_num_threads()
    res["meta"]["load_average_start"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    try:
        for name in sections:
            try:
                res[name] = SECTION_FUNCS[name](st, dev, say)
            except Exception as e:  # noqa: BLE001 -- a broken section is reported, the rest still runs
                errors[name] = f"{type(e).__name__}: {e}"
                say(f"{name}: FAILED {errors[name]}")
            write_results(res, errors, out, t_start)  # after every section: a long run keeps its figures
    finally:
        torch.set_num_threads(old_threads)
    return res


def build_arg_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The options of ``esad bench`` / ``benchmarks/bench.py``."""
    p = parser or argparse.ArgumentParser(prog="bench", description=DESCRIPTION)
    p.add_argument("--quick", action="store_true", help="tiny sizes, seconds (what the test suite runs)")
    p.add_argument(
        "--out", default="bench", help="output folder for results.json and results.md (default: bench)"
    )
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1, ...")
    p.add_argument(
        "--profile",
        default=None,
        choices=sorted(PRESETS),
        help="model scale (default: paper, or smoke with --quick)",
    )
    p.add_argument(
        "--train-batch",
        type=int,
        default=None,
        help="batch of the training-step row (default: the profile's batch_size)",
    )
    p.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated subset of {','.join(SECTIONS)} (default: all)",
    )
    return p


def main_from_args(args: argparse.Namespace) -> int:
    """Run with parsed options, print the tables; exit status 1 when a section failed."""
    sections = tuple(s.strip() for s in str(args.sections).split(",") if s.strip())
    res = run_benchmark(
        args.quick,
        args.out,
        device=args.device,
        profile=args.profile,
        sections=sections,
        train_batch=args.train_batch,
    )
    print(format_markdown(res))
    print(f"written: {Path(args.out) / 'results.json'}, {Path(args.out) / 'results.md'}")
    return 1 if res.get("errors") else 0


def main(argv: list[str] | None = None) -> int:
    """``python -m esad_lib.bench [options]``; ``--probe SPEC`` runs one memory probe."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--probe"]:
        return probe_main(argv[1])
    return main_from_args(build_arg_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
