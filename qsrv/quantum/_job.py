"""The job a distributed primitive returns: its tasks' refs, and how to assemble their values.

``job.result()`` blocks (anywhere, also in a thread that runs an event loop); ``await job`` or
``await job.result_async()`` in async code (asyncio or trio). The result is assembled once and
kept.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Generator
from typing import Any, Generic, TypeVar

from qiskit.primitives.base.base_primitive_job import BasePrimitiveJob  # type: ignore[import-untyped]
from qiskit.primitives.containers import PrimitiveResult  # type: ignore[import-untyped]
from qiskit.providers import JobStatus  # type: ignore[import-untyped]

from qsrv.client import ObjectRef, cancel, get_async, get_blocking, wait_blocking
from qsrv.errors import TaskCancelledError

T = TypeVar("T", bound=PrimitiveResult[Any])


class QuantumJob(BasePrimitiveJob[T, JobStatus], Generic[T]):  # type: ignore[misc]
    """A distributed primitive's job: ``result()``, ``await job``, ``status()``, ``cancel()``."""

    def __init__(self, refs: list[ObjectRef], assemble: Callable[[list[Any]], T]) -> None:
        super().__init__(uuid.uuid4().hex)
        self._refs = refs
        self._assemble = assemble
        self._result: T | None = None
        self._cancelled = False
        self._lock = threading.Lock()

    @property
    def refs(self) -> list[ObjectRef]:
        """The refs of this job's tasks (each task's value is one chunk of the result)."""
        return list(self._refs)

    def _finish(self, values: list[Any]) -> T:
        with self._lock:
            if self._result is None:
                self._result = self._assemble(values)
            return self._result

    def result(self, timeout: float | None = None) -> T:
        """Wait for every task and return the PrimitiveResult."""
        if self._result is not None:
            return self._result
        values = get_blocking(self._refs, timeout=timeout)
        return self._finish(values)

    async def result_async(self, timeout: float | None = None) -> T:
        """`result` for async code."""
        if self._result is not None:
            return self._result
        values = await get_async(self._refs, timeout=timeout)
        return self._finish(values)

    def __await__(self) -> Generator[Any, None, T]:
        return self.result_async().__await__()

    def _ready(self) -> bool:
        if not self._refs:
            return True
        ready, _ = wait_blocking(self._refs, num_returns=len(self._refs), timeout=0)
        return len(ready) == len(self._refs)

    def status(self) -> JobStatus:
        if self._cancelled:
            return JobStatus.CANCELLED
        if self._result is not None:
            return JobStatus.DONE
        if self._ready():
            try:
                self.result()
            except TaskCancelledError:
                return JobStatus.CANCELLED
            except Exception:
                return JobStatus.ERROR
            return JobStatus.DONE
        return JobStatus.RUNNING

    def done(self) -> bool:
        return bool(self.status() == JobStatus.DONE)

    def running(self) -> bool:
        return bool(self.status() == JobStatus.RUNNING)

    def cancelled(self) -> bool:
        return self._cancelled

    def in_final_state(self) -> bool:
        return self.status() in (JobStatus.DONE, JobStatus.CANCELLED, JobStatus.ERROR)

    def cancel(self) -> None:
        """Cancel every task of the job that has not finished."""
        self._cancelled = True
        for ref in self._refs:
            cancel(ref)
