"""Object tickets: a scoped credential's holder (a job's driver, a tenant's executor) reads
from a node store only the objects whose location it was given. Object ids are guessable
(``client_no << ID_BITS | n``); the ticket in a location (an HMAC of the id under the
cluster token) is not, and both store ports ask for it from such a holder. The cluster
token's holders (agents pulling for their node) are served as before."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest

from qsrv.codec import dumps, loads
from qsrv.errors import ObjectLostError, ProtocolError
from qsrv.protocol import (
    decode_location,
    encode_location,
    job_credential,
    location_ticket,
    object_ticket,
    valid_ticket,
)
from qsrv.store import ObjectStore, StoreService
from qsrv.store._node import NodeStore, fetch

TOKEN = "store-ticket-token"


@pytest.fixture
def service(tmp_path: object) -> Iterator[StoreService]:
    s = StoreService(ObjectStore(16 << 20, f"{tmp_path}/spill", grow=True), TOKEN)
    s.worker_id = 1
    yield s
    s.close()


def _stored(service: StoreService, oid: int) -> tuple[bytes, np.ndarray]:
    vec = np.arange(1 << 14, dtype=np.complex128)
    where = NodeStore(service.socket_path, TOKEN).put(oid, *dumps(vec)[:2])
    service.hold([oid])
    return where, vec


def test_a_location_carries_the_ticket_of_its_object(service: StoreService) -> None:
    where, _ = _stored(service, 7)
    assert location_ticket(where) == object_ticket(TOKEN, 7)
    assert valid_ticket(TOKEN, 7, location_ticket(where))
    assert not valid_ticket(TOKEN, 8, location_ticket(where))
    assert not valid_ticket("another-token", 7, location_ticket(where))
    assert decode_location(where) == (1, decode_location(where)[1], service.address)
    assert location_ticket(encode_location(1, 2, "h:1")) == b""  # an older writer's
    with pytest.raises(ProtocolError):
        location_ticket(b"\x94\x01\x02\xa3h:1\x05")  # a ticket that is not bytes
    with pytest.raises(ProtocolError):
        decode_location(b"\x95\x01\x02\xa3h:1\xc4\x00\x05")  # five items


def test_a_credential_reads_over_transfer_only_what_it_was_given(
        service: StoreService) -> None:
    credential = job_credential(TOKEN, "alice", "j1", time.time() + 600)
    given, vec = _stored(service, 11)
    other, _ = _stored(service, 12)  # another tenant's: alice never got its location
    assert np.array_equal(loads(*fetch(11, given, credential)), vec)
    wid, size, address = decode_location(other)
    guesses = [encode_location(wid, size, address),  # the id alone
               encode_location(wid, size, address, location_ticket(given)),  # a ticket of
               encode_location(wid, size, address, b"\0" * 16)]  # another, or forged
    for guess in guesses:
        with pytest.raises(ObjectLostError, match="no object"):
            fetch(12, guess, credential)
    assert loads(*fetch(12, guesses[0], TOKEN)) is not None  # the token: served as before


def test_a_credential_pins_on_the_local_port_only_what_it_was_given(
        service: StoreService) -> None:
    credential = job_credential(TOKEN, "alice", "j1", time.time() + 600)
    given, vec = _stored(service, 21)
    other, _ = _stored(service, 22)
    reader = NodeStore(service.socket_path, credential)
    assert np.array_equal(loads(*reader.load(21, given)), vec)
    wid, size, address = decode_location(other)
    with pytest.raises(ObjectLostError, match="no object"):
        reader.load(22, encode_location(wid, size, address))
    with pytest.raises(ObjectLostError, match="no object"):
        reader.load(22, encode_location(wid, size, address, location_ticket(given)))
    token_reader = NodeStore(service.socket_path, TOKEN)
    assert token_reader.load(22, encode_location(wid, size, address)) is not None
