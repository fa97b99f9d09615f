"""A real scheduler process on loopback, attacked over raw sockets while a good client works.

`python -m qsrv scheduler --port 0 --token T --handshake-timeout 1` runs in a subprocess (the
CLI path, uvloop included). Every bad connection must be closed by the server with a clear
reason in its log, never by an unhandled exception; the well-behaved driver keeps getting
StatusReply answers throughout; the process stays up; nothing an unauthenticated peer sends
gets a task queued.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import queue
import random
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgpack
import pytest

from qsrv.errors import AuthenticationError
from qsrv.protocol import (
    PROTOCOL_VERSION,
    Auth,
    Cancel,
    Challenge,
    Connection,
    FrameDecoder,
    Hello,
    ObjectValue,
    PutObject,
    RegisterFunction,
    Reject,
    State,
    StatusReply,
    StatusRequest,
    SubmitTask,
    Subscribe,
    decode_frame,
    encode_frame,
    encode_frame_of,
)
from qsrv.transport import SyncConnection
from tests._support import stop_process, wait_for

from ._helpers import join

TOKEN = "live-test-token-5b1e"
HANDSHAKE_TIMEOUT = 1.0
CLOSE_WAIT = 10.0  # generous: the machine is shared


@dataclass
class Scheduler:
    proc: subprocess.Popen[str]
    host: str
    port: int
    log: list[str] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_text(self) -> str:
        return "".join(self.log)

    def wait_for_log(self, fragment: str, timeout: float = CLOSE_WAIT) -> str:
        def logged() -> str | None:
            return next((line for line in list(self.log) if fragment in line), None)

        try:
            return wait_for(logged, timeout, what=f"{fragment!r} in the log", interval=0.02)
        except AssertionError:
            raise AssertionError(f"{fragment!r} never logged; log:\n{self.log_text()}") from None


@pytest.fixture
def scheduler() -> Iterator[Scheduler]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "qsrv", "scheduler", "--host", "127.0.0.1", "--port", "0",
         "--token", TOKEN, "--handshake-timeout", str(HANDSHAKE_TIMEOUT),
         "--log-level", "warning"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None and proc.stderr is not None
    lines: queue.Queue[str] = queue.Queue()
    log: list[str] = []
    stdout, stderr = proc.stdout, proc.stderr
    threading.Thread(target=lambda: [lines.put(x) for x in stdout], daemon=True).start()
    threading.Thread(target=lambda: [log.append(x) for x in stderr], daemon=True).start()
    try:
        first = lines.get(timeout=30)
    except queue.Empty:
        proc.kill()
        raise AssertionError(f"the scheduler printed nothing; log:\n{''.join(log)}") from None
    prefix = "qsrv scheduler listening on "
    assert first.startswith(prefix), first
    host, port = first[len(prefix):].strip().rsplit(":", 1)
    sched = Scheduler(proc, host, int(port), log)
    try:
        yield sched
    finally:
        stop_process(proc, close_pipes=False)  # the reader threads end at end of file


# -- raw-socket helpers ----------------------------------------------------------------------------
def connect(sched: Scheduler) -> socket.socket:
    sock = socket.create_connection((sched.host, sched.port), timeout=CLOSE_WAIT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def frame(*messages: Any) -> bytes:
    return join(encode_frame_of(list(messages)))


def read_until_closed(sock: socket.socket, timeout: float = CLOSE_WAIT) -> bytes:
    """Everything the server sends until it closes."""
    sock.settimeout(timeout)
    data = bytearray()
    try:
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            except TimeoutError:
                raise AssertionError(f"the server kept the connection open {timeout} s") from None
            if not chunk:
                break
            data += chunk
    finally:
        sock.close()
    return bytes(data)


def messages_in(data: bytes) -> list[Any]:
    dec = FrameDecoder()
    dec.feed(data)
    return [m for hdr, bufs in dec.frames() for m in decode_frame(hdr, bufs)]


def recv_messages(sock: socket.socket, conn: Connection) -> list[Any]:
    """Read until `conn` has made progress (a handshake step or messages)."""
    sock.settimeout(CLOSE_WAIT)
    while True:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        conn.receive_data(chunk)
        state = conn.state
        got = conn.receive()
        if got or conn.state is not state:
            return got


def open_raw(sched: Scheduler, role: str = "driver") -> tuple[socket.socket, Connection]:
    """A raw socket that completed a real handshake (for sending hand-made frames after it)."""
    sock = connect(sched)
    conn = Connection(server=False, token=TOKEN, role=role)
    sock.sendall(join(conn.initiate()))
    while conn.state is not State.OPEN:
        recv_messages(sock, conn)
        sock.sendall(join(conn.data_to_send()))
    return sock, conn


def wrong_proof_auth(sock: socket.socket) -> Auth:
    """Send Hello, read the Challenge; an Auth made with a wrong token."""
    nonce = os.urandom(32)
    sock.sendall(frame(Hello(PROTOCOL_VERSION, "driver", nonce)))
    probe = Connection(server=True, token="unused")  # just a decoder with handshake limits
    sock.settimeout(CLOSE_WAIT)
    while True:
        chunk = sock.recv(4096)
        assert chunk
        probe._decoder.feed(chunk)
        frames = probe._decoder.frames()
        if frames:
            [challenge] = decode_frame(*frames[0])
            assert isinstance(challenge, Challenge)
            proof = hmac.new(b"guessed-token", b"c" + challenge.nonce + nonce,
                             hashlib.sha256).digest()
            return Auth(proof)


def status(sched: Scheduler) -> dict[str, Any]:
    conn = SyncConnection(sched.address, TOKEN, "driver", timeout=CLOSE_WAIT)
    try:
        return request_status(conn, 1)
    finally:
        conn.close()


def request_status(conn: SyncConnection, req_id: int) -> dict[str, Any]:
    conn.send([StatusRequest(req_id)])

    def reply() -> dict[str, Any] | None:
        for msg in conn.receive(timeout=1.0):
            if isinstance(msg, StatusReply) and msg.req_id == req_id:
                return msg.status
        return None

    return wait_for(reply, CLOSE_WAIT, what=f"StatusReply {req_id}", interval=0)


class GoodClient(threading.Thread):
    """A driver asking for status in a loop; counts answers, keeps the first error."""

    def __init__(self, sched: Scheduler) -> None:
        super().__init__(daemon=True)
        self.conn = SyncConnection(sched.address, TOKEN, "driver", timeout=CLOSE_WAIT)
        self.answers = 0
        self.error: BaseException | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            req = 0
            while not self.stop.is_set():
                req += 1
                request_status(self.conn, req)
                self.answers += 1
                time.sleep(0.005)
        except BaseException as exc:
            self.error = exc
        finally:
            self.conn.close()

    def assert_answering(self) -> None:
        before = self.answers

        def answered() -> bool:
            assert self.error is None, f"the good client failed: {self.error!r}"
            return self.answers >= before + 3

        wait_for(answered, CLOSE_WAIT, what="the good client's answers", interval=0.01)


# -- the attacks -------------------------------------------------------------------------------
def garbage(sched: Scheduler) -> str:
    sock = connect(sched)
    sock.sendall(random.Random(3).randbytes(3000))
    read_until_closed(sock)
    return "exceeds the limit"


def http_request(sched: Scheduler) -> str:
    sock = connect(sched)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: scheduler\r\n\r\n")
    read_until_closed(sock)
    return "exceeds the limit"


def peer(sock: socket.socket) -> str:
    """How the scheduler names this connection in its log."""
    host, port = sock.getsockname()[:2]
    return f"{host}:{port}"


def oversize_prefix(sched: Scheduler) -> str:
    sock = connect(sched)
    name = peer(sock)
    sock.sendall(struct.pack("!II", 2**32 - 1, 0))  # and no body at all
    read_until_closed(sock)
    # refused for its size, not later by the handshake deadline
    return f"protocol error from {name}: frame header of 4294967295 bytes exceeds the limit"


def buffers_before_auth(sched: Scheduler) -> str:
    sock = connect(sched)
    sock.sendall(join(encode_frame(b"\x90", [b"x" * 10])))
    read_until_closed(sock)
    return "frame with 1 buffers exceeds the limit of 0"


def wrong_token(sched: Scheduler) -> str:
    sock = connect(sched)
    sock.sendall(frame(wrong_proof_auth(sock)))
    data = read_until_closed(sock)
    [reject] = messages_in(data)
    assert isinstance(reject, Reject) and "token" in reject.reason
    return "failed the token challenge"


# Each of these is closed by the handshake deadline: its own log line says so.
def truncated_frame_then_hang(sched: Scheduler) -> str:
    sock = connect(sched)
    name = peer(sock)
    sock.sendall(struct.pack("!II", 100, 0) + b"0123456789")
    read_until_closed(sock)
    return f"closing connection {name}: no completed handshake within 1 s"


def silent(sched: Scheduler) -> str:
    sock = connect(sched)
    name = peer(sock)
    read_until_closed(sock)
    return f"closing connection {name}: no completed handshake within 1 s"


def hello_then_hang(sched: Scheduler) -> str:
    sock = connect(sched)
    name = peer(sock)
    sock.sendall(frame(Hello(PROTOCOL_VERSION, "driver", os.urandom(32))))
    data = read_until_closed(sock)
    assert isinstance(messages_in(data)[0], Challenge)
    return f"closing connection {name}: no completed handshake within 1 s"


def old_version(sched: Scheduler) -> str:
    sock = connect(sched)
    sock.sendall(frame(Hello(PROTOCOL_VERSION + 1, "driver", os.urandom(32))))
    data = read_until_closed(sock)
    [reject] = messages_in(data)
    assert isinstance(reject, Reject)
    assert f"protocol version {PROTOCOL_VERSION + 1} not supported" in reject.reason
    return ""  # its log line may be held back: refusals are logged once a while per peer host


def malformed_after_handshake(sched: Scheduler) -> str:
    sock, _ = open_raw(sched)
    sock.sendall(join(encode_frame(b"\xc1")))  # 0xc1: never used in msgpack
    read_until_closed(sock)
    return "malformed frame header"


def wrong_field_after_handshake(sched: Scheduler) -> str:
    sock, _ = open_raw(sched)
    sock.sendall(join(encode_frame(msgpack.packb([[Cancel.TAG, "not-an-int"]]))))
    read_until_closed(sock)
    return "Cancel: field of the wrong type"


def oversize_after_handshake(sched: Scheduler) -> str:
    sock, _ = open_raw(sched)
    sock.sendall(struct.pack("!IIQ", 1, 1, 2**63))
    read_until_closed(sock)
    return "frame buffer of 9223372036854775808 bytes exceeds the limit"


def reset_mid_handshake(sched: Scheduler) -> str:
    sock = connect(sched)
    sock.sendall(frame(Hello(PROTOCOL_VERSION, "driver", os.urandom(32)))[:5])
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # RST
    return ""


ATTACKS: list[Callable[[Scheduler], str]] = [
    garbage, http_request, oversize_prefix, buffers_before_auth, wrong_token, old_version,
    malformed_after_handshake, wrong_field_after_handshake, oversize_after_handshake,
    reset_mid_handshake,
]
# These wait for the handshake deadline: run side by side.
SLOW_ATTACKS: list[Callable[[Scheduler], str]] = [truncated_frame_then_hang, silent,
                                                  hello_then_hang]


def test_bad_connections_are_closed_and_a_good_client_keeps_working(scheduler: Scheduler) -> None:
    good = GoodClient(scheduler)
    good.start()
    try:
        good.assert_answering()
        for attack in ATTACKS:
            fragment = attack(scheduler)
            if fragment:
                scheduler.wait_for_log(fragment)
            good.assert_answering()
            assert scheduler.alive(), f"the scheduler died after {attack.__name__}"
        results: dict[str, str | BaseException] = {}

        def run(attack: Callable[[Scheduler], str]) -> None:
            try:
                results[attack.__name__] = attack(scheduler)
            except BaseException as exc:
                results[attack.__name__] = exc

        threads = [threading.Thread(target=run, args=(a,)) for a in SLOW_ATTACKS]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            good.assert_answering()
        for t in threads:
            t.join()
        for name, result in results.items():
            if isinstance(result, BaseException):
                raise AssertionError(f"{name} failed") from result
            scheduler.wait_for_log(result)
        good.assert_answering()
    finally:
        good.stop.set()
        good.join(CLOSE_WAIT)
    assert good.error is None
    assert scheduler.alive()
    log = scheduler.log_text()
    # every refusal went through the protocol's own error path, not a crash of a callback
    assert "Traceback" not in log and "Fatal error" not in log, log
    eventually_clients(scheduler, 0)  # no attacker got in (the asking probe is not counted)


def test_deeply_nested_frame_is_refused_as_a_protocol_error(scheduler: Scheduler) -> None:
    """A 1 KiB header nesting ~1000 lists, sent before authenticating, must be refused through
    the protocol error path (a logged reason), not by an exception escaping buffer_updated."""
    hdr = b"\x91\x92\x10" + b"\x91" * 1020 + b"\x00"
    sock = connect(scheduler)
    sock.sendall(join(encode_frame(hdr)))
    read_until_closed(sock)
    eventually_clients(scheduler, 0)
    log = scheduler.log_text()
    assert "Traceback" not in log and "Fatal error" not in log, log
    scheduler.wait_for_log("protocol error from")


# -- an unauthenticated peer cannot get a task queued -------------------------------------------
FN_ID = b"fn-" + bytes(29)


def task_frames(client_nos: list[int]) -> bytes:
    """RegisterFunction + SubmitTask for each guessed client number, in one frame."""
    msgs: list[Any] = [RegisterFunction(FN_ID, b"payload")]
    for no in client_nos:
        msgs.append(SubmitTask((no << 40) | 1, FN_ID, b"args", (), [], {"cpu": 10000}, 0, 0.0,
                               False, "attack"))
    return frame(*msgs)


def eventually_clients(sched: Scheduler, expected: int) -> None:
    """Drivers connected besides the probe asking; closes are seen asynchronously."""
    wait_for(lambda: status(sched)["clients"] == expected, CLOSE_WAIT,
             what=f"{expected} drivers connected")


def task_count(sched: Scheduler) -> int:
    return sum(status(sched)["tasks"].values())


def test_unauthenticated_peer_cannot_queue_a_task(scheduler: Scheduler) -> None:
    driver = SyncConnection(scheduler.address, TOKEN, "driver", timeout=CLOSE_WAIT)
    try:
        guesses = sorted({0, 1, 2, 3, driver.client_no, driver.client_no + 1})
        payload = task_frames(guesses)
        assert task_count(scheduler) == 0

        # 1. straight away, no handshake at all
        sock = connect(scheduler)
        sock.sendall(payload)
        read_until_closed(sock)
        # 2. after Hello, without Auth
        sock = connect(scheduler)
        sock.sendall(frame(Hello(PROTOCOL_VERSION, "driver", os.urandom(32))) + payload)
        read_until_closed(sock)
        # 3. Hello and the tasks in one frame
        sock = connect(scheduler)
        hello = Hello(PROTOCOL_VERSION, "driver", os.urandom(32))
        sock.sendall(frame(hello, RegisterFunction(FN_ID, b"p"),
                           SubmitTask((driver.client_no << 40) | 2, FN_ID, b"", (), [], {}, 0,
                                      0.0, False, "attack")))
        read_until_closed(sock)
        # 4. a wrong-token Auth with the tasks right behind it in the same write
        sock = connect(scheduler)
        sock.sendall(frame(wrong_proof_auth(sock)) + payload)
        read_until_closed(sock)
        # 5. a wrong-token Auth, then the tasks once the Reject came back
        sock = connect(scheduler)
        sock.sendall(frame(wrong_proof_auth(sock)))
        sock.settimeout(CLOSE_WAIT)
        assert isinstance(messages_in(sock.recv(4096))[0], Reject)
        with contextlib.suppress(OSError):  # it may be closed already: fine
            sock.sendall(payload)
        read_until_closed(sock)
        # 6. Auth without Hello, with a task carrying buffers
        sock = connect(scheduler)
        sock.sendall(frame(Auth(bytes(32))) + join(encode_frame_of([
            SubmitTask((driver.client_no << 40) | 3, FN_ID, b"", (b"buf",), [], {}, 0, 0.0,
                       False, "attack")])))
        read_until_closed(sock)

        assert task_count(scheduler) == 0
        eventually_clients(scheduler, 1)  # the driver (the asking probe is not counted)

        # Control: the same bytes from the authenticated driver do queue a task, so the attacks
        # above were refused for want of authentication, not for being malformed.
        driver.write([task_frames([driver.client_no])])
        assert sum(request_status(driver, 99)["tasks"].values()) == 1
        assert task_count(scheduler) == 1
    finally:
        driver.close()
    assert scheduler.alive()


# -- data through the live scheduler ---------------------------------------------------------------
def test_20_mib_object_round_trips_through_the_scheduler(scheduler: Scheduler) -> None:
    driver = SyncConnection(scheduler.address, TOKEN, "driver", timeout=CLOSE_WAIT)
    try:
        oid = (driver.client_no << 40) | 7
        big = random.Random(7).randbytes(20 * 2**20)
        driver.send([PutObject(oid, b"meta", (big, b"", b"tail"), []), Subscribe([oid])])
        [value] = wait_for(
            lambda: [m for m in driver.receive(timeout=5) if isinstance(m, ObjectValue)],
            what="the object's value", interval=0)
        assert value.object_id == oid and value.data == b"meta"
        assert [bytes(b) for b in value.bufs] == [big, b"", b"tail"]
        assert request_status(driver, 1)["objects"] == 1
    finally:
        driver.close()


# -- the blocking client transport -----------------------------------------------------------------
def test_sync_connection_closes_its_socket_when_the_handshake_fails(scheduler: Scheduler) -> None:
    def sockets() -> int:
        return sum(os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
                   for fd in os.listdir("/proc/self/fd")
                   if os.path.exists(f"/proc/self/fd/{fd}"))

    before = sockets()
    with pytest.raises(AuthenticationError) as excinfo:
        SyncConnection(scheduler.address, "wrong-token", "driver", timeout=CLOSE_WAIT)
    # the error (and its traceback) is still alive here: the socket must already be closed
    assert sockets() == before, "SyncConnection leaked its socket after a failed handshake"
    del excinfo


def unread_bytes(port: int) -> int | None:
    """Bytes received but not yet read by the local TCP socket on ``port`` (/proc/net/tcp)."""
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                return int(fields[4].split(":")[1], 16)
    return None


def test_sync_connection_receive_without_timeout_waits_for_a_whole_message() -> None:
    """receive() "blocks until some arrive": with no timeout, a message split across two TCP
    segments must come back whole, not as an empty list after the first segment."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    reply = StatusReply(1, {"pad": "x" * 5000})
    errors: list[BaseException] = []
    first_received = threading.Event()

    def serve() -> None:
        try:
            sock, (_, client_port) = listener.accept()
            conn = Connection(server=True, token=TOKEN)
            while conn.state is not State.ACCEPTING:
                conn.receive_data(sock.recv(4096))
                conn.receive()
                sock.sendall(join(conn.data_to_send()))
            sock.sendall(join(conn.welcome(1, {})))
            data = join(conn.send([reply]))
            for n in range(2):  # the same message, twice, each in two pieces
                if n:
                    assert first_received.wait(CLOSE_WAIT)
                sock.sendall(data[:100])
                wait_for(lambda: unread_bytes(client_port) == 0, CLOSE_WAIT,
                         what="the client to read the first piece", interval=0.005)
                sock.sendall(data[100:])
            sock.recv(1)  # until the client closes
            sock.close()
        except BaseException as exc:
            errors.append(exc)

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    client = SyncConnection(f"127.0.0.1:{port}", TOKEN, "driver", timeout=CLOSE_WAIT)
    try:
        assert client.receive(timeout=None) == [reply]
        first_received.set()
        assert client.receive() == [reply]
    finally:
        client.close()
        server.join(CLOSE_WAIT)
        listener.close()
    assert not errors
