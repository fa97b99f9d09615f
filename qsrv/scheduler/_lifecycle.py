"""A task's lifecycle: its states, in order, and the only moves between them.

                      +-------- given back --------+
                      v                            |
    PENDING -------> READY ---- sent ahead ----> ASSIGNED
                     |   ^                         |
              placed |   | retried                 | its turn
                     v   |                         |
                    RUNNING <----------------------+

    PENDING, READY, ASSIGNED, RUNNING --> FINISHED   (a value or an error exists)

Transition table (`set_state` refuses anything else with an InvariantError)::

    from       to        when
    PENDING    READY     its last argument exists (at once when it has none to wait for)
    PENDING    FINISHED  an argument failed or is gone; cancelled; timed out; its owner left;
                         its reservation is released, infeasible or not its tenant's
    READY      ASSIGNED  sent ahead to a busy executor running a short task of its shape
                         (never a task of a reservation)
    READY      RUNNING   placed on an idle executor; holds its shape's resources from now on
                         (a reservation's task: on an executor dedicated to the reservation,
                         out of the reservation's capacity)
    READY      FINISHED  cancelled; timed out (or infeasible past its timeout); its owner left;
                         its reservation was released or turned infeasible
    ASSIGNED   RUNNING   its executor finished the task before it: the capacity passes on
    ASSIGNED   READY     given back unstarted (TaskReturned), or its executor is gone
    ASSIGNED   FINISHED  cancelled or timed out: stays in the executor's queue as a placeholder
    RUNNING    READY     retried: its executor died, or it raised an error it may retry on
                         (a reservation's task waits in the reservation's queue again)
    RUNNING    FINISHED  its value or error came back; cancelled or timed out (executor killed);
                         its reservation was released (its executors are stopped)
    FINISHED   -         final: the task's entry in the directory is a value (`Obj`) now

A RUNNING task may also be `blocked` (waiting on tasks it submitted): it then lends its
non-GPU resources back to its worker until it is unblocked. That is a flag, not a state.

`set_state` is one table lookup; it also keeps the count of each shape's tasks by state
(`Shape.counts`, what `qsrv status` shows without a scan; a new task is counted PENDING by
`count_new`). The checks over the whole scheduler live in `SchedulerState.validate_state()`
(_invariants.py).
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from qsrv.scheduler._records import Task


class TaskState(enum.IntEnum):
    """A task's state, in lifecycle order."""

    PENDING = 0  # waiting for arguments still being computed
    READY = 1  # in its shape's queue, waiting for a place to run
    ASSIGNED = 2  # queued on a busy executor, behind the task it runs
    RUNNING = 3  # its executor runs it (the scheduler's view)
    FINISHED = 4  # its value or error exists


PENDING: Final = TaskState.PENDING
READY: Final = TaskState.READY
ASSIGNED: Final = TaskState.ASSIGNED
RUNNING: Final = TaskState.RUNNING
FINISHED: Final = TaskState.FINISHED

TRANSITIONS: Final[dict[TaskState, frozenset[TaskState]]] = {
    PENDING: frozenset({READY, FINISHED}),
    READY: frozenset({ASSIGNED, RUNNING, FINISHED}),
    ASSIGNED: frozenset({RUNNING, READY, FINISHED}),
    RUNNING: frozenset({READY, FINISHED}),
    FINISHED: frozenset(),
}

# The same table as bit masks, indexed by the current state: bit n set = may move to state n.
_MOVES: Final[tuple[int, ...]] = tuple(
    sum(1 << new for new in TRANSITIONS[old]) for old in TaskState
)


class InvariantError(AssertionError):
    """The scheduler broke one of its own rules: a bug in the scheduler, never a peer's fault."""


def count_new(task: Task) -> None:
    """A task enters the scheduler (PENDING): its shape counts it."""
    task.shape.counts[task.state] += 1


def set_state(task: Task, new: TaskState) -> None:
    """Move ``task`` to ``new``; every change of a task's state goes through here."""
    old = task.state
    if not _MOVES[old] >> new & 1:
        raise InvariantError(f"task {task.id:#x} ({task.name!r}): no transition "
                             f"{old.name} -> {new.name}")
    counts = task.shape.counts
    counts[old] -= 1
    counts[new] += 1
    task.state = new
