"""Tasks: `distribute_task` makes a `RemoteFunction`; calling one submits a task."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, ParamSpec, TypeVar, overload

import cloudpickle

from qsrv import _resources
from qsrv.client._api import connected
from qsrv.client._core import TaskOptions, function_id
from qsrv.client._ref import ObjectRef
from qsrv.client._reservation import Reservation
from qsrv.errors import ConfigError

P = ParamSpec("P")
R = TypeVar("R")

# ---- tasks ---------------------------------------------------------------------------------
_OPTION_NAMES = frozenset({"target", "max_retries", "timeout", "retry_exceptions", "name",
                           "reservation"})


def _task_options(fn: Callable[..., Any], options: dict[str, Any]
                  ) -> tuple[TaskOptions, tuple[type[BaseException], ...] | None]:
    unknown = set(options) - _OPTION_NAMES
    if unknown:
        raise ConfigError(f"unknown task option(s) {sorted(unknown)}; "
                          f"known: {sorted(_OPTION_NAMES)}")
    reservation = options.get("reservation")
    if reservation is not None and not isinstance(reservation, Reservation):
        raise ConfigError(f"reservation must be a qsrv.Reservation (from qsrv.reserve()) or "
                          f"None, got {reservation!r}")
    if reservation is not None and options.get("target") is None:
        resources = dict(reservation._resources)  # the whole reservation, unless told
    else:
        resources = _resources.normalize_target(options.get("target"))
    max_retries = options.get("max_retries", 3)
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ConfigError(f"max_retries must be an int >= 0, got {max_retries!r}")
    timeout = options.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float)
                                or timeout <= 0):
        raise ConfigError(f"timeout must be a number of seconds > 0 or None, got {timeout!r}")
    retry = options.get("retry_exceptions", False)
    retry_types: tuple[type[BaseException], ...] | None = None
    if isinstance(retry, bool):
        retry_flag = retry
    else:
        types = list(retry) if isinstance(retry, Iterable) else [retry]
        if not all(isinstance(t, type) and issubclass(t, BaseException) for t in types):
            raise ConfigError("retry_exceptions must be a bool or a list of exception types")
        retry_flag, retry_types = bool(types), tuple(types)
    name = str(options.get("name") or getattr(fn, "__qualname__", repr(fn)))
    return TaskOptions(name, resources, max_retries, timeout, retry_flag,
                       reservation._rid if reservation is not None else 0), retry_types


def _ship_local_module_by_value(fn: Callable[..., Any]) -> None:
    """A function from a module under the working directory (a script's helper module, a job's
    sandbox) travels by value: workers elsewhere cannot import it. Installed packages travel
    by reference, as cloudpickle does by default."""
    module = sys.modules.get(getattr(fn, "__module__", "") or "")
    path = getattr(module, "__file__", None)
    if module is None or path is None or module.__name__ in ("__main__", "builtins"):
        return
    cwd = os.path.realpath(os.getcwd())
    if os.path.realpath(path).startswith(cwd + os.sep) and "site-packages" not in path:
        with contextlib.suppress(ValueError):  # already registered
            cloudpickle.register_pickle_by_value(module)


class RemoteFunction(Generic[P, R]):
    """A function that runs as a task: calling it returns an ObjectRef at once."""

    def __init__(self, fn: Callable[P, R], options: dict[str, Any],
                 pickled: tuple[bytes, bytes] | None = None) -> None:
        if not callable(fn):
            raise ConfigError(f"distribute_task needs a function, got {fn!r}")
        self._fn = fn
        self._options = options
        self._opts, self._retry_types = _task_options(fn, options)
        self._pickled = pickled
        functools.update_wrapper(self, fn)

    def _function(self) -> tuple[bytes, bytes]:
        if self._pickled is None:
            _ship_local_module_by_value(self._fn)
            payload = cloudpickle.dumps(self._fn, protocol=5)
            self._pickled = (function_id(payload), payload)
        return self._pickled

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> ObjectRef:
        core = connected().core
        fn_id, payload = self._function()
        return ObjectRef(core.submit(fn_id, lambda: payload, args, kwargs, self._opts,
                                     self._retry_types))

    def options(self, **overrides: Any) -> RemoteFunction[P, R]:
        """The same task with some options replaced for the calls made through the result."""
        return RemoteFunction(self._fn, {**self._options, **overrides}, self._pickled)

    def __repr__(self) -> str:
        return f"<qsrv task {self._opts.name} target={_resources.display(self._opts.resources)}>"


@overload
def distribute_task(fn: Callable[P, R], /) -> RemoteFunction[P, R]: ...
@overload
def distribute_task(
    fn: None = None, /, *, target: dict[str, Any] | None = None, max_retries: int = 3,
    timeout: float | None = None, retry_exceptions: bool | Sequence[type[BaseException]] = False,
    name: str | None = None,
) -> Callable[[Callable[P, R]], RemoteFunction[P, R]]: ...
def distribute_task(fn: Any = None, /, **options: Any) -> Any:
    """Turn a function (plain or ``async def``) into a task.

    ``target`` maps resource names to amounts (``cpu``, ``gpu``, ``memory``/``mem``, any custom
    tag; default one CPU); ``max_retries`` counts retries after its executor or worker died;
    ``timeout`` (seconds from submission) fails the task if it has not finished by then;
    ``retry_exceptions`` also retries on the task's own errors (True or a list of types);
    ``reservation`` (a `qsrv.Reservation`, usually given through ``.options()``) runs it only
    inside that reservation, with its whole target unless ``target`` is given.
    Options are checked here, so a malformed target fails at decoration time.
    """
    if fn is not None:
        return RemoteFunction(fn, options)
    return lambda f: RemoteFunction(f, options)
