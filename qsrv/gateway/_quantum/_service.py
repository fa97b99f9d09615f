"""The quantum service: the one place where sessions, batches and quantum jobs change.

Reads (``session``, ``batch``, ``job``, listings, ``result``) are plain methods; changes and
waits are coroutines (they may touch the cluster or wait). Every method takes the
authenticated ``User`` first; another user's object is a NotFoundError.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from qsrv.gateway._models import User
from qsrv.gateway._quantum._models import (
    BatchFilters,
    BatchRecord,
    JobFilters,
    JobSpec,
    Page,
    Pagination,
    QJobRecord,
    QResult,
    SessionFilters,
    SessionRecord,
    SessionStatus,
)

if TYPE_CHECKING:
    from qsrv.gateway._store import Store
    from qsrv.quantum.engines import Platform, Program

__all__ = ["QuantumConfig", "QuantumService"]


@dataclass(frozen=True, slots=True)
class QuantumConfig:
    cluster_address: str | None = None
    cluster_token: str | None = None
    batch_timeout_s: float = 600.0  # an open batch idle this long becomes TIMED_OUT
    platforms_ttl_s: float = 1.0  # how long a read of the cluster's platforms is reused


class QuantumService:
    """Platforms, sessions, batches, quantum jobs. ``await start(store)``, ``await close()``."""

    def __init__(self, config: QuantumConfig) -> None:
        self.config = config
        self._store: Store | None = None

    async def start(self, store: Store) -> None:
        self._store = store

    async def close(self) -> None:
        self._store = None

    # -- platforms -----------------------------------------------------------------------------

    async def platforms(self) -> list[Platform]:
        raise NotImplementedError

    async def platform(self, name: str) -> Platform:
        raise NotImplementedError

    # -- sessions ------------------------------------------------------------------------------

    async def open_session(
        self, user: User, platform: str, *, deduplication_id: str | None = None,
        max_duration: str | float = "1h", max_idle_duration: str | float = "20m",
        name: str | None = None, project: str | None = None,
    ) -> tuple[SessionRecord, bool]:
        """Get-or-create: (the session, whether this call created it)."""
        raise NotImplementedError

    def session(self, user: User, session_id: str) -> SessionRecord:
        raise NotImplementedError

    def sessions(self, user: User, *, status: SessionStatus | str | None = None,
                 platform: str | None = None, project: str | None = None,
                 filters: SessionFilters | None = None,
                 page: Pagination | None = None) -> Page[SessionRecord]:
        raise NotImplementedError

    async def terminate_session(self, user: User, session_id: str) -> SessionRecord:
        raise NotImplementedError

    async def delete_session(self, user: User, session_id: str) -> None:
        raise NotImplementedError

    # -- jobs and batches ----------------------------------------------------------------------

    async def submit(self, user: User, session_id: str, spec: JobSpec) -> QJobRecord:
        """A job of the session, outside any batch."""
        raise NotImplementedError

    async def create_batch(
        self, user: User, program: Program | Any, jobs: Sequence[JobSpec], *,
        platform: str | None = None, session_id: str | None = None, open: bool = False,
        idempotency_key: str | None = None, tags: Iterable[str] = (),
        project: str | None = None, configuration: dict[str, Any] | None = None,
    ) -> BatchRecord:
        raise NotImplementedError

    async def add_jobs(self, user: User, batch_id: str, jobs: Sequence[JobSpec], *,
                       idempotency_key: str | None = None) -> BatchRecord:
        raise NotImplementedError

    async def close_batch(self, user: User, batch_id: str) -> BatchRecord:
        raise NotImplementedError

    async def cancel_batch(self, user: User, batch_id: str) -> BatchRecord:
        raise NotImplementedError

    async def set_tags(self, user: User, batch_id: str, tags: Iterable[str]) -> BatchRecord:
        raise NotImplementedError

    async def retry_job(self, user: User, job_id: str) -> QJobRecord:
        raise NotImplementedError

    async def rebatch(self, user: User, batch_id: str,
                      filters: JobFilters | None = None) -> BatchRecord:
        raise NotImplementedError

    async def cancel_job(self, user: User, job_id: str) -> QJobRecord:
        raise NotImplementedError

    async def cancel_jobs(self, user: User, filters: JobFilters) -> list[QJobRecord]:
        raise NotImplementedError

    def batch(self, user: User, batch_id: str) -> BatchRecord:
        raise NotImplementedError

    def batches(self, user: User, filters: BatchFilters | None = None,
                page: Pagination | None = None) -> Page[BatchRecord]:
        raise NotImplementedError

    def job(self, user: User, job_id: str) -> QJobRecord:
        raise NotImplementedError

    def jobs(self, user: User, filters: JobFilters | None = None,
             page: Pagination | None = None) -> Page[QJobRecord]:
        raise NotImplementedError

    def result(self, user: User, job_id: str) -> QResult:
        raise NotImplementedError

    # -- waiting (pushed) ----------------------------------------------------------------------

    async def wait_job(self, user: User, job_id: str,
                       timeout: float | None = None) -> QJobRecord:
        raise NotImplementedError

    async def wait_batch(self, user: User, batch_id: str,
                         timeout: float | None = None) -> BatchRecord:
        raise NotImplementedError

    async def wait_session(self, user: User, session_id: str, timeout: float | None = None,
                           statuses: Iterable[SessionStatus] = (SessionStatus.STOPPED,)
                           ) -> SessionRecord:
        raise NotImplementedError
