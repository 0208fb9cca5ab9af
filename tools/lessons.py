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

``check_lesson(path)`` holds the rules of a readable lesson that a machine can check, stripped or
executed: no cell (code or markdown) over ``MAX_CELL_LINES`` lines, no font size under
``MIN_FONT_SIZE`` pt written in the code, no progress bar among the outputs (a committed lesson
is read, not watched: a bar saved mid-run shows "0%|" forever), no text output over
``MAX_OUTPUT_LINES`` lines (summarise it, keep the detail one call away), and every PNG figure
saved at ``MIN_FIGURE_DPI`` dpi or more (read from its ``pHYs`` chunk).  Execution helps with
these: matplotlib saves at ``FIGURE_DPI``, the kernel runs with ``TQDM_DISABLE=1`` (tqdm's
environment default: it silences the plain-text bars of calls that do not pass ``disable``), and
every progress-bar output is dropped afterwards (``drop_progress_bars``) -- the one step that
catches them all, since a ``disable=False`` passed by the library wins over the environment and
``tqdm.notebook`` (what ``tqdm.auto`` picks in a kernel) displays its widget, frozen at "0%" once
the widget state is stripped, even with ``TQDM_DISABLE=1`` (tqdm 4.70).
"""

from __future__ import annotations

import base64
import copy
import datetime as _dt
import hashlib
import os
import re
import struct
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
    "check_lesson",
    "code_sha256",
    "drop_progress_bars",
    "execute_notebook",
    "header_time_text",
    "is_progress_bar",
    "png_dpi",
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
#: resolution of the figures saved into the outputs: matplotlib's default, so that text of 8 pt
#: is legible at the committed size (a photograph-like figure must then stay small in inches to
#: keep its notebook under ``MAX_NOTEBOOK_BYTES``).
FIGURE_DPI = 100
#: the lesson rules (``check_lesson``): longest cell, longest text output, lowest dpi, smallest font.
MAX_CELL_LINES = 30
MAX_OUTPUT_LINES = 60
MIN_FIGURE_DPI = 90
MIN_FONT_SIZE = 8
#: a tqdm bar's text: a percentage followed by the bar's left edge ("0%|", " 40%|", "100%|").
PROGRESS_RE = re.compile(r"\d{1,3}%\|")
#: a font size literal in code: ``fontsize=6``, ``fontsize = 7.5``.
_FONTSIZE_RE = re.compile(r"\bfontsize\s*=\s*(\d+(?:\.\d+)?)\b")
#: the header's time statement: from ``**Time:**`` to the end of its line.
_TIME_RE = re.compile(r"\*\*Time:\*\*[^\n]*")


def header_time_text(stamp: dict[str, Any]) -> str:
    """The ``**Time:**`` statement for an execution ``stamp`` (seconds, date, cores, threads): the time
    a reader sees after ``make demo``, which ``make notebooks`` is meant to follow."""
    sec = float(stamp["seconds"])
    took = f"{sec:.0f} s" if sec < 90 else f"{sec / 60:.1f} min"
    cores = stamp.get("cpu_cores", "?")
    threads = stamp.get("torch_threads", "?")
    return (
        f"**Time:** {took} in the {stamp['profile']} profile, measured top to bottom by `make notebooks` run "
        f"after `make demo` on {stamp['date']} ({cores}-core CPU, {threads} torch threads, no GPU; the "
        f"models `make demo` trains are loaded from the library cache -- without them a first run trains "
        f"them and takes longer)."
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


def _output_text(out: Any) -> str:
    """The text a reader sees of one output: a stream's text, else its ``text/plain`` form."""
    if out.get("output_type") == "stream":
        text = out.get("text", "")
    else:
        text = out.get("data", {}).get("text/plain", "")
    return "".join(text) if isinstance(text, list) else text


def is_progress_bar(out: Any) -> bool:
    """True for an output that is (only) a progress bar: text made of tqdm bar lines ("name:  40%|####
    | 2/5 [...]"), as a stream or as the text form of a widget (tqdm.auto in a kernel)."""
    lines = [ln for ln in re.split(r"[\r\n]", _output_text(out)) if ln.strip()]
    return bool(lines) and all(PROGRESS_RE.search(ln) for ln in lines)


def drop_progress_bars(nb: Any) -> int:
    """Remove every progress-bar output (``is_progress_bar``), and the bar lines of a stream that
    also holds other text; returns the number of outputs changed or removed."""
    n = 0
    for cell in nb.cells:
        kept = []
        for out in cell.get("outputs", []):
            if is_progress_bar(out):
                n += 1
                continue
            if out.get("output_type") == "stream" and PROGRESS_RE.search(_output_text(out)):
                lines = re.split(r"(?<=\n)", _output_text(out))
                out["text"] = "".join(ln.rsplit("\r", 1)[-1] for ln in lines if not PROGRESS_RE.search(ln))
                n += 1
            kept.append(out)
        if "outputs" in cell:
            cell.outputs = kept
    return n


def png_dpi(png_b64: str) -> float | None:
    """The resolution (dots per inch) a base64 PNG records in its ``pHYs`` chunk; None if none."""
    data = base64.b64decode(png_b64)
    pos = 8  # after the PNG signature
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if kind == b"pHYs" and length == 9:
            ppu_x, _, unit = struct.unpack(">IIB", data[pos + 8 : pos + 17])
            return ppu_x * 0.0254 if unit == 1 else None  # unit 1: pixels per metre
        if kind in (b"IDAT", b"IEND"):
            return None  # pHYs must come before the image data
        pos += 12 + length
    return None


def _output_problems(name: str, i: int, cell: Any) -> list[str]:
    problems = []
    for out in cell.get("outputs", []):
        if is_progress_bar(out) or PROGRESS_RE.search(_output_text(out)):
            problems.append(f"{name}: cell {i} shows a progress bar; a committed lesson shows none")
            continue
        n_lines = len(_output_text(out).splitlines())
        if n_lines > MAX_OUTPUT_LINES:
            problems.append(
                f"{name}: cell {i} prints {n_lines} lines (at most {MAX_OUTPUT_LINES}); "
                "summarise it and keep the detail one call away"
            )
        png = out.get("data", {}).get("image/png")
        if png:
            dpi = png_dpi(png if isinstance(png, str) else "".join(png))
            if dpi is None or dpi < MIN_FIGURE_DPI - 0.5:
                got = "no dpi" if dpi is None else f"{dpi:.0f} dpi"
                problems.append(f"{name}: cell {i} has a figure at {got} (at least {MIN_FIGURE_DPI})")
    return problems


def check_lesson(path: str | Path) -> list[str]:
    """Problems of a lesson against the rules a machine can check (see the module docstring):
    cell length, font sizes in the code, progress bars, long text outputs, figure dpi."""
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    problems: list[str] = []
    name = path.name
    for i, cell in enumerate(nb.cells):
        n_lines = len(cell.source.splitlines())
        if n_lines > MAX_CELL_LINES:
            fix = "split it, or move display code behind a helper" if cell.cell_type == "code" else "split it"
            problems.append(
                f"{name}: cell {i} ({cell.cell_type}) has {n_lines} lines, at most {MAX_CELL_LINES}; {fix}"
            )
        if cell.cell_type == "code":
            sizes = _FONTSIZE_RE.finditer(cell.source)
            small = [m.group(0) for m in sizes if float(m.group(1)) < MIN_FONT_SIZE]
            if small:
                problems.append(f"{name}: cell {i} sets {', '.join(small)} (at least {MIN_FONT_SIZE} pt)")
            problems += _output_problems(name, i, cell)
    return problems


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
    tqdm_before = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"  # plain-text bars that do not pass `disable`; widgets: see below
    t0 = time.perf_counter()
    try:
        client = NotebookClient(
            work, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
        )
        client.execute()
    finally:
        rc_dir.cleanup()
        if tqdm_before is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = tqdm_before
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
    drop_progress_bars(work)  # the bars of calls that pass `disable=False` themselves
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
        for problem in check_committed(p) + check_lesson(p):
            print(f"  ! {problem}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
