"""Ways for a test and the code it runs elsewhere to tell each other "now", without sleeping.

``Gate``: a loopback listener that a job (any process) connects to; the test accepts the
connection, reads what the job reports, and releases it by sending a byte or closing.
``GATE_CLIENT`` is the job's side, as source to paste into a program.

``Flag``: a file that one side creates and the other waits for; picklable, so a task running
in an executor can take one as an argument (``started.set()``, ``release.wait()``).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from tests._support.waiting import wait_for

# Source for a job that reports to the gate and blocks until released.
GATE_CLIENT = """
import socket
def gate(port, message=b"started"):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(message + b"\\n")
    s.recv(1)  # blocks until the test sends a byte or closes
    return s
"""


class Gate:
    """A loopback listener a job connects to; the test accepts, reads, and releases it."""

    def __init__(self, timeout: float = 60.0) -> None:
        self.timeout = timeout
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(timeout)
        self.port: int = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []

    def accept(self) -> socket.socket:
        conn, _ = self.sock.accept()
        conn.settimeout(self.timeout)
        self.conns.append(conn)
        return conn

    def close(self) -> None:
        for conn in self.conns:
            conn.close()
        self.sock.close()

    def __enter__(self) -> Gate:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Flag:
    """A one-way signal through the file system, usable across processes."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)

    def set(self) -> None:
        Path(self.path).touch()

    def is_set(self) -> bool:
        return os.path.exists(self.path)

    def wait(self, timeout: float = 60.0) -> None:
        wait_for(self.is_set, timeout, what=f"flag {self.path}", interval=0.01)

    def __repr__(self) -> str:
        return f"Flag({self.path!r})"
