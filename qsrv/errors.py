"""Every exception qsrv raises.

The tree::

    QsrvError
    ├── ConfigError                 bad option, malformed target, bad address (ValueError too)
    ├── NotConnectedError           no cluster: init() not called, or it was shut down
    ├── ProtocolError               the wire broke its rules
    │   ├── LocalProtocolError      we were asked to send something invalid
    │   └── RemoteProtocolError     the peer sent a malformed or oversize frame
    │       └── AuthenticationError the peer failed the token challenge or spoke another version
    ├── ConnectionClosedError       the connection went away (ConnectionError too)
    ├── GetTimeoutError             get()/wait() ran out of time (TimeoutError too)
    ├── TaskError                   the task's own code raised; also an instance of the cause's type
    ├── TaskCancelledError          cancel() was called on the task
    ├── TaskTimeoutError            the task did not finish within its `timeout`
    ├── InfeasibleTaskError         no worker could ever satisfy the task's target
    ├── WorkerDiedError             the task's executor or worker died, retries exhausted
    ├── ObjectLostError             the object's value no longer exists anywhere
    └── ObjectStoreFullError        the object store has no room, even after eviction

Errors of a task travel back to the driver: `TaskError` carries the remote traceback text; the
others are raised by the runtime itself. Foreign exceptions (OSError, msgpack errors) are mapped
to these once, at the boundary where they happen, with ``raise ... from``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AuthenticationError",
    "ConfigError",
    "ConnectionClosedError",
    "GetTimeoutError",
    "InfeasibleTaskError",
    "LocalProtocolError",
    "NotConnectedError",
    "ObjectLostError",
    "ObjectStoreFullError",
    "ProtocolError",
    "QsrvError",
    "RemoteProtocolError",
    "TaskCancelledError",
    "TaskError",
    "TaskTimeoutError",
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


class ConnectionClosedError(QsrvError, ConnectionError):
    """The connection to the cluster was closed."""


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
        text = super().__str__()
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


class WorkerDiedError(QsrvError):
    """The executor or worker running the task died and the retries are used up."""


class ObjectLostError(QsrvError):
    """The object's value no longer exists anywhere in the cluster."""


class ObjectStoreFullError(QsrvError):
    """The object store has no room for the object, even after eviction and spilling."""


# Errors the runtime itself produces travel as (kind, message); this maps kind -> class.
SYSTEM_ERRORS: dict[str, type[QsrvError]] = {
    "cancelled": TaskCancelledError,
    "timeout": TaskTimeoutError,
    "infeasible": InfeasibleTaskError,
    "worker_died": WorkerDiedError,
    "lost": ObjectLostError,
    "store_full": ObjectStoreFullError,
}
