"""ONNX Runtime (CPU) sessions for the benchmark's ONNX rows (only when ``onnx`` and
``onnxruntime`` are installed: ``pip install -e ".[bench]"``; otherwise the rows say so)."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch


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
