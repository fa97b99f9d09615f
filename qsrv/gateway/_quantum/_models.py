"""The quantum service's records: sessions, batches, quantum jobs, filters, pages, results.

Every door (native /v1, Scaleway, Pasqal) speaks about these; the service (``_service``) is the
only place that changes them, the store (``_store``) the only place that reads and writes them.
All are frozen: a record is a snapshot of what was stored when it was read. IDs are uuid4
strings, times are epoch seconds (floats); doors format both as their clients expect.

Statuses::

    session:  starting ──> running ──> stopping ──> stopped      (reason: StopReason)
                 └────────────────────────────────> stopped      (infeasible, terminated)

    job:      PENDING ──> RUNNING ──> DONE | ERROR | CANCELED
                 └──> CANCELED | ERROR              (cancelled, or its session ended)
    batch:    PENDING ──> RUNNING ──> DONE | ERROR | CANCELED | TIMED_OUT
              (a batch is DONE once it is closed and each of its jobs has ended -- ERROR when
              every one of them ended in ERROR; CANCELED by cancel; TIMED_OUT when it was left
              open and idle past its timeout, or when its session ran out of time)
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from qsrv.errors import InvalidRequestError

if TYPE_CHECKING:
    from qsrv.quantum.engines import Program

__all__ = [
    "ACTIVE_SESSION",
    "MAX_PAGE",
    "TERMINAL",
    "BatchFilters",
    "BatchRecord",
    "JobFilters",
    "JobSpec",
    "Page",
    "Pagination",
    "QJobRecord",
    "QResult",
    "QStatus",
    "SessionFilters",
    "SessionRecord",
    "SessionStatus",
    "StopReason",
    "parse_duration",
]

T = TypeVar("T")
MAX_PAGE = 100  # the largest page a listing returns


class SessionStatus(enum.StrEnum):
    STARTING = "starting"  # waiting for its reservation
    RUNNING = "running"  # its reservation is held; jobs run
    STOPPING = "stopping"  # ending: its last job is being cancelled, its reservation released
    STOPPED = "stopped"  # ended; ``reason`` says why


ACTIVE_SESSION: frozenset[SessionStatus] = frozenset(
    {SessionStatus.STARTING, SessionStatus.RUNNING})


class StopReason(enum.StrEnum):
    MAX_DURATION = "max_duration"  # it reached its maximum duration
    IDLE = "idle"  # no job for its maximum idle duration
    TERMINATED = "terminated"  # its user ended it (terminate, delete, leaving a ``with``)
    INFEASIBLE = "infeasible"  # no worker can ever hold its platform's reservation
    COMPLETED = "completed"  # a batch's own session: its batch ended
    ERROR = "error"  # its reservation was lost for good (the reason says why)


class QStatus(enum.StrEnum):
    """A quantum job's or a batch's status (the names Pasqal Cloud uses)."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    DONE = "DONE"
    ERROR = "ERROR"
    CANCELED = "CANCELED"
    TIMED_OUT = "TIMED_OUT"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL: frozenset[QStatus] = frozenset(
    {QStatus.DONE, QStatus.ERROR, QStatus.CANCELED, QStatus.TIMED_OUT})


@dataclass(frozen=True, slots=True)
class SessionRecord:
    id: str
    user_id: int
    project: str | None
    platform: str
    deduplication_id: str | None
    name: str
    status: SessionStatus
    reason: StopReason | None
    max_duration_s: float
    max_idle_duration_s: float
    created_at: float
    started_at: float | None
    terminated_at: float | None
    last_job_at: float  # the idle clock: the last time a job was submitted, started or ended
    reservation_id: str | None
    internal: bool = False  # a batch's own session (a batch created without one)
    message: str | None = None  # details of ``reason`` (why infeasible, what was lost)

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_SESSION

    def deadline(self) -> float | None:
        """When it ends by itself if nothing happens (max duration, or idle)."""
        if not self.active or self.started_at is None:
            return None
        ends = self.started_at + self.max_duration_s
        if not math.isinf(self.max_idle_duration_s):
            ends = min(ends, self.last_job_at + self.max_idle_duration_s)
        return ends


@dataclass(frozen=True, slots=True)
class QJobRecord:
    id: str
    user_id: int
    project: str | None
    batch_id: str | None
    session_id: str
    seq: int  # its place in its session's order (and so in its batch's)
    status: QStatus
    shots: int
    variables: dict[str, Any]
    program: Program  # the job's own, else its batch's
    created_at: float
    started_at: float | None
    ended_at: float | None
    errors: tuple[str, ...]
    parent_id: str | None  # the job this one retries (retry, rebatch)
    has_result: bool
    seed: int | None = None
    platform: str = ""


@dataclass(frozen=True, slots=True)
class BatchRecord:
    id: str
    user_id: int
    project: str | None
    session_id: str
    platform: str
    status: QStatus
    open: bool
    parent_id: str | None  # the batch it was rebatched from
    tags: tuple[str, ...]
    program: Program
    configuration: dict[str, Any]
    created_at: float
    updated_at: float
    ended_at: float | None
    jobs: tuple[QJobRecord, ...] = ()  # in order (seq)
    timeout_s: float = 600.0  # how long it may stay open with nothing to run


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One job to submit: ``shots`` runs of the program with ``variables`` bound."""

    shots: int
    variables: dict[str, Any] = field(default_factory=dict)
    program: Program | None = None  # None: the batch's program
    seed: int | None = None


def _values(value: Any) -> tuple[Any, ...] | None:
    if value is None:
        return None
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        return (value,)
    return tuple(value)


@dataclass(frozen=True, slots=True)
class JobFilters:
    """Which quantum jobs; each field None matches all; ``id``/``batch_id``/``session_id``/
    ``status``/``project``/``platform`` take a value or a list of values. Dates are epoch
    seconds, on ``created_at``, both ends included. ``errors``: only jobs with (True) or
    without (False) errors."""

    id: str | Iterable[str] | None = None
    batch_id: str | Iterable[str] | None = None
    session_id: str | Iterable[str] | None = None
    status: QStatus | str | Iterable[QStatus | str] | None = None
    start_date: float | None = None
    end_date: float | None = None
    min_shots: int | None = None
    max_shots: int | None = None
    project: str | Iterable[str] | None = None
    platform: str | Iterable[str] | None = None
    errors: bool | None = None

    def values(self, name: str) -> tuple[Any, ...] | None:
        """A list-valued field as a tuple (None when unset)."""
        return _values(getattr(self, name))


@dataclass(frozen=True, slots=True)
class BatchFilters:
    """Which batches; as ``JobFilters``. ``tag``: batches carrying that tag."""

    id: str | Iterable[str] | None = None
    session_id: str | Iterable[str] | None = None
    status: QStatus | str | Iterable[QStatus | str] | None = None
    start_date: float | None = None
    end_date: float | None = None
    project: str | Iterable[str] | None = None
    platform: str | Iterable[str] | None = None
    open: bool | None = None
    tag: str | None = None
    parent_id: str | None = None

    def values(self, name: str) -> tuple[Any, ...] | None:
        return _values(getattr(self, name))


@dataclass(frozen=True, slots=True)
class SessionFilters:
    """Which sessions; as ``JobFilters``. ``internal``: batches' own sessions (False: hidden)."""

    id: str | Iterable[str] | None = None
    status: SessionStatus | str | Iterable[SessionStatus | str] | None = None
    platform: str | Iterable[str] | None = None
    project: str | Iterable[str] | None = None
    deduplication_id: str | None = None
    internal: bool | None = False

    def values(self, name: str) -> tuple[Any, ...] | None:
        return _values(getattr(self, name))


@dataclass(frozen=True, slots=True)
class Pagination:
    """A page: ``limit`` (1..100) records from ``offset``, newest first.

    ``snapshot`` (a page's ``Page.snapshot``) pins the listing to what existed when that page
    was read: later pages of the same listing then neither repeat nor skip anything however
    much is inserted meanwhile. Without it each page is consistent on its own (its ``total``
    counts what existed when it was read).
    """

    offset: int = 0
    limit: int = MAX_PAGE
    snapshot: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) or \
                not 1 <= self.limit <= MAX_PAGE:
            raise InvalidRequestError(
                f"limit must be an integer from 1 to {MAX_PAGE}, got {self.limit!r}")
        if isinstance(self.offset, bool) or not isinstance(self.offset, int) or self.offset < 0:
            raise InvalidRequestError(f"offset must be an integer >= 0, got {self.offset!r}")
        if self.snapshot is not None and (isinstance(self.snapshot, bool)
                                          or not isinstance(self.snapshot, int)):
            raise InvalidRequestError(f"snapshot must be an integer, got {self.snapshot!r}")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    results: list[T]
    total: int  # how many match (in the snapshot)
    snapshot: int = 0  # pass back as Pagination(snapshot=...) for a stable listing
    offset: int = 0
    limit: int = MAX_PAGE


@dataclass(frozen=True, slots=True)
class QResult:
    """A DONE job's result: counts (bitstring / Fock state -> occurrences) and the engine's
    own serialisation (Aer: the JSON of qiskit's ``Result.to_dict()``; Perceval: its
    serialised result; Pulser: None)."""

    counts: dict[str, int]
    native: str | None


_UNITS = {
    "s": 1.0, "sec": 1.0, "secs": 1.0, "second": 1.0, "seconds": 1.0,
    "m": 60.0, "min": 60.0, "mins": 60.0, "minute": 60.0, "minutes": 60.0,
    "h": 3600.0, "hr": 3600.0, "hrs": 3600.0, "hour": 3600.0, "hours": 3600.0,
    "d": 86400.0, "day": 86400.0, "days": 86400.0,
}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*$")


def parse_duration(value: str | float, *, name: str = "duration") -> float:
    """Seconds from ``"30m"``, ``"5min"``, ``"1h"``, ``"3600s"``, ``"1.5h"``, ``"2d"`` or a
    number of seconds (an int, a float, or digits alone). Zero, negative, an unknown unit or
    anything else is an InvalidRequestError naming ``name``."""
    if isinstance(value, bool):
        raise InvalidRequestError(f"{name} must be a duration such as '30m' or 3600, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise InvalidRequestError(
                f"{name} {value!r} is not a duration: write a number and a unit, such as '30m', "
                "'5min', '1h', '3600s', or a number of seconds")
        number, unit = match.groups()
        factor = _UNITS.get(unit.lower()) if unit else 1.0
        if factor is None:
            raise InvalidRequestError(
                f"{name} {value!r} has an unknown unit {unit!r}; use s, m/min, h or d")
        seconds = float(number) * factor
    else:
        raise InvalidRequestError(f"{name} must be a duration such as '30m' or 3600, got {value!r}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise InvalidRequestError(f"{name} must be more than 0 seconds, got {value!r}")
    return seconds
