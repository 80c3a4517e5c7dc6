"""The ``mlmm`` command line: one subcommand per module in this package.

Each subcommand module defines ``register(subparsers)``, which adds its parser and sets
``handler`` to a function taking the parsed arguments. Heavy imports happen inside the
handlers so that ``mlmm --help`` stays fast. An :class:`~mlmm.errors.MlmmError` is printed
as one line on stderr with exit status 2, never as a traceback; an
:class:`~mlmm.errors.MlmmWarning` as one line on stderr, and the command goes on.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from ..errors import MlmmError, MlmmWarning

SUBCOMMAND_MODULES = ("build", "models", "run", "plot", "bench", "fe", "stability")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlmm", description="ML/MM molecular dynamics with OpenMM.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning(args.command, warnings.showwarning)
            return int(args.handler(args) or 0)
    except MlmmError as exc:
        print(f"mlmm {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mlmm {args.command}: interrupted", file=sys.stderr)
        return 130


def _one_line_warning(command: str, show_other):
    """A ``warnings.showwarning`` that prints an MlmmWarning as ``mlmm COMMAND: warning: ...``."""
    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, MlmmWarning):
            print(f"mlmm {command}: warning: {message}", file=sys.stderr)
        else:
            show_other(message, category, filename, lineno, file, line)
    return show


if __name__ == "__main__":
    sys.exit(main())
