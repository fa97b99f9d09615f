"""Options shared by the subcommands that join a cluster."""

from __future__ import annotations

import argparse
import logging
import os

from qsrv.errors import ConfigError
from qsrv.transport import ENV_CA, ENV_CERT, ENV_KEY


def add_cluster_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", default=None,
                        help="scheduler HOST:PORT to join (default: $QSRV_ADDRESS)")
    parser.add_argument("--token", default=None,
                        help="cluster token (default: $QSRV_TOKEN); prefer the variable, "
                             "command lines are visible to other users")


def add_client_tls_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tls-ca", default=None,
                        help="CA file to verify a TLS scheduler (default: $QSRV_TLS_CA)")
    parser.add_argument("--tls-cert", default=None,
                        help="client certificate, when the scheduler requires one "
                             "(default: $QSRV_TLS_CERT)")
    parser.add_argument("--tls-key", default=None,
                        help="key of the client certificate (default: $QSRV_TLS_KEY)")


def apply_client_tls(args: argparse.Namespace) -> None:
    """Make the TLS options visible to this process and its children (executors)."""
    for option, env in (("tls_ca", ENV_CA), ("tls_cert", ENV_CERT), ("tls_key", ENV_KEY)):
        value = getattr(args, option, None)
        if value:
            os.environ[env] = os.path.abspath(value)


def cluster_of(args: argparse.Namespace) -> tuple[str, str]:
    address = args.address or os.environ.get("QSRV_ADDRESS")
    if not address:
        raise ConfigError("no scheduler address: pass --address HOST:PORT or set QSRV_ADDRESS")
    token = args.token if args.token is not None else os.environ.get("QSRV_TOKEN", "")
    return address, token


def add_connect_options(parser: argparse.ArgumentParser, *,
                        timeout: str | None = None) -> None:
    """What a command that talks to a scheduler takes: --address, --token, the client TLS
    options, and ``--timeout`` (seconds; ``timeout`` is what its help says it bounds)."""
    add_cluster_options(parser)
    add_client_tls_options(parser)
    if timeout is not None:
        parser.add_argument("--timeout", type=float, default=10.0,
                            help=f"seconds to wait for {timeout} (default 10)")


def connect_args(args: argparse.Namespace) -> tuple[str, str]:
    """The scheduler's address and the token from the options (or the environment), with
    the TLS options made visible to this process and its children."""
    apply_client_tls(args)
    return cluster_of(args)


def setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger().setLevel(getattr(logging, level.upper(), logging.INFO))
    if os.environ.get("QSRV_LOG_FORMAT") == "json":
        use_json_logs()


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (epoch s), level, logger, message, pid, and the
    exception's traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        import json

        entry = {"time": round(record.created, 6), "level": record.levelname,
                 "logger": record.name, "message": record.getMessage(), "pid": record.process}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def use_json_logs() -> None:
    """Every handler of the root logger writes JSON lines (and the processes this one starts
    do too: QSRV_LOG_FORMAT=json is inherited)."""
    os.environ["QSRV_LOG_FORMAT"] = "json"
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler())
    for handler in root.handlers:
        handler.setFormatter(JsonFormatter())
