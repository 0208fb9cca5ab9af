"""Anomaly maps on disk in MVTec LOCO AD's official layout (that of the *unsplit* dataset, which
MVTec's evaluation script reads): export ours, read anyone's::

    MAPS_DIR/<category>/test/<good | logical_anomalies | structural_anomalies>/<image id>.tiff

One float32 map per test image at its original resolution; ``<image id>`` is the image's file
name without extension (``000.png`` -> ``000.tiff``).  ``export_maps`` writes a
``ScoreResult``'s maps (``esad evaluate --export-maps DIR``), each file atomically;
``read_maps`` loads maps of *any* method (``.tiff``/``.tif``/``.npy``) and checks them (every
map present, its image's size, finite, no unknown id), raising every problem together.  A label
folder absent from ``maps_dir`` is skipped.  ``esad_lib.evaluation.score_maps`` scores them.
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import tifffile
from tqdm.auto import tqdm

from esad_lib.data import LABEL_DIRS, list_samples, load_channel_masks
from esad_lib.data.loco import DIR_LABELS, image_size
from esad_lib.paths import atomic_write_bytes

if TYPE_CHECKING:
    from esad_lib.scoring import ScoreResult


#: file types ``read_maps`` accepts, in order of preference when an id has several.
MAP_SUFFIXES = (".tiff", ".tif", ".npy")
#: problems listed in one error message before "... and N more".
MAX_LISTED = 20


class MapsError(ValueError):
    """Maps that cannot be scored (the message lists every file and what is wrong)."""


def map_path(maps_dir: str | Path, category: str, label: str, image_id: str, suffix: str = ".tiff") -> Path:
    """Where the map of one test image lives in the official layout."""
    return Path(maps_dir) / category / "test" / LABEL_DIRS[label] / f"{image_id}{suffix}"


def export_maps(result: ScoreResult, category: str, out: str | Path, progress: bool = True) -> list[Path]:
    """Write every map of ``result`` (upsampled to its image's size, as the metrics see it) as
    ``float32 [H0, W0]`` TIFF in the official layout, replacing files of the same names; the paths."""
    written = []
    for i in tqdm(range(len(result)), desc=f"export maps {category}", disable=not progress, leave=False):
        p = map_path(out, category, result.label_names[i], Path(result.paths[i]).stem)
        buf = io.BytesIO()
        tifffile.imwrite(buf, result.full_res_map(i, np.float32))
        atomic_write_bytes(p, buf.getvalue())
        written.append(p)
    return written


@dataclass
class LoadedMaps:
    """Maps of one category read from disk, aligned with the dataset's test images."""

    category: str
    maps: list[np.ndarray]  # float32 [H0, W0] each
    channels: list[np.ndarray]  # uint8 [C, H0, W0] each
    label_names: list[str]
    paths: list[str]  # the map files
    skipped_labels: list[str]  # labels with no folder under maps_dir


def _read_one(path: Path, sample) -> tuple[np.ndarray | None, str | None]:
    """(map, None) or (None, what is wrong) for one map file."""
    try:
        a = np.asarray(np.load(path, allow_pickle=False) if path.suffix == ".npy" else tifffile.imread(path))
    except Exception as e:  # truncated, another format: tifffile / numpy say why
        return None, f"{path}: cannot be read ({type(e).__name__}: {e})"
    if a.ndim == 3 and 1 in (a.shape[0], a.shape[-1]):  # [1,H,W] or [H,W,1]
        a = a.reshape(a.shape[1:] if a.shape[0] == 1 else a.shape[:-1])
    size = image_size(sample.path)
    if a.ndim != 2:
        return None, f"{path}: expected a 2-D map, got shape {a.shape}"
    if tuple(a.shape) != tuple(size):
        return None, f"{path}: map is {a.shape[1]}x{a.shape[0]} (WxH) but its image is {size[1]}x{size[0]}"
    if not np.issubdtype(a.dtype, np.number):
        return None, f"{path}: map dtype {a.dtype} is not numeric"
    if not np.isfinite(a).all():
        return None, f"{path}: map holds NaN or inf values"
    return a.astype(np.float32, copy=False), None


def _locate(test_dir: Path, samples: list, skipped: list[str], problems: list[str]) -> list[tuple]:
    """(label, sample, map path) of every test image with a map file, in label order; labels
    without a folder go to ``skipped``, missing and unknown files to ``problems``."""
    found = []
    for label in ("good", "structural", "logical"):
        folder = test_dir / LABEL_DIRS[label]
        todo = [s for s in samples if s.label == label]
        if not folder.is_dir():
            skipped += [label] if todo else []
            continue
        ids = {s.image_id for s in todo}
        problems += [f"{p}: no test image with id {p.stem!r} in the dataset (unknown image id)"
                     for p in sorted(folder.iterdir())
                     if p.is_file() and p.suffix in MAP_SUFFIXES and p.stem not in ids]
        for s in todo:
            p = next((p for suf in MAP_SUFFIXES if (p := folder / f"{s.image_id}{suf}").is_file()), None)
            if p is None:
                problems.append(f"{folder / (s.image_id + '.tiff')}: missing map for test image {s.path}")
            else:
                found.append((label, s, p))
    return found


def read_maps(maps_dir: str | Path, root: str | Path, category: str, progress: bool = True) -> LoadedMaps:
    """Read and check the maps of ``category`` for the test images of the dataset at ``root`` (two
    threads); ``MapsError`` lists every problem (missing, unreadable, wrong size, NaN/inf, unknown)."""
    maps_dir, root = Path(maps_dir), Path(root)
    test_dir = maps_dir / category / "test"
    if not test_dir.is_dir():
        raise MapsError(f"{test_dir}: no maps for {category!r} "
                        f"(expected <maps>/{category}/test/<label>/<id>.tiff)")
    expected = ", ".join(LABEL_DIRS.values())
    problems = [f"{d}: unknown label folder (expected {expected})"
                for d in sorted(test_dir.iterdir()) if d.is_dir() and d.name not in DIR_LABELS]
    out = LoadedMaps(category, [], [], [], [], [])
    found = _locate(test_dir, list_samples(root, category, split="test"), out.skipped_labels, problems)
    with ThreadPoolExecutor(2) as pool:
        read = pool.map(lambda f: (*_read_one(f[2], f[1]), load_channel_masks(f[1])), found)
        bar = tqdm(read, total=len(found), desc=f"read maps {category}", disable=not progress, leave=False)
        for (label, _, p), (arr, err, chans) in zip(found, bar):
            if err:
                problems.append(err)
                continue
            out.maps.append(arr)
            out.channels.append(chans)
            out.label_names.append(label)
            out.paths.append(str(p))
    if problems:
        more = f"\n... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        head = f"{len(problems)} problem(s) with the maps in {test_dir}; nothing was written:\n"
        raise MapsError(head + "\n".join(problems[:MAX_LISTED]) + more)
    if "good" not in out.label_names:
        raise MapsError(f"{test_dir / 'good'}: no maps of good test images; every metric needs them")
    return out
