"""The node's object store: objects in one shared-memory arena, owned by one process.

The owner (the worker agent) puts objects, counts references, and tells readers where an
object lies (a ``Location``); readers in other processes of the node map it with
``StoreClient`` without copying. The store is single-threaded: call it from one thread
(the agent's event loop); the copies themselves run on several threads with the GIL released.

An object is ``header`` (small, opaque bytes kept in the owner's memory and sent with its
Location: for a state vector, the codec header with its checksum) plus ``size`` bytes of body
in the arena.

Invariants:
- Every entry is exactly one of: CREATED (space allocated, a producer is writing it; never
  read, evicted or spilled), SEALED (body in the arena, immutable from now on), SPILLED (body
  in a file in ``spill_dir``, no arena space; ``get``/``locate`` restore it).
- ``refs`` counts references by holder; an object whose count falls to zero is freed (at once,
  or at its last ``unpin`` if pinned). An object that was never referenced is a cache copy
  (e.g. pulled from another node): it may be evicted, least recently used first. A primary
  copy is always referenced (the agent holds it for the scheduler's directory).
- A pinned object (``pins > 0``: some process has it mapped) is never moved, spilled, evicted
  or freed: its bytes stay where the reader's view points.
- When space is short: evict unreferenced unpinned objects (LRU), then spill referenced
  unpinned ones (LRU), then raise ObjectStoreFullError. The arena never grows, so memory
  exhaustion is an exception, never a SIGBUS.
"""

from __future__ import annotations

import contextlib
import enum
import os
import secrets
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any

from qsrv.codec import byte_view, statevec
from qsrv.errors import ObjectLostError, ObjectStoreFullError
from qsrv.store._arena import Allocator, Arena

__all__ = ["Location", "ObjectStore"]

# A client, a task, a containing object, a process: whatever the runtime names.
Holder = str | int | tuple[str, int]


@dataclass(frozen=True, slots=True)
class Location:
    """Where a sealed object lies in arena ``store``: what a reader needs to map it."""

    store: str
    object_id: int
    offset: int
    size: int
    header: bytes


class _State(enum.Enum):
    CREATED = "created"
    SEALED = "sealed"
    SPILLED = "spilled"


class _Entry:
    __slots__ = ("checksum", "doomed", "header", "offset", "pins", "refs", "size", "state")

    def __init__(self, offset: int, size: int, header: bytes) -> None:
        self.state = _State.CREATED
        self.offset = offset  # -1 while spilled
        self.size = size
        self.header = header
        self.checksum: int | None = None  # CRC-32 of the body, when known
        self.refs: Counter[Holder] = Counter()
        self.pins = 0
        self.doomed = False  # refs fell to zero while pinned: free at the last unpin


class ObjectStore:
    """The shared-memory object store of one node, owned by the calling process."""

    def __init__(self, capacity: int, spill_dir: str | os.PathLike[str], *,
                 name: str | None = None, directory: str | None = None,
                 touch: bool = True, grow: bool = False) -> None:
        self.name = name or f"{os.getpid()}-{secrets.token_hex(4)}"
        self.spill_dir = os.fspath(spill_dir)
        os.makedirs(self.spill_dir, exist_ok=True)
        self._arena = Arena.create(self.name, capacity, directory=directory, touch=touch,
                                   grow=grow)
        self._alloc = Allocator(self._arena.capacity)
        # Insertion order is recency: move_to_end on every use, evict from the front.
        self._entries: OrderedDict[int, _Entry] = OrderedDict()
        self._evictions = 0
        self._spills = 0
        self._restores = 0

    @property
    def capacity(self) -> int:
        return self._arena.capacity

    # -- writing ------------------------------------------------------------------------

    def put(self, object_id: int, header: bytes | None, buffer: Any, *,
            holder: Holder | None = None) -> Location:
        """Copy ``buffer`` into the arena as object ``object_id`` and seal it.

        A state vector (see ``qsrv.codec.statevec.is_statevector``) is copied by
        ``copy_into``, GIL released, its checksum computed in the same pass; with ``header``
        None its codec header is built from that checksum. Any other buffer is copied as
        bytes and needs a header. ``holder`` takes the first reference (else it is a cache
        copy, evictable).
        """
        is_sv = statevec.is_statevector(buffer)
        if header is None and not is_sv:
            raise TypeError("a header is required unless buffer is a state vector")
        src = byte_view(buffer)
        dst = self.create(object_id, src.nbytes, holder=holder)
        try:
            if is_sv:
                crc = statevec.copy_into(dst, buffer)
                if header is None:
                    header = statevec.encode_header(buffer, checksum=crc)
                self._entries[object_id].checksum = crc
            else:
                dst[:] = src
        except BaseException:
            dst.release()
            self.abort(object_id)
            raise
        dst.release()
        return self.seal(object_id, header)

    def create(self, object_id: int, size: int, *, holder: Holder | None = None) -> memoryview:
        """Space for a producer to write object ``object_id`` in place: a writable view of
        exactly ``size`` bytes. ``seal`` publishes it; ``abort`` drops it. Raises
        ObjectStoreFullError when no room can be made."""
        if object_id in self._entries:
            raise ValueError(f"object {object_id:#x} already exists in store {self.name}")
        offset = self._make_room(size, f"object {object_id:#x}")
        entry = _Entry(offset, size, b"")
        if holder is not None:
            entry.refs[holder] += 1
        self._entries[object_id] = entry
        return self._arena.buf[offset:offset + size]

    def reserve(self, object_id: int, size: int, *, holder: Holder | None = None) -> Location:
        """``create`` for a producer in another process: the Location it fills through a
        writable ``StoreClient`` before the owner seals it."""
        self.create(object_id, size, holder=holder).release()
        return self._location(object_id, self._entries[object_id])

    def seal(self, object_id: int, header: bytes | None = None, *,
             checksum: int | None = None) -> Location:
        """Publish a created object; it is immutable from now on. ``header`` replaces the
        one given so far; ``checksum`` records the body's CRC-32 when the writer knows it."""
        entry = self._entry(object_id)
        if entry.state is not _State.CREATED:
            raise ValueError(f"object {object_id:#x} is already sealed")
        if header is not None:
            entry.header = bytes(header)
        if checksum is not None:
            entry.checksum = checksum
        entry.state = _State.SEALED
        return self._location(object_id, entry)

    def abort(self, object_id: int) -> None:
        """Drop an object still being created (a failed producer or transfer)."""
        entry = self._entry(object_id)
        if entry.state is not _State.CREATED:
            raise ValueError(f"object {object_id:#x} is sealed; use decref")
        self._drop(object_id, entry)

    # -- reading ------------------------------------------------------------------------

    def get(self, object_id: int) -> tuple[bytes, memoryview]:
        """(header, read-only view of the body). Restores a spilled object first.

        The view points into the arena: hold a pin while using it if the object might be
        freed or spilled meanwhile (``pin``/``unpin``).
        """
        entry = self._sealed(object_id)
        return entry.header, self._arena.buf[entry.offset:entry.offset + entry.size].toreadonly()

    def locate(self, object_id: int) -> Location:
        """Where a reader in another process maps the object (restoring it if spilled).
        Pin it first so it stays there while the reader uses it."""
        return self._location(object_id, self._sealed(object_id))

    def checksum(self, object_id: int) -> int:
        """CRC-32 of the body (recorded by ``put``/``seal``, else computed once and kept)."""
        entry = self._sealed(object_id)
        if entry.checksum is None:
            entry.checksum = statevec.checksum(
                self._arena.buf[entry.offset:entry.offset + entry.size])
        return entry.checksum

    def __contains__(self, object_id: int) -> bool:
        entry = self._entries.get(object_id)
        return entry is not None and entry.state is not _State.CREATED

    # -- references and pins ------------------------------------------------------------

    def incref(self, object_id: int, holder: Holder) -> None:
        self._entry(object_id).refs[holder] += 1

    def decref(self, object_id: int, holder: Holder) -> None:
        """Drop one of ``holder``'s references; the last one frees the object (at once, or
        at its last unpin). KeyError if ``holder`` holds none."""
        entry = self._entry(object_id)
        if entry.refs[holder] <= 0:
            del entry.refs[holder]
            raise KeyError(f"{holder!r} holds no reference to object {object_id:#x}")
        entry.refs[holder] -= 1
        if entry.refs[holder] == 0:
            del entry.refs[holder]
        if not entry.refs:
            if entry.pins:
                entry.doomed = True
            else:
                self._drop(object_id, entry)

    def discard(self, object_id: int) -> bool:
        """Drop an unreferenced copy (a cache), at once or at its last unpin; True if it was
        one. A referenced object is left alone."""
        entry = self._entries.get(object_id)
        if entry is None or entry.refs or entry.state is _State.CREATED:
            return False
        if entry.pins:
            entry.doomed = True
        else:
            self._drop(object_id, entry)
        return True

    def holds(self, object_id: int, holder: Holder) -> bool:
        entry = self._entries.get(object_id)
        return entry is not None and entry.refs[holder] > 0

    def release_holder(self, holder: Holder) -> int:
        """Drop every reference ``holder`` has (a process that died, a directory that was
        lost); returns how many objects it held."""
        held = [oid for oid, e in self._entries.items() if e.refs.get(holder)]
        for oid in held:
            entry = self._entries[oid]
            del entry.refs[holder]
            if not entry.refs:
                if entry.pins:
                    entry.doomed = True
                else:
                    self._drop(oid, entry)
        return len(held)

    def pin(self, object_id: int) -> Location:
        """Keep the object where it is (restoring it if spilled) while a reader maps it."""
        entry = self._sealed(object_id)
        entry.pins += 1
        return self._location(object_id, entry)

    def unpin(self, object_id: int) -> None:
        entry = self._entry(object_id)
        if entry.pins <= 0:
            raise ValueError(f"object {object_id:#x} is not pinned")
        entry.pins -= 1
        if entry.pins == 0 and entry.doomed:
            self._drop(object_id, entry)

    # -- status and shutdown ------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        """Figures for ``qsrv status``: bytes, counts, and cumulative evictions/spills."""
        states = Counter(e.state for e in self._entries.values())
        return {
            "capacity": self.capacity,
            "reserved": self._arena.reserved,
            "used": self._alloc.used,
            "largest_free": self._alloc.largest_free(),
            "objects": len(self._entries),
            "in_memory": states[_State.SEALED] + states[_State.CREATED],
            "spilled": states[_State.SPILLED],
            "spilled_bytes": sum(e.size for e in self._entries.values()
                                 if e.state is _State.SPILLED),
            "pinned": sum(1 for e in self._entries.values() if e.pins),
            "evictions": self._evictions,
            "spills": self._spills,
            "restores": self._restores,
        }

    def close(self) -> None:
        """Drop every object, delete spill files, unmap and unlink the arena."""
        for object_id, entry in list(self._entries.items()):
            self._drop(object_id, entry)
        self._arena.close()

    def __enter__(self) -> ObjectStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------

    def _entry(self, object_id: int) -> _Entry:
        entry = self._entries.get(object_id)
        if entry is None:
            raise ObjectLostError(f"object {object_id:#x} is not in store {self.name}")
        return entry

    def _sealed(self, object_id: int) -> _Entry:
        entry = self._entry(object_id)
        if entry.state is _State.CREATED:
            raise ValueError(f"object {object_id:#x} is still being written (not sealed)")
        if entry.state is _State.SPILLED:
            self._restore(object_id, entry)
        self._entries.move_to_end(object_id)
        return entry

    def _location(self, object_id: int, entry: _Entry) -> Location:
        return Location(self.name, object_id, entry.offset, entry.size, entry.header)

    def _spill_path(self, object_id: int) -> str:
        return os.path.join(self.spill_dir, f"{self.name}-{object_id:x}.obj")

    def _drop(self, object_id: int, entry: _Entry) -> None:
        del self._entries[object_id]
        if entry.state is _State.SPILLED:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._spill_path(object_id))
        else:
            self._alloc.free(entry.offset)

    def _make_room(self, size: int, what: str, keep: int | None = None) -> int:
        """Allocate ``size`` bytes (backed by reserved pages), evicting then spilling others
        (never ``keep``)."""
        offset = self._allocate(size, what)
        if offset is not None:
            return offset
        block = Allocator.block_size(size)
        if block > self.capacity:
            raise ObjectStoreFullError(
                f"{what} of {size} bytes is larger than the object store "
                f"{self.name} ({self.capacity} bytes)")
        # Pass 1 evicts unreferenced copies; pass 2 spills referenced ones. LRU order in both.
        for spill in (False, True):
            for oid in list(self._entries):
                entry = self._entries[oid]
                if (oid == keep or entry.pins or entry.state is not _State.SEALED
                        or bool(entry.refs) != spill):
                    continue
                if spill:
                    self._spill(oid, entry)
                else:
                    self._evictions += 1
                    self._drop(oid, entry)
                offset = self._allocate(size, what)
                if offset is not None:
                    return offset
        raise ObjectStoreFullError(self._full_message(what, size))

    def _allocate(self, size: int, what: str) -> int | None:
        offset = self._alloc.allocate(size)
        if offset is None:
            return None
        try:
            self._arena.ensure(offset + Allocator.block_size(size))
        except OSError as exc:
            self._alloc.free(offset)
            raise ObjectStoreFullError(
                f"object store {self.name}: no shared memory left for {what} of {size} "
                f"bytes ({exc}); /dev/shm is smaller than the store's capacity "
                f"{self.capacity}: give --object-store-memory at most what it holds") from exc
        return offset

    def _full_message(self, what: str, size: int) -> str:
        pinned = [(oid, e.size) for oid, e in self._entries.items() if e.pins]
        writing = [(oid, e.size) for oid, e in self._entries.items()
                   if e.state is _State.CREATED]
        shown = ", ".join(f"{oid:#x} ({n} B)" for oid, n in pinned[:5])
        more = f" and {len(pinned) - 5} more" if len(pinned) > 5 else ""
        return (
            f"object store {self.name} is full: {what} needs {size} bytes, capacity "
            f"{self.capacity}, used {self._alloc.used}, largest free block "
            f"{self._alloc.largest_free()}; everything left is pinned by readers or being "
            f"written: {len(pinned)} pinned ({sum(n for _, n in pinned)} B){': ' if pinned else ''}"
            f"{shown}{more}; {len(writing)} being written ({sum(n for _, n in writing)} B)"
        )

    def _spill(self, object_id: int, entry: _Entry) -> None:
        path = self._spill_path(object_id)
        body = self._arena.buf[entry.offset:entry.offset + entry.size]
        try:
            with open(path, "wb") as f:
                f.write(body)
        except OSError as exc:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            raise ObjectStoreFullError(
                f"object store {self.name}: cannot spill object {object_id:#x} "
                f"({entry.size} bytes) to {self.spill_dir}: {exc}") from exc
        finally:
            body.release()
        self._alloc.free(entry.offset)
        entry.offset = -1
        entry.state = _State.SPILLED
        self._spills += 1

    def _restore(self, object_id: int, entry: _Entry) -> None:
        offset = self._make_room(entry.size, f"restoring spilled object {object_id:#x}",
                                 keep=object_id)
        path = self._spill_path(object_id)
        dst = self._arena.buf[offset:offset + entry.size]
        try:
            got = 0
            with open(path, "rb", buffering=0) as f:
                while got < entry.size:  # one read() returns at most ~2 GiB
                    n = f.readinto(dst[got:])
                    if not n:
                        break
                    got += n
            if got != entry.size:
                raise ObjectLostError(
                    f"spill file {path} of object {object_id:#x} holds {got} bytes, "
                    f"expected {entry.size}")
        except OSError as exc:
            self._alloc.free(offset)
            raise ObjectLostError(f"cannot restore object {object_id:#x} from {path}: "
                                  f"{exc}") from exc
        except BaseException:
            self._alloc.free(offset)
            raise
        finally:
            dst.release()
        os.unlink(path)
        entry.offset = offset
        entry.state = _State.SEALED
        self._restores += 1
