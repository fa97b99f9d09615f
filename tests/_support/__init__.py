"""Helpers for the test suite, importable as ``tests._support``.

- ``wait_for``: the one way to wait for a condition (no sleeping in its place).
- ``Gate``, ``GATE_CLIENT``, ``Flag``: signals between a test and the jobs or tasks it runs.
- ``stop_process``, ``stop_processes``, ``process_alive``, ``process_env``: processes.
- ``tests._support.cluster``: a cluster started through the CLI (``Cluster``, ``TOKEN``).
- ``tests._support.deployment``: scheduler + worker + gateway as processes.
- ``tests._support.gateway``: a gateway in a thread of this process (``ThreadedGateway``).
- ``tests._support.fixtures``: fixtures for every test (``local_cluster``, ``run_example``).
- ``tests._support.sandboxes``: ``require``, a sandbox prerequisite (skip, or fail in CI).
"""

from tests._support.gates import GATE_CLIENT, Flag, Gate
from tests._support.processes import process_alive, process_env, stop_process, stop_processes
from tests._support.waiting import wait_for

__all__ = [
    "GATE_CLIENT",
    "Flag",
    "Gate",
    "process_alive",
    "process_env",
    "stop_process",
    "stop_processes",
    "wait_for",
]
