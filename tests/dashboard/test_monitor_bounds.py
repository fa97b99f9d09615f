"""What the scheduler keeps for monitors stays bounded whatever runs (no sockets: the monitor
fed as the IO layer and the state machine feed it)."""

from __future__ import annotations

import types
from typing import Any

from qsrv.protocol import OK, TASK_ERROR, TaskDone
from qsrv.scheduler._monitor import DEFAULT_RATE, MAX_FAILURES, MAX_FUNCTIONS, OTHER, Monitor
from qsrv.scheduler._records import Task

EXECUTOR: Any = types.SimpleNamespace(pid=4242, worker=types.SimpleNamespace(id=7))


def _monitor(capacity: int, max_rate: float) -> tuple[Monitor, dict[int, Any]]:
    objects: dict[int, Any] = {}
    state = types.SimpleNamespace(
        dispatcher=types.SimpleNamespace(executors={5: EXECUTOR}),
        directory=types.SimpleNamespace(objects=objects), clients={})
    monitor = Monitor(state, capacity=capacity, max_rate=max_rate)  # type: ignore[arg-type]
    assert state.recorder is monitor  # the state machine tells it of tasks
    return monitor, objects


def _task(objects: dict[int, Any], task_id: int, name: str) -> Task:
    task = Task.__new__(Task)
    task.id, task.name, task.max_retries, task.submitted = task_id, name, 0, 0.0
    task.stats = None
    objects[task_id] = task
    return task


def _ran(monitor: Monitor, tasks: list[Task], msgs: list[TaskDone]) -> None:
    """A frame of results from executor 5, as the IO layer and the state machine see it."""
    monitor.observe(5, msgs)
    for task, msg in zip(tasks, msgs, strict=True):
        monitor.ran(EXECUTOR, task, msg)


def test_events_failures_and_names_are_capped() -> None:
    monitor, objects = _monitor(capacity=1000, max_rate=1e12)
    n = 5000
    tasks = []
    for i in range(n):
        tasks.append(_task(objects, i, f"fn{i % (MAX_FUNCTIONS + 500)}"))
        monitor.observe(1, [])
        monitor.submitted(tasks[-1])
    for start in range(0, n, 100):
        _ran(monitor, tasks[start:start + 100],
             [TaskDone(i, OK if i % 10 else TASK_ERROR, b"x" * 100_000, (), [], False, 0.001)
              for i in range(start, start + 100)])
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
    tasks = [_task(objects, i, "f") for i in range(n)]
    for start in range(0, n, 500):
        _ran(monitor, tasks[start:start + 500],
             [TaskDone(i, OK, b"", (), [], False, 0.0) for i in range(start, start + 500)])
    kept = len(monitor.events)
    assert kept < n / 2  # one in N above 1000 a second (these all came within a second)
    assert kept + monitor.sampled_out == n
    assert monitor.done == n  # counters are exact whatever is sampled


def test_the_rate_observed_in_full_can_be_set(monkeypatch: Any) -> None:
    state: Any = types.SimpleNamespace(directory=types.SimpleNamespace(objects={}))
    monkeypatch.setenv("QSRV_MONITOR_RATE", "50")
    monitor = Monitor(state)
    assert monitor.max_rate == 50
    objects: dict[int, Any] = {}
    tasks = [_task(objects, i, "f") for i in range(400)]
    _ran(monitor, tasks, [TaskDone(i, OK, b"", (), [], False, 0.0) for i in range(400)])
    assert len(monitor.events) < 400 and monitor.done == 400
    monkeypatch.setenv("QSRV_MONITOR_RATE", "fast")
    assert Monitor(state).max_rate == DEFAULT_RATE
    monkeypatch.delenv("QSRV_MONITOR_RATE")
    assert Monitor(state).max_rate == DEFAULT_RATE
