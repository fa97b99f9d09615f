"""One shared-memory arena per node, and the allocator that carves it up.

The arena is a file in ``/dev/shm`` (tmpfs) mapped into every process of the node that needs
objects: the owner (the worker agent) maps it read-write, readers (executors, same-node drivers)
map the same file, read-only unless they produce objects in place.

Invariants:
- The arena has a fixed capacity chosen at creation; nothing ever extends it. Its blocks are
  reserved with ``posix_fallocate`` (a full /dev/shm is an error at creation, never a SIGBUS
  later) and touched once, in parallel threads, so the hot path never meets a fresh page
  (fresh pages run at a fraction of memcpy speed on these VMs, see DESIGN.md).
- The owner unlinks the file when it closes the arena; a reader never unlinks.

``Allocator`` is pure bookkeeping (no memory): first-fit over an address-ordered free list
with coalescing, every offset and size a multiple of ``ALIGNMENT``.
"""

from __future__ import annotations

import bisect
import contextlib
import mmap
import os
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Final

__all__ = ["ALIGNMENT", "Allocator", "Arena", "arena_path", "sweep_stale"]

ALIGNMENT: Final = 64  # a cache line; also satisfies every numpy dtype's alignment
_DEFAULT_DIR: Final = "/dev/shm"
_NAME_RE: Final = re.compile(r"^[A-Za-z0-9_.-]{1,200}$")
_TOUCH_CHUNK: Final = 64 << 20  # one thread's share of the first touch, at most


def _round_up(n: int) -> int:
    return (n + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


def arena_path(name: str, directory: str | None = None) -> str:
    """The file backing arena ``name``; names are plain (no separators) so no path escapes."""
    if not _NAME_RE.match(name):
        raise ValueError(f"invalid arena name {name!r}: use letters, digits, '_', '.', '-'")
    return os.path.join(directory or _DEFAULT_DIR, f"qsrv-{name}")


_OWNED_RE: Final = re.compile(r"^qsrv-(\d+)-[0-9a-f]{8}$")  # default names: owner pid + random


def sweep_stale(directory: str | None = None) -> list[str]:
    """Unlink the arenas of owners that died without closing them (SIGKILL, OOM): their
    pages would otherwise stay in /dev/shm until reboot. Returns the paths removed."""
    removed: list[str] = []
    directory = directory or _DEFAULT_DIR
    with contextlib.suppress(OSError):
        for entry in os.scandir(directory):
            match = _OWNED_RE.match(entry.name)
            if match is None:
                continue
            try:
                os.kill(int(match.group(1)), 0)
                continue  # the owner lives
            except ProcessLookupError:
                pass
            except PermissionError:
                continue  # another user's live process
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed.append(entry.path)
    return removed


class Allocator:
    """First-fit allocation of aligned blocks in ``[0, capacity)``.

    Invariants (checked by ``check()`` and by the Hypothesis tests):
    - free blocks and allocated blocks are disjoint and together cover ``[0, capacity)``;
    - no two free blocks touch (freeing coalesces with both neighbours), so a fully free
      allocator is exactly one block ``(0, capacity)``;
    - every offset and size is a positive multiple of ``ALIGNMENT`` (a request for 0 bytes
      takes one ALIGNMENT block, so every live allocation has a distinct offset).
    """

    __slots__ = ("_allocated", "_free", "_offsets", "capacity", "used")

    def __init__(self, capacity: int) -> None:
        if capacity < ALIGNMENT or capacity % ALIGNMENT:
            raise ValueError(f"capacity must be a positive multiple of {ALIGNMENT}: {capacity}")
        self.capacity = capacity
        self.used = 0  # sum of allocated block sizes (rounded up)
        self._free: dict[int, int] = {0: capacity}  # offset -> size
        self._offsets: list[int] = [0]  # sorted keys of _free
        self._allocated: dict[int, int] = {}  # offset -> size

    @staticmethod
    def block_size(size: int) -> int:
        """What a request for ``size`` bytes takes from the arena."""
        return max(ALIGNMENT, _round_up(size))

    def allocate(self, size: int) -> int | None:
        """The offset of a new block of at least ``size`` bytes, or None if none fits."""
        if size < 0:
            raise ValueError(f"negative size {size}")
        need = self.block_size(size)
        for i, off in enumerate(self._offsets):
            have = self._free[off]
            if have < need:
                continue
            del self._free[off]
            if have == need:
                del self._offsets[i]
            else:  # keep the tail free; it stays at index i, so the order holds
                self._offsets[i] = off + need
                self._free[off + need] = have - need
            self._allocated[off] = need
            self.used += need
            return off
        return None

    def free(self, offset: int) -> None:
        """Give back the block at ``offset``, merging it with free neighbours."""
        size = self._allocated.pop(offset)  # KeyError: not allocated (a double free)
        self.used -= size
        i = bisect.bisect_left(self._offsets, offset)
        # Merge with the following free block.
        if i < len(self._offsets) and self._offsets[i] == offset + size:
            size += self._free.pop(self._offsets[i])
            del self._offsets[i]
        # Merge with the preceding free block.
        if i > 0:
            prev = self._offsets[i - 1]
            if prev + self._free[prev] == offset:
                self._free[prev] += size
                return
        self._offsets.insert(i, offset)
        self._free[offset] = size

    def largest_free(self) -> int:
        """The largest block one allocation could get now."""
        return max(self._free.values(), default=0)

    def free_blocks(self) -> list[tuple[int, int]]:
        """(offset, size) of every free block, in address order."""
        return [(off, self._free[off]) for off in self._offsets]

    def check(self) -> None:
        """Assert the invariants (tests and debugging)."""
        blocks = sorted([(o, s, True) for o, s in self._free.items()]
                        + [(o, s, False) for o, s in self._allocated.items()])
        pos, prev_free = 0, False
        for off, size, is_free in blocks:
            assert off == pos, f"gap or overlap at {pos}: next block at {off}"
            assert size > 0 and off % ALIGNMENT == 0 and size % ALIGNMENT == 0
            assert not (is_free and prev_free), f"uncoalesced free blocks at {off}"
            pos, prev_free = off + size, is_free
        assert pos == self.capacity, f"blocks end at {pos}, capacity {self.capacity}"
        assert self._offsets == sorted(self._free)
        assert self.used == sum(self._allocated.values())


class Arena:
    """A fixed-size shared-memory region backed by a file in /dev/shm.

    ``Arena.create`` (the owner, once per node) makes, reserves and touches it;
    ``Arena.attach`` (any other process on the node) maps the existing file by name.
    ``buf`` is a memoryview over the whole mapping (read-only unless created or attached
    writable).
    """

    __slots__ = ("_fd", "_mmap", "buf", "capacity", "name", "owner", "path", "reserved")

    def __init__(self, name: str, path: str, mapping: mmap.mmap, owner: bool) -> None:
        self.name = name
        self.path = path
        self.owner = owner
        self.capacity = len(mapping)
        self.reserved = self.capacity  # bytes from 0 backed by reserved, touched pages
        self._fd = -1  # the owner's file, kept open while it grows the reservation
        self._mmap = mapping
        self.buf: memoryview = memoryview(mapping)  # read-only exactly when mapped ACCESS_READ

    @classmethod
    def create(cls, name: str, capacity: int, *, directory: str | None = None,
               touch: bool = True, threads: int | None = None, grow: bool = False) -> Arena:
        """Create arena ``name`` of ``capacity`` bytes (rounded up to ALIGNMENT).

        Raises FileExistsError if the name is taken, OSError (ENOSPC) if /dev/shm cannot hold
        it. With ``touch`` every page is written once, in ``threads`` parallel threads.
        With ``grow`` nothing is reserved yet: ``ensure(end)`` reserves and touches the pages
        below ``end`` on first use, and they stay (a node's store costs memory as it is used,
        never more than its capacity, and never pays for a fresh page twice).
        """
        capacity = _round_up(max(capacity, ALIGNMENT))
        path = arena_path(name, directory)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            try:
                if grow:
                    os.ftruncate(fd, capacity)
                else:
                    os.posix_fallocate(fd, 0, capacity)  # no SIGBUS on a full tmpfs later
            except OSError:
                os.unlink(path)
                raise
            mapping = mmap.mmap(fd, capacity, access=mmap.ACCESS_WRITE)
        except BaseException:
            os.close(fd)
            raise
        arena = cls(name, path, mapping, owner=True)
        if grow:
            arena._fd, arena.reserved = fd, 0
        else:
            os.close(fd)
            if touch:
                arena.touch(threads=threads)
        return arena

    def ensure(self, end: int) -> None:
        """Reserve and touch the pages below ``end`` (a no-op below the high-water mark).
        OSError (ENOSPC) when /dev/shm cannot hold them: nothing was written, no SIGBUS."""
        if end <= self.reserved:
            return
        start = self.reserved // mmap.PAGESIZE * mmap.PAGESIZE
        # Reserve ahead in 64 MiB steps so small objects do not call fallocate each time.
        stop = min(self.capacity, -(-max(end, start + _TOUCH_CHUNK) // _TOUCH_CHUNK)
                   * _TOUCH_CHUNK)
        os.posix_fallocate(self._fd, start, stop - start)
        self._touch_range(start, stop)
        self.reserved = stop

    @classmethod
    def attach(cls, name: str, *, directory: str | None = None,
               writable: bool = False) -> Arena:
        """Map the existing arena ``name``; FileNotFoundError if no such arena."""
        path = arena_path(name, directory)
        fd = os.open(path, os.O_RDWR if writable else os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            # ACCESS_READ maps PROT_READ *and* exports a read-only buffer: a write through
            # numpy or memoryview raises instead of faulting.
            access = mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ
            mapping = mmap.mmap(fd, size, access=access)
        finally:
            os.close(fd)
        return cls(name, path, mapping, owner=False)

    def touch(self, *, threads: int | None = None) -> None:
        """Write every page once (zeros), in parallel threads; numpy releases the GIL."""
        self._touch_range(0, self.capacity, threads)

    def _touch_range(self, begin: int, end: int, threads: int | None = None) -> None:
        import numpy as np  # on first use: `import qsrv` does not load numpy

        arr = np.frombuffer(self.buf, dtype=np.uint8)
        if threads is None:
            threads = min(8, len(os.sched_getaffinity(0)))
        step = min(_TOUCH_CHUNK, max(mmap.PAGESIZE, -(-(end - begin) // max(threads, 1))))
        step = -(-step // mmap.PAGESIZE) * mmap.PAGESIZE

        def fill(start: int) -> None:
            arr[start:min(end, start + step)] = 0

        if end - begin <= step:
            fill(begin)
            return
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            list(pool.map(fill, range(begin, end, step)))

    def close(self) -> None:
        """Unmap (and, for the owner, unlink). Views still held elsewhere keep the mapping
        alive until they are dropped; the file name is gone at once either way."""
        if self.owner:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
        # Someone may still hold a view (an array over an object): then the mapping goes
        # when the last view is collected.
        with contextlib.suppress(BufferError):
            self.buf.release()
            self._mmap.close()

