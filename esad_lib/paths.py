"""Where data, caches and runs live.

The data root is ``$ESAD_DATA_ROOT`` if set, else ``data/`` at the project root (holding
``pyproject.toml``), else ``./data``: the synthetic benchmark, splits and cached models land there.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def data_root() -> Path:
    if env := os.environ.get("ESAD_DATA_ROOT"):
        return Path(env).expanduser().resolve()
    return (PROJECT_ROOT if (PROJECT_ROOT / "pyproject.toml").exists() else Path.cwd()) / "data"


def cache_dir() -> Path:
    """Cached trained models (``train_or_load``) and other derived artefacts."""
    return data_root() / "cache"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same folder + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
