"""Giving memory back after a burst (scheduler and driver).

CPython's dicts and sets keep the table of their largest size when they empty, and glibc keeps
freed heap pages: after a million tasks come and go, a process stays hundreds of MiB above its
idle size unless it rebuilds what grew and asks the allocator to return free pages. `Peak`
says when a container has drained (fallen to a fraction of its peak); `shrink_dict` and
`shrink_set` rebuild one in place (same object, table sized for what is left); `trim` returns
free heap pages to the system where the C library can (glibc's malloc_trim), else does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
from collections.abc import Callable
from typing import Any


class Peak:
    """The peak size of something that grows and drains. `drained(n)` returns the peak when
    ``n`` has fallen to a ``fraction`` of a peak of at least ``floor`` (the peak then starts
    again from ``n``), else 0."""

    __slots__ = ("floor", "fraction", "peak")

    def __init__(self, floor: int = 4096, fraction: int = 8) -> None:
        self.floor = floor
        self.fraction = fraction
        self.peak = 0

    def see(self, n: int) -> None:
        """Note a size (between checks, so a peak between them is not missed)."""
        if n > self.peak:
            self.peak = n

    def drained(self, n: int) -> int:
        peak = self.peak
        if n > peak:
            self.peak = n
            return 0
        if peak >= self.floor and n * self.fraction <= peak:
            self.peak = n
            return peak
        return 0


def shrink_dict(d: dict[Any, Any]) -> None:
    """Rebuild ``d`` in place with a table sized for its current entries."""
    if d:
        kept = dict(d)
        d.clear()
        d.update(kept)
    else:
        d.clear()


def shrink_set(s: set[Any]) -> None:
    """Rebuild ``s`` in place with a table sized for its current members."""
    if s:
        kept = set(s)
        s.clear()
        s |= kept
    else:
        s.clear()


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = libc.malloc_trim
    except (OSError, AttributeError):  # musl and others have no malloc_trim
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


def trim() -> bool:
    """Return free heap pages to the system (glibc); False where that is not available."""
    fn = _malloc_trim()
    if fn is None:
        return False
    fn(0)
    return True
