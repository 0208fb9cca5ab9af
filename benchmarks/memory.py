"""Peak memory of one call of a workload.

On CUDA: ``torch.cuda.max_memory_allocated`` in-process, after a warm-up call.  On CPU each
measurement runs in its own fresh process, forked from a fork server that has imported torch
and the workloads but run nothing (so no earlier computation's freed memory can hide what the
call needs, and the probe does not pay for importing torch); the child resets the kernel's
resident-set high-water mark (``/proc/self/clear_refs``) right before the measured call and
reads ``VmHWM`` after it (fallback: ``ru_maxrss``), because ``tracemalloc`` does not see torch's
allocations.  The difference also counts the pages of library code the call touches first in
its process: small next to a network's activations, and the same at every batch, so it cancels
in a per-image slope.
"""

from __future__ import annotations

import functools
import gc
import json
import multiprocessing
import multiprocessing.context
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from benchmarks.workloads import build


def _proc_status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _ru_maxrss_kib() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r // 1024 if sys.platform == "darwin" else r  # bytes on macOS, KiB on Linux


def measure_peak_rss(fn: Callable[[], object]) -> dict[str, Any]:
    """Peak resident memory of one call of ``fn`` in THIS process (use a fresh subprocess).

    Returns ``peak_mib`` (the process's whole resident set at its highest during the call,
    inputs, model and interpreter included), ``delta_mib`` (that peak minus the resident set
    just before the call: what the call itself needed), ``method`` and ``seconds`` (the call's
    wall time).
    """
    gc.collect()
    reset = _reset_peak_rss()
    before = _proc_status_kib("VmRSS") if reset else _ru_maxrss_kib()
    t0 = time.perf_counter()
    fn()
    seconds = time.perf_counter() - t0
    peak = _proc_status_kib("VmHWM") if reset else _ru_maxrss_kib()
    if peak is None or before is None:
        peak, before = _ru_maxrss_kib(), 0
    return {
        "peak_mib": peak / 1024.0,
        "delta_mib": max(peak - before, 0) / 1024.0,
        "method": "VmHWM after clear_refs" if reset else "ru_maxrss (includes set-up)",
        "seconds": seconds,
    }


@functools.lru_cache(maxsize=1)
def _probe_context() -> multiprocessing.context.BaseContext:
    """The start method of the probes: a fork server that has imported torch and the workloads
    but never run a tensor op (so its children start with a clean heap, no thread pools, and
    without importing torch again)."""
    ctx = multiprocessing.get_context("forkserver")
    # torch._dynamo: imported lazily by the first optimizer a process builds
    ctx.set_forkserver_preload(["benchmarks.workloads", "torch._dynamo"])
    return ctx


def _probe_child(spec_json: str, conn) -> None:
    """Run in the fresh child process: measure, send ``("ok", result)`` or ``("error", why)``."""
    try:
        conn.send(("ok", probe(json.loads(spec_json))))
    except BaseException as e:  # noqa: BLE001 -- the parent reports it as a failed measurement
        conn.send(("error", f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"))
    finally:
        conn.close()


def peak_memory(spec: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Peak memory of the workload ``spec`` (see ``workloads.build``): CUDA in-process, CPU in a
    fresh process (forked from a clean fork server).  A failed or killed measurement gives
    ``{"status": "failed: why"}``."""
    if device.type == "cuda":
        fn = build(spec, device)
        fn()  # warm-up (cuDNN autotuning, allocator caching)
        torch.cuda.synchronize(device)
        gc.collect()
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        del fn
        gc.collect()
        torch.cuda.empty_cache()
        return {
            "peak_mib": peak / 2**20,
            "delta_mib": (peak - base) / 2**20,
            "method": "cuda max_memory_allocated",
        }
    ctx = _probe_context()
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_probe_child, args=(json.dumps(spec), send), name="esad-bench-probe")
    proc.start()
    send.close()
    try:
        kind, value = receive.recv()
    except EOFError:  # the child died without a word
        kind, value = None, None
    proc.join()
    receive.close()
    if proc.exitcode is not None and proc.exitcode < 0:
        why = " (SIGKILL: most likely the out-of-memory killer)" if proc.exitcode == -9 else ""
        return {"status": f"failed: killed by signal {-proc.exitcode}{why}"}
    if kind != "ok":
        return {"status": f"failed: {value or f'exit status {proc.exitcode}, no output'}"}
    return value


def probe(spec: dict[str, Any]) -> dict[str, Any]:
    """The probe itself (in a fresh process): build the workload, warm it up (``spec["warmup"]``,
    default on), measure one call."""
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    fn = build(spec, torch.device("cpu"))
    if spec.get("warmup", True):
        fn()
    return measure_peak_rss(fn)
