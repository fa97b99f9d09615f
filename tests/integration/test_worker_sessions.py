"""A worker's connection to its scheduler, one session at a time.

- A refused token is final: the worker exits non-zero with the reason, whatever its
  ``--reconnect-timeout`` (it used to retry ten times a second for ever).
- TLS at one end only: driver, worker and ``qsrv status`` say which end uses TLS and which
  option or variable sets it, in both directions.
- A reconnection whose handshake is slow sends nothing before the scheduler accepts the worker
  (heartbeats of the old session used to break the new handshake).
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qsrv.errors import ConnectionLostError
from qsrv.transport import SyncConnection, client_context
from tests._support import stop_process, wait_for
from tests._support.cluster import TOKEN, Cluster, cli_env, free_port, qsrv_cli


def _worker(address: str, *args: str, env: dict[str, str] | None = None
            ) -> subprocess.Popen[str]:
    return qsrv_cli("worker", "--address", address, "--cpus", "1", "--executors", "0", *args,
                    env=env, stderr=subprocess.PIPE)


def _finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    """Wait for ``proc`` to exit on its own (the timeout only bounds a hang)."""
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        stop_process(proc)
        raise AssertionError("the worker did not exit") from None
    return proc.returncode, err


# ---- a refused token ---------------------------------------------------------------------
def test_a_worker_with_the_wrong_token_exits_with_the_reason() -> None:
    with Cluster() as cluster:
        proc = _worker(cluster.address, "--reconnect-timeout", "3600",
                       env={**cli_env(), "QSRV_TOKEN": "not-the-token"})
        code, err = _finish(proc)
        assert code != 0
        assert f"cannot join the scheduler at {cluster.address}" in err
        assert "token" in err and "QSRV_TOKEN" in err
        assert len(err.splitlines()) < 10  # said once, not retried
        assert cluster.status()["workers"] == []


# ---- TLS at one end only -----------------------------------------------------------------
def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA and a server certificate for 127.0.0.1 signed by it."""
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
             "ca.pem", "-days", "2", "-subj", "/CN=qsrv test CA", cwd=d)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
             "server.csr", "-subj", "/CN=server", cwd=d)
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "server.ext",
             cwd=d)
    return d


@pytest.fixture(scope="module")
def tls_scheduler(pki: Path) -> Iterator[str]:
    with Cluster(0, "--tls-cert", str(pki / "server.pem"),
                 "--tls-key", str(pki / "server.key")) as cluster:
        yield cluster.address


@pytest.fixture(scope="module")
def plain_scheduler() -> Iterator[str]:
    with Cluster() as cluster:
        yield cluster.address


def _no_tls_env() -> dict[str, str]:
    return {k: v for k, v in cli_env().items() if not k.startswith("QSRV_TLS_")}


def test_a_plain_client_of_a_tls_scheduler_is_told_to_set_tls(tls_scheduler: str) -> None:
    with pytest.raises(ConnectionLostError, match="does not use TLS") as caught:
        SyncConnection(tls_scheduler, TOKEN, "driver", timeout=10, tls=None)
    assert "QSRV_TLS_CA" in str(caught.value) and "--tls-ca" in str(caught.value)
    code, err = _finish(_worker(tls_scheduler, "--connect-timeout", "0.5",
                                env=_no_tls_env()))
    assert code != 0 and "does not use TLS" in err and "QSRV_TLS_CA" in err
    status = subprocess.run([sys.executable, "-m", "qsrv", "status", "--address", tls_scheduler],
                            env=_no_tls_env(), capture_output=True, text=True, timeout=60)
    assert status.returncode != 0
    assert "does not use TLS" in status.stderr and "QSRV_TLS_CA" in status.stderr


def test_a_tls_client_of_a_plain_scheduler_is_told_to_unset_tls(plain_scheduler: str,
                                                                pki: Path) -> None:
    tls = client_context(ca=str(pki / "ca.pem"))
    with pytest.raises(ConnectionLostError, match="does it serve TLS") as caught:
        SyncConnection(plain_scheduler, TOKEN, "driver", timeout=10, tls=tls)
    assert "QSRV_TLS_CA" in str(caught.value) and "--tls-ca" in str(caught.value)
    code, err = _finish(_worker(plain_scheduler, "--connect-timeout", "0.5",
                                "--tls-ca", str(pki / "ca.pem"), env=_no_tls_env()))
    assert code != 0 and "does it serve TLS" in err and "QSRV_TLS_CA" in err
    status = subprocess.run([sys.executable, "-m", "qsrv", "status", "--address",
                             plain_scheduler, "--tls-ca", str(pki / "ca.pem")],
                            env=_no_tls_env(), capture_output=True, text=True, timeout=60)
    assert status.returncode != 0 and "does it serve TLS" in status.stderr


# ---- a slow handshake on reconnection ----------------------------------------------------
class SlowStart:
    """A loopback TCP proxy to ``port`` that holds back what the server sends first on each
    connection for ``delay`` seconds: a handshake that takes that long."""

    def __init__(self, port: int, delay: float) -> None:
        self.upstream, self.delay = port, delay
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream))
            except OSError:
                client.close()
                continue
            self.connections += 1
            threading.Thread(target=self._pump, args=(client, server, 0.0), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, self.delay),
                             daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, delay: float) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if delay:
                    time.sleep(delay)
                    delay = 0.0
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.sock.close()


def test_reconnection_with_a_slow_handshake_sends_nothing_before_it_is_accepted() -> None:
    port = free_port()
    with Cluster(port) as cluster:
        proxy = SlowStart(port, delay=1.0)  # 5 heartbeat intervals
        worker = _worker(proxy.address, "--heartbeat-interval", "0.2", "--name", "slow",
                         "--reconnect-timeout", "60", "--log-level", "info")
        try:
            wait_for(lambda: [w["name"] for w in cluster.status()["workers"]] == ["slow"],
                     what="the worker's first registration")
            first = proxy.connections
            cluster.start_scheduler(port)  # a new scheduler: the worker must join it again
            wait_for(lambda: [w["name"] for w in cluster.status()["workers"]] == ["slow"],
                     timeout=60, what="the worker's registration with the new scheduler")
            assert proxy.connections > first
        finally:
            stop_process(worker, close_pipes=False)
            _, err = worker.communicate()
            proxy.close()
        assert "cannot send messages in state" not in err
        assert err.count("registered as worker") == 2, err  # once per scheduler, each at once
