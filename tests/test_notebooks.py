"""Execute every notebook top to bottom in the smoke profile (nbclient).

A notebook fails the suite on any error.  The notebooks share one data root per test
session, so the synthetic benchmark and cached smoke models are built once.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_smoke_profile(path: Path, session_data_root, monkeypatch) -> None:
    monkeypatch.setenv("ESAD_PROFILE", "smoke")
    monkeypatch.setenv("ESAD_DATA_ROOT", str(session_data_root))
    # the kernel's own inline backend renders figures into the outputs (Agg would drop them)
    monkeypatch.delenv("MPLBACKEND", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=900,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    client.execute()
    # a notebook that ran must have produced something to look at
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert outputs, f"{path.name} produced no output"
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    if any("plt." in "".join(c.source) for c in nb.cells if c.cell_type == "code"):
        assert figures, f"{path.name} draws figures but none reached the outputs"
