"""The process's connection to the cluster: at most one client core per process."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qsrv.client._core import ClientCore

core: ClientCore | None = None
executor: Any = None  # the Executor, inside an executor process
