"""Rows "inference options": each option as a speed-up over the same model's plain eager forward
(the reconstruction for one cutout size, the K masks batched, batch 1), the outputs checked
equal within a stated tolerance: ``torch.inference_mode``, channels_last, BatchNorm folded into
the conv, ``torch.compile``, bf16/fp16 autocast (CUDA only), ONNX Runtime on CPU (only when
``onnx`` and ``onnxruntime`` are installed: ``pip install -e ".[bench]"``).  An option that
cannot run here is a row ``skipped: why`` / ``failed: why``, never estimated.
"""

from __future__ import annotations

import contextlib
import copy
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.timing import time_interleaved
from benchmarks.workloads import TOL_BF16, TOL_EXACT, TOL_FP16, TOL_FP32, cfg_for, random_images, seeded_model
from esad_lib.method.masks import disjoint_masks
from esad_lib.perf.fusion import fold_batchnorm
from esad_lib.perf.speed import sync


@contextlib.contextmanager
def warnings_silenced() -> Iterator[None]:
    """Silence the exporter's warnings (tracer warnings about Python control flow)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def onnx_option(
    module: torch.nn.Module, img: torch.Tensor, tmp: Path
) -> tuple[Callable[[], np.ndarray] | None, str]:
    """An ONNX Runtime (CPU) session for ``module(img)``; ``(None, why)`` when not possible."""
    try:
        import onnx  # noqa: F401 -- optional dependency, imported here to report its absence
        import onnxruntime as ort
    except ImportError as e:
        return None, f"skipped: {e.name} not installed (pip install onnx onnxruntime)"
    path = tmp / "model.onnx"
    try:
        with warnings_silenced():
            torch.onnx.export(
                module, (img,), str(path), input_names=["img"], output_names=["recon"], dynamo=False
            )
        so = ort.SessionOptions()
        so.intra_op_num_threads = torch.get_num_threads()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 -- report any exporter/runtime failure as a row
        return None, f"failed: {type(e).__name__}: {str(e).splitlines()[0][:160]}"
    x = img.cpu().numpy()
    return (lambda: sess.run(None, {"img": x})[0]), f"ok (onnxruntime {ort.__version__})"


class OneCutoutSize(torch.nn.Module):
    """The model's reconstruction for one cutout size with fixed masks: ``img [B, 3, H, W] -> recon
    [B, 3, H, W]``, with the test fill ``fill`` and its mixing weight ``alpha`` (``cfg.fill_alpha``)."""

    def __init__(
        self, model: torch.nn.Module, cutout: int, masks: torch.Tensor, fill: str, alpha: float
    ) -> None:
        super().__init__()
        self.model, self.cutout, self.fill, self.alpha = model, int(cutout), fill, float(alpha)
        self.register_buffer("masks", masks)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.model(img, self.cutout, fill=self.fill, alpha=self.alpha, masks=self.masks).recon


def _why(e: Exception) -> str:
    return f"failed: {type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"


EAGER = "eager (no_grad)"


@dataclass
class OptionTable:
    """The inference options of one model, in row order: what each runs (``fns``; absent for an
    option that cannot run here), its status, its tolerance against eager, and extra figures."""

    fns: dict[str, Callable[[], object]] = field(default_factory=dict)
    status: dict[str, str] = field(default_factory=dict)
    tol: dict[str, float] = field(default_factory=dict)
    extra: dict[str, dict] = field(default_factory=dict)

    def add(self, name: str, tol: float, status: str, fn: Callable[[], object] | None = None) -> None:
        """One option (a row): ``fn`` is timed and checked when given."""
        self.tol[name], self.status[name] = tol, status
        if fn is not None:
            self.fns[name] = fn


@dataclass
class InferenceCase:
    """One model's workload: its reconstruction for the smallest cutout size with fixed masks
    ``[K, 1, H, W]`` on one image ``img [1, 3, H, W]``."""

    method: str
    model: torch.nn.Module
    cutout: int
    masks: torch.Tensor
    fill: str
    alpha: float
    img: torch.Tensor
    device: torch.device
    eager: OneCutoutSize = field(init=False)  # the baseline: plain eager forward of ``model``

    def __post_init__(self) -> None:
        self.eager = OneCutoutSize(self.model, self.cutout, self.masks, self.fill, self.alpha).eval()

    def copy_of_eager(self) -> OneCutoutSize:
        """The eager module on a deep copy of the model (for options that change the module)."""
        return OneCutoutSize(copy.deepcopy(self.model), self.cutout, self.masks, self.fill, self.alpha).eval()


def _no_grad(fn: Callable[[], object]) -> Callable[[], object]:
    def run() -> object:
        with torch.no_grad():
            return fn()

    return run


def _inference(fn: Callable[[], object]) -> Callable[[], object]:
    def run() -> object:
        with torch.inference_mode():
            return fn()

    return run


def section_inference(st: dict, device: torch.device, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Inference options on the reconstruction for one cutout size (all K masks batched), for
    ESAD and for RIAD (each option as a speed-up over the same model's plain eager forward)."""
    rows = []
    for method in ("esad", "riad"):
        rows += [{"model": method, **r} for r in _inference_rows(method, st, device, log)]
    return rows


def _case(method: str, st: dict, device: torch.device) -> InferenceCase:
    """The workload of ``method`` at the run's profile: smallest cutout size, masks seeded 0."""
    cfg = cfg_for(st["profile"], method, str(device))
    model = seeded_model(cfg, device).eval()
    h, w = cfg.image_size
    cut = int(sorted(cfg.cutout_sizes)[0])
    masks = disjoint_masks(h, w, cut, cfg.num_masks, generator=torch.Generator().manual_seed(0)).to(device)
    img = random_images(1, (h, w), cfg.seed + 4).to(device)
    return InferenceCase(method, model, cut, masks, cfg.test_fill, cfg.fill_alpha, img, device)


def add_basic_options(table: OptionTable, case: InferenceCase) -> None:
    """Eager (the baseline), inference_mode, channels_last, BatchNorm folded, and both."""
    eager, img = case.eager, case.img
    table.add(EAGER, TOL_EXACT, "ok", _no_grad(lambda: eager(img)))
    table.add("inference_mode", TOL_EXACT, "ok", _inference(lambda: eager(img)))
    cl_model = case.copy_of_eager().to(memory_format=torch.channels_last)
    img_cl = img.contiguous(memory_format=torch.channels_last)
    table.add("channels_last", TOL_FP32, "ok", _inference(lambda: cl_model(img_cl)))
    fold_model = fold_batchnorm(case.copy_of_eager())
    table.add("BN folded into conv", TOL_FP32, "ok", _inference(lambda: fold_model(img)))
    both = fold_batchnorm(case.copy_of_eager()).to(memory_format=torch.channels_last)
    table.add("channels_last + BN folded", TOL_FP32, "ok", _inference(lambda: both(img_cl)))


def add_compile_option(table: OptionTable, case: InferenceCase, st: dict, log: Callable[[str], None]) -> None:
    """``torch.compile`` (default inductor), its first call's compile time as ``compile_s``."""
    name, img = "torch.compile", case.img
    if not st["compile"]:
        table.add(name, TOL_FP32, "skipped: --quick (inductor compiles C++ for minutes on a 2-core CPU)")
    else:
        try:
            compiled = torch.compile(case.copy_of_eager())
            t0 = time.perf_counter()
            with torch.inference_mode():
                compiled(img)
            sync(case.device)
            table.extra[name] = {"compile_s": time.perf_counter() - t0}
            table.add(name, TOL_FP32, "ok", _inference(lambda: compiled(img)))
        except Exception as e:  # noqa: BLE001 -- report why compile does not work here
            table.add(name, TOL_FP32, _why(e))
    log(f"inference: {case.method} compile " + table.status[name])


def add_autocast_options(table: OptionTable, case: InferenceCase) -> None:
    """bf16 and fp16 autocast of the eager module (CUDA only; skipped rows on CPU)."""
    eager, img = case.eager, case.img
    for name, dt, tol in (
        ("autocast bf16", torch.bfloat16, TOL_BF16),
        ("autocast fp16", torch.float16, TOL_FP16),
    ):
        if case.device.type != "cuda":
            table.add(name, tol, "skipped: CUDA only (no GPU in this run)")
            continue

        def run_amp(dt: torch.dtype = dt) -> torch.Tensor:
            with torch.inference_mode(), torch.autocast("cuda", dtype=dt):
                return eager(img)

        table.add(name, tol, "ok", run_amp)


def add_onnx_option(table: OptionTable, case: InferenceCase, tmp: Path, log: Callable[[str], None]) -> None:
    """The module exported to ONNX (in ``tmp``) and run in ONNX Runtime (CPU runs only)."""
    name = "ONNX Runtime (CPU)"
    if case.device.type != "cpu":
        table.add(name, TOL_FP32, "skipped: measured on CPU runs only")
    else:
        fn, why = onnx_option(case.copy_of_eager(), case.img, tmp)
        table.add(name, TOL_FP32, why, fn)
    log(f"inference: {case.method} onnx " + table.status[name])


def check_outputs_equal(table: OptionTable, ref: torch.Tensor) -> dict[str, float]:
    """Max abs difference of each option's output ``[1, 3, H, W]`` to eager's ``ref``; an option
    that raises gets a ``failed: why`` status and is dropped from the timed ones."""
    diffs: dict[str, float] = {}
    for n, fn in list(table.fns.items()):
        try:
            o = fn()
            o = torch.as_tensor(np.asarray(o)) if isinstance(o, np.ndarray) else o.float().cpu()
            diffs[n] = float((o - ref).abs().max())
        except Exception as e:  # noqa: BLE001
            table.status[n] = _why(e)
            del table.fns[n]
    return diffs


def rows_from_timings(table: OptionTable, res: dict[str, dict], diffs: dict[str, float]) -> list[dict]:
    """One row per option: status and tolerance; for a timed one its timing, speed-up over
    eager, max abs diff and whether it is within tolerance."""
    base = res[EAGER]["median_s"]
    rows = []
    for n in table.status:
        row: dict[str, Any] = {"option": n, "status": table.status[n], "tolerance": table.tol[n]}
        if n in res:
            row.update(res[n])
            row["speedup_vs_eager"] = base / res[n]["median_s"]
            row["max_abs_diff"] = diffs[n]
            row["equal"] = diffs[n] <= table.tol[n]
        row.update(table.extra.get(n, {}))
        rows.append(row)
    return rows


def _inference_rows(method: str, st: dict, device: torch.device, log: Callable[[str], None]) -> list[dict]:
    case = _case(method, st, device)
    with torch.no_grad():
        ref = case.eager(case.img).float().cpu()
    table = OptionTable()
    add_basic_options(table, case)
    add_compile_option(table, case, st, log)
    add_autocast_options(table, case)
    with tempfile.TemporaryDirectory(prefix="esad_bench_onnx_") as tmp:
        add_onnx_option(table, case, Path(tmp), log)
        diffs = check_outputs_equal(table, ref)
        res = time_interleaved(table.fns, st["repeats"], st["warmup"], device)
    rows = rows_from_timings(table, res, diffs)
    log(f"inference: {method} done")
    return rows
