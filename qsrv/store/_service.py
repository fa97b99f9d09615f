"""The node's store, served: to the processes of the node, and to other nodes.

Owned by the worker agent; blocking sockets on threads of their own, so a 256 MiB transfer
never stalls the agent's event loop. Every connection proves the cluster token first, or a
job's scoped credential (a driver's: the local service as role ``store``, the transfer service
as ``transfer``), until it expires or is revoked: the scheduler passes on the revocations it
is told (``revoke``), and a connection that proved a credential revoked later is closed.
Such a holder is served only the objects it names with their ticket
(``qsrv.protocol.object_ticket``, in the location the scheduler gave it when it let it read
the value): object ids are guessable, tickets are not.

Connections are bounded like the scheduler's: at most ``max_waiting`` per port wait to
authenticate (``max_waiting_per_host`` from one address; ``MAX_WAITING`` and
``MAX_WAITING_PER_HOST`` unless the agent is told otherwise), each within a total handshake
deadline (``HANDSHAKE_S``) that trickling bytes do not extend; at most ``MAX_SERVING`` are
served at once per port. A connection over a limit is closed as soon as it is accepted, so a
flood of slow sockets holds a bounded number of threads for a bounded time.

- **Local service** (a Unix socket in a private directory): executors and same-node drivers
  (role ``store``) send ``StoreCreate``/``StoreSeal`` to produce an object in place and
  ``StorePin``/``StoreUnpin`` to map one; replies are ``StoreReply``/``StoreFailed``. What a
  connection pinned or was still writing is released when it closes.
- **Transfer service** (TCP): other agents (role ``transfer``) pull objects; after the
  handshake the connection carries ``TransferSender`` frames (checksummed chunks straight
  from the arena).
- **Pulls:** pinning an object that lives on another node pulls it first (a cache copy,
  evictable; the scheduler is told through ``on_copied``).

Holders of references in the store: ``"dir"`` is the scheduler's directory (``hold`` on
HoldObjects, ``free`` on FreeObjects); ``("new", conn)`` is the producer until the directory
confirms the object. A producer that dies before that loses its unconfirmed objects after
``grace`` seconds (enough for the message it sent to reach the scheduler and come back).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from qsrv.errors import (
    AuthenticationError,
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
    credential_refusal,
    decode_location,
    encode_location,
    location_ticket,
    object_ticket,
    parse_credential_id,
    valid_ticket,
)
from qsrv.store._store import ObjectStore
from qsrv.store._transfer import TransferReceiver, TransferSender, pull_over
from qsrv.transport import SyncConnection

__all__ = ["StoreService", "describe_location"]

log = logging.getLogger("qsrv.store")
DIRECTORY = "dir"
MAX_WAITING = 64
MAX_WAITING_PER_HOST = 8
MAX_SERVING = {"local": 1024, "transfer": 256}
HANDSHAKE_S = 10.0
_MAX_REVOKED = 1_000_000  # revocations kept (each until its credential expires), at most
# A port's handler: the connection, and what it calls once the peer authenticated.
_Handler = Callable[[socket.socket, Callable[[SyncConnection], None]], None]


# The data of a STORED value (a wire contract, defined in qsrv.protocol).
describe_location = encode_location
parse_location = decode_location


class _Locked:
    """The store behind one lock: every thread of the service goes through it."""

    def __init__(self, store: ObjectStore, lock: threading.Lock) -> None:
        self._store = store
        self._lock = lock

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._store, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return method(*args, **kwargs)

        return call


class StoreService:
    def __init__(self, store: ObjectStore, token: str, *, host: str = "127.0.0.1",
                 grace: float = 5.0,
                 on_copied: Callable[[int], None] = lambda oid: None,
                 max_waiting: int = MAX_WAITING,
                 max_waiting_per_host: int = MAX_WAITING_PER_HOST) -> None:
        if max_waiting < 1 or max_waiting_per_host < 1:
            raise ValueError("the limits of waiting connections must be at least 1")
        self.store = store
        self.max_waiting = max_waiting
        self.max_waiting_per_host = min(max_waiting_per_host, max_waiting)
        self.token = token
        self.worker_id = 0
        self.grace = grace
        self.on_copied = on_copied
        self._lock = threading.Lock()
        self._locked: Any = _Locked(store, self._lock)
        # 0700: only this user connects; the pid in the name tells a sweeper when it is stale
        self._dir = tempfile.mkdtemp(prefix=f"qsrv-store-{os.getpid()}-")
        self.socket_path = os.path.join(self._dir, "store.sock")
        self._local = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._local.bind(self.socket_path)
        self._local.listen(64)
        self._tcp = socket.create_server((host, 0))
        self.address = f"{host}:{self._tcp.getsockname()[1]}"
        self._unconfirmed: dict[int, int] = {}  # object -> producing connection
        self._pulls: dict[int, threading.Event] = {}
        self._peers: dict[str, list[SyncConnection]] = {}
        self._conns: set[socket.socket] = set()
        self._slots = threading.Lock()
        self._waiting: Counter[str] = Counter()  # (port, host) and port -> waiting connections
        self._serving: Counter[str] = Counter()  # port -> connections being served
        self.refused = 0  # connections closed at once for being over a limit
        self._revoked: dict[str, int] = {}  # credential -> its expiry (kept until then)
        self._by_credential: dict[str, set[socket.socket]] = {}  # connections proving it
        self._next_conn = 0
        self._closed = False
        for target in (self._serve_local, self._serve_transfer):
            threading.Thread(target=target, daemon=True, name=f"qsrv-{target.__name__}").start()

    # ---- the agent's side (any thread) -------------------------------------------------------
    def hold(self, ids: list[int]) -> None:
        """The directory lists these objects here now."""
        with self._lock:
            for oid in ids:
                conn = self._unconfirmed.pop(oid, None)
                if oid not in self.store:
                    continue
                self.store.incref(oid, DIRECTORY)
                if conn is not None and self.store.holds(oid, ("new", conn)):
                    self.store.decref(oid, ("new", conn))

    def free(self, ids: list[int]) -> None:
        """No ref is left anywhere: drop this node's copy (primary or cache)."""
        with self._lock:
            for oid in ids:
                if self.store.holds(oid, DIRECTORY):
                    self.store.decref(oid, DIRECTORY)
                else:
                    self.store.discard(oid)

    def forget_directory(self) -> None:
        """The scheduler was lost (its directory with it): what only it held goes."""
        with self._lock:
            n = self.store.release_holder(DIRECTORY)
        if n:
            log.warning("dropped %d objects held for the lost scheduler", n)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return self.store.stats()

    def info(self) -> dict[str, Any]:
        """What other processes need to reach the service (sent with the worker's info)."""
        return {"socket": self.socket_path, "address": self.address, "node": node_key()}

    def revoke(self, credentials: list[str]) -> None:
        """These credentials ended: refused from now on, their connections closed."""
        now = time.time()
        closing: list[socket.socket] = []
        with self._slots:
            if len(self._revoked) + len(credentials) > _MAX_REVOKED:
                self._revoked = {c: e for c, e in self._revoked.items() if e > now}
            for credential in credentials:
                try:
                    expires = parse_credential_id(credential).expires
                except ValueError:
                    continue
                if expires > now and len(self._revoked) < _MAX_REVOKED:
                    self._revoked[credential] = expires
                closing.extend(self._by_credential.pop(credential, ()))
        for sock in closing:  # its thread's read ends: the connection goes
            log.info("closing a store connection: its credential was revoked")
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _refusal(self, credential: str) -> str | None:
        """Why a proven scoped credential is refused now (None: accepted)."""
        with self._slots:
            revoked = credential in self._revoked
        return credential_refusal(credential, revoked)

    def _admitted(self, sock: socket.socket, sc: SyncConnection) -> None:
        """A connection authenticated: remember the credential it proved (if any), so that
        its revocation closes it; refused at once if that came meanwhile."""
        credential = sc.conn.credential
        if credential is None:
            return
        with self._slots:
            if credential not in self._revoked:
                self._by_credential.setdefault(credential, set()).add(sock)
                return
        raise AuthenticationError(f"credential {credential} was revoked (its job ended)")

    def _forget(self, sock: socket.socket, credential: str | None) -> None:
        if credential is None:
            return
        with self._slots:
            users = self._by_credential.get(credential)
            if users is not None:
                users.discard(sock)
                if not users:
                    del self._by_credential[credential]

    def close(self) -> None:
        self._closed = True
        for sock in (self._local, self._tcp, *list(self._conns)):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
        for pool in self._peers.values():
            for sc in pool:
                sc.close()
        with self._lock:
            self.store.close()
        with contextlib.suppress(OSError):
            os.unlink(self.socket_path)
            os.rmdir(self._dir)

    # ---- serving -----------------------------------------------------------------------------
    def _accept_loop(self, port: str, listener: socket.socket, handler: _Handler) -> None:
        while not self._closed:
            try:
                sock, peer = listener.accept()
            except OSError:
                return
            host = str(peer[0]) if isinstance(peer, tuple) and peer else ""
            if not self._wait_slot(port, host):
                self.refused += 1
                with contextlib.suppress(OSError):
                    sock.close()
                continue
            threading.Thread(target=self._guarded, args=(port, host, handler, sock),
                             daemon=True).start()

    def _wait_slot(self, port: str, host: str) -> bool:
        """Count a new connection as waiting, unless a limit is reached."""
        with self._slots:
            if self._waiting[port] >= self.max_waiting \
                    or self._serving[port] >= MAX_SERVING[port]:
                return False
            if host and self._waiting[f"{port}/{host}"] >= self.max_waiting_per_host:
                return False
            self._waiting[port] += 1
            if host:
                self._waiting[f"{port}/{host}"] += 1
            return True

    def _guarded(self, port: str, host: str, handler: _Handler, sock: socket.socket) -> None:
        state: dict[str, Any] = {"waiting": True, "credential": None}

        def authenticated(sc: SyncConnection) -> None:  # waiting -> served
            with self._slots:
                self._unwait(port, host)
                state["waiting"] = False
                self._serving[port] += 1
            state["credential"] = sc.conn.credential
            self._admitted(sock, sc)

        self._conns.add(sock)
        try:
            handler(sock, authenticated)
        except (QsrvError, OSError) as exc:
            if not self._closed:
                log.info("store connection closed: %s", exc)
        finally:
            self._conns.discard(sock)
            self._forget(sock, state["credential"])
            with contextlib.suppress(OSError):
                sock.close()
            with self._slots:
                if state["waiting"]:
                    self._unwait(port, host)
                else:
                    self._serving[port] -= 1

    def _unwait(self, port: str, host: str) -> None:
        self._waiting[port] -= 1
        if host:
            key = f"{port}/{host}"
            self._waiting[key] -= 1
            if self._waiting[key] <= 0:
                del self._waiting[key]

    def _serve_local(self) -> None:
        self._accept_loop("local", self._local, self._local_conn)

    def _serve_transfer(self) -> None:
        self._accept_loop("transfer", self._tcp, self._transfer_conn)

    def _local_conn(self, sock: socket.socket,
                    authenticated: Callable[[SyncConnection], None]) -> None:
        with self._lock:
            self._next_conn += 1
            conn = self._next_conn
        sc = SyncConnection.accept(sock, self.token, {"store": self.store.name},
                                   roles=frozenset({"store"}), client_no=conn,
                                   timeout=HANDSHAKE_S, credentials=self._refusal,
                                   derived_roles=frozenset({"store"}))
        authenticated(sc)
        pins: Counter[int] = Counter()
        creating: set[int] = set()
        scoped = sc.conn.credential is not None  # pins only what it holds a ticket of
        try:
            while True:
                replies = [self._request(conn, msg, pins, creating, scoped)
                           for msg in sc.receive()]
                sc.send([r for r in replies if r is not None])
        finally:
            self._release(conn, pins, creating)

    def _request(self, conn: int, msg: Any, pins: Counter[int], creating: set[int],
                 scoped: bool = False) -> Any:
        kind = type(msg)
        if kind is StoreUnpin:
            for oid in msg.object_ids:
                if pins[oid] > 0:
                    pins[oid] -= 1
                    self._locked.unpin(oid)
            return None
        if kind not in (StoreCreate, StoreSeal, StorePin):
            raise ProtocolError(f"{kind.__name__} is not a store request")
        try:
            if kind is StoreCreate:
                loc = self._locked.reserve(msg.object_id, msg.size, holder=("new", conn))
                creating.add(msg.object_id)
                return StoreReply(msg.req, loc.offset, loc.size, b"")
            if kind is StoreSeal:
                if msg.object_id not in creating:
                    raise ValueError(f"object {msg.object_id:#x} is not being written here")
                with self._lock:
                    loc = self.store.seal(msg.object_id, msg.header)
                    creating.discard(msg.object_id)
                    self._unconfirmed[msg.object_id] = conn
                where = encode_location(self.worker_id, loc.size, self.address,
                                        object_ticket(self.token, msg.object_id))
                return StoreReply(msg.req, loc.offset, loc.size, where)
            if scoped and not valid_ticket(self.token, msg.object_id,
                                           location_ticket(msg.source)):
                raise ObjectLostError(f"no object {msg.object_id:#x} here")
            loc = self._pin(msg.object_id, msg.source)
            pins[msg.object_id] += 1
            return StoreReply(msg.req, loc.offset, loc.size, loc.header)
        except ObjectStoreFullError as exc:
            return StoreFailed(msg.req, "full", str(exc))
        except ObjectLostError as exc:
            return StoreFailed(msg.req, "lost", str(exc))
        except ChecksumError as exc:
            return StoreFailed(msg.req, "checksum", str(exc))
        except (ValueError, QsrvError) as exc:  # a malformed location is a ProtocolError
            return StoreFailed(msg.req, "error", f"{type(exc).__name__}: {exc}")

    def _release(self, conn: int, pins: Counter[int], creating: set[int]) -> None:
        with self._lock:
            for oid, n in pins.items():
                for _ in range(n):
                    self.store.unpin(oid)
            for oid in creating:
                with contextlib.suppress(ObjectLostError, ValueError):
                    self.store.abort(oid)
            mine = [oid for oid, c in self._unconfirmed.items() if c == conn]
        if mine:
            timer = threading.Timer(self.grace, self._orphaned, (conn, mine))
            timer.daemon = True
            timer.start()

    def _orphaned(self, conn: int, ids: list[int]) -> None:
        with self._lock:
            for oid in ids:
                if self._unconfirmed.get(oid) == conn:
                    del self._unconfirmed[oid]
                    if self.store.holds(oid, ("new", conn)):
                        self.store.decref(oid, ("new", conn))

    def _pin(self, oid: int, source: bytes) -> Any:
        while True:
            with self._lock:
                if oid in self.store:
                    return self.store.pin(oid)
                wid, _, address = decode_location(source)
                if wid == self.worker_id or self._closed:
                    raise ObjectLostError(f"object {oid:#x} is no longer in this node's store "
                                          "(freed, or lost with an earlier scheduler)")
                busy = self._pulls.get(oid)
                if busy is None:
                    busy = self._pulls[oid] = threading.Event()
                    mine = True
                else:
                    mine = False
            if not mine:  # another reader is pulling it: wait, then look again
                busy.wait()
                continue
            try:
                self._pull(oid, address, location_ticket(source))
            finally:
                with self._lock:
                    del self._pulls[oid]
                busy.set()
            self.on_copied(oid)

    # ---- transfers between nodes -------------------------------------------------------------
    def _transfer_conn(self, sock: socket.socket,
                       authenticated: Callable[[SyncConnection], None]) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sc = SyncConnection.accept(sock, self.token, {}, roles=frozenset({"transfer"}),
                                   timeout=HANDSHAKE_S, credentials=self._refusal,
                                   derived_roles=frozenset({"transfer"}))
        authenticated(sc)
        token = self.token
        sender = TransferSender(  # a scoped credential: only what it holds tickets of
            self._locked, verify=None if sc.conn.credential is None
            else lambda oid, ticket: valid_ticket(token, oid, ticket))
        while True:
            data = sock.recv(1 << 16)
            if not data:
                return
            for oid in sender.receive_data(data):
                for piece in sender.frames(oid):
                    sock.sendall(piece)

    def _pull(self, oid: int, address: str, ticket: bytes = b"") -> None:
        with self._lock:
            pool = self._peers.setdefault(address, [])
            sc = pool.pop() if pool else None
        if sc is None:
            try:
                sc = SyncConnection(address, self.token, "transfer")
            except ConnectionLostError as exc:
                raise ObjectLostError(f"object {oid:#x} is on a node that cannot be reached "
                                      f"({exc})") from exc
        receiver = TransferReceiver(self._locked)
        try:
            pull_over(sc.sock, receiver, oid, ticket)
        except (OSError, QsrvError) as exc:
            receiver.abort()
            sc.close()
            if isinstance(exc, OSError):
                raise ObjectLostError(f"cannot pull object {oid:#x} from {address}: {exc}"
                                      ) from exc
            raise
        with self._lock:
            pool.append(sc)


def node_key() -> str:
    """Names this machine (boot): processes with the same key share /dev/shm."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
    except OSError:
        boot = ""
    return f"{socket.gethostname()}/{boot}"
