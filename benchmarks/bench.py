"""Side-by-side speed benchmark of ESAD vs the RIAD baseline (issue 7) -- the script form.

    python benchmarks/bench.py [--quick] [--out bench] [--device D] [--profile P]

is the same as ``esad bench ...``; the measurements live in the package ``esad_lib.bench``
(part of the installed library, so that the ``esad`` command finds them; entry point
``esad_lib.bench.run``).  Writes ``<out>/results.json`` and ``<out>/results.md`` and prints the
markdown tables.
"""

from __future__ import annotations

import sys

from esad_lib.bench.run import main, run_benchmark

__all__ = ["main", "run_benchmark"]

if __name__ == "__main__":
    sys.exit(main())
