"""A hundred worker agents (``qsrv worker`` processes) started together on this machine all
register, none is evicted, and every one runs a task.

Agents start with no executor (``--executors 0``): each task, pinned to its agent by a
resource only that agent has, makes the scheduler ask that agent for an executor. How long
registration took is printed, never asserted. ``QSRV_SCALE_AGENTS`` sets the number (100).
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

import qsrv
from tests._support import stop_process, stop_processes, wait_for
from tests._support.cluster import TOKEN, cli_env, qsrv_cli

AGENTS = int(os.environ.get("QSRV_SCALE_AGENTS", "100"))


@qsrv.distribute_task
def whoami() -> int:
    return qsrv.runtime_context().worker_id


def _names() -> dict[str, int]:
    return {w["name"]: w["id"] for w in qsrv.status()["workers"]}


@pytest.mark.timeout(max(300, 3 * AGENTS))
def test_a_hundred_agents_register_and_each_runs_a_task(tmp_path: Path) -> None:
    log = tmp_path / "scheduler.log"
    with open(log, "w") as err:
        scheduler = qsrv_cli("scheduler", "--port", "0", "--log-level", "info",
                             stdout=subprocess.PIPE, stderr=err)
    assert scheduler.stdout is not None
    address = scheduler.stdout.readline().split()[-1]
    agents: list[subprocess.Popen[str]] = []
    qsrv.shutdown()
    try:
        qsrv.init(address=address, token=TOKEN)  # asks for the status, no CLI process each time
        start = time.monotonic()
        for i in range(AGENTS):
            with open(tmp_path / f"a{i}.log", "w") as out:
                # --reconnect-timeout 0: an evicted agent exits instead of quietly rejoining
                agents.append(qsrv_cli(
                    "worker", "--address", address, "--name", f"a{i}", "--cpus", "1",
                    "--resources", f"a{i}=1", "--executors", "0", "--reconnect-timeout", "0",
                    env=cli_env(), stderr=out))
        names = wait_for(lambda: (n := _names()) and len(n) == AGENTS and n,
                         timeout=max(120, AGENTS), interval=0.2, what="every agent registered")
        registered = time.monotonic() - start
        refs = [whoami.options(target={f"a{i}": 1, "cpu": 1})() for i in range(AGENTS)]
        ids = qsrv.get(refs, timeout=max(120, AGENTS))
        ran = time.monotonic() - start
        assert ids == [names[f"a{i}"] for i in range(AGENTS)]  # each on its own agent
        assert all(agent.poll() is None for agent in agents)
        evicted = re.findall(r"removed: .*", log.read_text())
        assert evicted == [], evicted[:5]
        print(f"\n{AGENTS} agents registered in {registered:.1f} s; every one ran a task "
              f"{ran:.1f} s after the start")
    finally:
        qsrv.shutdown()
        stop_processes(list(agents))
        stop_process(scheduler)
