"""Which EfficientNet-Lite0 taps the PatchCore-style row uses, chosen on the synthetic DEV set
(``synth_seed=1``) at the demo profile, never on the reported test set.

    python benchmarks/dev_patchcore_taps.py          # one thread; prints a line per category and the means

Result of 2026-12-01: ``benchmarks/results/dev_set_2026-12-01_patchcore_taps.txt``.
"""

from __future__ import annotations

import sys

import torch

from esad_lib.config import CATEGORIES, get_config
from esad_lib.evaluation import evaluate
from esad_lib.patchcore import PatchCore
from esad_lib.report import mean_with_ci
from esad_lib.scoring import fit_detector

CANDIDATES = ((0, 1), (1, 2), (0, 1, 2))


def main() -> int:
    torch.set_num_threads(1)
    for layers in CANDIDATES:
        vals, ses = [], []
        for cat in CATEGORIES:
            cfg = get_config("demo", category=cat, synth_seed=1)
            detector = fit_detector(PatchCore.from_config(cfg, layers=layers), cfg)
            m, _ = evaluate(detector, cfg, progress=False)
            vals.append(m["image_auroc"]["structural"])
            ses.append(m["ci"]["image_auroc"]["structural"]["se"])
            print(layers, cat, f"{100 * vals[-1]:.1f}", file=sys.stderr, flush=True)
        print(layers, "mean structural", mean_with_ci(vals, ses), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
