"""``python -m esad_lib`` == the ``esad`` command."""

from esad_lib.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
