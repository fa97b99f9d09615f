"""The worker agent (one per node) and the executor subprocesses it supervises."""

from qsrv.worker._agent import WorkerAgent, WorkerConfig

__all__ = ["WorkerAgent", "WorkerConfig"]
