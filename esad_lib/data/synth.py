"""The synthetic LOCO-like benchmark: generation and caching (stands in for MVTec LOCO AD, the
paper's benchmark, which users must download themselves).

``generate_synthetic`` writes a root in the exact LOCO layout (LOCO's aspect ratios scaled to
``max_side``, ``defects_config.json``, one mask PNG per defect region), so the reader, splitter and
checker run on it unchanged.  Each image has its own generator seeded by (seed, category, split,
label, index, attempt): byte-identical per seed, and other counts do not reshuffle the rest.  The
defect types are procedural stand-ins for LOCO's (``synth_scenes``); test anomalies cycle through them."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from esad_lib.config import CATEGORIES, ESADConfig
from esad_lib.data.loco import DEFECTS_CONFIG, LABEL_DIRS, LABELS, SPLITS, DefectSpec
from esad_lib.data.synth_draw import GENERIC_STRUCTURAL, Canvas, jitter_colour
from esad_lib.data.synth_scenes import SCENES, CategorySpec
from esad_lib.paths import data_root

#: bump when the generator's output changes (invalidates cached benchmarks; the counts are a setting).
SYNTH_VERSION = 4
#: default per-category counts (train, validation, test good/logical/structural) and longest side.
DEFAULT_COUNTS = ESADConfig.synth_counts
DEFAULT_MAX_SIDE = ESADConfig.synth_max_side
MANIFEST = "synthetic.json"
#: below this many images ``generate_synthetic`` renders in one process by default.
PARALLEL_MIN_IMAGES = 500


def synthetic_size(category: str, max_side: int) -> tuple[int, int]:
    """(W, H) of a synthetic category: LOCO's official size scaled so the longer side is ``max_side``."""
    w0, h0 = SCENES[category].official_size
    s = max_side / max(w0, h0)
    return max(8, int(round(w0 * s / 2)) * 2), max(8, int(round(h0 * s / 2)) * 2)


def synthetic_defects(category: str, max_side: int) -> list[DefectSpec]:
    """The defects config of a synthetic category (logical types first, then structural):
    pixel_value = 255 - 20 * i; absolute thresholds (fractions of the image area) become pixel counts."""
    spec, (w, h) = SCENES[category], synthetic_size(category, max_side)
    thr = lambda d: d.threshold if d.relative else float(max(1, round(d.threshold * w * h)))
    defs = spec.logical + spec.structural
    return [DefectSpec(d.name, 255 - 20 * i, thr(d), d.relative) for i, d in enumerate(defs)]


def defect_types(category: str) -> dict[str, list[str]]:
    spec = SCENES[category]
    return {"logical": [d.name for d in spec.logical], "structural": [d.name for d in spec.structural]}


def _png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=1, optimize=False)
    return buf.getvalue()


def render_image(category: str, max_side: int, rng: np.random.Generator,
                 defect: str | None) -> tuple[np.ndarray, list[np.ndarray]]:
    """Render one image. Returns (uint8 [H, W, 3], list of bool [H, W] defect regions)."""
    spec: CategorySpec = SCENES[category]
    w, h = synthetic_size(category, max_side)
    cv = Canvas(w, h, jitter_colour(rng, spec.background, 6))
    regions, named = spec.render(cv, rng, defect)
    if defect in spec.generic:
        kind, where = spec.generic[defect]
        region = named[where]
        if not region.any():
            region = np.logical_or.reduce(list(named.values()))
        regions = [GENERIC_STRUCTURAL[kind](cv, rng, region)]
    masks = [cv.downsample_mask(r) for r in regions if r.any()]
    return cv.finish(rng), masks


def _image_rng(seed: int, category: str, split: str, label: str, index: int, attempt: int = 0):
    cat_id = list(SCENES).index(category)
    return np.random.default_rng([seed, cat_id, SPLITS.index(split), LABELS.index(label), index, attempt])


def _plan(counts: Sequence[int]) -> list[tuple[str, str, int]]:
    parts = [("train", "good"), ("validation", "good")] + [("test", label) for label in LABELS]
    return [(split, label, i) for (split, label), n in zip(parts, counts) for i in range(int(n))]


def _write_category(root: Path, category: str, seed: int, max_side: int, counts, pbar=None) -> int:
    """Render one category into ``root/category``; returns the number of images written."""
    cdir = root / category
    specs = synthetic_defects(category, max_side)
    cdir.mkdir(parents=True, exist_ok=True)
    (cdir / DEFECTS_CONFIG).write_text(json.dumps([s.to_dict() for s in specs], indent=2) + "\n")
    value = {s.defect_name: s.pixel_value for s in specs}
    types = defect_types(category)
    for split, label, i in _plan(counts):
        defect = None if label == "good" else types[label][i % len(types[label])]
        for attempt in range(8):  # a defect placement can (rarely) vanish at low resolution
            rng = _image_rng(seed, category, split, label, i, attempt)
            img, masks = render_image(category, max_side, rng, defect)
            if defect is None or masks:
                break
        else:
            raise RuntimeError(f"synthetic {category}/{defect}: could not place the defect at {max_side=}")
        folder = cdir / split / LABEL_DIRS[label]
        folder.mkdir(parents=True, exist_ok=True)
        image_id = f"{i:03d}"
        (folder / f"{image_id}.png").write_bytes(_png_bytes(img))
        if defect is not None:
            gdir = cdir / "ground_truth" / LABEL_DIRS[label] / image_id
            gdir.mkdir(parents=True, exist_ok=True)
            for k, m in enumerate(masks):
                (gdir / f"{k:03d}.png").write_bytes(_png_bytes(m.astype(np.uint8) * np.uint8(value[defect])))
        if pbar is not None:
            pbar.update(1)
    return len(_plan(counts))


def _render_all(root: Path, categories: Sequence[str], seed: int, max_side: int, counts, pbar,
                workers: int) -> None:
    """Every category into ``root``: in this process, or one category per task over ``workers``
    processes (each image has its own seeded generator, so the files are the same either way)."""
    if workers <= 1 or len(categories) <= 1:
        for cat in categories:
            _write_category(root, cat, seed, max_side, counts, pbar)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn: the caller may hold torch's thread pools, which a forked child must not inherit
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        jobs = [pool.submit(_write_category, root, cat, seed, max_side, counts) for cat in categories]
        for job in as_completed(jobs):
            pbar.update(job.result())


def _manifest(seed: int, max_side: int, counts, categories) -> dict:
    return {"generator": "esad_lib.data.synth", "version": SYNTH_VERSION, "seed": int(seed),
            "max_side": int(max_side), "counts": [int(c) for c in counts], "categories": list(categories)}


README = """Synthetic LOCO-like benchmark generated by esad_lib.data.synth (esad synth).
Procedurally drawn stand-in for MVTec LOCO AD, in the same folder layout; not real data.
Parameters: see synthetic.json.  Regenerate with: esad synth OUT --seed S --max-side M --counts ...
"""


def _check_arguments(counts: tuple[int, ...], max_side: int, categories: Sequence[str]) -> None:
    """``ValueError`` naming the argument of ``generate_synthetic`` that cannot be rendered."""
    if len(counts) != 5 or min(counts) < 0:
        raise ValueError(f"counts must be 5 non-negative ints (train, val, good, logical, structural), "
                         f"got {counts}")
    if max_side < 16:
        raise ValueError(f"max_side must be >= 16, got {max_side}")
    unknown = [c for c in categories if c not in SCENES]
    if unknown:
        raise ValueError(f"unknown synthetic categories {unknown}; choose from {list(SCENES)}")


def generate_synthetic(out: str | Path, seed: int = 0, max_side: int = DEFAULT_MAX_SIDE,
                       counts: Sequence[int] = DEFAULT_COUNTS, categories: Sequence[str] = CATEGORIES,
                       progress: bool = True, workers: int | None = None) -> Path:
    """Render the benchmark into ``out`` (a LOCO-layout root; ``counts`` per category). Returns ``out``.

    ``workers``: processes rendering categories side by side (default: one per CPU core, up to one
    per category; one below ``PARALLEL_MIN_IMAGES`` images, where starting processes costs more than
    it saves); the files are identical for every ``workers``.  Written into a temporary sibling
    folder and renamed at the end (``out`` is absent or complete); a no-op if ``out`` holds a
    benchmark with these parameters; any other non-empty ``out`` is refused."""
    from tqdm.auto import tqdm

    out = Path(out)
    counts = tuple(int(c) for c in counts)
    _check_arguments(counts, max_side, categories)
    want = _manifest(seed, max_side, counts, categories)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if _matches(out, want):  # complete (the manifest is written before the final rename)
            return out
        raise FileExistsError(f"{out} exists and is not a synthetic benchmark with these parameters; "
                              "choose an empty or new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        total = len(_plan(counts)) * len(categories)
        with tqdm(total=total, desc=f"synthetic benchmark ({max_side}px)", disable=not progress) as pbar:
            if workers is None:
                workers = min(os.cpu_count() or 1, len(categories)) if total >= PARALLEL_MIN_IMAGES else 1
            _render_all(tmp, categories, seed, max_side, counts, pbar, workers)
        (tmp / "readme.txt").write_text(README)
        (tmp / MANIFEST).write_text(json.dumps(want, indent=2) + "\n")
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        try:
            os.rename(tmp, out)
        except OSError:
            # somebody else finished the same benchmark first: keep theirs, discard ours
            if not _matches(out, want):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _matches(out: Path, want: dict) -> bool:
    try:
        return json.loads((out / MANIFEST).read_text()) == want
    except (OSError, ValueError):
        return False


def synthetic_key(seed: int, max_side: int, counts: Sequence[int]) -> str:
    blob = json.dumps([SYNTH_VERSION, int(seed), int(max_side), [int(c) for c in counts]]).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def ensure_synthetic(cfg) -> Path:
    """LOCO-layout root of the synthetic benchmark for ``cfg.synth_seed/synth_max_side/synth_counts``,
    generated on first use under ``data_root()/synthetic/<key>/`` (safe under concurrent callers)."""
    seed, max_side, counts = int(cfg.synth_seed), int(cfg.synth_max_side), tuple(cfg.synth_counts)
    target = data_root() / "synthetic" / synthetic_key(seed, max_side, counts)
    return generate_synthetic(target, seed=seed, max_side=max_side, counts=counts, categories=CATEGORIES)
