"""`qsrv start` / `qsrv stop`: a local cluster kept in the background for this OS user, that
`qsrv.init()` joins (and says so) instead of starting one of its own.

Every test runs with its own XDG_RUNTIME_DIR, so that no other process on this machine (other
test runs, other scripts) finds, joins or stops the clusters started here.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from qsrv._local_cluster import find_running
from tests._support import process_alive

JOINED = "joined the local cluster of `qsrv start`"


def _env(runtime_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QSRV_")}
    env["XDG_RUNTIME_DIR"] = str(runtime_dir)
    return env


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "qsrv", *args], env=env, capture_output=True,
                          text=True, timeout=120)


def _script(env: dict[str, str], code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _runtime_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("runtime")
    path.chmod(0o700)
    return path


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """`qsrv start --cpus 2` in a private runtime directory; stopped afterwards."""
    env = _env(_runtime_dir(tmp_path_factory))
    out = _cli(env, "start", "--cpus", "2", "--object-store-memory", "64MB", "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    try:
        yield {"env": env, **info}
    finally:
        _cli(env, "stop")


# Two drivers that meet: each says it is connected, waits for the other, asks the scheduler
# how many other drivers it sees and where a task ran, then waits for the other to be done.
MEET = """
    import json, os, pathlib, sys, time
    import qsrv

    mine, theirs = sys.argv[1], sys.argv[2]
    def wait(name):
        while not pathlib.Path(name).exists():
            time.sleep(0.01)

    @qsrv.distribute_task
    def where():
        return os.getpid(), os.getppid()

    info = qsrv.init()
    pathlib.Path(mine + ".in").touch()
    wait(theirs + ".in")
    status = qsrv.status()
    executor, agent = qsrv.get(where())
    pathlib.Path(mine + ".done").touch()
    wait(theirs + ".done")
    print(json.dumps({"info": info, "other_drivers": status["clients"],
                      "workers": [w["name"] for w in status["workers"]],
                      "executor": executor, "agent": agent}))
"""


def test_two_scripts_join_the_started_cluster(started: dict[str, Any], tmp_path: Path) -> None:
    env = started["env"]
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    procs = [_script(env, MEET, a, b), _script(env, MEET, b, a)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    results = [json.loads(out) for out, _ in outs]
    for (_, err), result in zip(outs, results, strict=True):
        assert JOINED in err.splitlines()[0], err  # the first line it logs says so
        assert started["address"] in err.splitlines()[0]
        assert result["info"]["shared"] and not result["info"]["local"]
        assert result["info"]["address"] == started["address"]
        assert result["other_drivers"] >= 1  # the other script, connected at the same time
        assert result["workers"] == ["local"]  # one worker: the cluster's, not one each
        assert result["agent"] == started["worker_pid"]  # tasks ran on its executors
    # the scripts only disconnected: the cluster still runs, and says so when started again
    assert process_alive(started["worker_pid"]) and process_alive(started["scheduler_pid"])
    again = _cli(env, "start")
    assert again.returncode == 0 and "already runs" in again.stdout, again.stderr
    other = _cli(env, "start", "--cpus", "1")
    assert other.returncode == 1 and "other options" in other.stderr


def test_sizes_or_an_address_start_or_join_their_own(started: dict[str, Any]) -> None:
    proc = _script(started["env"], """
        import json, qsrv
        info = qsrv.init(num_cpus=1)
        print(json.dumps({"info": info, "workers": len(qsrv.status()["workers"])}))
    """)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    result = json.loads(out)
    assert result["info"]["local"] and "shared" not in result["info"]
    assert result["info"]["address"] != started["address"]
    assert JOINED not in err


def test_stop_removes_everything(tmp_path_factory: pytest.TempPathFactory) -> None:
    runtime = _runtime_dir(tmp_path_factory)
    env = _env(runtime)
    out = _cli(env, "start", "--cpus", "1", "--object-store-memory", "64MB", "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    state = Path(info["state_dir"])
    assert state == runtime / "qsrv"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    for name in ("token", "cluster.json"):
        assert stat.S_IMODE((state / name).stat().st_mode) == 0o600, name
    # a script puts a large value: the worker's store holds it in its arena
    proc = _script(env, """
        import json, numpy as np, qsrv
        ref = qsrv.put(np.ones(1 << 16))
        worker = qsrv.status()["workers"][0]
        print(json.dumps(worker["info"]["store"]))
    """)
    out_s, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    store = json.loads(out_s)
    worker = psutil.Process(info["worker_pid"])
    executors = [c.pid for c in worker.children(recursive=True)]
    arenas = [m.path for m in worker.memory_maps() if m.path.startswith("/dev/shm/qsrv-")]
    assert executors and arenas and os.path.exists(store["socket"])
    tmp = Path(tempfile.gettempdir())
    dirs = [*tmp.glob(f"qsrv-spill-{worker.pid}-*"), *tmp.glob(f"qsrv-store-{worker.pid}-*")]
    assert len(dirs) == 2 and Path(store["socket"]).parent in dirs

    stopped = _cli(env, "stop")
    assert stopped.returncode == 0 and "stopped the local cluster" in stopped.stdout
    for pid in [info["worker_pid"], info["scheduler_pid"], *executors]:
        assert not process_alive(pid), pid
    assert not state.exists()  # socket, token, description and log
    for path in [*arenas, *dirs]:
        assert not os.path.exists(path), path
    again = _cli(env, "stop")
    assert again.returncode == 0 and "no local cluster was running" in again.stdout


def test_a_stale_description_is_cleaned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                        ) -> None:
    """A cluster whose processes died (machine rebooted, killed) is not joined; its files go."""
    tmp_path.chmod(0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    state = tmp_path / "qsrv"
    state.mkdir(mode=0o700)
    (state / "token").write_text("old-token\n")
    (state / "cluster.json").write_text(json.dumps({
        "address": f"unix:{state / 'scheduler.sock'}", "tcp_address": "127.0.0.1:1",
        "scheduler_pid": dead.pid, "worker_pid": dead.pid, "options": {}}))
    assert find_running() is None
    assert not (state / "cluster.json").exists() and not (state / "token").exists()
    (state / "cluster.json").write_text("{not json")  # a corrupt one is no cluster either
    assert find_running() is None


def test_a_state_directory_open_to_others_is_refused(tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    (tmp_path / "qsrv").mkdir(mode=0o755)
    (tmp_path / "qsrv").chmod(0o755)
    out = _cli(_env(tmp_path), "start", "--cpus", "1")
    assert out.returncode == 1
    assert "not a private directory" in out.stderr and "XDG_RUNTIME_DIR" in out.stderr
    assert not list((tmp_path / "qsrv").iterdir())  # nothing was started
