"""Side-by-side speed benchmark of ESAD's lightweight U-Nets against the RIAD baseline (``make bench``).

    python benchmarks/bench.py [--quick] [--out bench] [--device D] [--profile P] [--sections S]

The paper (abstract; README "2. Proposed Method") introduces the lightweight U-Net "to meet
industrial requirements".  This script measures that claim and the library's speed-ups in ONE
process run, every group of contenders timed *interleaved* (round-robin, the order rotated every
repeat) after warm-up, reporting the median of several repeats, so that the ratios hold on a
noisy, shared machine.  Every contender is the library's own code path (``esad_lib.scoring``,
``esad_lib.method.train_step``, ``esad_lib.perf``); the only restatement is the authors'
procedure that the library is compared against.  Sections (``--sections``), one module each:

1. ``metrics``   (``metrics_rows``) AU-sPRO and pixel AUROC at MVTec LOCO scale, and against the
                 brute-force references.
2. ``models``    (``scoring_rows``) ESAD (two lightweight U-Nets) vs RIAD (one classic U-Net):
                 parameters, MACs, full test-time scoring of one image (every cutout size x every
                 mask, the map included) at batch 1 and batched, ``cfg.fast_scoring`` on and off,
                 and its peak memory.
3. ``authors``   (``scoring_rows``) the library's scoring vs a plain re-statement of the authors'
                 test-time procedure (masks one at a time, eager), maps checked equal.
4. ``train``     (``training_rows``) the trainer's step: time and peak memory per image at the
                 demo and paper settings, ESAD's training options (checkpointing, the plain
                 grouped conv) as rows, RIAD; the paper batch extrapolated (and labelled so)
                 where it is not measured.
5. ``layers``    (``layers_rows``) where a U-Net forward spends its time, per layer kind.
6. ``inference`` (``inference_rows``) inference options as speed-ups over the eager model,
                 outputs checked equal within a stated tolerance.
7. ``score_maps`` (``score_maps_speed``) ``esad score-maps`` on a generated LOCO-sized category
                 (60 maps of 1700x1000), and MVTec's official evaluation beside it when
                 ``$MVTEC_LOCO_EVAL_DIR`` names its folder (not shipped here).

Writes ``<out>/results.json`` and ``<out>/results.md`` after every section and prints the
markdown tables.  Rows that cannot run here (GPU rows without a GPU, ONNX without onnxruntime,
a failing ``torch.compile``) are reported as ``skipped: why`` / ``failed: why``, never estimated.
"""

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

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.inference_rows import section_inference  # noqa: E402
from benchmarks.layers_rows import section_layers  # noqa: E402
from benchmarks.metrics_rows import section_metrics  # noqa: E402
from benchmarks.report import format_markdown, write_results  # noqa: E402
from benchmarks.score_maps_speed import section_score_maps  # noqa: E402
from benchmarks.scoring_rows import section_authors, section_models  # noqa: E402
from benchmarks.training_rows import section_train  # noqa: E402
from benchmarks.workloads import cfg_for  # noqa: E402
from esad_lib.config import PRESETS, resolve_device  # noqa: E402

DESCRIPTION = "Side-by-side speed benchmark: ESAD's lightweight U-Nets against the RIAD baseline."


def bench_settings(quick: bool, profile: str | None = None) -> dict[str, Any]:
    """Sizes and repeat counts.  ``quick``: seconds (the test suite); else the paper's scale.

    The ``train_*`` entries drive the training-step rows (``training_rows``): the settings
    (profiles) measured, the batches measured in fresh subprocesses, the batch the
    per-image slope is extrapolated to, and per setting whether that batch is also measured
    directly on a CPU run (on CUDA it always is).
    """
    if quick:
        return {
            "profile": profile or "smoke",
            "warmup": 1,
            "repeats": 2,
            "heavy_warmup": 1,
            "heavy_repeats": 2,
            "batched": 2,
            # one intra-op thread: the quick run checks that everything runs, it measures little,
            # and an OpenMP pool on a busy machine adds more overhead than tiny ops take
            "threads": 1,
            "metric_n": 6,
            "metric_size": (100, 160),
            "metric_ref_n": 3,
            "metric_ref_size": (24, 40),
            "metric_repeats": 2,
            "layer_repeats": 1,
            "compile": False,  # inductor's C++ compilation would dwarf the whole quick run
            # the smoke preset as it is: a step takes far less than the subprocess's start
            "train_settings": ("smoke",),
            "train_batches": (1, 2),
            "train_target": 8,
            "train_measure_target_cpu": {"smoke": False},
            "train_timing": {"smoke": (1, 1)},  # (warm-up steps, timed repeats) per setting
            "score_maps_workload": (2, 170, 100),  # maps per label, width, height
        }
    return {
        "profile": profile or "paper",
        # one scoring call at 256x256 is slow on a small CPU: no separate warm-up call (the
        # median of 3 discards a slow first call)
        "warmup": 0,
        "repeats": 3,
        "heavy_warmup": 0,
        "heavy_repeats": 2,
        "batched": 2,
        "threads": None,  # torch's default
        "metric_n": 100,
        "metric_size": (1000, 1600),  # H x W of a full-resolution MVTec LOCO image
        # the references recount every pixel at every distinct threshold: O(pixels^2)
        "metric_ref_n": 5,
        "metric_ref_size": (40, 64),
        "metric_repeats": 3,
        "layer_repeats": 2,
        "compile": True,
        "train_settings": ("demo", "paper"),
        "train_batches": (1, 2),
        "train_target": 8,  # [RIAD]/[paper] batch_size of the paper setting
        # paper on CPU: batch 1-2 only (batch 8 through two 256x256 U-Nets x K masks needs more
        # memory than a small machine has); its batch-8 rows are extrapolated
        "train_measure_target_cpu": {"demo": True, "paper": False},
        # (warm-up steps, timed repeats): a median of 3 resists one slow step of a busy machine;
        # a paper-setting step on a CPU is long enough that one-time set-up does not count, and
        # long enough that one timed step per contender is what a run can afford
        "train_timing": {"demo": (1, 3), "paper": (0, 1)},
        "score_maps_workload": (20, 1700, 1000),  # one LOCO-sized category
    }


#: run order: cheap sections first, torch.compile (long compilation) last.
SECTIONS = ("metrics", "score_maps", "models", "authors", "train", "layers", "inference")

SECTION_FUNCS: dict[str, Callable[[dict, torch.device, Callable[[str], None]], Any]] = {
    "models": section_models,
    "authors": section_authors,
    "train": section_train,
    "inference": section_inference,
    "layers": section_layers,
    "metrics": section_metrics,
    "score_maps": section_score_maps,
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
) -> dict[str, Any]:
    """Run the benchmark, write ``out_dir/results.json`` and ``out_dir/results.md``, return the results.

    ``quick``: tiny sizes, seconds (the test suite); else the profile ``paper`` (256x256, width 64,
    batch 8) and LOCO-scale metrics.  ``device``: "auto" (default), "cpu", "cuda", ...
    ``profile`` overrides the model scale profile.  A section that raises is reported under
    ``errors`` (the others still run); the files are rewritten after every section.
    """
    dev = resolve_device(str(device) if device is not None else "auto")
    st = bench_settings(quick, profile)
    cfg = cfg_for(st["profile"], "esad", "cpu")
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
    """The options of ``benchmarks/bench.py``."""
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
    )
    print(format_markdown(res))
    print(f"written: {Path(args.out) / 'results.json'}, {Path(args.out) / 'results.md'}")
    return 1 if res.get("errors") else 0


def main(argv: list[str] | None = None) -> int:
    """``python benchmarks/bench.py [options]`` (``make bench``)."""
    return main_from_args(build_arg_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
