"""The ``qsrv`` command line: one module per subcommand, each exposing ``register(subparsers)``.

A subcommand module adds its parser and sets ``func`` to a callable taking the parsed namespace
and returning the exit code. This module only collects them, and imports only the module of
the command being run (`qsrv worker` does not load the gateway's web stack).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from qsrv.errors import QsrvError

# Subcommand modules, in the order --help lists them.
_COMMANDS = ("start", "stop", "scheduler", "worker", "status", "gateway", "user", "programs",
             "jobs", "platforms", "sessions", "batches",
             "dashboard", "timeline")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; with ``only``, just that subcommand (its module alone is
    imported: starting a scheduler or a worker does not load the gateway's web stack)."""
    parser = argparse.ArgumentParser(
        prog="qsrv", description="qsrv: a distributed task runtime for quantum-classical work."
    )
    parser.add_argument("--version", action=_Version, nargs=0,
                        help="show the program's version number and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _COMMANDS if only is None else (only,):
        try:
            module = importlib.import_module(f"qsrv.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"qsrv.cli.{name}":
                continue  # that subcommand is not part of this build
            raise
        module.register(sub)
    for command in sub.choices.values():  # every command logs as text or JSON lines
        if not any("--log-format" in a.option_strings for a in command._actions):
            command.add_argument("--log-format", choices=("text", "json"), default=None,
                                 help="log lines as text or JSON objects (default: "
                                      "$QSRV_LOG_FORMAT, else text)")
    return parser


class _Version(argparse.Action):
    """``--version``, looked up only when asked for (the package metadata takes a while)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        print(f"qsrv {_version()}")  # on stdout, as argparse's own version action does
        parser.exit()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("qsrv")
    except PackageNotFoundError:  # run from a source tree that was never installed
        from qsrv import __version__

        return __version__


def _command(argv: Sequence[str]) -> str | None:
    """The subcommand named in ``argv`` (None: none, or a top-level option comes first)."""
    for arg in argv:
        if arg.startswith("-"):
            return None
        return arg if arg in _COMMANDS else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(_command(argv)).parse_args(argv)
    if getattr(args, "log_format", None) == "json" or (
            getattr(args, "log_format", None) is None
            and os.environ.get("QSRV_LOG_FORMAT") == "json"):
        from qsrv.cli._common import use_json_logs

        use_json_logs()
    elif getattr(args, "log_format", None) == "text":
        os.environ.pop("QSRV_LOG_FORMAT", None)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except QsrvError as exc:
        print(f"qsrv {args.command}: error: {exc}", file=sys.stderr)
        return 1
    return code
