"""A node store's ports and scoped credentials: a job's credential is accepted on both ports
(local ``store``, ``transfer``) until it is revoked; the revocation refuses it from then on
and closes the connections that proved it; the waiting-connection caps are the agent's to
set."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from qsrv.errors import AuthenticationError, QsrvError
from qsrv.protocol import job_credential
from qsrv.store import ObjectStore, StoreService
from qsrv.transport import SyncConnection
from tests._support import wait_for
from tests.security._cluster import closed, flood

TOKEN = "store-revocation-token"


@pytest.fixture(params=[8])
def service(tmp_path: object, request: pytest.FixtureRequest) -> Iterator[StoreService]:
    """A store service; its ``max_waiting_per_host`` is the parameter (8, the default: the
    revocation test's quick reconnections from one address may find their earlier
    connections' slots not yet freed, under a smaller cap)."""
    s = StoreService(ObjectStore(16 << 20, f"{tmp_path}/spill", grow=True), TOKEN,
                     max_waiting=8, max_waiting_per_host=request.param)
    s.worker_id = 1
    yield s
    s.close()


def _ports(service: StoreService) -> list[tuple[str, str]]:
    return [(f"unix:{service.socket_path}", "store"), (service.address, "transfer")]


def _refusal(address: str, credential: str, role: str) -> str:
    try:
        SyncConnection(address, credential, role, timeout=10).close()
    except AuthenticationError as exc:
        return str(exc)
    return ""


def _closed(sc: SyncConnection) -> bool:
    """Whether the service closed this connection (it sends nothing otherwise)."""
    sc.sock.settimeout(10)
    try:
        return sc.sock.recv(1) == b""
    except OSError:
        return True


def _cid(credential: str) -> str:
    return credential.split(":", 2)[1]


def test_a_revoked_credential_is_refused_and_its_connections_closed(
        service: StoreService) -> None:
    ended = job_credential(TOKEN, "alice", "j1", time.time() + 600)
    running = job_credential(TOKEN, "alice", "j2", time.time() + 600)
    open_conns = []
    for address, role in _ports(service):
        assert _refusal(address, ended, role) == ""  # accepted while its job runs
        open_conns.append(SyncConnection(address, ended, role, timeout=10))
    others = [SyncConnection(address, running, role, timeout=10)
              for address, role in _ports(service)]
    try:
        service.revoke([_cid(ended), "not/a/credential"])
        for sc in open_conns:
            assert _closed(sc)  # opened before the revocation: closed by it
        for address, role in _ports(service):
            assert "revoked" in _refusal(address, ended, role)
            assert _refusal(address, running, role) == ""  # other credentials unaffected
            assert _refusal(address, TOKEN, role) == ""
        for sc in others:  # still open: nothing arrives, the socket stays up
            sc.sock.setblocking(False)
            with pytest.raises(BlockingIOError):
                sc.sock.recv(1)
    finally:
        for sc in open_conns + others:
            sc.close()


def test_an_expired_credential_is_refused(service: StoreService) -> None:
    expired = job_credential(TOKEN, "alice", "old", time.time() - 1)
    for address, role in _ports(service):
        assert "expired" in _refusal(address, expired, role)


@pytest.mark.parametrize("service", [2], indirect=True)
def test_the_per_address_cap_is_the_services_to_set(service: StoreService) -> None:
    """Idle sockets from one address take only ``max_waiting_per_host`` slots: the rest are
    closed at once, and a peer from another address still authenticates."""
    idle = flood(service.address, 10, "127.0.0.2")
    try:
        wait_for(lambda: closed(idle) >= 8,
                 what="the connections over the address's share to be closed")
        assert service.refused >= 8
        assert _refusal(service.address, TOKEN, "transfer") == ""  # from 127.0.0.1
    finally:
        for sock in idle:
            sock.close()


def test_the_caps_must_be_positive(tmp_path: object) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        StoreService(ObjectStore(1 << 20, f"{tmp_path}/spill"), TOKEN, max_waiting=0)


def test_a_revocation_of_many_ids_is_one_call(service: StoreService) -> None:
    """Revocations come in batches (thousands of ids a message): all are kept."""
    creds = [job_credential(TOKEN, "bob", f"j{i}", time.time() + 600) for i in range(3000)]
    service.revoke([_cid(c) for c in creds])
    assert "revoked" in _refusal(service.address, creds[-1], "transfer")
    assert "revoked" in _refusal(f"unix:{service.socket_path}", creds[0], "store")


def test_the_local_port_caps_its_waiting_connections_too(service: StoreService) -> None:
    """The local socket (no address to count by) keeps at most ``max_waiting`` idle peers;
    an authenticating one still gets in once they are closed over the cap."""
    idle = []
    for _ in range(20):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(service.socket_path)
        idle.append(sock)
    try:
        wait_for(lambda: closed(idle) >= 20 - 8,
                 what="the local connections over the cap to be closed")
    finally:
        for sock in idle:
            sock.close()
    wait_for(lambda: _connects(f"unix:{service.socket_path}"),
             what="a peer to authenticate once the idle ones went")


def _connects(address: str) -> bool:
    try:
        SyncConnection(address, TOKEN, "store", timeout=10).close()
    except QsrvError:
        return False  # refused at accept while the closed ones were still counted
    return True
