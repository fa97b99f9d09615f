"""What killed processes leave behind is swept by the next worker agent that starts: a killed
worker's arena, store and spill directories, a killed driver's socket directory. Those of live
processes stay."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import tempfile
import textwrap

from tests._support import process_alive, stop_process, wait_for
from tests._support.cluster import Cluster


def _leftovers(pid: int) -> list[str]:
    tmp = tempfile.gettempdir()
    return sorted([*glob.glob(f"{tmp}/qsrv-store-{pid}-*"), *glob.glob(f"{tmp}/qsrv-spill-{pid}-*"),
                   *glob.glob(f"{tmp}/qsrv-{pid}-*"), *glob.glob(f"/dev/shm/qsrv-{pid}-*")])


def _registered(cluster: Cluster, name: str) -> bool:
    return name in {w["name"] for w in cluster.status()["workers"]}


def test_the_next_agent_sweeps_what_killed_processes_left() -> None:
    # a driver killed while its embedded cluster runs leaves its socket directory
    env = {k: v for k, v in os.environ.items() if not k.startswith("QSRV_")}
    env["XDG_RUNTIME_DIR"] = tempfile.mkdtemp()  # never join a `qsrv start` cluster here
    driver = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        import os, signal, qsrv
        qsrv.init(num_cpus=1)
        print(os.getpid(), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)], env=env, capture_output=True, text=True, timeout=120)
    driver_pid = int(driver.stdout.split()[0])
    driver_dirs = _leftovers(driver_pid)
    assert len(driver_dirs) == 1, driver_dirs
    with Cluster() as cluster:
        doomed = cluster.worker("doomed", "--cpus", "1", "--executors", "0")
        alive = cluster.worker("alive", "--cpus", "1", "--executors", "0")
        wait_for(lambda: _registered(cluster, "doomed") and _registered(cluster, "alive"),
                 what="two workers")
        doomed_left, alive_own = _leftovers(doomed.pid), _leftovers(alive.pid)
        assert len(doomed_left) == 3 and len(alive_own) == 3, (doomed_left, alive_own)
        doomed.send_signal(signal.SIGKILL)
        doomed.wait()
        assert all(os.path.exists(p) for p in doomed_left)  # nothing removed them
        cluster.worker("next", "--cpus", "1", "--executors", "0")
        wait_for(lambda: _registered(cluster, "next"), what="the next worker")
        for path in [*doomed_left, *driver_dirs]:
            assert not os.path.exists(path), path
        assert all(os.path.exists(p) for p in alive_own)
        assert process_alive(alive.pid)
        stop_process(alive)
        assert _leftovers(alive.pid) == []  # an agent that stops removes its own
