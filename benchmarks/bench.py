"""Side-by-side speed benchmark of ESAD vs the RIAD baseline (issue 7) -- the script form.

    python benchmarks/bench.py [--quick] [--out bench] [--device D] [--profile P]

is the same as ``esad bench ...``; the measurements live in ``esad_lib.benchmark`` (part of
the installed package, so that the ``esad`` command finds them).  Writes
``<out>/results.json`` and ``<out>/results.md`` and prints the markdown tables.
"""

from __future__ import annotations

import sys

from esad_lib.benchmark import main, run_benchmark

__all__ = ["main", "run_benchmark"]

if __name__ == "__main__":
    sys.exit(main())
