"""``esad score-maps`` side by side: this checkout, an earlier commit, and MVTec's official evaluation
(MVTec LOCO AD's ``evaluate_experiment.py``, the paper's benchmark protocol) on one workload.

    python benchmarks/score_maps_workload.py /tmp/score_maps_workload
    python benchmarks/score_maps_speed.py /tmp/score_maps_workload [--before REF] [--official DIR]

Each contender runs as its own process, one after the other; the script prints its wall and CPU
seconds (user + system: less sensitive to a busy machine, but two threads add up) and peak
resident memory (``os.wait4``'s ``ru_maxrss``), the load average before it started and
the CPU count.  ``--before REF`` also times the library as it was at git commit ``REF``
(extracted with ``git archive`` into a temporary folder) and compares its ``metrics.json`` with
this checkout's, number by number.  ``--official DIR`` also times the official evaluation
(a folder holding ``evaluate_experiment.py`` and its ``src/``).  ``make bench`` runs the same
comparison as its ``score_maps`` section (``section_score_maps``).  Timings on a shared machine are
noisy: measure on an idle one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # score_maps_workload, run as a script or not


def run_timed(
    cmd: list[str], env: dict[str, str] | None = None, cwd: str | None = None
) -> tuple[float, float]:
    """(wall seconds, peak RSS in GB) of one process; raises when it fails."""
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{err.decode(errors='replace')[-3000:]}"
        )
    print(f"    (load average before: {load:.2f})")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1e6  # ru_maxrss: KiB on Linux


def checkout(ref: str, dest: Path) -> Path:
    """The ``esad_lib`` folder of git commit ``ref``, extracted under ``dest``."""
    data = subprocess.run(
        ["git", "-C", str(REPO), "archive", ref, "esad_lib"], capture_output=True, check=True
    )
    dest.mkdir(parents=True, exist_ok=True)
    tar_path = dest / "src.tar"
    tar_path.write_bytes(data.stdout)
    with tarfile.open(tar_path) as tar:
        tar.extractall(dest, filter="data")
    return dest


def ours(code: Path, maps: Path, dataset: Path, category: str, out: Path) -> tuple[float, float, float]:
    env = {**os.environ, "PYTHONPATH": str(code)}
    cmd = [sys.executable, "-m", "esad_lib", "score-maps", str(maps), "--dataset", str(dataset)]
    # cwd = the folder holding that esad_lib: ``-m`` puts the working folder ahead of PYTHONPATH
    return run_timed(cmd + ["--category", category, "--out", str(out), "--quiet"], env=env, cwd=str(code))


def max_difference(a, b, path: str = "") -> tuple[float, str]:
    """Largest absolute difference between the numbers of two JSON trees (and where)."""
    if isinstance(a, dict) and isinstance(b, dict):
        best = (0.0, "")
        for k in set(a) | set(b):
            if k not in a or k not in b:
                return float("inf"), f"{path}/{k} (missing on one side)"
            best = max(best, max_difference(a[k], b[k], f"{path}/{k}"))
        return best
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return abs(float(a) - float(b)), path
    return (0.0, "") if a == b else (float("inf"), path)


#: environment variable naming a folder with MVTec's ``evaluate_experiment.py`` + ``src/`` (the
#: ``score_maps`` section of ``make bench`` then also times the official evaluation)
OFFICIAL_ENV = "MVTEC_LOCO_EVAL_DIR"


def section_score_maps(st: dict, device: Any, log: Callable[[str], None]) -> dict[str, Any]:
    """Section ``score_maps`` of ``make bench``: ``esad score-maps`` on a generated LOCO-sized workload
    (``st["score_maps_workload"]``: per-label count, width, height), beside MVTec's official
    evaluation when ``$MVTEC_LOCO_EVAL_DIR`` names it.  Runs on the CPU whatever ``device`` is.

    The contenders are started from a fresh interpreter running this script: a child forked from
    the benchmark process (torch loaded) would count the parent's memory in its peak RSS."""
    from score_maps_workload import make_workload

    per_label, width, height = st["score_maps_workload"]
    official = os.environ.get(OFFICIAL_ENV)
    with tempfile.TemporaryDirectory() as tmp:
        work = make_workload(Path(tmp) / "work", per_label, width, height)
        log(f"score_maps: wrote {3 * per_label} maps of {width}x{height}")
        cmd = [sys.executable, __file__, str(work), "--json", str(Path(tmp) / "rows.json")]
        subprocess.run(cmd + (["--official", official] if official else []), check=True, capture_output=True)
        rows = json.loads((Path(tmp) / "rows.json").read_text())
    log("score_maps: timed")
    return {"per_label": per_label, "size": [height, width], "official_dir": official, "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workload", help="folder written by benchmarks/score_maps_workload.py")
    ap.add_argument("--category", default="breakfast_box")
    ap.add_argument("--before", metavar="REF", help="also time the library at this git commit")
    ap.add_argument("--official", metavar="DIR", help="also time MVTec's evaluate_experiment.py in DIR")
    ap.add_argument("--json", metavar="FILE", help="also write the rows to FILE")
    a = ap.parse_args()
    work = Path(a.workload)
    maps, dataset = work / "maps", work / "dataset"
    print(f"{os.cpu_count()} CPUs; workload {work}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if a.official:
            cmd = [sys.executable, "evaluate_experiment.py", "--object_name", a.category]
            cmd += ["--dataset_base_dir", str(dataset), "--anomaly_maps_dir", str(maps)]
            # niceness 0: the official CLI lowers its own priority to 19 by default, which would
            # inflate its wall time on a machine doing anything else
            cmd += ["--output_dir", str(tmp / "official"), "--niceness", "0"]
            print("official evaluate_experiment.py ...")
            rows.append(("official evaluate_experiment.py", *run_timed(cmd, cwd=a.official)))
        if a.before:
            code = checkout(a.before, tmp / "before")
            print(f"esad score-maps at {a.before} ...")
            rows.append((f"esad score-maps ({a.before})", *ours(code, maps, dataset, a.category, tmp / "b")))
        print("esad score-maps (this checkout) ...")
        rows.append(("esad score-maps (this checkout)", *ours(REPO, maps, dataset, a.category, tmp / "a")))
        if a.before:
            ma = json.loads((tmp / "a" / a.category / "metrics.json").read_text())
            mb = json.loads((tmp / "b" / a.category / "metrics.json").read_text())
            for key in ("maps_dir", "dataset_root", "timing", "schema"):
                ma.pop(key, None), mb.pop(key, None)
            if only := sorted(set(ma) ^ set(mb)):  # provenance keys one version writes and the other not
                print(f"metrics.json keys in one version only (not compared): {', '.join(only)}")
                for key in only:
                    ma.pop(key, None), mb.pop(key, None)
            diff, where = max_difference(ma, mb)
            at = f" at {where}" if diff else ""
            print(f"metrics.json, this checkout vs {a.before}: largest difference {diff:.3g}{at}")
    print("\n| contender | wall s | CPU s | peak RSS (GB) |\n|---|---:|---:|---:|")
    for name, sec, cpu, gb in rows:
        print(f"| {name} | {sec:.1f} | {cpu:.1f} | {gb:.2f} |")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if a.json:
        keys = ("contender", "wall_s", "cpu_s", "peak_gb")
        Path(a.json).write_text(json.dumps([dict(zip(keys, r, strict=True)) for r in rows]))


if __name__ == "__main__":
    main()
