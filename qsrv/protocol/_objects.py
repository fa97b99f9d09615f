"""Objects on the wire: how ids are minted, and what a value's ``data`` holds for the statuses
whose data the runtime itself writes. Pure functions; the one definition of these formats.

Ids: a client mints the ids of its tasks and puts as ``(client_no << ID_BITS) | n`` with
``n < 2**ID_BITS`` (its client number comes in Welcome); the scheduler refuses an id outside the
sender's namespace, or one that is in use.

Value data by status (see ``OK``, ``STORED``, ``SYSTEM_ERROR`` in _messages.py)::

    STORED        msgpack [worker_id: int, size: int, transfer_address: str, ticket: bytes]
                  the value lives in the store of worker ``worker_id``; pull it from the
                  address (``host:port``) of that node's transfer service. ``ticket``
                  (``qsrv.protocol.object_ticket``, made by the store that sealed it) proves
                  the reader was given the location: a node store serves a scoped
                  credential's holder only the objects it names with their ticket, so ids
                  (which are guessable) open nothing. Older writers leave it out (3 items).
    SYSTEM_ERROR  msgpack [kind: str, message: str]
                  kind is a key of qsrv.errors.SYSTEM_ERRORS

Decoders raise ProtocolError for anything else: the bytes come from peers.
"""

from __future__ import annotations

import msgpack

from qsrv.errors import ProtocolError

ID_BITS = 40


def encode_location(worker_id: int, size: int, address: str, ticket: bytes = b"") -> bytes:
    """The data of a STORED value: which node holds it, how large, where to pull it from,
    and the ticket that opens it (see the module's docstring)."""
    fields: list[object] = [worker_id, size, address]
    if ticket:
        fields.append(ticket)
    return bytes(msgpack.packb(fields))


def _location(data: bytes) -> tuple[int, int, str, bytes]:
    try:
        fields = msgpack.unpackb(data)
    except Exception:
        raise ProtocolError("malformed stored-object location") from None
    if type(fields) is not list or len(fields) not in (3, 4):
        raise ProtocolError("malformed stored-object location")
    wid, size, address = fields[:3]
    ticket = fields[3] if len(fields) == 4 else b""
    if type(wid) is not int or type(size) is not int or type(address) is not str \
            or type(ticket) is not bytes:
        raise ProtocolError("malformed stored-object location")
    return wid, size, address, ticket


def decode_location(data: bytes) -> tuple[int, int, str]:
    """(worker id, size, transfer address) of a STORED value's data."""
    wid, size, address, _ = _location(data)
    return wid, size, address


def location_ticket(data: bytes) -> bytes:
    """The ticket of a STORED value's data (b"" when its writer gave none)."""
    return _location(data)[3]


def encode_system_error(kind: str, message: str) -> bytes:
    """The data of a SYSTEM_ERROR value."""
    return bytes(msgpack.packb([kind, message]))


def decode_system_error(data: bytes) -> tuple[str, str]:
    """(kind, message) of a SYSTEM_ERROR value's data."""
    try:
        kind, message = msgpack.unpackb(data)
    except Exception:
        raise ProtocolError("malformed system error value") from None
    if type(kind) is not str or type(message) is not str:
        raise ProtocolError("malformed system error value")
    return kind, message
