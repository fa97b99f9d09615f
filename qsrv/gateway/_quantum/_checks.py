"""Checks of what the quantum service is asked: shapes of jobs, filters, names, programs.

Each raises InvalidRequestError (or InvalidProgramError, a kind of it) with the reason; the
service calls them before it stores anything.

What reads programs (qiskit, Pulser, Perceval: ``as_program``, ``prepare``) runs in one
thread kept for the whole process (`in_checker`), never on the event loop's thread nor in
short-lived threads: qiskit's native module carries its own allocator (mimalloc), whose
set-up of a new thread crashed the process (SIGSEGV in ``mi_thread_init``, from a core dump)
after other threads that had used qiskit had ended -- as a gateway's loop thread does in
tests, one per gateway. One long-lived thread also keeps a slow read off the event loop.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

from qsrv.errors import InvalidRequestError
from qsrv.gateway._quantum._models import JobFilters, JobSpec, QStatus, SessionStatus

if TYPE_CHECKING:
    from qsrv.quantum.engines import Platform, Program

__all__ = [
    "MAX_JOBS_PER_CALL",
    "as_program",
    "check_all",
    "check_dates",
    "configuration",
    "in_checker",
    "job_filters",
    "job_specs",
    "optional_text",
    "plain",
    "prepare",
    "session_status",
    "status",
    "tags",
]

_T = TypeVar("_T")
_CHECKER: ThreadPoolExecutor | None = None  # made on first use, kept until the process ends
MAX_JOBS_PER_CALL = 10_000
MAX_SHOTS = 10**9
NAME_MAX = 200


async def in_checker(fn: Callable[..., _T], *args: Any) -> _T:
    """``fn(*args)`` in the process's one checker thread."""
    global _CHECKER
    if _CHECKER is None:
        _CHECKER = ThreadPoolExecutor(1, thread_name_prefix="qsrv-quantum-checks")
    return await asyncio.get_running_loop().run_in_executor(_CHECKER, fn, *args)


def prepare(platform: Platform, program: Program, specs: Sequence[JobSpec],
            options: dict[str, Any] | None = None) -> list[tuple[Program, JobSpec]]:
    """`job_specs`, then `check_all` against ``platform`` with the engine ``options`` (in
    the checker thread)."""
    from qsrv.quantum.engines import check_options

    check_options(platform.engine, options)  # an open batch's, even before its first job
    jobs = job_specs(program, specs)
    check_all(platform, jobs, options)
    return jobs


def job_specs(program: Program, specs: Sequence[JobSpec]) -> list[tuple[Program, JobSpec]]:
    """Each job's program and its spec, checked for shape (shots, seed, variables as JSON
    numbers: numpy's become plain ones); the platform checks come after (`check_all`)."""
    jobs: list[tuple[Program, JobSpec]] = []
    for i, spec in enumerate(specs):
        if not isinstance(spec, JobSpec):
            raise InvalidRequestError(f"job {i}: not a JobSpec")
        if isinstance(spec.shots, bool) or not isinstance(spec.shots, int) \
                or not 1 <= spec.shots <= MAX_SHOTS:
            raise InvalidRequestError(f"job {i}: shots must be a positive integer, "
                                      f"got {spec.shots!r}")
        if spec.seed is not None and (isinstance(spec.seed, bool)
                                      or not isinstance(spec.seed, int)):
            raise InvalidRequestError(f"job {i}: seed must be an integer, got {spec.seed!r}")
        if not isinstance(spec.variables, dict) or \
                not all(isinstance(k, str) for k in spec.variables):
            raise InvalidRequestError(f"job {i}: variables must map names to values")
        try:  # numpy numbers and arrays become plain numbers and lists
            values = json.loads(json.dumps(spec.variables, allow_nan=False, default=plain))
        except (TypeError, ValueError) as exc:
            raise InvalidRequestError(
                f"job {i}: variables must be numbers (or lists of numbers): {exc}"
            ) from None
        spec = replace(spec, variables=values)
        jobs.append((program if spec.program is None else as_program(spec.program), spec))
    return jobs


def plain(value: Any) -> Any:
    """JSON for numpy's numbers and arrays (``item()``/``tolist()``)."""
    for method in ("tolist", "item"):
        if callable(getattr(value, method, None)):
            return getattr(value, method)()
    raise TypeError(f"{type(value).__name__} is not a number")


def check_all(platform: Platform, jobs: list[tuple[Program, JobSpec]],
              options: dict[str, Any] | None = None) -> None:
    from qsrv.quantum import engines

    for i, (program, spec) in enumerate(jobs):
        try:
            engines.check(platform, program, spec.shots, spec.variables, options)
        except InvalidRequestError as exc:
            raise type(exc)(f"job {i}: {exc}" if len(jobs) > 1 else str(exc)) from None
        except (ValueError, TypeError, KeyError) as exc:
            raise InvalidRequestError(f"job {i}: {exc}" if len(jobs) > 1 else str(exc)
                                      ) from None


def as_program(value: Any) -> Program:
    from qsrv.quantum import engines

    if isinstance(value, engines.Program):
        return value
    try:
        return engines.program_from(value)
    except (TypeError, ValueError) as exc:
        raise InvalidRequestError(f"not a program qsrv can run: {exc}") from None


_INT64 = 2**63  # SQLite's integers are 64-bit: a larger one would raise OverflowError


def job_filters(filters: JobFilters | None) -> JobFilters:
    """``filters`` checked: statuses known, shots and dates numbers."""
    if filters is None:
        return JobFilters()
    if not isinstance(filters, JobFilters):
        raise InvalidRequestError("job filters must be JobFilters")
    for value in filters.values("status") or ():
        status(value)
    for name in ("min_shots", "max_shots"):
        value = getattr(filters, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or not -_INT64 < value < _INT64):
            raise InvalidRequestError(
                f"{name} must be an integer from -(2**63 - 1) to 2**63 - 1, got {value!r}")
    check_dates(filters.start_date, filters.end_date)
    return filters


def check_dates(*dates: Any) -> None:
    for value in dates:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                  or not math.isfinite(value) or not -_INT64 < value < _INT64):
            raise InvalidRequestError(f"dates are epoch seconds, got {value!r}")


def status(value: Any) -> QStatus:
    try:
        return QStatus(str(value).upper())
    except ValueError:
        raise InvalidRequestError(
            f"unknown status {value!r}; one of {', '.join(QStatus)}") from None


def session_status(value: Any) -> SessionStatus:
    try:
        return SessionStatus(str(value).lower())
    except ValueError:
        raise InvalidRequestError(
            f"unknown session status {value!r}; one of {', '.join(SessionStatus)}") from None


def optional_text(value: Any, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > NAME_MAX or "\x00" in value:
        raise InvalidRequestError(f"{what} must be a non-empty string of at most {NAME_MAX} "
                                  f"characters, got {value!r}")
    return value


def tags(tags: Iterable[str] | None) -> tuple[str, ...]:
    if tags is None:
        return ()
    if isinstance(tags, str):
        raise InvalidRequestError("tags must be a list of strings")
    out = tuple(tags)
    for tag in out:
        optional_text(tag, "a tag")
    return out


def configuration(configuration: dict[str, Any] | None) -> dict[str, Any]:
    """A batch's configuration: a JSON object; its ``options``, when given, the engine
    options every job of the batch runs with (an object, checked against the platform)."""
    if configuration is None:
        return {}
    if not isinstance(configuration, dict):
        raise InvalidRequestError("configuration must be a JSON object")
    if configuration.get("options") is not None and not isinstance(configuration["options"],
                                                                      dict):
        raise InvalidRequestError("configuration's 'options' (the engine options) must be a "
                                  "JSON object")
    try:
        json.dumps(configuration, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidRequestError(f"configuration must be JSON: {exc}") from None
    return dict(configuration)
