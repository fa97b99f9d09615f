"""What a program calls from inside its job: ``get_arguments()`` and ``save_result(obj)``.

The gateway talks to a job process only through files named in its environment:

- ``QSRV_JOB_ARGUMENTS_PATH``: the arguments, pickled (cloudpickle, protocol 5). The gateway
  writes it before the process starts and never unpickles it.
- ``QSRV_JOB_RESULT_PATH``: where ``save_result`` writes the pickled result. The gateway reads
  the bytes after the process exits and stores them as they are; the client unpickles them.

Outside a job (the variables unset, e.g. while developing the program locally)
``get_arguments()`` returns ``{}`` and ``save_result(obj)`` still pickles ``obj`` -- so an
unserialisable result fails the same way it would in a job -- then warns that nothing was
stored and returns. Setting ``QSRV_JOB_RESULT_PATH`` by hand makes it write there.

This module imports nothing heavy: it runs at the start of every job.
"""

from __future__ import annotations

import os
import pickle
import warnings
from typing import Any

from qsrv.gateway._atomic import replaced

__all__ = [
    "ARGUMENTS_FORMAT_ENV",
    "ARGUMENTS_PATH_ENV",
    "JOB_ID_ENV",
    "RESULT_PATH_ENV",
    "UPSTREAM_ARGUMENTS_PATH",
    "UPSTREAM_DATA_PATH",
    "UPSTREAM_GATEWAY_HOST",
    "UPSTREAM_GATEWAY_TOKEN",
    "UPSTREAM_JOB_ID",
    "UPSTREAM_RESULTS_PATH",
    "dumps",
    "get_arguments",
    "save_result",
]

JOB_ID_ENV = "QSRV_JOB_ID"
ARGUMENTS_PATH_ENV = "QSRV_JOB_ARGUMENTS_PATH"
RESULT_PATH_ENV = "QSRV_JOB_RESULT_PATH"
ARGUMENTS_FORMAT_ENV = "QSRV_JOB_ARGUMENTS_FORMAT"  # "pickle" or "json": how they came
# The Quantum Serverless runtime's environment (qiskit_serverless.core.constants), which
# every job gets as well (see _runner).
UPSTREAM_ARGUMENTS_PATH = "ARGUMENTS_PATH"
UPSTREAM_RESULTS_PATH = "RESULTS_PATH"
UPSTREAM_DATA_PATH = "DATA_PATH"
UPSTREAM_GATEWAY_HOST = "ENV_JOB_GATEWAY_HOST"
UPSTREAM_GATEWAY_TOKEN = "ENV_JOB_GATEWAY_TOKEN"
UPSTREAM_JOB_ID = "ENV_JOB_ID_GATEWAY"
_PROTOCOL = 5


def dumps(obj: Any) -> bytes:
    """Pickle with cloudpickle (protocol 5), as arguments and results travel."""
    import cloudpickle

    data: bytes = cloudpickle.dumps(obj, protocol=_PROTOCOL)
    return data


def get_arguments() -> Any:
    """The arguments the job was run with; ``{}`` when not running as a job."""
    path = os.environ.get(ARGUMENTS_PATH_ENV)
    if not path:
        return {}
    with open(path, "rb") as fh:
        return pickle.load(fh)


def save_result(obj: Any) -> None:
    """Store ``obj`` (any value cloudpickle can serialise) as the job's result.

    A later call replaces the earlier result. The file is replaced atomically, so a job killed
    mid-write leaves the previous result (or none), never half of one.
    """
    data = dumps(obj)
    path = os.environ.get(RESULT_PATH_ENV)
    if not path:
        warnings.warn(
            "qsrv.save_result() called outside a job: the result was serialised but not stored",
            RuntimeWarning,
            stacklevel=2,
        )
        return
    with replaced(path, prefix=".result-") as out:
        out.write(data)
