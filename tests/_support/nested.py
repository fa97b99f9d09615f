"""Nested task workloads of a seeded random shape, for stress runs: tasks that submit tasks
that submit tasks, with cancellations and worker deaths mixed in.
A hang shows as GetTimeoutError."""

from __future__ import annotations

import random
from dataclasses import dataclass

import qsrv
from qsrv.errors import TaskCancelledError, WorkerDiedError


@qsrv.distribute_task(max_retries=5)
def leaf(x: int) -> int:
    return x + 1


@qsrv.distribute_task(max_retries=5)
def middle(x: int, width: int) -> int:
    return sum(qsrv.get([leaf(x + i) for i in range(width)], timeout=120))


@qsrv.distribute_task(max_retries=5)
def top(x: int, width: int, depth_width: int) -> int:
    return sum(qsrv.get([middle(x * 10 + i, depth_width) for i in range(width)], timeout=120))


def expected(x: int, width: int, depth_width: int) -> int:
    return sum(sum(x * 10 + i + j + 1 for j in range(depth_width)) for i in range(width))


@dataclass
class Outcome:
    runs: int = 0
    values: int = 0
    cancelled: int = 0
    died: int = 0


def run(runs: int, seed: int, *, cancel_rate: float = 0.0, timeout: float = 60.0) -> Outcome:
    """`runs` rounds of nested fan-outs (1-5 by 1-4 by 1-4, seeded); in each, a share
    `cancel_rate` of the top tasks is cancelled. Every other top task must give the right value
    (or WorkerDiedError once retries run out); any hang fails with GetTimeoutError."""
    rng = random.Random(seed)
    outcome = Outcome()
    for _ in range(runs):
        a, b, c = rng.randint(1, 5), rng.randint(1, 4), rng.randint(1, 4)
        refs = [top(i, b, c) for i in range(a)]
        doomed = {i for i in range(a) if rng.random() < cancel_rate}
        for i in doomed:
            qsrv.cancel(refs[i])
        for i, ref in enumerate(refs):
            try:
                value = qsrv.get(ref, timeout=timeout)
            except TaskCancelledError:
                assert i in doomed, f"top task {i} was cancelled but nobody cancelled it"
                outcome.cancelled += 1
                continue
            except WorkerDiedError:
                outcome.died += 1
                continue
            assert value == expected(i, b, c), (value, expected(i, b, c), (a, b, c))
            outcome.values += 1
        outcome.runs += 1
    return outcome
