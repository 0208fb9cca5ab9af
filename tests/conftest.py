"""Shared test fixtures.

Every test runs with ``ESAD_PROFILE=smoke`` and a private ``ESAD_DATA_ROOT`` (one per test
session), so nothing under the user's ``data/`` is read or written and the synthetic
benchmark is generated once per session.
"""

from __future__ import annotations

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
