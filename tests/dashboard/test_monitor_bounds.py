"""What the scheduler keeps for monitors stays bounded whatever runs (no sockets: the monitor
fed as the IO layer feeds it)."""

from __future__ import annotations

import types
from typing import Any

from qsrv.protocol import OK, TASK_ERROR, SubmitTask, TaskDone
from qsrv.scheduler._monitor import MAX_FAILURES, MAX_FUNCTIONS, OTHER, Monitor
from qsrv.scheduler._records import Task


def _monitor(capacity: int, max_rate: float) -> tuple[Monitor, dict[int, Any]]:
    executor = types.SimpleNamespace(pid=4242, worker=types.SimpleNamespace(id=7))
    objects: dict[int, Any] = {}
    state = types.SimpleNamespace(
        dispatcher=types.SimpleNamespace(executors={5: executor}),
        directory=types.SimpleNamespace(objects=objects), clients={})
    return Monitor(state, capacity=capacity, max_rate=max_rate), objects  # type: ignore[arg-type]


def _task(objects: dict[int, Any], task_id: int, name: str) -> None:
    task = Task.__new__(Task)
    task.name = name
    objects[task_id] = task


def test_events_failures_and_names_are_capped() -> None:
    monitor, objects = _monitor(capacity=1000, max_rate=1e12)
    n = 5000
    for i in range(n):
        name = f"fn{i % (MAX_FUNCTIONS + 500)}"
        _task(objects, i, name)
        monitor.observe(1, [SubmitTask(i, b"f" * 16, b"", (), [], {}, 0, 0.0, False, name)])
    for start in range(0, n, 100):
        monitor.observe(5, [TaskDone(i, OK if i % 10 else TASK_ERROR, b"x" * 100_000, (), [],
                                     False, 0.001) for i in range(start, start + 100)])
    assert len(monitor.events) == 1000 and monitor.seq == n  # the newest kept, all counted
    assert monitor.events[-1][2] == n - 1 and monitor.events[-1][4:6] == (7, 4242)
    assert monitor.done + monitor.failed == n and monitor.failed == n // 10
    assert len(monitor.failures) == MAX_FAILURES
    assert all(len(f[5]) <= 16_384 for f in monitor.failures)
    assert len(monitor.functions) == MAX_FUNCTIONS + 1 and OTHER in monitor.functions
    assert sum(f[0] for f in monitor.functions.values()) == n
    assert sum(f[1] + f[2] for f in monitor.functions.values()) == n
    assert sum(monitor.run_hist) == n


def test_events_above_the_rate_are_sampled_and_counted() -> None:
    monitor, objects = _monitor(capacity=100_000, max_rate=1000)
    n = 20_000
    for i in range(n):
        _task(objects, i, "f")
    for start in range(0, n, 500):
        monitor.observe(5, [TaskDone(i, OK, b"", (), [], False, 0.0)
                            for i in range(start, start + 500)])
    kept = len(monitor.events)
    assert kept < n / 2  # one in N above 1000 a second (these all came within a second)
    assert kept + monitor.sampled_out == n
    assert monitor.done == n  # counters are exact whatever is sampled
