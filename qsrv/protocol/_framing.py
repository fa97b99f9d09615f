"""Length-prefixed frames: a msgpack header plus out-of-band binary buffers. No IO here.

Layout of one frame (all integers big-endian)::

    u32 header_len | u32 nbuf | u64 buf_len * nbuf | header (header_len bytes) | buf_0 | buf_1 ...

Invariants:
- every length read from the wire is checked against `Limits` before anything is allocated;
- buffers are written as separate pieces (scatter/gather), never joined by the encoder;
- the decoder hands out buffers as it received them: small ones copied out of its receive area,
  large ones read straight into their own bytearray (no second copy);
- a receive area grown for a large header shrinks back once it is empty.

Senders keep every frame within the receiver's `Limits` and, below them, aim at
`FRAME_MESSAGES` messages and `FRAME_HEADER` header bytes per frame (see
`Connection.send`): a receiver decodes a frame in one go, so smaller frames keep its other
work (heartbeats, small requests) from waiting behind one.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from qsrv.errors import RemoteProtocolError

_PREFIX = struct.Struct("!II")
_LEN = struct.Struct("!Q")
# Buffers at least this large are received into their own allocation instead of the ring.
_DIRECT_MIN = 256 * 1024
_RECV_CHUNK = 256 * 1024
# An empty receive area larger than this is given back (it grew for a large header).
_KEEP_RING = 4 * _RECV_CHUNK
# What a sender aims at per frame, below the receiver's limits: throughput comes from
# batching, and a few thousand messages batch as well as a few hundred thousand.
FRAME_MESSAGES = 1024
FRAME_HEADER = 2**20

Buffer = bytes | bytearray | memoryview


@dataclass(frozen=True, slots=True)
class Limits:
    """Upper bounds on what a peer may send; checked before allocating."""

    max_header: int = 64 * 2**20
    max_buffers: int = 4096
    max_buffer: int = 4 * 2**30
    max_frame: int = 8 * 2**30
    max_messages: int = 262_144  # messages in one frame


DEFAULT_LIMITS = Limits()
# Before the handshake completes a peer may send only tiny frames.
HANDSHAKE_LIMITS = Limits(max_header=4096, max_buffers=0, max_buffer=0, max_frame=4096,
                          max_messages=4)


def encode_frame(header: bytes, buffers: list[Buffer] | tuple[Buffer, ...] = ()) -> list[Buffer]:
    """The pieces of one frame, to be written in order (e.g. with writelines/sendmsg)."""
    n = len(buffers)
    if n:
        lens = struct.pack(f"!{n}Q", *[memoryview(b).nbytes for b in buffers])
        return [_PREFIX.pack(len(header), n) + lens + header, *buffers]
    return [_PREFIX.pack(len(header), 0) + header]


class FrameDecoder:
    """Turns a byte stream into frames ``(header: memoryview|bytes, buffers: list)``.

    Feed it with `feed(data)`, or zero-copy with `get_buffer()` + `buffer_updated(n)` (the
    asyncio BufferedProtocol pair); then collect complete frames with `frames()`.
    """

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self._ring = bytearray(_RECV_CHUNK)
        self._start = 0  # first unparsed byte in _ring
        self._end = 0  # one past the last received byte in _ring
        # A frame whose prefix is parsed: (header_len, buffer lengths) — None between frames.
        self._lens: tuple[int, list[int]] | None = None
        self._header: bytes | None = None
        self._bufs: list[Buffer] = []
        # A large buffer being filled directly: (target, filled).
        self._direct: bytearray | None = None
        self._direct_filled = 0
        self._ready: list[tuple[bytes, list[Buffer]]] = []
        # While set, at most one complete frame is parsed ahead of `next_frame()`, so each
        # frame's sizes are judged by the limits in force when it is asked for (handshake).
        self.one_at_a_time = False

    # -- input -------------------------------------------------------------------------------
    def get_buffer(self, sizehint: int = -1) -> memoryview:
        if self._direct is not None:
            return memoryview(self._direct)[self._direct_filled :]
        if self._start == self._end:
            self._start = self._end = 0
            if len(self._ring) > _KEEP_RING and self._lens is None:
                self._ring = bytearray(_RECV_CHUNK)  # grown for a large header: give it back
        free = len(self._ring) - self._end
        if free < 4096:
            pending = self._end - self._start
            need = max(_RECV_CHUNK, pending + max(4096, self._want()))
            if need > len(self._ring):
                ring = bytearray(need)
                ring[:pending] = self._ring[self._start : self._end]
                self._ring = ring
            else:
                self._ring[:pending] = self._ring[self._start : self._end]
            self._start, self._end = 0, pending
        return memoryview(self._ring)[self._end :]

    def buffer_updated(self, nbytes: int) -> None:
        if self._direct is not None:
            self._direct_filled += nbytes
            if self._direct_filled == len(self._direct):
                self._bufs.append(self._direct)
                self._direct = None
                self._parse()
            return
        self._end += nbytes
        self._parse()

    def feed(self, data: Buffer) -> None:
        view = memoryview(data).cast("B")
        while view.nbytes:
            target = self.get_buffer()
            n = min(target.nbytes, view.nbytes)
            target[:n] = view[:n]
            view = view[n:]
            self.buffer_updated(n)

    def next_frame(self) -> tuple[bytes, list[Buffer]] | None:
        """The oldest complete frame not yet handed out, or None; parses only when needed, so
        the limits in force now apply to bytes not yet judged."""
        if not self._ready and self._direct is None:
            self._parse()
        return self._ready.pop(0) if self._ready else None

    def frames(self) -> list[tuple[bytes, list[Buffer]]]:
        """Complete frames received so far, oldest first (at most one if `one_at_a_time`)."""
        if self._direct is None:
            self._parse()  # bytes left unparsed while `one_at_a_time` was set
        ready, self._ready = self._ready, []
        return ready

    # -- parsing -----------------------------------------------------------------------------
    def _want(self) -> int:
        """Bytes the frame being parsed needs contiguous in the ring (to size it)."""
        if self._lens is None:
            return _PREFIX.size
        header_len, _ = self._lens
        return header_len if self._header is None else 0

    def _parse(self) -> None:
        ring = self._ring
        while True:
            if self.one_at_a_time and self._ready:
                return
            avail = self._end - self._start
            if self._lens is None:
                if avail < _PREFIX.size:
                    return
                header_len, nbuf = _PREFIX.unpack_from(ring, self._start)
                lim = self.limits
                if header_len > lim.max_header:
                    raise RemoteProtocolError(
                        f"frame header of {header_len} bytes exceeds the limit of {lim.max_header}"
                    )
                if nbuf > lim.max_buffers:
                    raise RemoteProtocolError(
                        f"frame with {nbuf} buffers exceeds the limit of {lim.max_buffers}"
                    )
                need = _PREFIX.size + 8 * nbuf
                if avail < need:
                    return
                lens = list(struct.unpack_from(f"!{nbuf}Q", ring, self._start + _PREFIX.size))
                total = header_len
                for length in lens:
                    if length > lim.max_buffer:
                        raise RemoteProtocolError(
                            f"frame buffer of {length} bytes exceeds the limit of {lim.max_buffer}"
                        )
                    total += length
                if total > lim.max_frame:
                    raise RemoteProtocolError(
                        f"frame of {total} bytes exceeds the limit of {lim.max_frame}"
                    )
                self._start += need
                self._lens = (header_len, lens)
                continue
            header_len, lens = self._lens
            if self._header is None:
                if avail < header_len:
                    return
                self._header = bytes(ring[self._start : self._start + header_len])
                self._start += header_len
                continue
            i = len(self._bufs)
            if i == len(lens):
                self._ready.append((self._header, self._bufs))
                self._lens, self._header, self._bufs = None, None, []
                continue
            length = lens[i]
            if avail >= length:
                self._bufs.append(bytes(ring[self._start : self._start + length]))
                self._start += length
                continue
            if length < _DIRECT_MIN:
                return  # wait for more; get_buffer() grows the ring if needed
            # Large buffer: move what we have into its own allocation and fill it directly.
            target = bytearray(length)
            target[:avail] = ring[self._start : self._end]
            self._start = self._end = 0
            self._direct, self._direct_filled = target, avail
            return
