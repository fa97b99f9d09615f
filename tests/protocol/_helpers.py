"""Helpers shared by the protocol tests: joining frame pieces, driving a handshake in memory."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from qsrv.protocol import Buffer, Connection, State

TOKEN = "s3cret-cluster-token-for-tests"


def join(pieces: Iterable[Buffer]) -> bytes:
    """The bytes a list of frame pieces puts on the wire."""
    return b"".join(bytes(memoryview(p).cast("B")) for p in pieces)


def pump(src: Connection, dst: Connection, wire: list[bytes] | None = None) -> list[Any]:
    """Move `src`'s pending handshake replies into `dst`; return what `dst` received."""
    data = join(src.data_to_send())
    if wire is not None:
        wire.append(data)
    dst.receive_data(data)
    return dst.receive()


def handshake(
    *, client_token: str = TOKEN, server_token: str = TOKEN, role: str = "driver",
    client_no: int = 7, info: dict[str, Any] | None = None, wire: list[bytes] | None = None,
) -> tuple[Connection, Connection]:
    """A client and a server Connection taken through the whole handshake (both OPEN).

    Every byte either side sends is appended to `wire` when given.
    """
    client = Connection(server=False, token=client_token, role=role)
    server = Connection(server=True, token=server_token)
    hello = join(client.initiate())
    if wire is not None:
        wire.append(hello)
    server.receive_data(hello)
    assert server.receive() == []
    assert server.state is State.WAIT_AUTH
    assert pump(server, client, wire) == []
    assert client.state is State.AUTH_SENT
    assert pump(client, server, wire) == []
    assert server.state is State.ACCEPTING
    welcome = join(server.welcome(client_no, info if info is not None else {"conn": 1}))
    if wire is not None:
        wire.append(welcome)
    client.receive_data(welcome)
    assert client.receive() == []
    assert client.state is State.OPEN and server.state is State.OPEN
    return client, server
