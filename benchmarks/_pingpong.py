"""The machine's own limit for a task round trip: process-to-process ping-pong over loopback TCP.

Two processes (this one and a child started with ``python _pingpong.py serve``) exchange a
small message back and forth over one 127.0.0.1 TCP connection with TCP_NODELAY. Two flavours:

* ``raw``: blocking sockets, ``sendall``/``recv`` in a tight loop on both sides: the kernel's
  wake-up cost plus the least Python there can be;
* ``uvloop``: both ends are asyncio protocols on uvloop (what qsrv's processes run on), so the
  figure includes one event-loop turn per hop on each side;
* ``unix``: as ``raw`` but over a Unix domain socket, for comparison (not used by qsrv today);
* ``relay``: the shape of a task round trip: client -> relay -> echo -> relay -> client, three
  processes, four hops; the relay is a uvloop process forwarding bytes (as a scheduler would),
  client and echo use blocking sockets (as the driver and an executor do). This is the floor
  for a driver -> scheduler -> executor -> scheduler -> driver round trip on this machine.

A qsrv task round trip crosses at least four such hops (driver -> scheduler -> executor ->
scheduler -> driver), i.e. two ping-pong round trips, so "within 4x the ping-pong" leaves about
two round trips' worth of Python work.

    python benchmarks/_pingpong.py [N]          # prints JSON for both flavours
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

MSG = 64  # bytes each way: the order of a small task message
FLAVOURS = ("raw", "uvloop", "relay", "unix")


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("peer closed")
        buf += chunk
    return bytes(buf)


# ---- server (child process) ---------------------------------------------------------------
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


def summarise(samples_ns: list[int]) -> dict[str, float]:
    us = sorted(s / 1000 for s in samples_ns)
    return {
        "n": len(us),
        "median_us": statistics.median(us),
        "p99_us": us[min(len(us) - 1, round(0.99 * (len(us) - 1)))],
        "mean_us": statistics.fmean(us),
    }


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
        result = summarise(client(port, n, warmup))
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
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    print(json.dumps({f: pingpong(f, n) for f in FLAVOURS}, indent=1))


if __name__ == "__main__":
    main()
