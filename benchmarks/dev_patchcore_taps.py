"""Which EfficientNet-Lite0 taps the PatchCore-style row uses, chosen on the synthetic DEV set
(``synth_seed=1``) at the demo profile, never on the reported test set.

    python benchmarks/dev_patchcore_taps.py          # one thread; prints a line per category and the means

Result of 2026-12-01: ``benchmarks/results/dev_set_2026-12-01_patchcore_taps.txt``.
"""

from __future__ import annotations

import sys
import tempfile

import torch

from esad_lib.config import CATEGORIES, get_config
from esad_lib.patchcore import REFERENCE_EXTRACTOR, evaluate_patchcore
from esad_lib.report import mean_with_ci

CANDIDATES = ((0, 1), (1, 2), (0, 1, 2))


def main() -> int:
    torch.set_num_threads(1)
    for layers in CANDIDATES:
        vals, ses = [], []
        for cat in CATEGORIES:
            cfg = get_config("demo", category=cat, synth_seed=1)
            with tempfile.TemporaryDirectory() as d:
                m = evaluate_patchcore(cfg, d, extractor=REFERENCE_EXTRACTOR, progress=False, layers=layers)
            vals.append(m["image_auroc"]["structural"])
            ses.append(m["ci"]["image_auroc"]["structural"]["se"])
            print(layers, cat, f"{100 * vals[-1]:.1f}", file=sys.stderr, flush=True)
        print(layers, "mean structural", mean_with_ci(vals, ses), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
