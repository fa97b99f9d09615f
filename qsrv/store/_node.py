"""A process's door to its node's store: put a large value in place, map one without a copy.

Used by executors and by drivers on a node with a worker agent. A value is stored as its
pickle followed by its out-of-band buffers, each at a 64-byte aligned offset of one object;
the object's header is the layout (msgpack ``[[offset, length], ...]``, the pickle first).
Loading maps the object read-only and rebuilds the value over views of shared memory: a numpy
array comes back read-only, its bytes in the arena. The object stays pinned while anything
built from those views is alive; the unpin is sent when the last of them is collected.

Thread-safe: one request at a time on the service connection. Unpins found by a finalizer
while another thread holds the connection are sent by that thread before it lets go.
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any, Final

import msgpack

from qsrv.codec import statevec as _statevec
from qsrv.errors import (
    ChecksumError,
    ConnectionLostError,
    ObjectLostError,
    ObjectStoreFullError,
    ProtocolError,
    QsrvError,
)
from qsrv.protocol import (
    StoreCreate,
    StoreFailed,
    StorePin,
    StoreReply,
    StoreSeal,
    StoreUnpin,
    decode_location,
    location_ticket,
)
from qsrv.store._arena import ALIGNMENT
from qsrv.store._client import StoreClient
from qsrv.store._store import Location
from qsrv.store._transfer import TransferReceiver, pull_over
from qsrv.transport import SyncConnection

__all__ = ["MIN_STORED", "NodeStore", "fetch", "layout_of", "rebuild"]

# Values whose pickle and buffers together reach this many bytes go to the node's store.
MIN_STORED: Final = int(os.environ.get("QSRV_STORE_MIN", 64 << 10))
_NATIVE_COPY_MIN: Final = 1 << 20  # below this a memoryview copy is as fast


def _aligned(n: int) -> int:
    return (n + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


def layout_of(pieces: list[Any]) -> tuple[list[tuple[int, int]], int]:
    """(offset, length) of each piece in the object, and the object's size."""
    spans: list[tuple[int, int]] = []
    pos = 0
    for piece in pieces:
        n = memoryview(piece).nbytes
        spans.append((pos, n))
        pos = _aligned(pos + n)
    return spans, max(pos, 1)


def rebuild(header: bytes, body: Any) -> tuple[Any, tuple[Any, ...]]:
    """(pickle, buffers) as views of ``body`` following the layout in ``header``."""
    try:
        spans = msgpack.unpackb(header)
        views = [body[off:off + n] for off, n in spans]
    except Exception:
        raise ProtocolError("malformed stored-object layout") from None
    if not views:
        raise ProtocolError("stored object without a pickle")
    return views[0], tuple(views[1:])


class NodeStore:
    def __init__(self, socket_path: str, token: str) -> None:
        self._sc = SyncConnection(f"unix:{socket_path}", token, "store")
        self.name: str = self._sc.info["store"]
        self._ro = StoreClient(self.name)
        self._rw: StoreClient | None = None
        self._lock = threading.Lock()
        self._req = 0
        self._unpins: list[int] = []
        self.closed = False

    # ---- producing -----------------------------------------------------------------------
    def put(self, object_id: int, data: Any, bufs: tuple[Any, ...]) -> bytes:
        """Store (pickle, buffers) as object ``object_id``; returns its STORED location."""
        pieces = [data, *bufs]
        spans, size = layout_of(pieces)
        reply = self._call(lambda req: StoreCreate(req, object_id, size))
        if self._rw is None:
            self._rw = StoreClient(self.name, writable=True)
        dst = self._rw.buffer[reply.offset:reply.offset + size]
        try:
            for piece, (off, n) in zip(pieces, spans, strict=True):
                if n >= _NATIVE_COPY_MIN:  # GIL released, several threads
                    _statevec.copy_into(dst[off:off + n], piece)
                elif n:
                    dst[off:off + n] = memoryview(piece).cast("B")
        finally:
            dst.release()
        header = bytes(msgpack.packb(spans))
        return self._call(lambda req: StoreSeal(req, object_id, header)).header

    # ---- consuming -----------------------------------------------------------------------
    def load(self, object_id: int, source: bytes) -> tuple[Any, tuple[Any, ...]]:
        """(pickle, buffers) of a stored value, as read-only views of shared memory; pulled
        from the node in ``source`` first if it is not on this one."""
        import numpy as np  # on first use: `import qsrv` does not load numpy

        reply = self._call(lambda req: StorePin(req, object_id, source))
        base = np.frombuffer(self._ro.buffer[reply.offset:reply.offset + reply.size],
                             dtype=np.uint8)
        weakref.finalize(base, self._unpin, object_id)
        data, bufs = rebuild(reply.header, base)
        return memoryview(data), tuple(memoryview(b) for b in bufs)

    # ---- the connection ------------------------------------------------------------------
    def _call(self, make: Callable[[int], Any]) -> StoreReply:
        with self._lock:
            self._req += 1
            req = self._req
            out: list[Any] = [make(req)]
            if self._unpins:
                out.append(StoreUnpin(self._take_unpins()))
            try:
                self._sc.send(out)
                replies: list[Any] = []
                while not replies:
                    replies = self._sc.receive()
            except QsrvError:
                self.closed = True
                raise
        self._flush_unpins()
        reply = replies[0]
        if len(replies) != 1 or getattr(reply, "req", None) != req:
            raise ProtocolError("the node store answered out of turn")
        if isinstance(reply, StoreFailed):
            cls = {"full": ObjectStoreFullError, "lost": ObjectLostError,
                   "checksum": ChecksumError}.get(reply.kind, QsrvError)
            raise cls(reply.message)
        if not isinstance(reply, StoreReply):
            raise ProtocolError(f"unexpected {type(reply).__name__} from the node store")
        return reply

    def _take_unpins(self) -> list[int]:
        ids: list[int] = []
        while self._unpins:  # pop is atomic: an id appended meanwhile waits for the next send
            ids.append(self._unpins.pop())
        return ids

    def _unpin(self, object_id: int) -> None:
        self._unpins.append(object_id)
        self._flush_unpins()

    def _flush_unpins(self) -> None:
        if not self._unpins or self.closed or not self._lock.acquire(blocking=False):
            return  # whoever holds the lock sends them when it lets go
        try:
            if self._unpins:
                with contextlib.suppress(QsrvError, OSError):
                    self._sc.send([StoreUnpin(self._take_unpins())])
        finally:
            self._lock.release()
        if self._unpins:
            self._flush_unpins()

    def close(self) -> None:
        self.closed = True
        self._sc.close()


class _PrivateSpace:
    """The slice of the ObjectStore interface a TransferReceiver writes through, over private
    memory: for a process with no store on its node."""

    def __init__(self) -> None:
        self.body: bytearray | None = None
        self.header = b""

    def create(self, object_id: int, size: int, *, holder: object = None) -> memoryview:
        self.body = bytearray(size)
        return memoryview(self.body)

    def seal(self, object_id: int, header: bytes, *, checksum: int | None = None) -> Location:
        self.header = bytes(header)
        return Location("", object_id, 0, len(self.body or b""), self.header)

    def abort(self, object_id: int) -> None:
        self.body = None


def fetch(object_id: int, source: bytes, token: str) -> tuple[Any, tuple[Any, ...]]:
    """(pickle, buffers) of a stored value pulled straight from the node that holds it into
    this process's memory (one copy): for drivers on a node without a worker agent."""
    wid, _, address = decode_location(source)
    space = _PrivateSpace()
    receiver = TransferReceiver(space)  # type: ignore[arg-type]
    try:
        sc = SyncConnection(address, token, "transfer")
    except ConnectionLostError as exc:
        raise ObjectLostError(f"object {object_id:#x} is on worker {wid}, which cannot be "
                              f"reached at {address}: {exc}") from exc
    try:
        pull_over(sc.sock, receiver, object_id, location_ticket(source))
    except OSError as exc:
        raise ObjectLostError(f"pulling object {object_id:#x} from {address}: {exc}") from exc
    finally:
        sc.close()
    assert space.body is not None
    return rebuild(space.header, memoryview(space.body))
