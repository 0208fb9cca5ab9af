"""Speed of the vectorised AU-sPRO bootstrap (esad_lib.uncertainty) -- prints seconds, asserts nothing.

    python benchmarks/uncertainty_speed.py [--maps 120] [--height 256] [--width 160] [--boot 1000]

Synthetic maps (half good, half with one or two rectangular defects of the two saturation
kinds), float32.  Prints the time of one exact ``metrics.au_spro`` (for scale), of
``uncertainty.au_spro_ci`` (statistics on a 2000-threshold grid + B resamples), and of the image
AUROC bootstrap of the same images.  Timings on a shared machine are noisy; compare the ratios
of lines printed by one run.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from esad_lib import metrics
from esad_lib import uncertainty as U

DEFECTS = [
    {"defect_name": "abs", "pixel_value": 255, "saturation_threshold": 400, "relative_saturation": False},
    {"defect_name": "rel", "pixel_value": 128, "saturation_threshold": 0.5, "relative_saturation": True},
]


def synthetic(n: int, h: int, w: int, seed: int = 0):
    """``n`` maps float32 [h, w], channels uint8 [C, h, w], label names (first half good)."""
    rng = np.random.default_rng(seed)
    maps, chans, names = [], [], []
    for i in range(n):
        m = rng.normal(size=(h, w)).astype(np.float32)
        if i < n // 2:
            chans.append(np.zeros((0, h, w), np.uint8))
            names.append("good")
        else:
            c = np.zeros((2, h, w), np.uint8)
            y, x = rng.integers(0, h - 30), rng.integers(0, w - 30)
            c[0, y : y + 25, x : x + 30] = 255
            m[y : y + 25, x : x + 30] += 1.5
            if i % 2:
                y, x = rng.integers(0, h - 12), rng.integers(0, w - 12)
                c[1, y : y + 12, x : x + 10] = 128
                m[y : y + 12, x : x + 10] += 0.8
            chans.append(c)
            names.append("structural")
        maps.append(m)
    return maps, chans, names


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--maps", type=int, default=120)
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--width", type=int, default=160)
    p.add_argument("--boot", type=int, default=1000)
    a = p.parse_args(argv)
    maps, chans, names = synthetic(a.maps, a.height, a.width)
    t0 = time.perf_counter()
    exact = metrics.au_spro(maps, chans, DEFECTS)
    t1 = time.perf_counter()
    r = U.au_spro_ci(maps, chans, names, DEFECTS, n_boot=a.boot, seed=0)
    t2 = time.perf_counter()
    scores = np.array([float(m.max()) for m in maps])
    ri = U.image_auroc_ci(scores, [n != "good" for n in names], n_boot=a.boot, seed=0)
    t3 = time.perf_counter()
    print(f"{a.maps} maps of {a.height}x{a.width}, B = {a.boot}")
    print(f"metrics.au_spro (exact, once):        {t1 - t0:7.3f} s   AU-sPRO {exact:.4f}")
    print(
        f"uncertainty.au_spro_ci (grid 2000):   {t2 - t1:7.3f} s   {U.format_ci(r)}  "
        f"(grid error bound {r['grid_error']:.1e})"
    )
    print(f"uncertainty.image_auroc_ci:           {t3 - t2:7.3f} s   {U.format_ci(ri)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
