"""Rows "inference options": each option as a speed-up over the same model's plain eager forward
(the reconstruction for one cutout size, the K masks batched, batch 1), the outputs checked
equal within a stated tolerance: ``torch.inference_mode``, channels_last, BatchNorm folded into
the conv, ``torch.compile``, bf16/fp16 autocast (CUDA only), ONNX Runtime on CPU (only when
``onnx`` and ``onnxruntime`` are installed).  An option that cannot run here is a row
``skipped: why`` / ``failed: why``, never estimated.
"""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from esad_lib.bench.onnx_session import onnx_option
from esad_lib.bench.settings import TOL_BF16, TOL_EXACT, TOL_FP16, TOL_FP32, cfg_for
from esad_lib.bench.timing import sync, time_interleaved
from esad_lib.bench.workloads import build_model, random_images
from esad_lib.masks import disjoint_masks
from esad_lib.models.fusion import fold_batchnorm


class OneCutoutSize(torch.nn.Module):
    """The model's reconstruction for one cutout size with fixed masks: ``img -> recon``."""

    def __init__(self, model: torch.nn.Module, cutout: int, masks: torch.Tensor, fill: str) -> None:
        super().__init__()
        self.model, self.cutout, self.fill = model, int(cutout), fill
        self.register_buffer("masks", masks)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.model(img, self.cutout, fill=self.fill, masks=self.masks).recon


def _why(e: Exception) -> str:
    return f"failed: {type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"


def section_inference(st: dict, device: torch.device, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Inference options on the reconstruction for one cutout size (all K masks batched), for
    ESAD and for RIAD (each option as a speed-up over the same model's plain eager forward)."""
    rows = []
    for method in ("esad", "riad"):
        rows += [{"model": method, **r} for r in _inference_rows(method, st, device, log)]
    return rows


def _inference_rows(method: str, st: dict, device: torch.device, log: Callable[[str], None]) -> list[dict]:
    cfg = cfg_for(st["profile"], method, str(device))
    model = build_model(cfg, device).eval()
    h, w = cfg.image_size
    cut = int(sorted(cfg.cutout_sizes)[0])
    masks = disjoint_masks(h, w, cut, cfg.num_masks, generator=torch.Generator().manual_seed(0)).to(device)
    img = random_images(1, (h, w), cfg.seed + 4).to(device)
    eager = OneCutoutSize(model, cut, masks, cfg.test_fill).eval()
    with torch.no_grad():
        ref = eager(img).float().cpu()

    def copy_of_eager() -> OneCutoutSize:
        return OneCutoutSize(copy.deepcopy(model), cut, masks, cfg.test_fill).eval()

    def no_grad(fn):
        def run():
            with torch.no_grad():
                return fn()

        return run

    def inference(fn):
        def run():
            with torch.inference_mode():
                return fn()

        return run

    fns: dict[str, Callable[[], object]] = {"eager (no_grad)": no_grad(lambda: eager(img))}
    status: dict[str, str] = {"eager (no_grad)": "ok"}
    tol: dict[str, float] = {"eager (no_grad)": TOL_EXACT}
    extra: dict[str, dict] = {}

    fns["inference_mode"] = inference(lambda: eager(img))
    status["inference_mode"], tol["inference_mode"] = "ok", TOL_EXACT

    cl_model = copy_of_eager().to(memory_format=torch.channels_last)
    img_cl = img.contiguous(memory_format=torch.channels_last)
    fns["channels_last"] = inference(lambda: cl_model(img_cl))
    status["channels_last"], tol["channels_last"] = "ok", TOL_FP32

    fold_model = fold_batchnorm(copy_of_eager())
    fns["BN folded into conv"] = inference(lambda: fold_model(img))
    status["BN folded into conv"], tol["BN folded into conv"] = "ok", TOL_FP32

    both = fold_batchnorm(copy_of_eager()).to(memory_format=torch.channels_last)
    fns["channels_last + BN folded"] = inference(lambda: both(img_cl))
    status["channels_last + BN folded"], tol["channels_last + BN folded"] = "ok", TOL_FP32

    name = "torch.compile"
    tol[name] = TOL_FP32
    if not st["compile"]:
        status[name] = "skipped: --quick (inductor compiles C++ for minutes on a 2-core CPU)"
    else:
        try:
            compiled = torch.compile(copy_of_eager())
            t0 = time.perf_counter()
            with torch.inference_mode():
                compiled(img)
            sync(device)
            extra[name] = {"compile_s": time.perf_counter() - t0}
            fns[name] = inference(lambda: compiled(img))
            status[name] = "ok"
        except Exception as e:  # noqa: BLE001 -- report why compile does not work here
            status[name] = _why(e)
    log(f"inference: {method} compile " + status[name])

    for dt_name, dt, t in (
        ("autocast bf16", torch.bfloat16, TOL_BF16),
        ("autocast fp16", torch.float16, TOL_FP16),
    ):
        tol[dt_name] = t
        if device.type != "cuda":
            status[dt_name] = "skipped: CUDA only (no GPU in this run)"
            continue

        def run_amp(dt=dt):
            with torch.inference_mode(), torch.autocast("cuda", dtype=dt):
                return eager(img)

        fns[dt_name], status[dt_name] = run_amp, "ok"

    name = "ONNX Runtime (CPU)"
    tol[name] = TOL_FP32
    tmpdir = tempfile.TemporaryDirectory(prefix="esad_bench_onnx_")
    if device.type != "cpu":
        status[name] = "skipped: measured on CPU runs only"
    else:
        fn, why = onnx_option(copy_of_eager(), img, Path(tmpdir.name))
        status[name] = why
        if fn is not None:
            fns[name] = fn
    log(f"inference: {method} onnx " + status[name])

    # outputs equal within tolerance?
    diffs: dict[str, float] = {}
    for n, fn in list(fns.items()):
        try:
            o = fn()
            o = torch.as_tensor(np.asarray(o)) if isinstance(o, np.ndarray) else o.float().cpu()
            diffs[n] = float((o - ref).abs().max())
        except Exception as e:  # noqa: BLE001
            status[n] = _why(e)
            del fns[n]
    res = time_interleaved(fns, st["repeats"], st["warmup"], device)
    tmpdir.cleanup()
    base = res["eager (no_grad)"]["median_s"]
    rows = []
    for n in status:
        row: dict[str, Any] = {"option": n, "status": status[n], "tolerance": tol[n]}
        if n in res:
            row.update(res[n])
            row["speedup_vs_eager"] = base / res[n]["median_s"]
            row["max_abs_diff"] = diffs[n]
            row["equal"] = diffs[n] <= tol[n]
        row.update(extra.get(n, {}))
        rows.append(row)
    log(f"inference: {method} done")
    return rows
