"""CPU training throughput of the trainer's step, with and without the library's speed opt-ins,
and the whole trainer against an older commit.

    python benchmarks/train_speed.py [--quick] [--steps N] [--threads T] [--compile] [--profile-ops]
                                     [--no-processes] [--rounds R]
                                     [--against REV [--against-epochs E] [--against-rounds R]
                                      [--category C]]

Every step here is the library's: ``esad_lib.method.train_step.train_step`` with ``ESADLoss``
(``benchmarks.workloads.TrainingStep``, set up as ``esad_lib.training`` sets it up).  The
variants differ only in the opt-ins of ``esad_lib.perf.speed`` and in two contrasts built in
this folder; they start from the same weights and train on the same batches with the same masks
and cutout sizes, their steps interleaved (variant A step 1, B step 1, ..., A step 2, ...) so
that the machine's load affects all alike.  Reported: images/second (median step), the ratio to
the first row, and the agreement of the loss curves (max relative deviation from the first row;
float32 rounding in another kernel order grows through Adam's normalised updates, so the curves
agree to a tolerance, not bit for bit).  The equality of what the layouts compute is proven
separately in float64 (``float64_equivalence``: one step, gradients of every parameter).

Variants (demo profile; ``--quick``: smoke):

* ``no opt-ins``        -- NCHW tensors, unfused ``torch.optim.Adam`` (the reference row).
* ``channels_last``     -- ``prepare_for_training`` / ``to_training_layout`` with
  ``cfg.channels_last_training``.
* ``channels_last, plain grouped conv`` -- the same with the expanding grouped convolutions as
  plain ``nn.Conv2d`` (``workloads.plain_grouped_conv``; the measurement behind the library's
  form of that layer).
* ``trainer step``      -- channels_last + ``training_optimizer`` (fused Adam): the trainer's step.
* ``trainer step + torch.compile`` (``--compile``) -- both U-Nets compiled; its first step, which
  includes the compilation, is reported separately.

A second table compares ``no opt-ins`` with ``all`` -- the trainer step plus the process-wide
CPU allocator setting (``tune_cpu_allocator``, called explicitly when ``cfg.cpu_malloc_tuning``)
-- in fresh processes run one at a time, alternating (the allocator setting cannot be switched
per step within one process, and two processes running together on a 2-core machine would slow
each other down).

``--against REV`` adds the end-to-end figure: the whole trainer of commit ``REV`` (exported with
``git archive`` into a temporary folder) against the working tree's, each training the demo
profile on one category in fresh processes run one at a time, alternating (``run_against``,
worker ``benchmarks/trainer_worker.py``).  Its loss curves are compared on the first epoch with
``LOSS_RTOL`` (later epochs drift further, float rounding through Adam).

``--profile-ops`` prints ``torch.profiler``'s per-op table (forward and backward ops) of the
``no opt-ins`` and ``trainer step`` steps.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from benchmarks.workloads import TrainingStep, random_batches, seeded_model  # noqa: E402
from esad_lib.config import PRESETS, ESADConfig  # noqa: E402
from esad_lib.method import model_fills  # noqa: E402
from esad_lib.perf.speed import prepare_for_training, sync, to_training_layout, tune_cpu_allocator  # noqa: E402

__all__ = ["LOSS_RTOL", "REFERENCE", "TRAINER", "float64_equivalence", "main", "run_against", "run_speed"]

ROOT = Path(__file__).resolve().parents[1]

#: tolerance of the loss-curve agreement (relative, max over the steps compared).
LOSS_RTOL = 1e-2

#: the reference row and the trainer's step.
REFERENCE = "no opt-ins"
TRAINER = "trainer step"


def _nchw(cfg: ESADConfig) -> ESADConfig:
    return cfg.replace(channels_last_training=False)


def variants(cfg: ESADConfig, base: torch.nn.Module, with_compile: bool = False) -> dict[str, TrainingStep]:
    """The in-process variants (module docstring), each from the weights of ``base``."""
    out = {
        REFERENCE: TrainingStep(_nchw(cfg), model=base, plain_adam=True),
        "channels_last": TrainingStep(cfg, model=base, plain_adam=True),
        "channels_last, plain grouped conv": TrainingStep(cfg, model=base, plain_adam=True, plain_conv=True),
        TRAINER: TrainingStep(cfg, model=base),
    }
    if with_compile:
        out["trainer step + torch.compile"] = TrainingStep(cfg, model=base, compile_nets=True)
    return out


def interleaved(
    steps: dict[str, Callable[[int, torch.Tensor], float]],
    batches: list[torch.Tensor],
    device: torch.device,
    warmup: int = 1,
    desc: str = "steps",
) -> dict[str, dict[str, list[float]]]:
    """Run every variant's steps round-robin; returns per variant ``losses`` (all steps),
    ``wall`` / ``cpu`` seconds of the steps after ``warmup`` and ``first_s`` (step 1)."""
    res = {k: {"losses": [], "wall": [], "cpu": [], "first_s": []} for k in steps}
    for i, img in enumerate(tqdm(batches, desc=desc, leave=False)):
        for name, fn in steps.items():
            sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            loss = fn(i, img)
            sync(device)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            r = res[name]
            r["losses"].append(loss)
            if i == 0:
                r["first_s"].append(wall)
            if i >= warmup:
                r["wall"].append(wall)
                r["cpu"].append(cpu)
    return res


def loss_deviation(a: list[float], b: list[float]) -> float:
    """Max over steps of ``|a_i - b_i| / |b_i|``."""
    return max(abs(x - y) / max(abs(y), 1e-12) for x, y in zip(a, b))


def float64_equivalence(cfg: ESADConfig, seed: int = 0) -> float:
    """One forward/backward of the model in the NCHW and the channels_last layout, in float64,
    from the same weights, masks and batch: the max abs difference over the outputs
    (reconstruction, inpainting) and every parameter's gradient (about 1e-12 when both compute
    the same function).  The objective is ``sum((recon - img)^2) + sum((inpaint - img)^2)``:
    ``ESADLoss`` itself computes in float32, so it cannot take part in a float64 check."""
    model = seeded_model(cfg.replace(seed=seed)).double().train()
    img = random_batches(cfg, 1, cfg.batch_size, seed + 1)[0].double()
    results = []
    for channels_last in (False, True):
        lc = cfg.replace(channels_last_training=channels_last, cpu_malloc_tuning=False)
        m = prepare_for_training(copy.deepcopy(model), lc)
        x = to_training_layout(img, lc)
        gen = torch.Generator().manual_seed(seed)
        out = m(x, int(cfg.cutout_sizes[0]), fill=model_fills(cfg)[0], generator=gen)
        total = (out.recon - x).square().sum()
        if out.inpaint is not None:
            total = total + (out.inpaint - x).square().sum()
        total.backward()
        outs = [out.recon.detach()] + ([out.inpaint.detach()] if out.inpaint is not None else [])
        results.append(outs + [p.grad.detach() for p in m.parameters()])
    return max(float((a - b).abs().max()) for a, b in zip(*results))


def run_speed(cfg: ESADConfig, steps: int, with_compile: bool = False, profile_ops: bool = False) -> dict:
    """Measure the variants side by side (module docstring); returns a dict with ``rows``."""
    device = torch.device("cpu")
    base = seeded_model(cfg)
    batches = random_batches(cfg, steps, cfg.batch_size, cfg.seed + 1)
    steps_of = variants(cfg, base, with_compile)
    res = interleaved(dict(steps_of), batches, device, warmup=1, desc="train_speed")
    ref = res[REFERENCE]
    ref_wall, ref_cpu = statistics.median(ref["wall"]), statistics.median(ref["cpu"])
    rows = []
    for name, r in res.items():
        wall, cpu = statistics.median(r["wall"]), statistics.median(r["cpu"])
        rows.append(
            {
                "variant": name,
                "images_per_s": cfg.batch_size / wall,
                "step_s": wall,
                "cpu_s": cpu,
                "speedup_wall": ref_wall / wall,
                "speedup_cpu": ref_cpu / cpu,
                "first_step_s": r["first_s"][0],
                "loss_dev": loss_deviation(r["losses"], ref["losses"]),
                "losses": r["losses"],
            }
        )
    out = {
        "profile": cfg.profile,
        "image_size": list(cfg.image_size),
        "base_width": cfg.base_width,
        "batch": cfg.batch_size,
        "num_masks": cfg.num_masks,
        "threads": torch.get_num_threads(),
        "steps": steps,
        "rows": rows,
        "float64_max_diff": float64_equivalence(cfg),
        "loss_rtol": LOSS_RTOL,
    }
    if profile_ops:
        out["profiles"] = {n: _profile_table(steps_of[n], batches[0]) for n in (REFERENCE, TRAINER)}
    return out


def _worker(variant: str, quick: bool, steps: int, threads: int) -> dict:
    """One process's share of ``run_processes``: ``steps`` steps of ``no opt-ins`` or ``all``."""
    torch.set_num_threads(threads)
    cfg = _profile_cfg(quick)
    if variant == "all":
        if cfg.cpu_malloc_tuning:
            tune_cpu_allocator()
        step = TrainingStep(cfg)
    else:
        step = TrainingStep(_nchw(cfg), plain_adam=True)
    res = interleaved({variant: step}, random_batches(cfg, steps, cfg.batch_size, cfg.seed + 1), step.device)
    return res[variant]


def _json_worker(cmd: list[str], env: dict[str, str], what: str) -> dict:
    """Run a worker process; its last stdout line starting with ``{`` is its JSON result."""
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{what} failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads(lines[-1])


def run_processes(quick: bool, steps: int, threads: int, rounds: int = 3) -> dict:
    """``no opt-ins`` and ``all`` (everything ``esad_lib.perf.speed`` offers, the process-wide
    allocator setting included), each in fresh processes run ONE AT A TIME, alternating
    (``rounds`` of each), so that they never compete for the cores
    and a drift of the machine's load affects both alike.  The step times of a variant's
    processes are pooled (each process's first step is its warm-up and excluded)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    names = ("no-opt-ins", "all")
    out: dict[str, dict[str, list[float]]] = {v: {"wall": [], "cpu": [], "losses": []} for v in names}
    order = [v for _ in range(rounds) for v in names]
    per_process: dict[str, list[float]] = {}
    for variant in tqdm(order, desc="train_speed processes", leave=False):
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", variant, "--steps", str(steps)]
        cmd += ["--threads", str(threads)] + (["--quick"] if quick else [])
        r = _json_worker(cmd, env, f"train_speed worker {variant!r}")
        out[variant]["wall"] += r["wall"]
        out[variant]["cpu"] += r["cpu"]
        out[variant]["losses"] = r["losses"]  # the same seeds in every process: one curve
        per_process.setdefault(variant, []).append(statistics.median(r["wall"]))
    rows = []
    ref = out["no-opt-ins"]
    for variant, r in out.items():
        wall, cpu = statistics.median(r["wall"]), statistics.median(r["cpu"])
        rows.append(
            {
                "variant": variant,
                "step_s": wall,
                "cpu_s": cpu,
                "speedup_wall": statistics.median(ref["wall"]) / wall,
                "speedup_cpu": statistics.median(ref["cpu"]) / cpu,
                "loss_dev": loss_deviation(r["losses"], ref["losses"]),
                "losses": r["losses"],
                "processes": rounds,
                "steps_timed": len(r["wall"]),
                # round by round: the reference process and the one right after it, so a drift of
                # the machine's speed between rounds cancels out
                "paired_speedups": [t / a for t, a in zip(per_process["no-opt-ins"], per_process[variant])],
            }
        )
    return {"rows": rows, "rounds": rounds}


def _paired(ratios: list[float]) -> str:
    """``median [min, max]`` of round-by-round speed-ups."""
    return f"{statistics.median(ratios):.2f}x [{min(ratios):.2f}, {max(ratios):.2f}]"


def export_commit(rev: str, dest: Path) -> str:
    """``esad_lib`` of commit ``rev`` written under ``dest`` (``git archive``; the working tree
    and the repository are only read).  Returns the full commit hash."""
    try:
        sha = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--verify", f"{rev}^{{commit}}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        tar = subprocess.run(
            ["git", "-C", str(ROOT), "archive", "--format=tar", sha, "esad_lib"],
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise SystemExit(
            f"--against {rev}: not a commit of the git repository at {ROOT} ({e}); "
            "give a commit of this repository's history"
        ) from e
    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        tf.extractall(dest, filter="data")
    return sha


def _trainer_run(
    root: Path, epochs: int, threads: int, category: str, profile: str, env: dict[str, str]
) -> dict:
    cmd = [sys.executable, str(Path(__file__).with_name("trainer_worker.py")), str(root)]
    cmd += ["--epochs", str(epochs), "--threads", str(threads), "--category", category, "--profile", profile]
    r = _json_worker(cmd, env, f"trainer worker for {root}")
    if not Path(r["imported_from"]).is_relative_to(root):
        raise RuntimeError(f"the worker for {root} imported esad_lib from {r['imported_from']}")
    return r


def run_against(
    rev: str,
    epochs: int = 4,
    rounds: int = 3,
    threads: int = 2,
    category: str = "breakfast_box",
    profile: str = "demo",
) -> dict:
    """The whole trainer of commit ``rev`` ("before") against the working tree's ("after"):
    ``esad_lib.training.train`` of each version at ``profile`` (demo) on one category, in fresh
    processes run ONE AT A TIME, alternating (before, after, before, ...: ``rounds`` of each),
    on one synthetic dataset generated into a temporary data root.  Each version trains with
    everything it does -- its data loading, masks, loss, optimiser, per-epoch validation --
    so this is the end-to-end figure a user sees.  Each process's first epoch is its warm-up
    and excluded; epoch times are pooled per version.  Reported: training images per second
    of the epoch (training + its validation) and of its training part alone (the epoch minus
    the validation), and the loss curves (per-epoch training loss) of the two versions."""
    if epochs < 2:
        raise SystemExit(f"--against-epochs must be >= 2 (the first is a warm-up), got {epochs}")
    with tempfile.TemporaryDirectory(prefix="esad_train_speed_") as tmp:
        before_root = Path(tmp) / "before"
        sha = export_commit(rev, before_root)
        env = dict(os.environ)
        env["ESAD_DATA_ROOT"] = str(Path(tmp) / "data")  # never the user's data root
        env.pop("PYTHONPATH", None)
        roots = {"before": before_root, "after": ROOT}
        runs: dict[str, list[dict]] = {"before": [], "after": []}
        order = [v for _ in range(rounds) for v in ("before", "after")]
        for version in tqdm(order, desc="train_speed --against", leave=False):
            runs[version].append(_trainer_run(roots[version], epochs, threads, category, profile, env))
    rows = _against_rows(runs, sha)
    return {
        "rows": rows,
        "rounds": rounds,
        "epochs": epochs,
        "threads": threads,
        "category": category,
        "profile": profile,
    }


def _working_tree_commit() -> str:
    """The short hash of HEAD, with ``+`` when ``esad_lib`` has uncommitted changes."""
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "esad_lib"], capture_output=True, text=True
    )
    return head.stdout.strip() + ("+" if dirty.stdout.strip() else "")


def _against_rows(runs: dict[str, list[dict]], sha: str) -> list[dict]:
    """The rows of ``run_against`` from the workers' results of each version."""
    for rs in runs.values():
        for r in rs:  # a version whose trainer the worker cannot time: its validation counts as 0 s
            if r["validation_s"] is None:
                r["validation_s"], r["validation_timed"] = [0.0] * len(r["epoch_s"]), False
    commits = {"before": sha[:7], "after": _working_tree_commit()}
    rows = []
    for version, rs in runs.items():
        epoch = [e for r in rs for e in r["epoch_s"][1:]]
        train = [e - v for r in rs for e, v in zip(r["epoch_s"][1:], r["validation_s"][1:])]
        rows.append(
            {
                "version": version,
                "commit": commits[version],
                "train_images": rs[0]["train_images"],
                "epoch_s": statistics.median(epoch),
                "train_s": statistics.median(train),
                "epochs_timed": len(epoch),
                "train_loss": rs[0]["train_loss"],
                "deterministic": all(r["train_loss"] == rs[0]["train_loss"] for r in rs),
                "validation_timed": all(r.get("validation_timed", True) for r in rs),
            }
        )

    def per_round(rs: list[dict], part: bool) -> list[float]:
        if part:
            return [
                statistics.median([e - v for e, v in zip(r["epoch_s"][1:], r["validation_s"][1:])])
                for r in rs
            ]
        return [statistics.median(r["epoch_s"][1:]) for r in rs]

    before, after = rows
    for r, rs in zip(rows, runs.values()):
        r["paired_speedup_epoch"] = [
            b / a for b, a in zip(per_round(runs["before"], False), per_round(rs, False))
        ]
        r["paired_speedup_train"] = [
            b / a for b, a in zip(per_round(runs["before"], True), per_round(rs, True))
        ]
    for r in rows:
        n = r["train_images"]  # None: a version whose trainer the worker cannot count
        r["images_per_s_epoch"] = n / r["epoch_s"] if n else None
        r["images_per_s_train"] = n / r["train_s"] if n else None
        r["speedup_epoch"] = before["epoch_s"] / r["epoch_s"]
        r["speedup_train"] = before["train_s"] / r["train_s"]
        # the first epoch (30 steps at the demo) is the "few steps" of the loss-curve agreement;
        # float rounding in other kernels then grows through Adam, so later epochs drift further
        r["loss_dev_first_epoch"] = loss_deviation(r["train_loss"][:1], before["train_loss"][:1])
        r["loss_dev"] = loss_deviation(r["train_loss"], before["train_loss"])
    return rows


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def format_against(res: dict) -> str:
    lines = [
        "",
        f"The whole trainer, commit {res['rows'][0]['commit']} (before) against {res['rows'][1]['commit']} "
        f"(after): {res['profile']} profile, {res['category']}, {res['epochs']} epochs per process, "
        "fresh processes run one at a time, "
        f"alternating, {res['rounds']} of each, {res['threads']} thread(s); medians of the pooled epochs "
        "(each process's first epoch excluded); round by round: each before-process against the "
        "after-process right after it, median [min, max] over the rounds:",
        "",
        "| version | commit | images/s, epoch (training + validation) | speed-up | round by round "
        "| images/s, training part | speed-up | round by round | epoch (s) | validation (s) "
        "| epoch-1 loss vs before (rel. dev.) | loss curve vs before (max rel. dev., all epochs) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        lines.append(
            f"| {r['version']} | {r['commit']} | {_num(r['images_per_s_epoch'])} | {r['speedup_epoch']:.2f}x "
            f"| {_paired(r['paired_speedup_epoch'])} "
            f"| {_num(r['images_per_s_train'])} | {r['speedup_train']:.2f}x "
            f"| {_paired(r['paired_speedup_train'])} "
            f"| {r['epoch_s']:.3f} "
            f"| {r['epoch_s'] - r['train_s']:.3f} | {r['loss_dev_first_epoch']:.1e} | {r['loss_dev']:.1e} |"
        )
    det = all(r["deterministic"] for r in res["rows"])
    untimed = [r["version"] for r in res["rows"] if not r["validation_timed"]]
    if untimed:
        lines += ["", f"validation not timed for: {', '.join(untimed)} (training part = the whole epoch)"]
    lines.append("")
    lines.append(
        f"{res['rows'][0]['train_images']} training images per epoch; every process of a version gave "
        f"the same loss curve: {'yes' if det else 'NO'}"
    )
    return "\n".join(lines)


def _profile_table(step: TrainingStep, img: torch.Tensor, row_limit: int = 20) -> str:
    from torch.profiler import ProfilerActivity, profile, record_function

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(2):
            with record_function("train_step"):
                step(i, img)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=row_limit)


def format_processes(res: dict, batch: int) -> str:
    lines = [
        "",
        "Everything together, the process-wide CPU allocator setting included: fresh processes run one at a "
        f"time, alternating no-opt-ins/all, {res['rounds']} of each (same batches, masks, weights; "
        "step times pooled, each process's first step excluded):",
        "",
        "| process | images/s | step (s) | CPU s/step | speed-up (wall) | speed-up (CPU) "
        "| speed-up round by round: median [min, max] | loss curve vs no-opt-ins (max rel. dev.) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        lines.append(
            f"| {r['variant']} | {batch / r['step_s']:.2f} | {r['step_s']:.4f} | {r['cpu_s']:.4f} "
            f"| {r['speedup_wall']:.2f}x | {r['speedup_cpu']:.2f}x | {_paired(r['paired_speedups'])} "
            f"| {r['loss_dev']:.1e} |"
        )
    return "\n".join(lines)


def format_markdown(res: dict) -> str:
    lines = [
        f"Training throughput, profile {res['profile']} ({res['image_size'][0]}x{res['image_size'][1]}, "
        f"width {res['base_width']}, batch {res['batch']}, K = {res['num_masks']}), "
        f"{res['threads']} thread(s), {res['steps']} interleaved steps (first = warm-up, excluded).",
        "",
        "| variant | images/s | step (s) | CPU s/step | speed-up (wall) | speed-up (CPU) | first step (s) "
        f"| loss curve vs {REFERENCE} (max rel. dev.) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        lines.append(
            f"| {r['variant']} | {r['images_per_s']:.2f} | {r['step_s']:.4f} | {r['cpu_s']:.4f} "
            f"| {r['speedup_wall']:.2f}x | {r['speedup_cpu']:.2f}x | {r['first_step_s']:.2f} "
            f"| {r['loss_dev']:.1e} |"
        )
    ok = all(r["loss_dev"] <= res["loss_rtol"] for r in res["rows"])
    lines += [
        "",
        f"loss agreement: {'OK' if ok else 'FAILED'} "
        f"(every curve within rel. {res['loss_rtol']:g} of {REFERENCE})",
        f"float64 check (one step, NCHW vs channels_last): max |diff| over outputs and all gradients "
        f"= {res['float64_max_diff']:.1e}",
        "Timings on a shared machine: compare the ratios (measured side by side), not absolute times.",
    ]
    return "\n".join(lines)


def build_arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke profile, few steps (seconds; for tests)")
    p.add_argument("--steps", type=int, default=None, help="steps per variant (default 12; quick 3)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile of the U-Nets")
    p.add_argument("--profile-ops", action="store_true", help="print torch.profiler per-op tables")
    p.add_argument("--no-processes", action="store_true", help="skip the process comparison")
    p.add_argument(
        "--rounds", type=int, default=None, help="processes of each variant in that comparison (3; quick 1)"
    )
    p.add_argument(
        "--against",
        metavar="REV",
        default=None,
        help="also time the whole trainer of commit REV against the working tree's "
        "(fresh processes, alternating)",
    )
    p.add_argument("--against-epochs", type=int, default=4, help="epochs per process of --against (4)")
    p.add_argument("--against-rounds", type=int, default=3, help="processes of each version in --against (3)")
    p.add_argument("--category", default="breakfast_box", help="category --against trains (breakfast_box)")
    p.add_argument(
        "--against-only", action="store_true", help="with --against: skip the in-process and process tables"
    )
    p.add_argument("--worker", choices=("no-opt-ins", "all"), default=None, help=argparse.SUPPRESS)
    return p


def _profile_cfg(quick: bool) -> ESADConfig:
    # the presets themselves (not get_config: ESAD_PROFILE must not turn the demo into smoke)
    return PRESETS["smoke" if quick else "demo"].replace(device="cpu")


def main(argv: list[str] | None = None) -> int:
    args = build_arg_parser().parse_args(argv)
    if args.threads < 1:
        raise SystemExit(f"--threads must be >= 1, got {args.threads}")
    steps = args.steps if args.steps is not None else (3 if args.quick else 12)
    if steps < 2:
        raise SystemExit(f"--steps must be >= 2 (the first is a warm-up), got {steps}")
    if args.worker is not None:
        print(json.dumps(_worker(args.worker, args.quick, steps, args.threads)))
        return 0
    if args.against_only and args.against is None:
        raise SystemExit("--against-only needs --against REV")
    torch.set_num_threads(args.threads)
    cfg = _profile_cfg(args.quick)
    res: dict = {"rows": []}
    if not args.against_only:
        res = run_speed(cfg, steps, with_compile=args.compile, profile_ops=args.profile_ops)
        print(format_markdown(res))
    rows = list(res["rows"])
    if not (args.no_processes or args.against_only):
        rounds = args.rounds if args.rounds is not None else (1 if args.quick else 3)
        procs = run_processes(args.quick, steps, args.threads, rounds=rounds)
        print(format_processes(procs, cfg.batch_size))
        rows += procs["rows"]
    if args.against is not None:
        against = run_against(
            args.against, args.against_epochs, args.against_rounds, args.threads, args.category
        )
        print(format_against(against))
        rows += [{"loss_dev": r["loss_dev_first_epoch"]} for r in against["rows"]]
    for name, table in res.get("profiles", {}).items():
        print(f"\n### per-op profile: {name}\n{table}")
    return 0 if all(r["loss_dev"] <= LOSS_RTOL for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
