"""What a new user meets first: the gateway's check of its cluster credentials, piped
passwords, ``qsrv --version``, and errors that say which task and which argument."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import qsrv
from qsrv.errors import SerializationError
from tests._support.cluster import TOKEN, Cluster, cli_env


def _env(token: str) -> dict[str, str]:
    return {**cli_env(), "QSRV_TOKEN": token}


def _qsrv(*args: str, env: dict[str, str] | None = None, stdin: str | None = None,
          timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "qsrv", *args], input=stdin, text=True,
                          capture_output=True, timeout=timeout, env=env or cli_env())


def test_gateway_refuses_to_start_without_the_cluster_token(tmp_path: Path) -> None:
    with Cluster() as cluster:
        base = ("gateway", "--cluster", cluster.address, "--port", "0",
                "--data-dir", str(tmp_path / "data"))
        wrong = _qsrv(*base, env=_env("not-the-token"))
        assert wrong.returncode == 1
        assert "cannot authenticate to the cluster" in wrong.stderr
        assert "QSRV_TOKEN" in wrong.stderr
        missing = _qsrv(*base, env=_env(""))
        assert missing.returncode == 1 and "no token was given" in missing.stderr
        good = subprocess.Popen([sys.executable, "-m", "qsrv", *base], text=True,
                                stdout=subprocess.PIPE, env=_env(TOKEN))
        try:
            assert good.stdout is not None
            first = good.stdout.readline()
            assert "token accepted" in first, first
            assert good.stdout.readline().startswith("qsrv gateway listening on http://")
        finally:
            good.terminate()
            good.wait(10)


def test_gateway_refuses_an_unreachable_cluster(tmp_path: Path) -> None:
    out = _qsrv("gateway", "--cluster", "127.0.0.1:1", "--port", "0",
                "--data-dir", str(tmp_path / "data"))
    assert out.returncode == 1 and "cannot reach the cluster" in out.stderr


def test_gateway_help_says_where_the_token_comes_from() -> None:
    out = _qsrv("gateway", "--help")
    assert out.returncode == 0 and "QSRV_TOKEN" in out.stdout


def test_gateway_port_bounds_come_from_the_command_line(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    bad = _qsrv("gateway", "--port", "0", "--data-dir", data,
                "--max-connections-per-address", "0")
    assert bad.returncode == 1
    assert "max_connections_per_address must be at least 1, not 0" in bad.stderr
    proc = subprocess.Popen([sys.executable, "-m", "qsrv", "gateway", "--port", "0",
                             "--data-dir", data, "--max-connections-per-address", "1",
                             "--header-timeout", "0.5"], text=True, stdout=subprocess.PIPE,
                            env=cli_env())
    try:
        assert proc.stdout is not None
        line = ""
        while not line.startswith("qsrv gateway listening on "):
            line = proc.stdout.readline()
            assert line, "the gateway exited before serving"
        host, port = line.strip().rsplit("//", 1)[1].rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as first, \
                socket.create_connection((host, int(port)), timeout=10) as second:
            first.sendall(b"GET /v1/jobs HTTP/1.1\r\n")  # and nothing more
            assert second.recv(4096).startswith(b"HTTP/1.1 503")  # one per address
            assert first.recv(4096).startswith(b"HTTP/1.1 408")  # after half a second
    finally:
        proc.terminate()
        proc.wait(10)


def test_passwd_reads_a_piped_password_without_the_flag(tmp_path: Path) -> None:
    data = str(tmp_path)
    assert _qsrv("user", "add", "dana", "--data-dir", data).returncode == 0
    out = _qsrv("user", "passwd", "dana", "--data-dir", data, stdin="a piped password\n")
    assert out.returncode == 0, out.stderr
    assert "EOFError" not in out.stderr
    empty = _qsrv("user", "passwd", "dana", "--data-dir", data, stdin="")
    assert empty.returncode == 1 and "no password" in empty.stderr


def test_version() -> None:
    out = _qsrv("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"qsrv {qsrv.__version__}"


@pytest.mark.usefixtures("local_cluster")
def test_unpicklable_argument_names_the_task_and_the_argument() -> None:
    @qsrv.distribute_task(name="needs-a-lock")
    def use(x: object, *, lock: object = None) -> None:
        return None

    with pytest.raises(SerializationError, match=r"task 'needs-a-lock': argument 'lock' "
                                                 r"\(a lock\) cannot be pickled"):
        use(1, lock=threading.Lock())
    with pytest.raises(TypeError, match=r"argument 1 \(a lock\)"):  # also a TypeError
        use.options()(1, threading.Lock())  # type: ignore[call-arg]
    with pytest.raises(SerializationError, match=r"put\(\): a lock cannot be pickled"):
        qsrv.put(threading.Lock())


def test_status_says_gpus_offered_and_detected() -> None:
    from qsrv.cli.status import render

    worker = {"id": 1, "name": "w", "total": {"cpu": 1.0, "gpu": 1.0}, "free": {"cpu": 1.0},
              "gpu_ids": ["0"], "executors": 1, "running": 0, "info": {"gpus_detected": 0}}
    status = {"workers": [worker], "clients": 0, "objects": 0, "infeasible": [],
              "tasks": {"running": 0, "queued": 0, "waiting": 0, "infeasible": 0}}
    text = render(status)
    assert "gpus: 1 GPU offered (devices 0), 0 detected" in text
    assert text.count("WARNING: 1 GPU offered but 0 detected") == 1
    assert "gpus=0" not in text  # read as a device id before
    worker["info"] = {"gpus_detected": 1}
    assert "WARNING" not in render(status)


def test_scheduler_logs_refused_authentications_rate_limited(tmp_path: Path) -> None:
    log = tmp_path / "scheduler.log"
    with log.open("w") as err:
        scheduler = subprocess.Popen(
            [sys.executable, "-m", "qsrv", "scheduler", "--port", "0"], text=True,
            stdout=subprocess.PIPE, stderr=err, env=_env(TOKEN))
    try:
        assert scheduler.stdout is not None
        address = scheduler.stdout.readline().split()[-1]
        for _ in range(3):
            worker = _qsrv("worker", "--address", address, env=_env("wrong-token"))
            assert worker.returncode != 0 and "token" in worker.stderr
    finally:
        scheduler.terminate()
        scheduler.wait(10)
    lines = [line for line in log.read_text().splitlines() if "refused a peer at" in line]
    assert len(lines) == 1, log.read_text()  # three attempts, one line per address per 10 s
    assert "127.0.0.1" in lines[0] and "token" in lines[0]


def test_rate_limited_log_says_how_many_it_held_back(caplog: pytest.LogCaptureFixture) -> None:
    from qsrv.transport import RateLimitedLog

    clock = [100.0]
    limited = RateLimitedLog(interval=10.0, clock=lambda: clock[0])
    with caplog.at_level("WARNING", logger="qsrv.transport"):
        assert limited.warn("10.0.0.1:5000", "refused %s", "a")
        assert not limited.warn("10.0.0.1:5001", "refused %s", "b")  # same host, other port
        assert limited.warn("10.0.0.2:5000", "refused %s", "c")      # another host
        clock[0] += 11
        assert limited.warn("10.0.0.1:5002", "refused %s", "d")
    texts = [r.getMessage() for r in caplog.records]
    assert texts == ["refused a", "refused c", "refused d (1 more from there in the last 10 s)"]
