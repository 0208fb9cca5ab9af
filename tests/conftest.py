"""Shared test fixtures.

Every test runs with ``ESAD_PROFILE=smoke`` and a private ``ESAD_DATA_ROOT`` (one per test
session), so nothing under the user's ``data/`` is read or written and the synthetic
benchmark is generated once per session.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

# One intra-op thread: the smoke-size nets are far too small to gain from more, and on a
# shared 2-core machine extra threads only contend (measured 20-40x slower per epoch).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def session_data_root(tmp_path_factory: pytest.TempPathFactory):
    return tmp_path_factory.mktemp("esad_data")


@pytest.fixture(autouse=True)
def _smoke_env(monkeypatch: pytest.MonkeyPatch, session_data_root) -> None:
    monkeypatch.setenv("ESAD_PROFILE", "smoke")
    monkeypatch.setenv("ESAD_DATA_ROOT", str(session_data_root))
    monkeypatch.setenv("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def trained_smoke_run(tmp_path_factory, session_data_root):
    """A tiny model trained once per session by the library's trainer (smoke profile, pushpins,
    1 epoch).  Tests that write into a run folder take a copy (``smoke_run_dir``)."""
    from esad_lib.config import get_config
    from esad_lib.training import train

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ESAD_PROFILE", "smoke")
        mp.setenv("ESAD_DATA_ROOT", str(session_data_root))
        run = tmp_path_factory.mktemp("trained") / "pushpins"
        train(get_config("smoke", category="pushpins", epochs=1), run, progress=False)
    return run


@pytest.fixture(scope="module")
def smoke_run_dir(tmp_path_factory, trained_smoke_run):
    """A private copy (per test module) of the session's trained smoke run, to write into."""
    import shutil

    return Path(shutil.copytree(trained_smoke_run, tmp_path_factory.mktemp("run") / trained_smoke_run.name))
