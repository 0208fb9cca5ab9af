"""``python -m esad_lib.bench [--quick] ...``: the same as ``esad bench``."""

from esad_lib.bench.run import main

if __name__ == "__main__":
    raise SystemExit(main())
