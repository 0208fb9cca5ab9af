"""The ``esad`` command line: one small module per command group, each argparse plus a library call.
Each module of ``COMMAND_MODULES`` has ``register(subparsers)``, which adds its parsers and sets ``func``
(``args -> exit code``) on each."""

from __future__ import annotations

import argparse
import importlib
import sys

from esad_lib import __version__

#: modules that contribute sub-commands, in the order ``esad --help`` lists them.
COMMAND_MODULES: tuple[str, ...] = tuple(
    f"esad_lib.cli.{name}" for name in ("data", "models", "train", "evaluate", "ablate")
)


def fail(message: str) -> int:
    """Print ``message`` to stderr; the exit code 2 of a command that cannot run as asked."""
    print(message, file=sys.stderr)
    return 2


def quiet_flag(p: argparse.ArgumentParser, func, help: str = "no progress bars") -> None:
    """The ``--quiet`` flag of the commands with progress bars, and the command's function."""
    p.add_argument("--quiet", action="store_true", help=help)
    p.set_defaults(func=func)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="esad", description=(
        "ESAD (structural anomaly detection by inpainting + reconstruction) on MVTec LOCO AD "
        "or the built-in synthetic LOCO-like benchmark."))
    parser.add_argument("--version", action="version", version=f"esad {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
