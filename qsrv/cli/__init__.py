"""The ``qsrv`` command line: one module per subcommand, each exposing ``register(subparsers)``.

A subcommand module adds its parser and sets ``func`` to a callable taking the parsed namespace
and returning the exit code. This module only collects them.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from qsrv.errors import QsrvError

# Subcommand modules, in the order --help lists them.
_COMMANDS = ("scheduler", "worker", "status", "gateway", "user", "programs", "jobs")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qsrv", description="qsrv: a distributed task runtime for quantum-classical work."
    )
    parser.add_argument("--version", action="version", version=f"qsrv {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _COMMANDS:
        try:
            module = importlib.import_module(f"qsrv.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"qsrv.cli.{name}":
                continue  # that subcommand is not part of this build
            raise
        module.register(sub)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("qsrv")
    except PackageNotFoundError:  # run from a source tree that was never installed
        from qsrv import __version__

        return __version__


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except QsrvError as exc:
        print(f"qsrv {args.command}: error: {exc}", file=sys.stderr)
        return 1
    return code
