"""``python -m esad_lib.cli`` (and ``torchrun -m esad_lib.cli ...``) == the ``esad`` command."""

from esad_lib.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
