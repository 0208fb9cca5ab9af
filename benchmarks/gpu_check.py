"""One-command CUDA check and measurement of training and scoring at the paper's scale.

    python benchmarks/gpu_check.py --out DIR [--device cuda[:N]] [--steps N]
    python benchmarks/gpu_check.py --out DIR --device cpu --quick      (a dry run on tiny sizes)

(``benchmarks/gpu_check.sh DIR`` wraps it with the environment and a time limit.)

Checks (each PASS/FAIL; any FAIL makes the exit status 1):

1. ``amp_train_step`` -- the trainer's training steps (``benchmarks.workloads.TrainingStep``:
   ``esad_lib.method.train_step.train_step``) of ESAD at the paper setting (256x256, width 64,
   batch 8, K = 3, ``cfg.amp`` float16 autocast + GradScaler, the preset's checkpointing,
   channels_last): the losses are finite.
2. ``fast_scoring`` -- ``esad_lib.scoring.anomaly_maps`` on the fast path equals the plain eager
   path within ``esad_lib.scoring.FAST_PATH_ATOL`` (as ``tests/test_scoring.py`` compares them).
3. ``checkpointing_gradients`` -- one float32 forward/backward of ``ESADLoss`` from the same
   weights with ``cfg.checkpointing`` off and on (cuDNN deterministic): every parameter's
   gradient agrees (max |diff| / max |grad| per tensor <= ``GRAD_RTOL``) and the BatchNorm
   buffers agree.

Measurements (batch 8, the paper's training setting with ``cfg.amp``):

* training step time (median of ``--steps`` after two warm-up steps) and peak memory
  (``torch.cuda.max_memory_allocated`` over those steps; "delta" = minus what was allocated
  before them: model, optimiser state) for ESAD with checkpointing off and on, and RIAD;
* full test-time scoring (every cutout size x every mask, feature map, smoothing; the fast
  path) in images/second for ESAD and RIAD.

Writes ``DIR/gpu_check.json`` and ``DIR/gpu_check.md`` (GPU name, date, torch version) and
prints the markdown.  Without CUDA (and ``--device cuda``) it exits with status 2 and one line
saying so -- nothing is estimated.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.workloads import TrainingStep, random_batches, scoring_extractor, seeded_model  # noqa: E402
from esad_lib.config import PRESETS, ESADConfig, riad_config  # noqa: E402
from esad_lib.method import model_fills  # noqa: E402
from esad_lib.method.loss import ESADLoss  # noqa: E402
from esad_lib.perf.speed import sync  # noqa: E402
from esad_lib.scoring import FAST_PATH_ATOL, anomaly_maps, prepare_scoring  # noqa: E402

__all__ = ["GRAD_RTOL", "main", "paper_config", "run_checks"]

#: tolerance of the checkpointing gradient check on the device (per tensor, relative to its max).
GRAD_RTOL = 1e-3


def paper_config(device: torch.device, quick: bool) -> ESADConfig:
    """The paper preset on ``device``; ``quick``: 32x32, width 8, batch 2 (a dry run)."""
    cfg = PRESETS["paper"].replace(device=str(device))
    if quick:
        cfg = cfg.replace(image_size=(32, 32), base_width=8, batch_size=2, eval_batch_size=2)
    return cfg


def check_amp_step(cfg: ESADConfig, device: torch.device) -> dict:
    step = TrainingStep(cfg, device)
    losses = [step(i, b) for i, b in enumerate(random_batches(cfg, 3, cfg.batch_size))]
    ok = all(math.isfinite(x) for x in losses)
    return {"ok": ok, "losses": losses, "amp": bool(cfg.amp) and device.type == "cuda"}


def check_fast_scoring(cfg: ESADConfig, device: torch.device, n: int = 4) -> dict:
    model = seeded_model(cfg, device).eval()
    x = random_batches(cfg, 1, n, seed=3)[0].to(device)
    fast = anomaly_maps(model, x, cfg.replace(fast_scoring=True))
    eager = anomaly_maps(model, x, cfg.replace(fast_scoring=False))
    diff = float((fast - eager).abs().max())
    return {"ok": diff <= FAST_PATH_ATOL, "max_abs_diff": diff, "atol": FAST_PATH_ATOL, "images": n}


def check_checkpointing(cfg: ESADConfig, device: torch.device, batch: int = 2) -> dict:
    cfg = cfg.replace(batch_size=batch, amp=False)
    img = random_batches(cfg, 1, batch, seed=4)[0].to(device)
    old = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        grads, bufs = [], []
        for on in (False, True):  # the same seeded weights, checkpointing off and on
            model = seeded_model(cfg.replace(checkpointing=on), device).train()
            loss_fn = ESADLoss(cfg).to(device)
            gen = torch.Generator().manual_seed(5)
            out = model(img, 8, fill=model_fills(cfg)[0], generator=gen)
            total, _ = loss_fn(img, out.recon, out.inpaint)
            total.backward()
            grads.append({n: p.grad.detach().float() for n, p in model.named_parameters()})
            bufs.append({n: b.detach().float() for n, b in model.named_buffers()})
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = old
    worst = max(
        float((grads[0][n] - grads[1][n]).abs().max()) / max(float(grads[0][n].abs().max()), 1e-12)
        for n in grads[0]
    )
    buf_diff = max(float((bufs[0][n] - bufs[1][n]).abs().max()) for n in bufs[0])
    return {
        "ok": worst <= GRAD_RTOL and buf_diff <= 1e-5,
        "max_rel_grad_diff": worst,
        "max_buffer_diff": buf_diff,
        "rtol": GRAD_RTOL,
        "batch": batch,
    }


def measure_train(cfg: ESADConfig, device: torch.device, steps: int) -> dict:
    """Step time and peak memory of one training configuration (``cfg.checkpointing`` decides)."""
    try:
        step = TrainingStep(cfg, device)
        batches = random_batches(cfg, steps + 2, cfg.batch_size)
        for i in range(2):
            step(i, batches[i])
        sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        times = []
        for i in range(2, steps + 2):
            sync(device)
            t0 = time.perf_counter()
            step(i, batches[i])
            sync(device)
            times.append(time.perf_counter() - t0)
        out = {"step_s": statistics.median(times), "images_per_s": cfg.batch_size / statistics.median(times)}
        if device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(device)
            out.update(peak_gib=peak / 2**30, delta_gib=(peak - base) / 2**30)
        del step
        return out
    except torch.cuda.OutOfMemoryError as e:
        return {"status": f"failed: out of memory ({str(e).splitlines()[0][:120]})"}
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()


def measure_scoring(cfg: ESADConfig, device: torch.device, reps: int) -> dict:
    model = seeded_model(cfg, device).eval()
    model, extractor = prepare_scoring(model, scoring_extractor(model, cfg))
    x = random_batches(cfg, 1, cfg.eval_batch_size, seed=6)[0].to(device)
    anomaly_maps(model, x, cfg, extractor=extractor)  # warm-up
    times = []
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        anomaly_maps(model, x, cfg, extractor=extractor)
        sync(device)
        times.append(time.perf_counter() - t0)
    t = statistics.median(times)
    return {"images_per_s": cfg.eval_batch_size / t, "batch_s": t, "batch": cfg.eval_batch_size}


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def run_checks(device: torch.device, quick: bool, steps: int) -> dict:
    cfg = paper_config(device, quick)
    res: dict = {
        "device": _device_name(device),
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "quick": quick,
        "setting": {
            "image_size": list(cfg.image_size),
            "base_width": cfg.base_width,
            "batch": cfg.batch_size,
            "num_masks": cfg.num_masks,
            "amp": bool(cfg.amp) and device.type == "cuda",
            "channels_last_training": cfg.channels_last_training,
        },
        "checks": {},
        "train": {},
        "scoring": {},
    }
    checks = {
        "amp_train_step": lambda: check_amp_step(cfg, device),
        "fast_scoring": lambda: check_fast_scoring(cfg, device),
        "checkpointing_gradients": lambda: check_checkpointing(cfg, device),
    }
    for name, fn in checks.items():
        try:
            res["checks"][name] = fn()
        except Exception as e:  # a failing check is reported, the others still run
            res["checks"][name] = {"ok": False, "error": f"{type(e).__name__}: {e}"[:300]}
    train_cases = {
        "esad, checkpointing off": cfg.replace(checkpointing=False),
        "esad, checkpointing on": cfg.replace(checkpointing=True),
        "riad": riad_config(cfg).replace(checkpointing=False),
    }
    for name, c in train_cases.items():
        res["train"][name] = measure_train(c, device, steps)
    for name, c in {"esad": cfg, "riad": riad_config(cfg)}.items():
        res["scoring"][name] = measure_scoring(c, device, reps=max(2, steps // 2))
    return res


def format_markdown(res: dict) -> str:
    s = res["setting"]
    lines = [
        f"# GPU check -- {res['device']}",
        "",
        f"{res['date']}, torch {res['torch']} (CUDA {res['cuda']}); "
        f"{s['image_size'][0]}x{s['image_size'][1]}, "
        f"width {s['base_width']}, batch {s['batch']}, K = {s['num_masks']}, AMP {s['amp']}, "
        f"channels_last {s['channels_last_training']}"
        + (" -- QUICK DRY RUN (tiny sizes)" if res["quick"] else ""),
        "",
        "| check | result | detail |",
        "|---|---|---|",
    ]
    for name, c in res["checks"].items():
        detail = ", ".join(
            f"{k}={v:.2e}" if isinstance(v, float) else f"{k}={v}" for k, v in c.items() if k != "ok"
        )
        lines.append(f"| {name} | {'PASS' if c['ok'] else 'FAIL'} | {detail[:200]} |")
    lines += [
        "",
        f"| training (batch {s['batch']}) | step (s) | images/s | peak memory (GiB) "
        "| peak minus model+optimiser (GiB) |",
        "|---|---|---|---|---|",
    ]
    for name, r in res["train"].items():
        if "status" in r:
            lines.append(f"| {name} | {r['status']} | | | |")
            continue
        peak = f"{r['peak_gib']:.2f}" if "peak_gib" in r else "-"
        delta = f"{r['delta_gib']:.2f}" if "delta_gib" in r else "-"
        lines.append(f"| {name} | {r['step_s']:.3f} | {r['images_per_s']:.1f} | {peak} | {delta} |")
    lines += ["", "| full scoring (fast path) | images/s | batch |", "|---|---|---|"]
    for name, r in res["scoring"].items():
        lines.append(f"| {name} | {r['images_per_s']:.1f} | {r['batch']} |")
    return "\n".join(lines)


def build_arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="output folder for gpu_check.json / .md")
    p.add_argument("--device", default="cuda", help="cuda, cuda:N (default cuda) or cpu (dry run)")
    p.add_argument("--quick", action="store_true", help="tiny sizes (a dry run of the script)")
    p.add_argument("--steps", type=int, default=5, help="timed training steps per case (default 5)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_arg_parser().parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            "gpu_check: CUDA is not available here (torch.cuda.is_available() is False); "
            "run it on a machine with a CUDA GPU, or use --device cpu --quick for a dry run",
            file=sys.stderr,
        )
        return 2
    if device.type not in ("cuda", "cpu"):
        raise SystemExit(f"--device must be cuda, cuda:N or cpu, got {args.device!r}")
    if args.steps < 1:
        raise SystemExit(f"--steps must be >= 1, got {args.steps}")
    if device.type == "cpu":
        torch.set_num_threads(1)  # a dry run on a shared CPU: one thread contends least
    res = run_checks(device, args.quick, args.steps)
    md = format_markdown(res)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(res, indent=2) + "\n")
    (args.out / "gpu_check.md").write_text(md + "\n")
    print(md)
    return 0 if all(c["ok"] for c in res["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
