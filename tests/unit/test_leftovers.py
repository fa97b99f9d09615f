"""The temporary directories of dead qsrv processes are swept, as their arenas are; those of
live processes, and directories qsrv did not name, are left alone."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qsrv.worker._leftovers import sweep_dirs

OLD = time.time() - 3600  # an hour ago: past the grace given to directories without a pid


@pytest.fixture(scope="module")
def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _dir(parent: Path, name: str, *, age: float = OLD) -> Path:
    path = parent / name
    path.mkdir()
    os.utime(path, (age, age))
    return path


@pytest.fixture
def listening(tmp_path: Path) -> Iterator[list[socket.socket]]:
    socks: list[socket.socket] = []
    yield socks
    for s in socks:
        s.close()


def _socket_in(path: Path, name: str, listening: list[socket.socket], *, live: bool) -> None:
    """A Unix socket file at path/name: listened on, or left by a process that died."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path / name))
    if live:
        s.listen(1)
        listening.append(s)
    else:
        s.close()  # the file stays, nobody listens
    os.utime(path, (OLD, OLD))


def test_directories_named_with_a_dead_pid_go(tmp_path: Path, dead_pid: int) -> None:
    dead = [_dir(tmp_path, f"qsrv-{dead_pid}-abcd1234"),
            _dir(tmp_path, f"qsrv-spill-{dead_pid}-k2_x9q0z"),
            _dir(tmp_path, f"qsrv-store-{dead_pid}-0000aaaa", age=time.time())]
    (dead[1] / "object-17").write_bytes(b"spilled")
    live = [_dir(tmp_path, f"qsrv-{os.getpid()}-abcd1234", age=time.time()),
            _dir(tmp_path, f"qsrv-spill-{os.getpid()}-abcd1234"),
            _dir(tmp_path, f"qsrv-store-{os.getppid()}-abcd1234")]
    removed = sweep_dirs([str(tmp_path)])
    assert sorted(removed) == sorted(map(str, dead))
    assert all(p.exists() for p in live)


def test_older_directories_go_when_their_sockets_are_dead(
        tmp_path: Path, listening: list[socket.socket]) -> None:
    dead_store = _dir(tmp_path, "qsrv-store-a1b2c3d4")
    _socket_in(dead_store, "store.sock", listening, live=False)
    dead_driver = _dir(tmp_path, "qsrv-x9y8z7w6")
    _socket_in(dead_driver, "scheduler.sock", listening, live=False)
    empty_driver = _dir(tmp_path, "qsrv-emptydir")  # a killed driver's, before its scheduler
    live_store = _dir(tmp_path, "qsrv-store-livelive")
    _socket_in(live_store, "store.sock", listening, live=True)
    young = _dir(tmp_path, "qsrv-youngdir", age=time.time())  # may be starting
    removed = sweep_dirs([str(tmp_path)])
    assert sorted(removed) == sorted(map(str, [dead_store, dead_driver, empty_driver]))
    assert live_store.exists() and young.exists()


def test_older_spill_dirs_go_only_when_no_older_agent_lives(
        tmp_path: Path, listening: list[socket.socket]) -> None:
    spill = _dir(tmp_path, "qsrv-spill-oldspill")
    live_store = _dir(tmp_path, "qsrv-store-livelive")
    _socket_in(live_store, "store.sock", listening, live=True)
    assert sweep_dirs([str(tmp_path)]) == []  # an older agent lives: it may be its spill dir
    assert spill.exists()
    listening.pop().close()  # that agent died: its store dir and the old spill dirs go
    assert sorted(sweep_dirs([str(tmp_path)])) == sorted([str(live_store), str(spill)])


def test_what_qsrv_did_not_name_is_left_alone(tmp_path: Path, dead_pid: int) -> None:
    others = [_dir(tmp_path, name) for name in (
        "qsrv-after", "qsrv-before", "qsrv-results-2024", f"qsrv-{dead_pid}",  # a `qsrv start`
        "qsrv-store-toolongname", f"qsrv-spill-{dead_pid}", "pytest-of-root", "qsrv-abcdefg")]
    odd = _dir(tmp_path, "qsrv-userdata")  # a plausible name, but holding a user's file
    (odd / "notes.txt").write_text("mine")
    (tmp_path / f"qsrv-{dead_pid}-abcd1234").write_text("a file, not a directory")
    assert sweep_dirs([str(tmp_path)]) == []
    assert all(p.exists() for p in [*others, odd])
