"""Where a value's memory lives, and tasks that make and inspect large arrays."""

from __future__ import annotations

from typing import Any

import numpy as np

import qsrv


def mapped_file(arr: Any) -> str:
    """The file mapped at ``arr``'s memory in this process ('' for private memory)."""
    addr = arr.__array_interface__["data"][0]
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            if lo <= addr < hi:
                return parts[5] if len(parts) > 5 else ""
    return ""


@qsrv.distribute_task
def inspect(x: Any) -> tuple[str, bool, float, int]:
    """(the file ``x`` is mapped from, whether it is writeable, its norm, the worker)."""
    return (mapped_file(x), bool(x.flags.writeable), float(np.linalg.norm(x)),
            qsrv.runtime_context().worker_id)


@qsrv.distribute_task
def make(n: int) -> Any:
    """A normalised complex vector of ``n`` amplitudes."""
    return np.full(n, 1 / np.sqrt(n), dtype=np.complex128)
