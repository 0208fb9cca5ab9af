"""Split MVTec LOCO AD into a *structural* and a *logical* dataset (authors' README "1. Requirements":
ESAD is evaluated on the structural anomalies; the logical split shows where it fails).

``split_dataset(SRC, OUT)`` writes ``OUT/structural/<category>`` (train/validation/test good,
test/structural_anomalies, their ground truth, defects_config.json) and ``OUT/logical/<category>``,
both LOCO-layout roots.  The source is only read; outputs are byte-identical (copy, hardlink or
symlink) and written atomically; the manifest ``OUT/.esad_split.json`` is written first ("in_progress",
the full plan: a re-run completes an interrupted run) and last ("complete": a re-run is a no-op).  A
non-empty folder without it is refused; ``force=True`` rewrites only files the manifest lists."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from esad_lib.config import CATEGORIES
from esad_lib.data.loco import DEFECTS_CONFIG, LABEL_DIRS, DatasetLayoutError, categories, image_files
from esad_lib.paths import atomic_write_text

MANIFEST = ".esad_split.json"
TARGETS = ("structural", "logical")
MODES = ("copy", "hardlink", "symlink")
TMP_SUFFIX = ".esad-tmp"

#: official MVTec LOCO AD image counts: (train, validation, test).  The paper's 354/59 for
#: splicing_connectors is wrong; these are the counts of the released dataset.
OFFICIAL_COUNTS = {
    "breakfast_box": (351, 62, 275),
    "juice_bottle": (335, 54, 330),
    "pushpins": (372, 69, 310),
    "screw_bag": (360, 60, 341),
    "splicing_connectors": (360, 60, 312),
}


class SplitError(RuntimeError):
    """The split cannot be written safely (message says why; nothing was changed)."""


def _plan(src: Path, cats: list[str]) -> tuple[list[tuple[Path, str]], dict]:
    """Every file to write, as (source, path under OUT), and the per-target/category counts."""
    counts: dict = {t: {} for t in TARGETS}
    # license.txt / readme.txt travel with each output (CC BY-NC-SA attribution)
    top_txt = [p for p in sorted(src.iterdir()) if p.is_file() and p.suffix.lower() == ".txt"
               and not p.name.startswith(".")]
    files = [(p, f"{t}/{p.name}") for t in TARGETS for p in top_txt]
    for cat in cats:
        cdir = src / cat
        shared: list[tuple[Path, str]] = []
        n = {}
        for split in ("train", "validation", "test"):
            imgs = image_files(cdir / split / "good")
            n[f"{split}/good"] = len(imgs)
            shared += [(p, f"{cat}/{split}/good/{p.name}") for p in imgs]
        if (cdir / DEFECTS_CONFIG).is_file():
            shared.append((cdir / DEFECTS_CONFIG, f"{cat}/{DEFECTS_CONFIG}"))
        for t in TARGETS:
            d, gt = LABEL_DIRS[t], cdir / "ground_truth" / LABEL_DIRS[t]
            imgs = image_files(cdir / "test" / d)
            subs = (sorted(q for q in gt.iterdir() if q.is_dir() and not q.name.startswith("."))
                    if gt.is_dir() else [])
            masks = [(m, f"{cat}/ground_truth/{d}/{sub.name}/{m.name}")
                     for sub in subs for m in image_files(sub)]
            own = shared + [(p, f"{cat}/test/{d}/{p.name}") for p in imgs] + masks
            files += [(p, f"{t}/{rel}") for p, rel in own]
            counts[t][cat] = {**n, f"test/{d}": len(imgs), "masks": len(masks)}
    return files, counts


def _same(src: Path, dst: Path, mode: str) -> bool:
    """Is ``dst`` already a correct output for ``src``?"""
    try:
        if mode == "symlink":
            return dst.is_symlink() and os.readlink(dst) == str(src.resolve())
        if dst.is_symlink():
            return False
        s, d = src.stat(), dst.stat()
        if mode == "hardlink":
            return (s.st_ino, s.st_dev) == (d.st_ino, d.st_dev)
        return s.st_size == d.st_size and s.st_mtime_ns == d.st_mtime_ns
    except OSError:
        return False


def _place(src: Path, dst: Path, mode: str) -> None:
    """Write ``dst`` atomically as a copy / hardlink / symlink of ``src``."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=TMP_SUFFIX, dir=dst.parent)
    os.close(fd)
    tmp_p = Path(tmp)
    try:
        if mode == "copy":
            shutil.copy2(src, tmp_p)  # copy2 keeps the mtime: re-runs recognise unchanged files
        else:
            tmp_p.unlink()
            if mode == "hardlink":
                os.link(src, tmp_p)
            else:
                os.symlink(src.resolve(), tmp_p)
        os.replace(tmp_p, dst)
    except BaseException:
        if tmp_p.exists() or tmp_p.is_symlink():
            tmp_p.unlink()
        raise


def _read_manifest(out: Path) -> dict | None:
    try:
        return json.loads((out / MANIFEST).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        msg = f"{out / MANIFEST}: unreadable split manifest ({err}); remove it or choose another folder"
        raise SplitError(msg) from err


def official_mismatches(counts: dict) -> list[str]:
    """Differences between the split's per-category counts and the official ones."""
    msgs = []
    for cat, (n_train, n_val, n_test) in OFFICIAL_COUNTS.items():
        s, lg = counts["structural"].get(cat), counts["logical"].get(cat)
        if s is None or lg is None:
            continue
        n_test_got = s["test/good"] + s["test/structural_anomalies"] + lg["test/logical_anomalies"]
        got = (s["train/good"], s["validation/good"], n_test_got)
        if got != (n_train, n_val, n_test):
            msgs.append(f"{cat}: train/validation/test = {got[0]}/{got[1]}/{got[2]}, "
                        f"official {n_train}/{n_val}/{n_test}")
    return msgs


def format_counts(counts: dict) -> str:
    head = f"  {'category':<22}{'train':>7}{'val':>6}{'test good':>11}{'test anom':>11}{'masks':>7}"
    lines: list[str] = []
    for t in TARGETS:
        d = f"test/{LABEL_DIRS[t]}"
        lines += [f"{t}:", head]
        lines += [f"  {cat:<22}{c['train/good']:>7}{c['validation/good']:>6}{c['test/good']:>11}{c[d]:>11}"
                  f"{c['masks']:>7}" for cat, c in counts[t].items()]
    return "\n".join(lines)


def _refuse_unsafe_output(src: Path, out: Path, mode: str, force: bool, old: dict | None, planned: list[str]):
    """Raise ``SplitError`` when writing the split into ``out`` could touch a file this tool did
    not write (``old``: the manifest found in ``out``, if any; ``planned``: the files to write)."""
    if out.exists() and not out.is_dir():
        raise SplitError(f"{out} exists and is not a folder; choose another output folder")
    if old is None and out.is_dir() and any(out.iterdir()):
        clash = [r for r in planned if (out / r).exists() or (out / r).is_symlink()]
        if not force or clash:
            why = (f" ({len(clash)} of its files would be overwritten, e.g. {clash[0]})" if clash
                   else ", or pass --force to add the split beside the existing files")
            raise SplitError(f"{out} is not empty and was not written by 'esad split' (no {MANIFEST}); "
                             f"nothing was changed. Choose an empty or new folder{why}")
    if old is not None and (old.get("source") != str(src) or old.get("mode") != mode) and not force:
        raise SplitError(f"{out} holds a split of {old.get('source')} (mode {old.get('mode')}); this run "
                         f"asks for {src} (mode {mode}). Pass --force to rewrite its own outputs, or choose "
                         "another folder")


def _write_files(files: list[tuple[Path, str]], out: Path, mode: str, progress: bool) -> tuple[int, int]:
    """Place every planned file under ``out`` that is not already correct; (written, unchanged)."""
    from tqdm.auto import tqdm

    written = 0
    for src, rel in tqdm(files, desc=f"esad split ({mode})", disable=not progress):
        dst = out / rel
        if _same(src, dst, mode):
            continue
        try:
            _place(src, dst, mode)
        except OSError as err:
            hint = " (hard links cannot cross file systems: use --mode copy or symlink)"
            hint = hint if mode == "hardlink" else ""
            msg = f"{dst}: cannot write from {src}: {err}{hint}; re-run to complete the split"
            raise SplitError(msg) from err
        written += 1
    return written, len(files) - written


def split_dataset(src: str | Path, out: str | Path, mode: str = "copy", force: bool = False,
                  progress: bool = True, verbose: bool = False) -> dict:
    """Write ``OUT/structural`` and ``OUT/logical`` from the LOCO-layout root ``src``.  Returns
    ``dict(out, mode, counts, written, unchanged, removed, official, mismatches)``; ``counts[target]
    [category]`` maps "train/good", "validation/good", "test/good", "test/<type>_anomalies", "masks"
    to numbers."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    src, out = Path(src).expanduser().resolve(), Path(out).expanduser().absolute()
    cats = categories(src)
    if not cats:
        raise DatasetLayoutError(f"{src}: not a LOCO-layout root (no <category>/train/good inside); point "
                                 "it at the folder holding breakfast_box/, juice_bottle/, ...")
    out_r = out.resolve()
    if out_r == src or src in out_r.parents or out_r in src.parents:
        raise SplitError(f"output {out} must lie outside the source {src} (and not contain it)")
    files, counts = _plan(src, cats)
    planned = [rel for _, rel in files]

    old = _read_manifest(out) if out.is_dir() else None
    _refuse_unsafe_output(src, out, mode, force, old, planned)
    # the source looks like the released MVTec LOCO AD: all five categories, no synthetic manifest
    official = set(CATEGORIES) <= set(cats) and not (src / "synthetic.json").exists()
    mismatches = official_mismatches(counts) if official else []
    result = {"out": out, "mode": mode, "counts": counts, "written": 0, "unchanged": 0, "removed": 0,
              "official": official, "mismatches": mismatches}
    if (old is not None and old.get("status") == "complete"
            and (old.get("source"), old.get("mode"), old.get("files")) == (str(src), mode, planned)
            and all(_same(s, out / rel, mode) for s, rel in files)):  # complete and unchanged: touch nothing
        result["unchanged"] = len(files)
        _report(result, verbose)
        return result
    previous = set(old.get("files", [])) if old else set()
    manifest = {"tool": "esad split", "source": str(src), "mode": mode, "status": "in_progress"}
    # the manifest names everything this tool may write: store the union until the run is done
    union = {**manifest, "files": sorted(previous | set(planned))}
    atomic_write_text(out / MANIFEST, json.dumps(union, indent=1))

    for p in out.rglob(f"*{TMP_SUFFIX}"):  # leftovers of an interrupted run (our own temp names)
        p.unlink()
    written, unchanged = _write_files(files, out, mode, progress)
    removed = 0
    for rel in sorted(previous - set(planned)):  # own outputs of an earlier (forced-over) split
        p = out / rel
        if p.is_file() or p.is_symlink():
            p.unlink()
            removed += 1
    manifest.update(status="complete", files=planned, counts=counts)
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1))
    result.update(written=written, unchanged=unchanged, removed=removed)
    _report(result, verbose)
    return result


def _report(result: dict, verbose: bool) -> None:
    if not verbose:
        return
    print(format_counts(result["counts"]))
    print(f"{result['written']} files written, {result['unchanged']} already up to date, "
          f"{result['removed']} stale removed -> {result['out']}")
    if result["official"]:
        mm = result["mismatches"]
        print("official counts: " + ("all match" if not mm else "MISMATCH\n  " + "\n  ".join(mm)))
