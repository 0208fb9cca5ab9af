"""The notebooks as committed lessons: executed in the ``demo`` profile, with a freshness stamp.

A reader on GitHub sees every figure without running anything, so the notebooks are committed
*executed* (``make notebooks``).  Each executed notebook carries, in its metadata::

    "esad": {"profile": "demo", "code_sha256": "<hash of its code cells>", "seconds": ..., "date": ...}

``check_committed(path)`` is what the test suite asks of every committed notebook: either no
outputs at all (not yet executed), or outputs that are *fresh* -- the code cells hash to the
stamp (no code cell changed since execution), the stamp's profile is ``demo``, no output is an
error, no widget state is stored, the file stays under ``MAX_NOTEBOOK_BYTES``, and its header
states the time the stamp measured (``header_time_text``: execution writes it into the first
cell's ``**Time:**`` line, so a reader sees how long the lesson took, not an estimate).
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import nbformat
import torch
from nbclient import NotebookClient

__all__ = [
    "COMMITTED_PROFILE",
    "MAX_NOTEBOOK_BYTES",
    "STAMP_KEY",
    "check_committed",
    "code_sha256",
    "execute_notebook",
    "header_time_text",
    "set_header_time",
    "strip_widget_views",
    "times_table",
]

#: the profile committed notebooks are executed in.
COMMITTED_PROFILE = "demo"
#: size budget of one committed notebook (outputs included).
MAX_NOTEBOOK_BYTES = 2_000_000
#: metadata key of the freshness stamp.
STAMP_KEY = "esad"
#: resolution of the figures saved into the outputs: modest, the lessons are read on GitHub and
#: a photograph-like PNG at matplotlib's default 100 dpi costs ~1 MB.
FIGURE_DPI = 64
#: the header's time statement: from ``**Time:**`` to the end of its line.
_TIME_RE = re.compile(r"\*\*Time:\*\*[^\n]*")


def header_time_text(stamp: dict[str, Any]) -> str:
    """The ``**Time:**`` statement for an execution ``stamp`` (seconds, date, cores, threads)."""
    sec = float(stamp["seconds"])
    took = f"{sec:.0f} s" if sec < 90 else f"{sec / 60:.1f} min"
    cores = stamp.get("cpu_cores", "?")
    threads = stamp.get("torch_threads", "?")
    return (
        f"**Time:** {took} in the {stamp['profile']} profile, measured top to bottom by `make notebooks` on "
        f"{stamp['date']} ({cores}-core CPU, {threads} torch threads, no GPU; trained models are taken from "
        f"the library cache where present -- a first run that has to train them takes longer)."
    )


def set_header_time(nb: Any, stamp: dict[str, Any]) -> bool:
    """Replace the first cell's ``**Time:** ...`` line by ``header_time_text(stamp)``; False when
    the notebook's first cell has no such line."""
    if not nb.cells or nb.cells[0].cell_type != "markdown" or not _TIME_RE.search(nb.cells[0].source):
        return False
    nb.cells[0].source = _TIME_RE.sub(lambda _: header_time_text(stamp), nb.cells[0].source, count=1)
    return True


def code_sha256(nb: Any) -> str:
    """sha256 of the notebook's code cells (sources only, in order)."""
    h = hashlib.sha256()
    for cell in nb.cells:
        if cell.cell_type == "code":
            h.update(cell.source.encode("utf-8"))
            h.update(b"\x00")
    return h.hexdigest()


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def strip_widget_views(nb: Any) -> int:
    """Drop the widget-view part of every output (a progress bar, say), keeping its text form:
    without the widget state, which is not committed, GitHub could not render it.  Returns the
    number of outputs changed."""
    n = 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if WIDGET_VIEW in out.get("data", {}):
                del out["data"][WIDGET_VIEW]
                n += 1
    return n


def _has_outputs(nb: Any) -> bool:
    return any(c.get("outputs") for c in nb.cells if c.cell_type == "code")


def _widget_problems(path: Path, nb: Any) -> list[str]:
    problems = []
    if "widgets" in nb.metadata:
        problems.append(f"{path.name}: widget state stored in the metadata (strip it)")
    if any(WIDGET_VIEW in o.get("data", {}) for c in nb.cells for o in c.get("outputs", [])):
        problems.append(f"{path.name}: widget views in the outputs (GitHub cannot show them)")
    return problems


def check_committed(path: str | Path) -> list[str]:
    """Problems of a committed notebook (empty list = fine); see the module docstring."""
    path = Path(path)
    problems: list[str] = []
    size = path.stat().st_size
    if size > MAX_NOTEBOOK_BYTES:
        budget = MAX_NOTEBOOK_BYTES / 1e6
        problems.append(f"{path.name}: {size / 1e6:.1f} MB, over the {budget:.0f} MB budget")
    nb = nbformat.read(path, as_version=4)
    problems += _widget_problems(path, nb)
    if not _has_outputs(nb):
        return problems
    stamp = nb.metadata.get(STAMP_KEY)
    if not stamp:
        return [*problems, f"{path.name}: has outputs but no '{STAMP_KEY}' stamp; run `make notebooks`"]
    if stamp.get("profile") != COMMITTED_PROFILE:
        got = stamp.get("profile")
        problems.append(f"{path.name}: executed in profile {got!r}, not {COMMITTED_PROFILE!r}")
    if stamp.get("code_sha256") != code_sha256(nb):
        problems.append(f"{path.name}: a code cell changed since it was executed; run `make notebooks`")
    if "seconds" in stamp and header_time_text(stamp) not in (nb.cells[0].source if nb.cells else ""):
        problems.append(f"{path.name}: its header does not state the measured time; run `make notebooks`")
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                problems.append(f"{path.name}: cell {i} holds an error ({out.get('ename')})")
    return problems


def execute_notebook(path: str | Path, profile: str = COMMITTED_PROFILE, timeout: int = 3600) -> float:
    """Execute ``path`` top to bottom in ``profile`` and write it back with its outputs and stamp.

    The file is replaced atomically only when every cell ran; the kernel gets
    ``ESAD_PROFILE=profile``.  Returns the seconds the execution took.
    """
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    work = copy.deepcopy(nb)
    env_before = os.environ.get("ESAD_PROFILE")
    os.environ["ESAD_PROFILE"] = profile
    mpl_before = os.environ.pop("MPLBACKEND", None)  # the kernel's inline backend renders the figures
    rc_dir = tempfile.TemporaryDirectory(prefix="esad_lessons_mplrc_")
    (Path(rc_dir.name) / "matplotlibrc").write_text(f"figure.dpi: {FIGURE_DPI}\n")
    rc_before = os.environ.get("MATPLOTLIBRC")
    os.environ["MATPLOTLIBRC"] = rc_dir.name  # read by the kernel's matplotlib at import
    t0 = time.perf_counter()
    try:
        client = NotebookClient(
            work, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
        )
        client.execute()
    finally:
        rc_dir.cleanup()
        if rc_before is None:
            os.environ.pop("MATPLOTLIBRC", None)
        else:
            os.environ["MATPLOTLIBRC"] = rc_before
        if mpl_before is not None:
            os.environ["MPLBACKEND"] = mpl_before
        if env_before is None:
            os.environ.pop("ESAD_PROFILE", None)
        else:
            os.environ["ESAD_PROFILE"] = env_before
    seconds = time.perf_counter() - t0
    work.metadata.pop("widgets", None)
    strip_widget_views(work)
    work.metadata[STAMP_KEY] = {
        "profile": profile,
        "code_sha256": code_sha256(work),
        "seconds": round(seconds, 1),
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d"),
        "cpu_cores": os.cpu_count(),
        # the kernel, a child process, starts with torch's default threads, as this process did
        "torch_threads": torch.get_num_threads(),
    }
    set_header_time(work, work.metadata[STAMP_KEY])
    tmp = path.with_name(f".{path.name}.tmp")
    nbformat.write(work, tmp)
    os.replace(tmp, path)
    return seconds


def times_table(paths: list[Path]) -> str:
    """Markdown table of the committed notebooks' measured execution times (from their stamps;
    ``python -m tools.lessons --table``): notebook, seconds, minutes, date, threads."""
    lines = ["| notebook | demo profile, measured | date | torch threads |", "|---|---:|---|---:|"]
    for p in paths:
        stamp = nbformat.read(p, as_version=4).metadata.get(STAMP_KEY) or {}
        if "seconds" not in stamp:
            lines.append(f"| `{p.name}` | not executed | | |")
            continue
        sec = float(stamp["seconds"])
        lines.append(
            f"| `{p.name}` | {sec:.0f} s ({sec / 60:.1f} min) | {stamp.get('date', '?')} "
            f"| {stamp.get('torch_threads', '?')} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``make notebooks``: execute every ``notebooks/NN_*.ipynb`` (or the ones named) in the demo
    profile, in order, and print how long each took."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m tools.lessons", description=main.__doc__)
    ap.add_argument("notebooks", nargs="*", help="paths (default: every notebooks/NN_*.ipynb)")
    ap.add_argument("--profile", default=COMMITTED_PROFILE)
    ap.add_argument("--table", action="store_true", help="only print the measured times (no execution)")
    args = ap.parse_args(argv)
    root = Path(__file__).resolve().parent.parent / "notebooks"
    paths = [Path(p) for p in args.notebooks] or sorted(root.glob("[0-9][0-9]_*.ipynb"))
    if args.table:
        print(times_table(paths))
        return 0
    for p in paths:
        seconds = execute_notebook(p, profile=args.profile)
        size = p.stat().st_size / 1e6
        print(f"{p.name}: {seconds:.0f} s in profile {args.profile}, {size:.2f} MB", flush=True)
        for problem in check_committed(p):
            print(f"  ! {problem}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
