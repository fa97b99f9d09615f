"""Failure and time: retries, timeouts, cancellation, executors and workers that are gone.
Pure; changes only through `SchedulerState.handle`.

- A task whose executor dies while it is RUNNING runs again elsewhere while it has retries left
  (`max_retries` counts down), then fails ("worker_died"). Tasks the executor held ahead,
  unstarted, go back to their queues without using a retry.
- A task with a timeout fails ("timeout") if it has not finished by its deadline; when no
  worker could ever run it, the error says so ("infeasible").
- A cancelled task fails ("cancelled"). A RUNNING task that is cancelled or times out loses
  its executor (Aer runs cannot be interrupted): the process is killed and its resources
  return at once. One sent ahead stays in its executor's queue as a placeholder; its value is
  dropped when it comes.
- A worker silent for `heartbeat_timeout` seconds of the scheduler's *awake* time, or whose
  connection drops, is removed: the values only its store kept are lost, its executors are
  gone. Awake time (`awake`) leaves out the time the scheduler's own event loop was stalled
  (Tick.stalled): a heartbeat the scheduler could not read because it was busy, or not given
  the CPU, is not the worker's fault.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

from qsrv.protocol import SYSTEM_ERROR, KillExecutor, encode_system_error
from qsrv.scheduler._directory import Directory
from qsrv.scheduler._dispatch import Dispatcher
from qsrv.scheduler._events import Action, Close, Log, Send
from qsrv.scheduler._lifecycle import READY, RUNNING
from qsrv.scheduler._placement import Executor, Worker, infeasible_reason
from qsrv.scheduler._records import Task


class Recovery:
    def __init__(self, out: list[Action], workers: dict[int, Worker],
                 worker_by_conn: dict[int, Worker], directory: Directory,
                 dispatcher: Dispatcher, *, heartbeat_timeout: float) -> None:
        self.heartbeat_timeout = heartbeat_timeout
        self.awake = 0.0  # the clock heartbeats are judged by: time less the stalls
        self._last_tick = 0.0
        # (deadline, task id), a heap; entries of tasks that finished meanwhile are skipped.
        self.deadlines: list[tuple[float, int]] = []
        self._out = out
        self._workers = workers
        self._worker_by_conn = worker_by_conn
        self._directory = directory
        self._dispatcher = dispatcher
        # Told of a worker removed, after its executors are gone (its reservations wait).
        self.worker_removed: Callable[[Worker, str], None] = _ignore

    def set_deadline(self, task: Task, deadline: float) -> None:
        task.deadline = deadline
        heapq.heappush(self.deadlines, (deadline, task.id))

    def compact(self) -> None:
        """Drop the deadlines of tasks that finished meanwhile (else kept until they pass)."""
        objects = self._directory.objects
        kept = []
        for deadline, tid in self.deadlines:
            task = objects.get(tid)
            if type(task) is Task and task.deadline == deadline:
                kept.append((deadline, tid))
        heapq.heapify(kept)
        self.deadlines = kept

    def retry(self, task: Task) -> bool:
        """Queue a RUNNING task again if it has retries left (one is used)."""
        if task.max_retries <= 0:
            return False
        task.max_retries -= 1
        self._dispatcher.enqueue(task)
        return True

    def cancel(self, task: Task, why: str) -> None:
        self.abort(task, "cancelled", f"task {task.name!r} was cancelled: {why}")

    def abort(self, task: Task, kind: str, message: str) -> None:
        """Finish an unfinished task with a system error; a RUNNING one loses its executor."""
        ex = task.executor if task.state == RUNNING else None  # ASSIGNED: stays a placeholder
        self._directory.finish(task, SYSTEM_ERROR, encode_system_error(kind, message), (), [])
        if ex is not None:
            self._out.append(Send(ex.worker.conn, KillExecutor(ex.pid,
                                                               f"task {task.id:#x}: {kind}")))
            self._out.append(Close(ex.conn, f"task {kind}"))
            self.executor_gone(ex, kind)

    def executor_gone(self, ex: Executor, why: str) -> None:
        task = self._dispatcher.drop_executor(ex)
        if task is None:
            return
        worker = ex.worker
        if task.max_retries > 0:
            self._out.append(Log(
                "warning", f"task {task.name!r} ({task.id:#x}) will be retried: the executor "
                           f"(pid {ex.pid}) running it died ({why})"))
            self.retry(task)
        else:
            task.executor = ex  # while it finishes: whoever hears of the failure sees where
            self._directory.finish(task, SYSTEM_ERROR, encode_system_error(
                "worker_died", f"task {task.name!r} ({task.id:#x}) failed: the executor "
                f"(pid {ex.pid}) on worker {worker.id} ({worker.name}) running it died ({why}); "
                "no retries left"), (), [])
            task.executor = None

    def remove_worker(self, worker: Worker, reason: str) -> None:
        self._workers.pop(worker.id, None)
        self._worker_by_conn.pop(worker.conn, None)
        self._out.append(Log("warning", f"worker {worker.id} ({worker.name}) removed: {reason}"))
        self._directory.lose_node(worker, reason)
        for ex in list(worker.executors.values()):
            self._out.append(Close(ex.conn, f"worker {worker.id} removed"))
            self.executor_gone(ex, f"its worker {worker.id} ({worker.name}) was removed: {reason}")
        self.worker_removed(worker, reason)
        self._dispatcher.refresh_feasibility()

    def tick(self, now: float, stalled: float = 0.0) -> None:
        """Workers silent too long are removed; tasks past their deadline fail."""
        self.awake += max(0.0, now - self._last_tick - stalled)
        self._last_tick = now
        limit = self.awake - self.heartbeat_timeout
        for worker in [w for w in self._workers.values() if w.last_seen < limit]:
            self._out.append(Close(worker.conn, "no heartbeat"))
            self.remove_worker(worker, f"no heartbeat for {self.heartbeat_timeout:g} s")
        deadlines = self.deadlines
        objects = self._directory.objects
        while deadlines and deadlines[0][0] <= now:
            _, tid = heapq.heappop(deadlines)
            task = objects.get(tid)
            if type(task) is not Task:
                continue
            infeasible = (task.state == READY and not task.shape.feasible
                          and task.reservation is None)
            why = (infeasible_reason(task.shape, list(self._workers.values())) if infeasible
                   else "still running" if task.state == RUNNING else "not scheduled in time")
            self.abort(task, "infeasible" if infeasible else "timeout",
                       f"task {task.name!r} did not finish within its timeout of "
                       f"{task.timeout:g} s: {why}")


def _ignore(worker: Worker, reason: str) -> None:
    return None
