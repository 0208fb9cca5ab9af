"""CPU training throughput at the demo profile, before/after side by side (issue 16).

    python benchmarks/train_speed.py [--quick] [--steps N] [--threads T] [--compile] [--profile-ops]
                                     [--against REV [--against-epochs E] [--against-rounds R]]

Every variant starts from the same weights and trains on the same batches with the same masks
and cutout sizes; their steps are interleaved (variant A step 1, B step 1, ..., A step 2, ...)
so that the machine's load affects all alike.  Reported: images/second (median step), the
ratio to "today", and the agreement of the loss curves (max relative deviation from "today"
over all steps; float32 rounding in a different kernel order grows through Adam's normalised
updates, so the curves agree to a tolerance, not bit for bit).  The equality of what is
computed is proven separately in float64 (``float64_equivalence``: one step, gradients of
every parameter, the two layouts agree to ~1e-12).

Variants:

* ``today``        -- the step as it was when issue 16 was filed: the model as ``build_model``
  makes it in contiguous (NCHW) tensors, plain Adam, the loss term by term with the input's
  features extracted again for each output, the block's residual sum in a new tensor
  (``TermByTermLoss``, ``residual_in_place(False)``: the same values as the library's).
* ``in-place residual, input features once`` -- the library's block and the input's features
  extracted once (still term by term).
* ``prepared``     -- and ``esad_lib.perf.speed.prepare_for_training`` + ``to_training_layout``
  (channels_last).
* ``prepared, plain grouped conv`` -- same, with ``ExpandConv2d``'s repeated-input form off
  (the measurement behind keeping it).
* ``prepared + fused Adam`` -- and ``training_optimizer`` (fused Adam).
* ``trainer step (prepared + fused Adam + one-pass loss)`` -- and ``ESADLoss``'s one pass over
  both outputs: all that the trainer's step does.  Its weights after the run are compared with
  those of ``prepared + fused Adam`` (the same step with the term-by-term loss): bit-identical
  on this project's CPU.
* ``trainer step + torch.compile`` (``--compile``) -- both U-Nets compiled; its first step,
  which includes the compilation, is reported separately.

A second table compares ``today`` with ``all`` -- the trainer step + the process-wide CPU
allocator setting (``cfg.cpu_malloc_tuning``) -- in fresh processes run one at a time,
alternating (the allocator setting cannot be switched per step within one process, and two
processes running together on a 2-core machine would slow each other down).

``--against REV`` adds the end-to-end figure: the whole trainer of commit ``REV`` (exported
with ``git archive`` into a temporary folder) against the working tree's, each training the
demo profile on one category in fresh processes run one at a time, alternating
(``run_against``, worker ``benchmarks/trainer_worker.py``).  Its loss curves are compared on
the first epoch with ``LOSS_RTOL`` (later epochs drift further, float rounding through Adam).

``--profile-ops`` prints ``torch.profiler``'s per-op table (forward and backward ops) of the
"today" and "prepared" steps.

One training step here is a faithful copy of ``esad_lib.training``'s: model forward with the
model's train fill over the K masks, ``ESADLoss`` (with ``cfg.loss_feature_extractor``),
``zero_grad(set_to_none=True)``, backward, Adam (``cfg.lr``, ``cfg.weight_decay``).
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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch import nn  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from esad_lib.config import PRESETS, ESADConfig  # noqa: E402
from esad_lib.features import build_feature_extractor  # noqa: E402
from esad_lib.method import build_model  # noqa: E402
from esad_lib.method.blocks import ExpandConv2d, FeatureExtractionBlock  # noqa: E402
from esad_lib.method.loss import ESADLoss, l2_loss, msgms_loss, ssim_loss  # noqa: E402
from esad_lib.perf.speed import prepare_for_training, to_training_layout, training_optimizer  # noqa: E402

__all__ = [
    "LOSS_RTOL",
    "TrainStep",
    "float64_equivalence",
    "main",
    "repeated_input",
    "run_speed",
]

ROOT = Path(__file__).resolve().parents[1]

#: tolerance of the loss-curve agreement (relative, max over the steps compared).
LOSS_RTOL = 1e-2


@contextmanager
def repeated_input(on: bool) -> Iterator[None]:
    """``ExpandConv2d``'s repeated-input form on/off inside the block (restored after)."""
    old = ExpandConv2d.repeat_input
    ExpandConv2d.repeat_input = on
    try:
        yield
    finally:
        ExpandConv2d.repeat_input = old


def random_batches(cfg: ESADConfig, n: int, batch: int, seed: int = 1) -> list[torch.Tensor]:
    """``n`` seeded batches ``[batch, 3, H, W]`` of uniform noise in [-1, 1] (the cost of a step
    does not depend on the pixel values)."""
    g = torch.Generator().manual_seed(seed)
    h, w = cfg.image_size
    return [torch.rand(batch, 3, h, w, generator=g) * 2 - 1 for _ in range(n)]


class TermByTermLoss(ESADLoss):
    """``ESADLoss`` as it was computed when issue 16 was filed: one output at a time, each term
    from the public functions (``l2_loss``, ``ssim_loss``, ``msgms_loss``, ``FeatureLoss``),
    and -- with ``features_per_output`` (the issue-time form) -- the input's features extracted
    again for each output.  The same value and gradients as ``ESADLoss``'s one pass
    (``tests/test_perf.py``); here to time "today"."""

    def __init__(self, cfg: ESADConfig, extractor: nn.Module | None = None, features_per_output: bool = True):
        super().__init__(cfg, extractor)
        self.features_per_output = features_per_output

    def _terms(self, img: torch.Tensor, out: torch.Tensor, prefix: str, parts: dict, target) -> torch.Tensor:
        total = img.new_zeros(())
        for name, w, fn in (
            ("l2", self.w_l2, l2_loss),
            ("ssim", self.w_ssim, ssim_loss),
            ("msgms", self.w_msgms, msgms_loss),
        ):
            if w:
                v = fn(out, img)
                parts[f"{prefix}_{name}"] = float(v.detach())
                total = total + w * v
        if self.feature_loss is not None:
            f = self.feature_loss(img, out, None if self.features_per_output else target)
            parts[f"{prefix}_feature"] = float(f.detach())
            total = total + self.w_feature * f
        return total

    def forward(self, img: torch.Tensor, recon: torch.Tensor, inpaint: torch.Tensor | None = None):
        parts: dict[str, float] = {}
        img = img.float()
        target = None
        if self.feature_loss is not None and not self.features_per_output:
            target = self.feature_loss.target_features(img)
        total = self._terms(img, recon.float(), "recon", parts, target)
        if inpaint is not None and self.w_inpaint:
            total = total + self.w_inpaint * self._terms(img, inpaint.float(), "inpaint", parts, target)
        parts["total"] = float(total.detach())
        return total, parts


def _block_forward_out_of_place(self: FeatureExtractionBlock, x: torch.Tensor) -> torch.Tensor:
    # the block as it was when issue 16 was filed: the residual sum in a new tensor
    y = self.pointwise(self.attention(self.depthwise(self.expand(x))))
    return self.act(y + self.shortcut(x))


@contextmanager
def residual_in_place(on: bool) -> Iterator[None]:
    """``FeatureExtractionBlock``'s residual sum in place (the library's form) or, off, in a new
    tensor (the issue-time form; the same values)."""
    old = FeatureExtractionBlock.forward
    if not on:
        FeatureExtractionBlock.forward = _block_forward_out_of_place  # type: ignore[method-assign]
    try:
        yield
    finally:
        FeatureExtractionBlock.forward = old  # type: ignore[method-assign]


class TrainStep:
    """One training step of ``model`` as ``esad_lib.training`` takes it (see module docstring).

    ``prepared``: apply ``prepare_for_training`` / ``to_training_layout`` (with the config's
    ``channels_last_training``; its ``cpu_malloc_tuning`` only with ``malloc``, as that setting
    is process-wide).  ``repeat``: ``ExpandConv2d``'s repeated-input form.
    ``amp``: float16 autocast + GradScaler (CUDA only).  ``loss``: ``"library"`` (``ESADLoss``,
    one pass over both outputs), ``"term_by_term"`` (``TermByTermLoss``, the input's features
    once) or ``"issue"`` (``TermByTermLoss`` with the input's features per output, as when the
    issue was filed).  ``residual_in_place``: the block's in-place residual sum (off: the
    issue-time form).  ``step(i, img)`` returns the loss.
    """

    def __init__(
        self,
        cfg: ESADConfig,
        model: nn.Module,
        device: torch.device,
        prepared: bool,
        repeat: bool = True,
        compile_nets: bool = False,
        amp: bool = False,
        fused_adam: bool = False,
        malloc: bool = False,
        loss: str = "library",
        residual_in_place: bool = True,
    ) -> None:
        if loss not in ("library", "term_by_term", "issue"):
            raise ValueError(f"loss must be 'library', 'term_by_term' or 'issue', got {loss!r}")
        self.cfg, self.device, self.repeat = cfg, device, repeat
        self.residual_in_place = residual_in_place
        # the allocator setting is process-wide: only when asked (a process of its own)
        self.layout_cfg = cfg.replace(
            channels_last_training=prepared and cfg.channels_last_training,
            cpu_malloc_tuning=malloc and cfg.cpu_malloc_tuning,
        )
        model = copy.deepcopy(model).to(device).train()
        self.model = prepare_for_training(model, self.layout_cfg)
        if compile_nets:
            for name in ("inpaint_net", "recon_net"):
                net = getattr(self.model, name)
                if net is not None:
                    setattr(self.model, name, torch.compile(net))
        extractor = None
        if cfg.w_feature > 0:
            extractor = build_feature_extractor(
                cfg.loss_feature_extractor, weights=cfg.feature_weights, device=device
            )
        if loss == "library":
            self.loss_fn = ESADLoss(cfg, extractor).to(device)
        else:
            self.loss_fn = TermByTermLoss(cfg, extractor, features_per_output=loss == "issue").to(device)
        if fused_adam:
            self.opt = training_optimizer(self.model.parameters(), cfg)
        else:  # what esad_lib.training builds today
            self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.amp = bool(amp) and device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)

    def __call__(self, i: int, img: torch.Tensor) -> float:
        """Step number ``i`` (picks the cutout size and seeds the masks) on batch ``img``."""
        sizes = self.cfg.cutout_sizes
        c = int(sizes[i % len(sizes)])
        gen = torch.Generator().manual_seed(self.cfg.seed * 100_003 + i)
        img = to_training_layout(img.to(self.device, non_blocking=True), self.layout_cfg)
        with repeated_input(self.repeat), residual_in_place(self.residual_in_place):
            self.opt.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.float16, enabled=self.amp):
                # the training fill: the paper's (select = 0) for ESAD, RIAD's zero fill
                out = self.model(img, c, fill="zero" if self.model.is_riad else "train", generator=gen)
                total, _ = self.loss_fn(img, out.recon, out.inpaint)
            self.scaler.scale(total).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
        return float(total.detach())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
            _sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            loss = fn(i, img)
            _sync(device)
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


def weights_max_diff(a: nn.Module, b: nn.Module) -> float:
    """Max abs difference over every parameter and buffer of two models (0.0: bit-identical)."""
    sa, sb = a.state_dict(), b.state_dict()
    return max(float((sa[k].double() - sb[k].double()).abs().max()) if sa[k].numel() else 0.0 for k in sa)


def float64_equivalence(cfg: ESADConfig, seed: int = 0) -> float:
    """One forward/backward of the model in the "today" and the "prepared" layout, in float64,
    from the same weights, masks and batch: the max abs difference over the outputs
    (reconstruction, inpainting) and every parameter's gradient (about 1e-12 when both compute
    the same function).  The objective is ``sum((recon - img)^2) + sum((inpaint - img)^2)``:
    ``ESADLoss`` itself always computes in float32, so it cannot take part in a float64 check."""
    torch.manual_seed(seed)
    model = build_model(cfg).double().train()
    img = random_batches(cfg, 1, cfg.batch_size, seed + 1)[0].double()
    results = []
    for prepared in (False, True):
        lc = cfg.replace(channels_last_training=prepared)
        m = prepare_for_training(copy.deepcopy(model), lc)
        x = to_training_layout(img, lc)
        out = m(
            x,
            int(cfg.cutout_sizes[0]),
            fill="zero" if m.is_riad else "train",
            generator=torch.Generator().manual_seed(seed),
        )
        total = (out.recon - x).square().sum()
        if out.inpaint is not None:
            total = total + (out.inpaint - x).square().sum()
        total.backward()
        outs = [out.recon.detach()] + ([out.inpaint.detach()] if out.inpaint is not None else [])
        results.append(outs + [p.grad.detach() for p in m.parameters()])
    return max(float((a - b).abs().max()) for a, b in zip(*results))


def run_speed(
    cfg: ESADConfig,
    steps: int,
    with_compile: bool = False,
    device: torch.device | None = None,
    profile_ops: bool = False,
) -> dict:
    """Measure the variants side by side (module docstring); returns a dict with ``rows``."""
    device = device or torch.device("cpu")
    torch.manual_seed(cfg.seed)
    base = build_model(cfg)
    batches = random_batches(cfg, steps, cfg.batch_size, cfg.seed + 1)
    today = dict(prepared=False, loss="issue", residual_in_place=False)
    variants: dict[str, TrainStep] = {
        # the step when the issue was filed: NCHW, Adam, term-by-term loss, out-of-place residual
        "today": TrainStep(cfg, base, device, **today),
        "in-place residual, input features once": TrainStep(
            cfg, base, device, prepared=False, loss="term_by_term"
        ),
        "prepared": TrainStep(cfg, base, device, prepared=True, loss="term_by_term"),
        "prepared, plain grouped conv": TrainStep(
            cfg, base, device, prepared=True, repeat=False, loss="term_by_term"
        ),
        "prepared + fused Adam": TrainStep(
            cfg, base, device, prepared=True, fused_adam=True, loss="term_by_term"
        ),
        # everything the trainer does but the process-wide allocator setting
        "trainer step (prepared + fused Adam + one-pass loss)": TrainStep(
            cfg, base, device, prepared=True, fused_adam=True
        ),
    }
    if with_compile:
        variants["trainer step + torch.compile"] = TrainStep(
            cfg, base, device, prepared=True, fused_adam=True, compile_nets=True
        )
    res = interleaved(dict(variants), batches, device, warmup=1, desc="train_speed")
    ref = res["today"]
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
        "one_pass_weights_max_diff": weights_max_diff(
            variants["prepared + fused Adam"].model,
            variants["trainer step (prepared + fused Adam + one-pass loss)"].model,
        ),
    }
    if profile_ops:
        out["profiles"] = {name: _profile_table(variants[name], batches[0]) for name in ("today", "prepared")}
    return out


def _worker(variant: str, quick: bool, steps: int, threads: int) -> dict:
    """One process's share of ``run_processes``: ``steps`` steps of ``today`` or ``all``."""
    torch.set_num_threads(threads)
    # a process of its own: the allocator setting may apply (the smoke preset has it off)
    cfg = _profile_cfg(quick).replace(cpu_malloc_tuning=True)
    torch.manual_seed(cfg.seed)
    base = build_model(cfg)
    if variant == "all":
        step = TrainStep(cfg, base, torch.device("cpu"), prepared=True, fused_adam=True, malloc=True)
    else:
        step = TrainStep(
            cfg, base, torch.device("cpu"), prepared=False, loss="issue", residual_in_place=False
        )
    del base
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
    """``today`` and ``all`` (everything ``esad_lib.perf.speed`` offers, the process-wide
    allocator setting included), each in fresh processes run ONE AT A TIME, alternating
    (today, all, today, all, ...: ``rounds`` of each), so that they never compete for the cores
    and a drift of the machine's load affects both alike.  The step times of a variant's
    processes are pooled (each process's first step is its warm-up and excluded)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    variants = ("today", "all")
    out: dict[str, dict[str, list[float]]] = {v: {"wall": [], "cpu": [], "losses": []} for v in variants}
    order = [v for _ in range(rounds) for v in variants]
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
    ref = out["today"]
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
                # round by round: today's process and the one right after it, so a drift of the
                # machine's speed between rounds cancels out
                "paired_speedups": [t / a for t, a in zip(per_process["today"], per_process[variant])],
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
            "give a commit of this repository's history (e.g. the one before the issue's work)"
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
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "esad_lib"], capture_output=True, text=True
    )
    rows = []
    for version, rs in runs.items():
        epoch = [e for r in rs for e in r["epoch_s"][1:]]
        train = [e - v for r in rs for e, v in zip(r["epoch_s"][1:], r["validation_s"][1:])]
        rows.append(
            {
                "version": version,
                "commit": sha[:7]
                if version == "before"
                else head.stdout.strip() + ("+" if dirty.stdout.strip() else ""),
                "train_images": rs[0]["train_images"],
                "epoch_s": statistics.median(epoch),
                "train_s": statistics.median(train),
                "epochs_timed": len(epoch),
                "train_loss": rs[0]["train_loss"],
                "deterministic": all(r["train_loss"] == rs[0]["train_loss"] for r in rs),
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
        r["images_per_s_epoch"] = r["train_images"] / r["epoch_s"]
        r["images_per_s_train"] = r["train_images"] / r["train_s"]
        r["speedup_epoch"] = before["epoch_s"] / r["epoch_s"]
        r["speedup_train"] = before["train_s"] / r["train_s"]
        # the first epoch (30 steps at the demo) is the "few steps" of the loss-curve agreement;
        # float rounding in other kernels then grows through Adam, so later epochs drift further
        r["loss_dev_first_epoch"] = loss_deviation(r["train_loss"][:1], before["train_loss"][:1])
        r["loss_dev"] = loss_deviation(r["train_loss"], before["train_loss"])
    return {
        "rows": rows,
        "rounds": rounds,
        "epochs": epochs,
        "threads": threads,
        "category": category,
        "profile": profile,
    }


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
            f"| {r['version']} | {r['commit']} | {r['images_per_s_epoch']:.2f} | {r['speedup_epoch']:.2f}x "
            f"| {_paired(r['paired_speedup_epoch'])} "
            f"| {r['images_per_s_train']:.2f} | {r['speedup_train']:.2f}x "
            f"| {_paired(r['paired_speedup_train'])} "
            f"| {r['epoch_s']:.3f} "
            f"| {r['epoch_s'] - r['train_s']:.3f} | {r['loss_dev_first_epoch']:.1e} | {r['loss_dev']:.1e} |"
        )
    det = all(r["deterministic"] for r in res["rows"])
    lines.append("")
    lines.append(
        f"{res['rows'][0]['train_images']} training images per epoch; every process of a version gave "
        f"the same loss curve: {'yes' if det else 'NO'}"
    )
    return "\n".join(lines)


def _profile_table(step: TrainStep, img: torch.Tensor, row_limit: int = 20) -> str:
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
        f"time, alternating today/all, {res['rounds']} of each (same batches, masks, weights; step times "
        "pooled, each process's first step excluded):",
        "",
        "| process | images/s | step (s) | CPU s/step | speed-up (wall) | speed-up (CPU) "
        "| speed-up round by round: median [min, max] | loss curve vs today (max rel. dev.) |",
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
        "| loss curve vs today (max rel. dev.) |",
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
        f"(every curve within rel. {res['loss_rtol']:g} of today's)",
        f"float64 check (one step, today vs prepared layout): max |diff| over outputs and all gradients "
        f"= {res['float64_max_diff']:.1e}",
        f"one-pass loss vs term by term (same layout and optimiser), weights after {res['steps']} steps: "
        + (
            "bit-identical"
            if res["one_pass_weights_max_diff"] == 0.0
            else f"max |diff| = {res['one_pass_weights_max_diff']:.1e}"
        ),
        "Timings on a shared machine: compare the ratios (measured side by side), not absolute times.",
    ]
    return "\n".join(lines)


def build_arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke profile, few steps (seconds; for tests)")
    p.add_argument("--steps", type=int, default=None, help="steps per variant (default 12; quick 3)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
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
    p.add_argument("--worker", choices=("today", "all"), default=None, help=argparse.SUPPRESS)
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
    torch.set_num_threads(args.threads)
    cfg = _profile_cfg(args.quick)
    res = run_speed(cfg, steps, with_compile=args.compile, profile_ops=args.profile_ops)
    print(format_markdown(res))
    rows = list(res["rows"])
    if not args.no_processes:
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
