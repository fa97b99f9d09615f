"""Who may connect to the scheduler, before and around the state machine.

- **Waiting connections.** At most ``max_pending`` connections wait to authenticate at once,
  and at most ``max_pending_per_host`` of them from one address (a Unix-socket peer is this
  machine's, counted in the global limit only): a flood of idle sockets from one address fills
  its own share, not the slots of every other client. A connection over either limit is closed
  as soon as it is accepted. Each one's handshake deadline is a total deadline
  (``FramedProtocol``), which bytes do not extend.
- **Scoped credentials.** A peer may prove a credential derived from the cluster token
  (``qsrv.protocol._credentials``) instead of the token: only as a driver (the connection
  refuses any other role), and only while it is neither expired nor revoked. A connection of
  role ``gateway`` (the token itself) revokes credentials (``RevokeCredentials``): refused from
  then on, and the connections that use them are closed. Revocations are kept until their
  credential expires.
- **Worker agents hear of revocations.** Their store and transfer ports accept job
  credentials too, so each revocation batch a gateway sends is passed on, as one
  ``RevokeCredentials``, to every connected worker; a worker that connects is sent every
  revocation still in force (``_FORWARD`` ids a message).
- Nothing here touches the per-message path: these are connection events.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from qsrv.protocol import RevokeCredentials, credential_refusal, parse_credential_id
from qsrv.transport import FramedProtocol

__all__ = ["Gatekeeper"]

log = logging.getLogger("qsrv.scheduler")
_MAX_REVOKED = 1_000_000
_FORWARD = 4096  # credential ids in one RevokeCredentials sent to a worker


class Gatekeeper:
    def __init__(self, max_pending: int = 128, max_pending_per_host: int = 16, *,
                 close_conn: Callable[[int, str], None] = lambda conn, why: None) -> None:
        self.max_pending = max_pending
        self.max_pending_per_host = max_pending_per_host
        self._close_conn = close_conn
        self.pending = 0
        self._by_host: Counter[str] = Counter()
        self._revoked: dict[str, int] = {}  # credential -> its expiry (kept until then)
        self._users: dict[str, set[int]] = {}  # credential -> connections using it
        self._gateways: set[FramedProtocol] = set()
        self._workers: dict[int, FramedProtocol] = {}  # connections of worker agents

    # -- waiting connections --------------------------------------------------------------------
    def admit(self, proto: FramedProtocol) -> str:
        """A connection was just accepted: why it is refused ("" when it may go on)."""
        host = _host(proto)
        if self.pending >= self.max_pending:
            return (f"more than {self.max_pending} connections waiting to authenticate; "
                    "refused")
        if host and self._by_host[host] >= self.max_pending_per_host:
            return (f"more than {self.max_pending_per_host} connections from {host} waiting "
                    "to authenticate; refused")
        self.pending += 1
        proto.pending = True
        if host:
            self._by_host[host] += 1
            proto.pending_host = host  # type: ignore[attr-defined]
        return ""

    def authenticated(self, proto: FramedProtocol) -> None:
        self._unpend(proto)

    def closed(self, proto: FramedProtocol) -> None:
        self._unpend(proto)
        credential = proto.conn.credential
        if credential is not None and proto.id:
            users = self._users.get(credential)
            if users is not None:
                users.discard(proto.id)
                if not users:
                    del self._users[credential]
        self._gateways.discard(proto)
        if proto.id:
            self._workers.pop(proto.id, None)

    def _unpend(self, proto: FramedProtocol) -> None:
        if not proto.pending:
            return
        proto.pending = False
        self.pending -= 1
        host = getattr(proto, "pending_host", "")
        if host:
            self._by_host[host] -= 1
            if self._by_host[host] <= 0:
                del self._by_host[host]

    # -- credentials ----------------------------------------------------------------------------
    def refusal(self, credential: str) -> str | None:
        """Why a proven credential is refused now (None: accepted)."""
        return credential_refusal(credential, credential in self._revoked)

    def opened(self, proto: FramedProtocol) -> None:
        """An accepted connection (its ``id`` set): remember which credential it uses."""
        credential = proto.conn.credential
        if credential is not None:
            self._users.setdefault(credential, set()).add(proto.id)
        if proto.conn.role == "worker":  # its store ports must refuse what was revoked
            self._workers[proto.id] = proto
            now = time.time()
            _forward([proto], [c for c, e in self._revoked.items() if e > now])

    def serve_gateway(self, proto: FramedProtocol) -> None:
        """Accept a gateway's connection: it only ever sends revocations."""
        proto.accept(0, {})
        proto.on_messages = self._gateway_messages
        self._gateways.add(proto)

    def _gateway_messages(self, proto: FramedProtocol, messages: list[Any]) -> None:
        ids: list[str] = []
        for msg in messages:
            if type(msg) is not RevokeCredentials:
                proto.close(f"a gateway sent {type(msg).__name__}, not a revocation")
                break
            ids.extend(msg.ids)
        if ids:
            self.revoke(ids)  # what the read brought, as one batch (passed on as one)

    def revoke(self, credentials: list[str]) -> None:
        now = time.time()
        if len(self._revoked) + len(credentials) > _MAX_REVOKED:
            self._revoked = {c: e for c, e in self._revoked.items() if e > now}
        new: list[str] = []
        for credential in credentials:
            try:
                expires = parse_credential_id(credential).expires
            except ValueError:
                continue
            if expires > now and credential not in self._revoked \
                    and len(self._revoked) < _MAX_REVOKED:
                self._revoked[credential] = expires
                new.append(credential)
            for conn in list(self._users.pop(credential, ())):
                self._close_conn(conn, f"credential {credential} was revoked")
        _forward(list(self._workers.values()), new)

    def close_all(self) -> None:
        for proto in list(self._gateways):
            proto.close("")
        self._gateways.clear()


def _forward(workers: list[FramedProtocol], ids: list[str]) -> None:
    """Tell these workers' agents that ``ids`` are revoked (a few messages, however many)."""
    if not ids:
        return
    batches = [RevokeCredentials(ids[i:i + _FORWARD]) for i in range(0, len(ids), _FORWARD)]
    for proto in workers:
        if not proto.closed:
            for batch in batches:
                proto.send(batch)


def _host(proto: FramedProtocol) -> str:
    """The peer's address, "" for a Unix-socket peer (this machine)."""
    transport = proto.transport
    peer = transport.get_extra_info("peername") if transport is not None else None
    return str(peer[0]) if isinstance(peer, tuple) and peer else ""
