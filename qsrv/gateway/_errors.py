"""How gateway errors travel over HTTP: each class's ``kind`` is its wire name.

The classes live in ``qsrv/errors.py`` with the rest of the tree. The server maps a
``GatewayError`` to its HTTP status and a JSON body ``{"error": kind, "message": ...}``; the
client maps that body back to the same class (`error_for`), so both ends raise the same types.
"""

from __future__ import annotations

from qsrv.errors import (
    ArchiveError,
    ConflictError,
    ForbiddenError,
    GatewayError,
    GatewayUnavailableError,
    InvalidRequestError,
    JobError,
    JobFailedError,
    JobStoppedError,
    NotFoundError,
    PayloadTooLargeError,
    TooManyRequestsError,
    UnauthorizedError,
)

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
    "TooManyRequestsError",
    "UnauthorizedError",
    "error_for",
]

_BY_KIND: dict[str, type[GatewayError]] = {
    cls.kind: cls
    for cls in (
        InvalidRequestError, ArchiveError, UnauthorizedError, ForbiddenError, NotFoundError,
        ConflictError, PayloadTooLargeError, TooManyRequestsError, GatewayUnavailableError,
        GatewayError,
    )
}


def error_for(kind: str, message: str, status: int) -> GatewayError:
    """The exception a client raises for an error response of the gateway."""
    cls = _BY_KIND.get(kind, GatewayError)
    err = cls(message)
    err.status = status
    return err
