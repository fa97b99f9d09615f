"""The machine's own limits, measured in the same run as the systems they are compared with.

* memcpy: ``numpy.copy`` into a newly allocated array (fresh pages: every page faults) and
  ``numpy.copyto`` into a preallocated, already-touched one (warm pages).
* loopback TCP bandwidth: one process ``sendall``s a preallocated, touched buffer; the other
  ``recv_into``s a preallocated bytearray; timed at the receiver from its go byte to the last
  byte.
* loopback round trip: two processes exchange a 64-byte message back and forth (the order of a
  small task message), with TCP_NODELAY. Flavours:

  - ``raw``: blocking sockets, ``sendall``/``recv`` in a tight loop on both sides: the kernel's
    wake-up cost plus the least Python there can be;
  - ``uvloop``: both ends are asyncio protocols on uvloop (what qsrv's processes run on), so
    the figure includes one event-loop turn per hop on each side;
  - ``unix``: as ``raw`` but over a Unix domain socket (what qsrv's local cluster uses);
  - ``relay``: the shape of a task round trip: client -> relay -> echo -> relay -> client,
    three processes, four hops; the relay is a uvloop process forwarding bytes (as a scheduler
    would), client and echo use blocking sockets (as the driver and an executor do). This is
    the floor for a driver -> scheduler -> executor -> scheduler -> driver round trip.

  A qsrv task round trip crosses at least four such hops, i.e. two ping-pong round trips, so
  "within 4x the ping-pong" leaves about two round trips' worth of Python work.

    python benchmarks/_machine.py [--pingpong N] [--bytes N]   # prints every limit as JSON
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

from _common import median_time, summarize_ns

MSG = 64  # bytes each way: the order of a small task message
FLAVOURS = ("raw", "uvloop", "relay", "unix")


# ---- memcpy ----------------------------------------------------------------------------------
def memcpy(nbytes: int, repeat: int) -> dict[str, float]:
    """Median seconds to copy `nbytes` into fresh pages (numpy.copy) and into warm pages
    (numpy.copyto into a preallocated, touched array)."""
    import numpy as np

    src = np.full(nbytes // 16, 1 + 1j, dtype=np.complex128)
    warm = np.empty_like(src)
    warm[:] = 0  # touched: its pages exist before the clock starts
    return {"copy_fresh_s": median_time(lambda: np.copy(src), repeat),
            "copy_warm_s": median_time(lambda: np.copyto(warm, src), repeat)}


# ---- loopback TCP bandwidth --------------------------------------------------------------------
def _tcp_sender(port: int, nbytes: int, rounds: int) -> None:
    buf = bytearray(b"\x07") * nbytes  # preallocated and touched
    view = memoryview(buf)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        for _ in range(rounds):
            if sock.recv(1) != b"g":
                return
            sock.sendall(view)


def tcp_bandwidth(nbytes: int, repeat: int) -> float:
    """Median seconds to move `nbytes` from one process to another over loopback TCP."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        sender = multiprocessing.get_context("fork").Process(
            target=_tcp_sender, args=(port, nbytes, repeat + 1), daemon=True)
        sender.start()
        conn, _ = server.accept()
    buf = bytearray(nbytes)
    view = memoryview(buf)
    times = []
    with conn:
        for i in range(repeat + 1):  # the first round is a warm-up (touches the buffer)
            t0 = time.perf_counter()
            conn.sendall(b"g")
            got = 0
            while got < nbytes:
                k = conn.recv_into(view[got:])
                if not k:
                    raise ConnectionError("the sender went away")
                got += k
            if i:
                times.append(time.perf_counter() - t0)
    sender.join(10)
    return statistics.median(times)


# ---- loopback round trip: the server side (a child process) ----------------------------------
def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("peer closed")
        buf += chunk
    return bytes(buf)


def _serve_raw(listener: socket.socket) -> None:
    conn, _ = listener.accept()
    if conn.family != socket.AF_UNIX:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        while True:
            conn.sendall(_recv_exact(conn, MSG))
    except ConnectionError:
        pass


class _Echo(asyncio.Protocol):
    def __init__(self, done: asyncio.Future[None]) -> None:
        self.done = done
        self.buf = bytearray()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while len(self.buf) >= MSG:
            self.transport.write(bytes(self.buf[:MSG]))
            del self.buf[:MSG]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


class _Forward(asyncio.Protocol):
    def __init__(self) -> None:
        self.peer: Any = None
        self.early: list[bytes] = []

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self.peer is None:
            self.early.append(data)
        else:
            self.peer.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None:
            self.peer.transport.close()


async def _serve_relay(listener: socket.socket, echo_port: int) -> None:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def on_client() -> _Forward:
        client = _Forward()

        async def link() -> None:
            _, upstream = await loop.create_connection(_Forward, "127.0.0.1", echo_port)
            upstream.peer, client.peer = client, upstream
            for data in client.early:
                upstream.transport.write(data)
            client.early.clear()

        task = loop.create_task(link())
        task.add_done_callback(lambda _: None)
        orig = client.connection_lost

        def lost(exc: Exception | None) -> None:
            orig(exc)
            if not done.done():
                done.set_result(None)

        client.connection_lost = lost  # type: ignore[method-assign]
        return client

    server = await loop.create_server(on_client, sock=listener)
    await done
    server.close()


async def _serve_uvloop(listener: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    server = await loop.create_server(lambda: _Echo(done), sock=listener)
    await done
    server.close()


def serve(flavour: str, echo_port: int = 0) -> None:
    if flavour == "unix":
        import tempfile

        path = os.path.join(tempfile.mkdtemp(prefix="pingpong_"), "s")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(1)
        print(path, flush=True)
        try:
            _serve_raw(listener)
        finally:
            os.unlink(path)
            os.rmdir(os.path.dirname(path))
        return
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    print(listener.getsockname()[1], flush=True)
    if flavour == "raw":
        _serve_raw(listener)
        return
    import uvloop

    if flavour == "relay":
        uvloop.run(_serve_relay(listener, echo_port))
    else:
        uvloop.run(_serve_uvloop(listener))


# ---- client (this process) ----------------------------------------------------------------


# ---- loopback round trip: the client side (this process) ------------------------------------
def _client_raw(port: int | str, n: int, warmup: int) -> list[int]:
    if isinstance(port, str):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(port)
    else:
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    msg = b"x" * MSG
    samples: list[int] = []
    clock = time.perf_counter_ns
    for i in range(warmup + n):
        t0 = clock()
        sock.sendall(msg)
        _recv_exact(sock, MSG)
        if i >= warmup:
            samples.append(clock() - t0)
    sock.close()
    return samples


class _Pinger(asyncio.Protocol):
    def __init__(self, n: int, warmup: int, done: asyncio.Future[list[int]]) -> None:
        self.left = n + warmup
        self.warmup = warmup
        self.done = done
        self.samples: list[int] = []
        self.buf = 0
        self.msg = b"x" * MSG
        self.t0 = 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._ping()

    def _ping(self) -> None:
        self.t0 = time.perf_counter_ns()
        self.transport.write(self.msg)

    def data_received(self, data: bytes) -> None:
        self.buf += len(data)
        if self.buf < MSG:
            return
        self.buf -= MSG
        t = time.perf_counter_ns() - self.t0
        if self.warmup:
            self.warmup -= 1
        else:
            self.samples.append(t)
        self.left -= 1
        if self.left:
            self._ping()
        else:
            self.transport.close()
            self.done.set_result(self.samples)


async def _client_uvloop_async(port: int, n: int, warmup: int) -> list[int]:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[list[int]] = loop.create_future()
    await loop.create_connection(lambda: _Pinger(n, warmup, done), "127.0.0.1", port)
    return await done


def _client_uvloop(port: int, n: int, warmup: int) -> list[int]:
    import uvloop

    return uvloop.run(_client_uvloop_async(port, n, warmup))


def _start(*args: str) -> tuple[subprocess.Popen[str], Any]:
    proc = subprocess.Popen([sys.executable, __file__, "serve", *args],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    return proc, int(line) if line.isdigit() else line


def pingpong(flavour: str, n: int, warmup: int = 1000) -> dict[str, float]:
    """Round trips of a `MSG`-byte message through child processes and back; µs statistics."""
    procs = []
    try:
        if flavour == "relay":
            echo, echo_port = _start("raw")
            procs.append(echo)
            relay, port = _start("relay", str(echo_port))
            procs.append(relay)
        else:
            server, port = _start(flavour)
            procs.append(server)
        client = _client_uvloop if flavour == "uvloop" else _client_raw
        result = summarize_ns(client(port, n, warmup))
    finally:
        for proc in reversed(procs):
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
    return result


def main() -> None:
    if len(sys.argv) >= 3 and sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 0)
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pingpong", type=int, default=10_000, help="round trips per flavour")
    ap.add_argument("--bytes", type=int, default=1 << 28, help="bytes for memcpy and TCP")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    out: dict[str, Any] = {f: pingpong(f, args.pingpong) for f in FLAVOURS}
    out.update(memcpy(args.bytes, args.repeat))
    out["tcp_s"] = tcp_bandwidth(args.bytes, args.repeat)
    out["bytes"] = args.bytes
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
