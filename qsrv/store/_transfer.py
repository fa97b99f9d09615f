"""Moving an object from one node's store to another's: sans-IO, chunked, checksummed.

No sockets here. The receiving side (the node that needs the object) sends
``encode_request(object_id)``; the sending side's ``TransferSender`` parses requests and yields
the frames of each object as buffers to write with scatter/gather IO (chunks are views of the
arena, never copies). The receiver's ``TransferReceiver`` follows asyncio's BufferedProtocol:
``get_buffer()`` hands out the memory the next bytes belong in -- for a chunk, the object's
``create()``d space in the arena, so the socket writes straight into shared memory -- and
``buffer_updated(n)`` returns the events that completed. ``receive_data(bytes)`` does the same
for callers that already hold the bytes.

Frames (little-endian)::

    kind u8 | object_id u64 | length u64 | payload[length]

    REQUEST  receiver -> sender   empty, or the object's ticket (``MAX_TICKET`` bytes at
                                  most; see qsrv.protocol.object_ticket)
    BEGIN    sender -> receiver   size u64 | crc32 u32 | object header (<= MAX_HEADER bytes)
    CHUNK    sender -> receiver   the next bytes of the body (<= MAX_CHUNK); the object is
                                  complete when ``size`` bytes have come
    ERROR    sender -> receiver   utf-8 reason (no such object)

Invariants: a receiver never allocates from a length it has not checked against a limit (the
size against its store's capacity by ``create``, headers and chunks against MAX_HEADER and
MAX_CHUNK); an object is sealed only after its CRC-32 matched the sender's, otherwise its space
is given back and a ``TransferFailed`` carrying ChecksumError is returned. A malformed frame
raises RemoteProtocolError: the connection is unusable and must be closed. A sender made with
``verify`` serves only the objects requested with a ticket it accepts; any other is answered
ERROR as if it did not exist (a guessed id tells nothing).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final

from qsrv.codec import statevec
from qsrv.errors import (
    ChecksumError,
    ObjectLostError,
    ObjectStoreFullError,
    QsrvError,
    RemoteProtocolError,
)
from qsrv.store._store import Holder, Location, ObjectStore

__all__ = [
    "MAX_CHUNK",
    "MAX_HEADER",
    "ObjectReceived",
    "TransferFailed",
    "TransferReceiver",
    "TransferSender",
    "encode_request",
    "pull_over",
]

_FRAME: Final = struct.Struct("<BQQ")
_BEGIN: Final = struct.Struct("<QI")
REQUEST, BEGIN, CHUNK, ERROR = 1, 2, 3, 4
MAX_HEADER: Final = 64 << 10
MAX_CHUNK: Final = 64 << 20
DEFAULT_CHUNK: Final = 4 << 20
MAX_TICKET: Final = 64


@dataclass(frozen=True, slots=True)
class ObjectReceived:
    """The object arrived whole, its checksum matched, and it is sealed in the store."""

    location: Location


@dataclass(frozen=True, slots=True)
class TransferFailed:
    """The object did not arrive: ChecksumError, ObjectLostError (the sender has no such
    object) or ObjectStoreFullError (no room here). The connection stays usable."""

    object_id: int
    error: QsrvError


Event = ObjectReceived | TransferFailed


def encode_request(object_id: int, ticket: bytes = b"") -> bytes:
    """The frame that asks the peer's TransferSender for ``object_id`` (with its ticket)."""
    if len(ticket) > MAX_TICKET:
        raise ValueError(f"a ticket is at most {MAX_TICKET} bytes")
    return _FRAME.pack(REQUEST, object_id, len(ticket)) + ticket


class TransferSender:
    """The serving side, over the local store: requests in, frames out."""

    def __init__(self, store: ObjectStore, *, chunk_size: int = DEFAULT_CHUNK,
                 verify: Callable[[int, bytes], bool] | None = None) -> None:
        if not 0 < chunk_size <= MAX_CHUNK:
            raise ValueError(f"chunk_size must be in (0, {MAX_CHUNK}]: {chunk_size}")
        self._store = store
        self._chunk = chunk_size
        self._buf = bytearray()
        self._verify = verify
        self._denied: list[int] = []  # requested without a ticket ``verify`` accepts

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[int]:
        """Feed bytes from the peer; return the object ids it asked for, in order."""
        self._buf += data
        wanted: list[int] = []
        pos = 0
        while len(self._buf) - pos >= _FRAME.size:
            kind, object_id, length = _FRAME.unpack_from(self._buf, pos)
            if kind != REQUEST or length > MAX_TICKET:
                raise RemoteProtocolError(f"expected a transfer request, got frame kind {kind} "
                                          f"of {length} bytes")
            end = pos + _FRAME.size + length
            if len(self._buf) < end:
                break
            if self._verify is not None and not self._verify(
                    object_id, bytes(self._buf[pos + _FRAME.size:end])):
                self._denied.append(object_id)
            wanted.append(object_id)
            pos = end
        del self._buf[:pos]
        return wanted

    def frames(self, object_id: int) -> Iterator[bytes | memoryview]:
        """The buffers that carry ``object_id``, to be written in order.

        The object stays pinned until the iterator is exhausted or closed, so the views it
        yields stay valid while the IO layer writes them.
        """
        try:
            if object_id in self._denied:
                self._denied.remove(object_id)
                raise ObjectLostError(f"no object {object_id:#x} here")
            location = self._store.pin(object_id)
        except ObjectLostError as exc:
            reason = str(exc).encode()[:MAX_HEADER]
            yield _FRAME.pack(ERROR, object_id, len(reason)) + reason
            return
        try:
            crc = self._store.checksum(object_id)
            header = location.header
            yield (_FRAME.pack(BEGIN, object_id, _BEGIN.size + len(header))
                   + _BEGIN.pack(location.size, crc) + header)
            _, body = self._store.get(object_id)
            for start in range(0, location.size, self._chunk):
                piece = body[start:start + self._chunk]
                yield _FRAME.pack(CHUNK, object_id, len(piece))
                yield piece
        finally:
            self._store.unpin(object_id)


class _Incoming:
    __slots__ = ("crc", "dest", "got", "header", "size")

    def __init__(self, size: int, crc: int, header: bytes, dest: memoryview | None) -> None:
        self.size = size
        self.crc = crc
        self.header = header
        self.dest = dest  # None: discarding (no room here); the chunks are read and dropped
        self.got = 0


class TransferReceiver:
    """The pulling side, writing into the local store: bytes in, events out."""

    def __init__(self, store: ObjectStore, *, holder: Holder | None = None) -> None:
        self._store = store
        self._holder = holder  # takes the first reference of every object received
        self._head = bytearray(_FRAME.size)
        self._head_got = 0
        self._payload: bytearray | None = None  # a BEGIN or ERROR payload being read
        self._payload_got = 0
        self._frame: tuple[int, int, int] | None = None  # (kind, object_id, length) in progress
        self._chunk_left = 0
        self._incoming: dict[int, _Incoming] = {}
        self._scratch = bytearray(1 << 16)

    def get_buffer(self) -> memoryview:
        """Where the next bytes from the peer go (write into it, then ``buffer_updated``)."""
        if self._frame is None:
            return memoryview(self._head)[self._head_got:]
        kind, object_id, _ = self._frame
        if kind == CHUNK:
            inc = self._incoming[object_id]
            if inc.dest is None:
                return memoryview(self._scratch)[:min(self._chunk_left, len(self._scratch))]
            return inc.dest[inc.got:inc.got + self._chunk_left]
        assert self._payload is not None
        return memoryview(self._payload)[self._payload_got:]

    def buffer_updated(self, nbytes: int) -> list[Event]:
        """Account for ``nbytes`` just written into the last ``get_buffer()``."""
        if self._frame is None:
            self._head_got += nbytes
            if self._head_got == _FRAME.size:
                self._head_got = 0
                return self._start_frame(*_FRAME.unpack(self._head))
            return []
        kind, object_id, length = self._frame
        if kind == CHUNK:
            self._chunk_left -= nbytes
            inc = self._incoming[object_id]
            inc.got += nbytes
            if self._chunk_left:
                return []
            self._frame = None
            return self._maybe_complete(object_id, inc)
        self._payload_got += nbytes
        if self._payload_got < length:
            return []
        payload, self._payload, self._frame = self._payload, None, None
        assert payload is not None
        if kind == ERROR:
            return [TransferFailed(object_id, ObjectLostError(
                f"peer has no object {object_id:#x}: {payload.decode(errors='replace')}"))]
        size, crc = _BEGIN.unpack_from(payload)
        return self._begin(object_id, size, crc, bytes(payload[_BEGIN.size:]))

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Feed bytes already read; return the events they completed."""
        src = memoryview(data).cast("B")
        events: list[Event] = []
        while src.nbytes:
            dst = self.get_buffer()
            n = min(dst.nbytes, src.nbytes)
            dst[:n] = src[:n]
            src = src[n:]
            events += self.buffer_updated(n)
        return events

    def abort(self) -> None:
        """The connection is gone: give back the space of every partial object."""
        for object_id, inc in self._incoming.items():
            if inc.dest is not None:
                inc.dest.release()
                self._store.abort(object_id)
        self._incoming.clear()

    def _start_frame(self, kind: int, object_id: int, length: int) -> list[Event]:
        if kind == CHUNK:
            inc = self._incoming.get(object_id)
            if inc is None:
                raise RemoteProtocolError(f"chunk for object {object_id:#x}, which has not begun")
            if not 0 < length <= min(MAX_CHUNK, inc.size - inc.got):
                raise RemoteProtocolError(
                    f"chunk of {length} bytes for object {object_id:#x}: "
                    f"{inc.size - inc.got} bytes are left, chunks are at most {MAX_CHUNK}")
            self._chunk_left = length
        elif kind in (BEGIN, ERROR):
            low = _BEGIN.size if kind == BEGIN else 0
            if not low <= length <= low + MAX_HEADER:
                raise RemoteProtocolError(f"transfer frame kind {kind} of {length} bytes")
            if object_id in self._incoming:
                raise RemoteProtocolError(f"object {object_id:#x} is already being received")
            self._payload = bytearray(length)
            self._payload_got = 0
        else:
            raise RemoteProtocolError(f"unknown transfer frame kind {kind}")
        self._frame = (kind, object_id, length)
        if length == 0:  # an empty ERROR reason: nothing more to read
            return self.buffer_updated(0)
        return []

    def _begin(self, object_id: int, size: int, crc: int, header: bytes) -> list[Event]:
        # ValueError (not caught) if the object is already here: do not ask for one you have.
        try:
            dest: memoryview | None = self._store.create(object_id, size, holder=self._holder)
        except ObjectStoreFullError as exc:
            # Read and drop its chunks: the connection stays in step.
            inc = _Incoming(size, crc, header, None)
            self._incoming[object_id] = inc
            return [TransferFailed(object_id, exc), *self._maybe_complete(object_id, inc)]
        inc = _Incoming(size, crc, header, dest)
        self._incoming[object_id] = inc
        return self._maybe_complete(object_id, inc)

    def _maybe_complete(self, object_id: int, inc: _Incoming) -> list[Event]:
        if inc.got < inc.size:
            return []
        del self._incoming[object_id]
        if inc.dest is None:
            return []
        actual = statevec.checksum(inc.dest)
        inc.dest.release()
        if actual != inc.crc:
            self._store.abort(object_id)
            return [TransferFailed(object_id, ChecksumError(
                f"object {object_id:#x} arrived corrupted: sender's CRC-32 {inc.crc:#010x}, "
                f"received bytes {actual:#010x}"))]
        return [ObjectReceived(self._store.seal(object_id, inc.header, checksum=actual))]


def pull_over(sock: socket.socket, receiver: TransferReceiver, object_id: int,
              ticket: bytes = b"") -> Location:
    """Ask the peer on the blocking ``sock`` for ``object_id`` (with its ticket), write it
    through ``receiver`` and return where it was sealed. Raises the transfer's error
    (ChecksumError, ObjectLostError, ObjectStoreFullError), or ObjectLostError if the peer
    hung up."""
    sock.sendall(encode_request(object_id, ticket))
    while True:
        n = sock.recv_into(receiver.get_buffer())
        if n == 0:
            raise ObjectLostError(f"the peer closed the transfer of object {object_id:#x}")
        for event in receiver.buffer_updated(n):
            if isinstance(event, TransferFailed):
                raise event.error
            if isinstance(event, ObjectReceived):
                return event.location
