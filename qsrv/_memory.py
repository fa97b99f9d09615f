"""Giving memory back after a burst (scheduler and driver).

CPython's dicts and sets keep the table of their largest size when they empty, and glibc keeps
freed heap pages: after a million tasks come and go, a process stays hundreds of MiB above its
idle size unless it rebuilds what grew and asks the allocator to return free pages. `Peak`
says when a container has drained (fallen to a fraction of its peak); `shrink_dict` and
`shrink_set` rebuild one in place (same object, table sized for what is left); `trim` returns
free heap pages to the system where the C library can (glibc's malloc_trim), else does nothing.

glibc gives threads heaps of their own ("arenas") and `malloc_trim` cannot shrink the top of
those: a driver whose reader and flusher threads decoded and encoded a million messages keeps
tens of MiB resident. Under the GIL those arenas buy little, so `limit_arenas` makes the
threads started after it share the main heap, which `malloc_trim` does shrink (not where
``MALLOC_ARENA_MAX`` is set: that wins). Two arenas were not enough: the second one's top
stayed resident in one run out of three here.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys
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


_M_ARENA_MAX = -8  # mallopt parameter (malloc.h)


@functools.cache
def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.malloc_trim.restype = ctypes.c_int
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
    except (OSError, AttributeError):  # musl and others have neither
        return None
    return libc


@functools.cache
def limit_arenas(arenas: int = 1) -> bool:
    """Cap glibc's heaps for threads at ``arenas`` (once per process; False where that is not
    available or ``MALLOC_ARENA_MAX`` decides)."""
    libc = _libc()
    if libc is None or "MALLOC_ARENA_MAX" in os.environ:
        return False
    return bool(libc.mallopt(_M_ARENA_MAX, arenas))


def trim() -> bool:
    """Return free heap pages to the system (glibc); False where that is not available."""
    libc = _libc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True
