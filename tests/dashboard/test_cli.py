"""The command line of this area: qsrv status --watch, --log-format json, qsrv dashboard's
refusal to serve a non-loopback address without TLS."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import qsrv
from qsrv.errors import ConfigError
from tests._support.cluster import Cluster, cli_env, qsrv_cli


def test_status_watch_prints_again_until_interrupted(cluster: Cluster) -> None:
    proc = qsrv_cli("status", "--address", cluster.address, "--watch", "0.2",
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    blocks = 0
    workers_lines = []
    while blocks < 3:
        line = proc.stdout.readline()
        assert line, "qsrv status --watch ended early"
        if line.startswith("--- "):
            blocks += 1
        if "worker(s)" in line:
            workers_lines.append(line)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 0
    assert all(line.startswith("2 worker(s)") for line in workers_lines)


def test_status_watch_json_lines(cluster: Cluster) -> None:
    proc = qsrv_cli("status", "--address", cluster.address, "--watch", "0.2", "--json",
                    stdout=subprocess.PIPE)
    assert proc.stdout is not None
    first = json.loads(proc.stdout.readline())
    second = json.loads(proc.stdout.readline())
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 0
    assert second["time"] >= first["time"]
    assert len(first["status"]["workers"]) == 2


def test_log_format_json() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "qsrv", "scheduler", "--port", "0",
                             "--log-level", "info", "--log-format", "json"],
                            env=cli_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline().startswith("qsrv scheduler listening on ")
        entry = json.loads(proc.stderr.readline())
        assert entry["level"] == "INFO" and entry["logger"] == "qsrv.scheduler"
        assert "listening on" in entry["message"] and entry["pid"] == proc.pid
    finally:
        proc.terminate()
        proc.wait(30)


def test_dashboard_refuses_a_public_address_without_tls(cluster: Cluster) -> None:
    done = subprocess.run([sys.executable, "-m", "qsrv", "dashboard", "--address",
                           cluster.address, "--host", "0.0.0.0", "--port", "0"],
                          env=cli_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "without TLS" in done.stderr


def test_init_with_a_dashboard_prints_its_url(tmp_path: Path) -> None:
    script = tmp_path / "driver.py"
    script.write_text(textwrap.dedent("""
        import http.cookiejar, json, sys, urllib.request
        import qsrv

        info = qsrv.init(num_cpus=1, dashboard=True)
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        opener.open(info["dashboard"]).read()
        base = info["dashboard"].split("?", 1)[0]
        state = json.loads(opener.open(base + "api/state").read())
        print("WORKERS", len(state["cluster"]["status"]["workers"]), flush=True)
        qsrv.shutdown()
    """))
    root = str(Path(qsrv.__file__).resolve().parents[1])
    env = cli_env(PYTHONPATH=root)
    env.pop("QSRV_TOKEN", None)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    printed = [line for line in done.stdout.splitlines() if line.startswith("qsrv dashboard: ")]
    assert len(printed) == 1 and "?token=" in printed[0]
    assert printed[0].startswith("qsrv dashboard: http://127.0.0.1:")
    assert "WORKERS 1" in done.stdout


def test_status_timeline_and_dashboard_take_the_same_connection_options(
        tmp_path: Path, monkeypatch: Any) -> None:
    from qsrv.cli import build_parser
    from qsrv.cli._common import connect_args

    ca = tmp_path / "ca.pem"
    monkeypatch.setenv("QSRV_TLS_CA", "")  # connect_args sets it: put back after the test
    for command in ("status", "timeline", "dashboard"):
        args = build_parser(command).parse_args(
            [command, "--address", "h:1", "--token", "t", "--tls-ca", str(ca)])
        monkeypatch.delenv("QSRV_TLS_CA", raising=False)
        assert connect_args(args) == ("h:1", "t")
        assert os.environ["QSRV_TLS_CA"] == str(ca)
        monkeypatch.setenv("QSRV_ADDRESS", "env:2")
        monkeypatch.setenv("QSRV_TOKEN", "env-token")
        assert connect_args(build_parser(command).parse_args([command])) == ("env:2",
                                                                              "env-token")
        monkeypatch.delenv("QSRV_ADDRESS")
        with pytest.raises(ConfigError, match="--address"):
            connect_args(build_parser(command).parse_args([command]))
    for command in ("status", "timeline"):
        assert build_parser(command).parse_args([command, "--timeout", "3"]).timeout == 3.0
        assert build_parser(command).parse_args([command]).timeout == 10.0


def test_status_watch_redraws_in_a_terminal(cluster: Cluster) -> None:
    import pty
    import select

    main, child = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "qsrv", "status", "--address",
                             cluster.address, "--watch", "0.2"], stdin=child, stdout=child,
                            stderr=child, env=cli_env(), close_fds=True)
    os.close(child)
    out = b""
    try:
        while out.count(b"\x1b[H\x1b[2J") < 3:  # the screen cleared and drawn three times
            ready, _, _ = select.select([main], [], [], 60)
            assert ready, f"no redraw from qsrv status --watch: {out!r}"
            try:
                out += os.read(main, 65536)
            except OSError:  # EIO: it ended
                raise AssertionError(f"qsrv status --watch ended: {out!r}") from None
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(main)
    screens = out.decode(errors="replace").split("\x1b[H\x1b[2J")[1:3]
    for screen in screens:
        assert f"{cluster.address} at " in screen and "Ctrl-C to stop" in screen
        assert "2 worker(s)" in screen
