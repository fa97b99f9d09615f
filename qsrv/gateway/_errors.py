"""Errors of the programs-and-jobs gateway (to be moved into ``qsrv/errors.py``).

The subtree, under ``QsrvError``::

    QsrvError
    ├── GatewayError                a gateway request was refused; ``status`` is its HTTP status
    │   ├── InvalidRequestError     400: malformed request (ValueError too)
    │   │   └── ArchiveError        400: the working-directory archive is unsafe or malformed
    │   ├── UnauthorizedError       401: missing or unknown token
    │   ├── ForbiddenError          403: the user may not do this
    │   ├── NotFoundError           404: no such user, program or job for this user (LookupError)
    │   ├── ConflictError           409: the object is not in a state that allows this
    │   ├── PayloadTooLargeError    413: an archive, arguments or result over its size limit
    │   └── GatewayUnavailableError the gateway could not be reached (ConnectionError too)
    └── JobError                    the job ended without a result; ``job_id``, ``status``, ...
        ├── JobFailedError          status FAILED: ``error`` holds the traceback, ``exit_code``
        └── JobStoppedError         status STOPPED: someone called ``stop()``

The server maps a ``GatewayError`` to its HTTP status and a JSON body ``{"error": kind,
"message": ...}``; the client maps that body back to the same class (``error_for``), so both ends
raise the same types.
"""

from __future__ import annotations

from qsrv.errors import QsrvError

__all__ = [
    "ArchiveError",
    "ConflictError",
    "ForbiddenError",
    "GatewayError",
    "GatewayUnavailableError",
    "InvalidRequestError",
    "JobError",
    "JobFailedError",
    "JobStoppedError",
    "NotFoundError",
    "PayloadTooLargeError",
    "UnauthorizedError",
    "error_for",
]


class GatewayError(QsrvError):
    """A gateway request was refused. ``status`` is the HTTP status, ``kind`` its wire name."""

    status: int = 500
    kind: str = "internal"


class InvalidRequestError(GatewayError, ValueError):
    """The request was malformed: a missing field, a bad value, a bad entrypoint."""

    status = 400
    kind = "invalid_request"


class ArchiveError(InvalidRequestError):
    """The working-directory archive is malformed or holds something unsafe.

    Unsafe: absolute paths, ``..`` components, symbolic or hard links, device files, FIFOs.
    """

    kind = "invalid_archive"


class UnauthorizedError(GatewayError):
    """The request carried no token, or a token the gateway does not know."""

    status = 401
    kind = "unauthorized"


class ForbiddenError(GatewayError):
    """The token is valid but the user may not do this."""

    status = 403
    kind = "forbidden"


class NotFoundError(GatewayError, LookupError):
    """No such user, program, version or job -- or it belongs to another user."""

    status = 404
    kind = "not_found"


class ConflictError(GatewayError):
    """The object is not in a state that allows the request (e.g. the result of a queued job)."""

    status = 409
    kind = "conflict"


class PayloadTooLargeError(GatewayError):
    """An archive, its unpacked content, the arguments or a result is over its size limit."""

    status = 413
    kind = "too_large"


class GatewayUnavailableError(GatewayError, ConnectionError):
    """The gateway could not be reached, or answered something that is not the gateway API."""

    status = 503
    kind = "unavailable"


_BY_KIND: dict[str, type[GatewayError]] = {
    cls.kind: cls
    for cls in (
        InvalidRequestError, ArchiveError, UnauthorizedError, ForbiddenError, NotFoundError,
        ConflictError, PayloadTooLargeError, GatewayUnavailableError, GatewayError,
    )
}


def error_for(kind: str, message: str, status: int) -> GatewayError:
    """The exception a client raises for an error response of the gateway."""
    cls = _BY_KIND.get(kind, GatewayError)
    err = cls(message)
    err.status = status
    return err


class JobError(QsrvError):
    """The job ended without a result: it failed or was stopped."""

    def __init__(self, job_id: str, status: str, error: str | None,
                 exit_code: int | None) -> None:
        self.job_id = job_id
        self.status = status
        self.error = error or ""
        self.exit_code = exit_code
        head = f"job {job_id} {status}"
        if exit_code is not None:
            head += f" (exit code {exit_code})"
        super().__init__(f"{head}\n{self.error.rstrip()}" if self.error else head)

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.job_id, self.status, self.error, self.exit_code))


class JobFailedError(JobError):
    """The job's process failed; ``error`` holds the tail of its stderr (the traceback)."""


class JobStoppedError(JobError):
    """The job was stopped before it finished."""
