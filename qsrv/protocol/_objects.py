"""Objects on the wire: how ids are minted, and what a value's ``data`` holds for the statuses
whose data the runtime itself writes. Pure functions; the one definition of these formats.

Ids: a client mints the ids of its tasks and puts as ``(client_no << ID_BITS) | n`` with
``n < 2**ID_BITS`` (its client number comes in Welcome); the scheduler refuses an id outside the
sender's namespace, or one that is in use.

Value data by status (see ``OK``, ``STORED``, ``SYSTEM_ERROR`` in _messages.py)::

    STORED        msgpack [worker_id: int, size: int, transfer_address: str]
                  the value lives in the store of worker ``worker_id``; pull it from the
                  address (``host:port``) of that node's transfer service
    SYSTEM_ERROR  msgpack [kind: str, message: str]
                  kind is a key of qsrv.errors.SYSTEM_ERRORS

Decoders raise ProtocolError for anything else: the bytes come from peers.
"""

from __future__ import annotations

import msgpack

from qsrv.errors import ProtocolError

ID_BITS = 40


def encode_location(worker_id: int, size: int, address: str) -> bytes:
    """The data of a STORED value: which node holds it, how large, where to pull it from."""
    return bytes(msgpack.packb([worker_id, size, address]))


def decode_location(data: bytes) -> tuple[int, int, str]:
    """(worker id, size, transfer address) of a STORED value's data."""
    try:
        wid, size, address = msgpack.unpackb(data)
    except Exception:
        raise ProtocolError("malformed stored-object location") from None
    if type(wid) is not int or type(size) is not int or type(address) is not str:
        raise ProtocolError("malformed stored-object location")
    return wid, size, address


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
