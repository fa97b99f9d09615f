"""What the distributed primitives share: options, chunking, placement checks, submission."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import qsrv
from qsrv.client import ObjectRef, RemoteFunction
from qsrv.quantum._placement import Need, check_placement, cluster_workers, need_of

_TASK_OPTION_NAMES = frozenset({"max_retries", "timeout", "retry_exceptions", "name"})


@dataclass
class Options:
    """Options of :class:`Sampler` and :class:`Estimator`, as qiskit-aer's, plus qsrv's own."""

    backend_options: dict[str, Any] = field(default_factory=dict)
    """Options of each task's AerSimulator (``method``, ``device``, ``precision``,
    ``max_parallel_threads``, ...)."""

    run_options: dict[str, Any] = field(default_factory=dict)
    """Options of ``AerSimulator.run`` (``seed_simulator``, ``shots`` for the estimator...)."""

    default_precision: float = 0.0
    """Estimator only: the precision of PUBs that give none."""

    experiments_per_task: int | None = None
    """How many experiments (circuit x parameter binding) one task runs; None: enough tasks
    for about four per CPU of the cluster."""

    task_options: dict[str, Any] = field(default_factory=dict)
    """qsrv task options for every task (``max_retries``, ``timeout``, ``retry_exceptions``)."""

    def __post_init__(self) -> None:
        unknown = set(self.task_options) - _TASK_OPTION_NAMES
        if unknown:
            raise qsrv.ConfigError(f"unknown task option(s) {sorted(unknown)}; "
                                   f"known: {sorted(_TASK_OPTION_NAMES)}")
        per = self.experiments_per_task
        if per is not None and (isinstance(per, bool) or not isinstance(per, int) or per < 1):
            raise qsrv.ConfigError(f"experiments_per_task must be an int >= 1 or None, "
                                   f"got {per!r}")


def make_options(options: dict[str, Any] | None, *, estimator: bool) -> Options:
    opts = Options(**options) if options else Options()
    if not estimator and "default_precision" in (options or {}):
        raise TypeError("default_precision is an Estimator option")
    return opts


_REMOTE: dict[str, RemoteFunction[..., Any]] = {}


def remote(fn: Callable[..., Any]) -> RemoteFunction[..., Any]:
    """The task form of one of `_worker`'s functions (made once per process)."""
    task = _REMOTE.get(fn.__name__)
    if task is None:
        task = _REMOTE[fn.__name__] = qsrv.distribute_task(fn)
    return task


def submit(fn: Callable[..., Any], need: Need, options: Options, *args: Any) -> ObjectRef:
    """Run `fn(*args)` as a task whose target is `need`'s."""
    name = f"qsrv.quantum.{fn.__name__}"
    return remote(fn).options(target=need.target(), **{"name": name, **options.task_options})(
        *args)


class Planner:
    """Chunk sizes and placement checks for one ``run`` call, against the cluster as it is."""

    def __init__(self, options: Options, num_qubits: list[int]) -> None:
        self.options = options
        self.needs = [need_of(n, options.backend_options) for n in num_qubits]
        workers = cluster_workers()  # qsrv.status() blocks, also in an event loop's thread
        check_placement(self.needs, workers)
        self.cpus = max(1, int(sum(float(w["total"].get("cpu", 0)) for w in workers)))

    def per_task(self, experiments: int) -> int:
        if self.options.experiments_per_task is not None:
            return self.options.experiments_per_task
        return max(1, math.ceil(experiments / (4 * self.cpus)))


def chunks(total: int, per: int) -> list[tuple[int, int]]:
    """[lo, hi) ranges of at most `per` covering range(total)."""
    return [(lo, min(lo + per, total)) for lo in range(0, total, per)]


def largest(needs: list[Need]) -> Need:
    return max(needs, key=lambda n: n.bytes)


def slice_binds(binds: dict[Any, Any], lo: int, hi: int) -> dict[Any, Any]:
    return {p: values[lo:hi] for p, values in binds.items()}


