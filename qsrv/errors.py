"""Every exception qsrv raises.

The tree::

    QsrvError
    ├── ConfigError                 bad option, malformed target, bad address (ValueError too)
    ├── NotConnectedError           no cluster: init() not called, or it was shut down
    ├── ProtocolError               the wire broke its rules
    │   ├── LocalProtocolError      we were asked to send something invalid
    │   └── RemoteProtocolError     the peer sent a malformed or oversize frame
    │       ├── AuthenticationError the peer failed the token challenge or spoke another version
    │       └── ChecksumError       a state vector's bytes do not match its header's checksum
    ├── ConnectionClosedError       you closed it: shutdown()/close() ran here (ConnectionError)
    ├── ConnectionLostError         it broke: the peer left or can't be reached (ConnectionError)
    ├── GetTimeoutError             get()/wait() ran out of time (TimeoutError too)
    ├── SerializationError          a value cannot be pickled to travel; names which (TypeError)
    ├── TaskError                   the task's own code raised; also an instance of the cause's type
    ├── TaskCancelledError          cancel() was called on the task
    ├── TaskTimeoutError            the task did not finish within its `timeout`
    ├── InfeasibleTaskError         no worker could ever satisfy the task's target
    │   └── QuantumPlacementError   no worker can hold the simulation (memory, device, method)
    ├── WorkerDiedError             the task's executor or worker died, retries exhausted
    ├── ReservationError            a reservation is infeasible or released (``reason`` says why)
    ├── ObjectLostError             the object's value no longer exists anywhere
    ├── ObjectStoreFullError        the object store has no room, even after eviction
    ├── GatewayError                a gateway request was refused; ``status`` is its HTTP status
    │   ├── InvalidRequestError     400: malformed request (ValueError too)
    │   │   ├── ArchiveError        400: the working-directory archive is unsafe or malformed
    │   │   └── InvalidProgramError 400: a quantum program or job does not fit its platform
    │   ├── UnauthorizedError       401: missing or unknown token
    │   ├── ForbiddenError          403: the user may not do this
    │   ├── NotFoundError           404: no such user, program or job for this user (LookupError)
    │   ├── ConflictError           409: the object is not in a state that allows this
    │   ├── PayloadTooLargeError    413: an archive, arguments or result over its size limit
    │   ├── TooManyRequestsError    429: over a quota or a rate limit (``retry_after``)
    │   └── GatewayUnavailableError the gateway could not be reached (ConnectionError too)
    └── JobError                    a job ended without a result; ``job_id``, ``status``, ...
        ├── JobFailedError          status FAILED: ``error`` holds the traceback, ``exit_code``
        └── JobStoppedError         status STOPPED: someone called ``stop()``

Errors of a task travel back to the driver: `TaskError` carries the remote traceback text; the
others are raised by the runtime itself. Foreign exceptions (OSError, msgpack errors) are mapped
to these once, at the boundary where they happen, with ``raise ... from``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ArchiveError",
    "AuthenticationError",
    "ChecksumError",
    "ConfigError",
    "ConflictError",
    "ConnectionClosedError",
    "ConnectionLostError",
    "ForbiddenError",
    "GatewayError",
    "GatewayUnavailableError",
    "GetTimeoutError",
    "InfeasibleTaskError",
    "InvalidProgramError",
    "InvalidRequestError",
    "JobError",
    "JobFailedError",
    "JobStoppedError",
    "LocalProtocolError",
    "NotConnectedError",
    "NotFoundError",
    "ObjectLostError",
    "ObjectStoreFullError",
    "PayloadTooLargeError",
    "ProtocolError",
    "QsrvError",
    "QuantumPlacementError",
    "RemoteProtocolError",
    "ReservationError",
    "SerializationError",
    "TaskCancelledError",
    "TaskError",
    "TaskTimeoutError",
    "TooManyRequestsError",
    "UnauthorizedError",
    "WorkerDiedError",
]


class QsrvError(Exception):
    """Root of every error qsrv raises."""


class ConfigError(QsrvError, ValueError):
    """An option, target, address or size was malformed."""


class NotConnectedError(QsrvError):
    """No cluster is connected: call ``qsrv.init()`` first."""


class ProtocolError(QsrvError):
    """The wire protocol's rules were broken."""


class LocalProtocolError(ProtocolError):
    """This side tried to send something the protocol does not allow."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol does not allow (malformed, oversize, out of order)."""


class AuthenticationError(RemoteProtocolError):
    """The peer did not prove the cluster token, or speaks another protocol version."""


class ChecksumError(RemoteProtocolError):
    """The raw bytes of a state vector do not match the checksum in its header."""


class ConnectionClosedError(QsrvError, ConnectionError):
    """This process closed its connection (``qsrv.shutdown()``, ``close()``): using it is a bug
    of the caller, not a fault of the cluster."""


class ConnectionLostError(QsrvError, ConnectionError):
    """The connection broke under us: the peer (scheduler, agent) went away, closed it, or
    could not be reached. A driver's next call reconnects."""


#: Either way a connection ended: for code that must stop in both cases.
CONNECTION_ENDED = (ConnectionClosedError, ConnectionLostError)


class SerializationError(QsrvError, TypeError):
    """A task argument, ``put`` value or result cannot be pickled; the message names the task
    and the argument."""


class GetTimeoutError(QsrvError, TimeoutError):
    """``get`` or ``wait`` ran out of time; the task itself may still finish."""


class TaskError(QsrvError):
    """A task's own code raised.

    Instances raised by ``get`` are also instances of the original exception's class, so
    ``except ValueError`` catches a remote ``ValueError``. ``cause`` holds the original exception
    (or None when it could not be pickled) and ``remote_traceback`` its formatted traceback.
    """

    def __init__(
        self, message: str, remote_traceback: str = "", cause: BaseException | None = None
    ) -> None:
        super().__init__(message)
        self.remote_traceback = remote_traceback
        self.cause = cause
        self._message = message

    def __str__(self) -> str:
        try:  # the original class's own __str__, for instances that are also one of its kind
            text = super().__str__()
        except Exception:
            text = self._message
        if self.remote_traceback:
            return f"{text}\n\nRemote traceback:\n{self.remote_traceback.rstrip()}"
        return text

    @staticmethod
    def wrap(cause: BaseException, remote_traceback: str) -> TaskError:
        """A TaskError that is also an instance of ``type(cause)``."""
        cls = type(cause)
        message = f"{cls.__name__}: {cause}"
        if isinstance(cause, TaskError) or not _subclassable(cls):
            return TaskError(message, remote_traceback, cause)
        try:
            derived: type[TaskError] = type(cls.__name__, (TaskError, cls), {
                "__init__": _derived_init,
                "__str__": TaskError.__str__,
                "__reduce__": _derived_reduce,
                "__module__": cls.__module__,
                "__qualname__": cls.__qualname__,
            })
            err = derived(message, remote_traceback, cause)
        except TypeError:  # layout conflict between the two bases
            return TaskError(message, remote_traceback, cause)
        own = {"remote_traceback", "cause", "_message"}
        # the cause's attributes too (AerError's __str__ reads self.message, OSError's errno...)
        err.__dict__.update({k: v for k, v in vars(cause).items() if k not in own})
        err.args = cause.args
        return err


def _subclassable(cls: type) -> bool:
    return issubclass(cls, Exception) and not getattr(cls, "__final__", False)


def _derived_init(self: TaskError, message: str, remote_traceback: str,
                  cause: BaseException | None) -> None:
    Exception.__init__(self, message)
    self.remote_traceback = remote_traceback
    self.cause = cause
    self._message = message


def _derived_reduce(self: TaskError) -> tuple[Any, ...]:
    return (TaskError, (getattr(self, "_message", ""), self.remote_traceback, self.cause))


class TaskCancelledError(QsrvError):
    """The task was cancelled before it finished."""


class TaskTimeoutError(QsrvError, TimeoutError):
    """The task did not finish within its ``timeout``."""


class InfeasibleTaskError(QsrvError):
    """No connected worker could ever satisfy the task's target."""


class QuantumPlacementError(InfeasibleTaskError):
    """No connected worker can ever run this simulation (memory, device or method)."""


class WorkerDiedError(QsrvError):
    """The executor or worker running the task died and the retries are used up."""


class ReservationError(QsrvError):
    """A reservation cannot hold its capacity: no worker can ever satisfy it (infeasible), or it
    was released (by ``release()``, its holder's disconnection, its timeout). Tasks submitted to
    it fail with this error; ``reason`` says why."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason if reason is not None else message


class ObjectLostError(QsrvError):
    """The object's value no longer exists anywhere in the cluster."""


class ObjectStoreFullError(QsrvError):
    """The object store has no room for the object, even after eviction and spilling."""


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


class InvalidProgramError(InvalidRequestError):
    """A quantum program, or a job of one, cannot run on its platform: too wide, too many shots
    or circuits, a variable missing or unknown, the wrong engine, a Pulser sequence its device
    refuses, a payload its engine cannot read. ``reason`` says which, in words."""

    kind = "invalid_program"

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason if reason is not None else message


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


class TooManyRequestsError(GatewayError):
    """Over a quota (queued jobs, programs, versions, stored bytes) or a rate limit (failed
    logins); ``retry_after`` is the seconds to wait when waiting helps, else None."""

    status = 429
    kind = "too_many_requests"
    retry_after: float | None = None


class GatewayUnavailableError(GatewayError, ConnectionError):
    """The gateway could not be reached, or answered something that is not the gateway API."""

    status = 503
    kind = "unavailable"


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


# Errors the runtime itself produces travel as (kind, message); this maps kind -> class.
SYSTEM_ERRORS: dict[str, type[QsrvError]] = {
    "cancelled": TaskCancelledError,
    "timeout": TaskTimeoutError,
    "infeasible": InfeasibleTaskError,
    "worker_died": WorkerDiedError,
    "reservation": ReservationError,
    "lost": ObjectLostError,
    "store_full": ObjectStoreFullError,
}
