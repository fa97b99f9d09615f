"""A TLS cluster: scheduler with a certificate, worker and driver verifying it; plain or
unverified clients are refused; with a client CA, clients must present certificates."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import qsrv
from qsrv.errors import AuthenticationError, QsrvError
from qsrv.transport import SyncConnection, client_context
from tests._support import stop_process, wait_for

TOKEN = "tls-token"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all from it."""
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
             "ca.pem", "-days", "2", "-subj", "/CN=qsrv test CA", cwd=d)
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1"),
                      ("client", "extendedKeyUsage=clientAuth")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
                 f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
        (d / f"{name}.ext").write_text(ext + "\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile",
                 f"{name}.ext", cwd=d)
    return d


def _start(pki: Path, *extra: str) -> tuple[subprocess.Popen[str], str]:
    env = dict(os.environ, QSRV_TOKEN=TOKEN)
    proc = subprocess.Popen(
        [sys.executable, "-m", "qsrv", "scheduler", "--port", "0", "--tls-cert",
         str(pki / "server.pem"), "--tls-key", str(pki / "server.key"), *extra],
        env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().split()[-1]


@pytest.fixture(scope="module")
def tls_cluster(pki: Path) -> Iterator[str]:
    qsrv.shutdown()
    scheduler, address = _start(pki)
    env = dict(os.environ, QSRV_TOKEN=TOKEN)
    worker = subprocess.Popen([sys.executable, "-m", "qsrv", "worker", "--address", address,
                               "--cpus", "1", "--tls-ca", str(pki / "ca.pem")], env=env)
    try:
        yield address
    finally:
        stop_process(worker)
        stop_process(scheduler)


def test_tasks_run_over_tls(tls_cluster: str, pki: Path,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QSRV_TLS_CA", str(pki / "ca.pem"))

    @qsrv.distribute_task
    def add(a: int, b: int) -> int:
        return a + b

    qsrv.init(address=tls_cluster, token=TOKEN)
    try:
        wait_for(lambda: any(w["executors"] for w in qsrv.status()["workers"]),
                 what="the worker's executors")
        assert qsrv.get([add(i, i) for i in range(50)], timeout=30) == [2 * i for i in range(50)]
    finally:
        qsrv.shutdown()


def test_plain_or_unverified_clients_are_refused(tls_cluster: str) -> None:
    with pytest.raises(QsrvError):
        SyncConnection(tls_cluster, TOKEN, "driver", timeout=5, tls=None)  # no TLS at all
    untrusting = ssl.create_default_context()  # the system's CAs, not ours
    with pytest.raises(AuthenticationError, match="TLS"):
        SyncConnection(tls_cluster, TOKEN, "driver", timeout=5, tls=untrusting)


def test_client_certificates_when_required(pki: Path) -> None:
    scheduler, address = _start(pki, "--tls-ca", str(pki / "ca.pem"))
    try:
        without = client_context(ca=str(pki / "ca.pem"))
        assert without is not None
        with pytest.raises(QsrvError):
            SyncConnection(address, TOKEN, "driver", timeout=5, tls=without)
        with_cert = client_context(ca=str(pki / "ca.pem"), cert=str(pki / "client.pem"),
                                   key=str(pki / "client.key"))
        conn = SyncConnection(address, TOKEN, "driver", timeout=5, tls=with_cert)
        assert conn.client_no > 0
        conn.close()
    finally:
        stop_process(scheduler)
