"""Faults with real processes: a scheduler restart, a driver killed, a worker's network cut,
an executor that segfaults, and a chaos run that kills a worker every second."""

from __future__ import annotations

import collections
import contextlib
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import qsrv
from qsrv.client import _context
from qsrv.errors import ConnectionClosedError, ObjectLostError, WorkerDiedError

from ._cluster import TOKEN, Cluster, cli_env, free_port, qsrv_cli, wait_for


@pytest.fixture(autouse=True)
def _no_driver() -> Iterator[None]:
    qsrv.shutdown()
    yield
    qsrv.shutdown()


@qsrv.distribute_task
def nap(seconds: float) -> int:
    time.sleep(seconds)
    return qsrv.runtime_context().worker_id


@qsrv.distribute_task
def square(x: int) -> int:
    return x * x


def test_scheduler_restart(tmp_path: Any) -> None:
    port = free_port()
    cluster = Cluster(port)
    try:
        cluster.worker("w", "--cpus", "1", "--reconnect-timeout", "30")
        wait_for(lambda: cluster.ready({"w"}), what="worker")
        qsrv.init(address=cluster.address, token=TOKEN)
        in_flight = nap(5.0)
        wait_for(lambda: cluster.status()["tasks"]["running"] == 1, what="task start")
        threading.Timer(0.3, cluster.scheduler.kill).start()
        start = time.monotonic()
        with pytest.raises(ConnectionClosedError):
            qsrv.get(in_flight, timeout=30)  # a clear error, not a hang
        assert time.monotonic() - start < 5
        cluster.scheduler.wait()
        cluster.start_scheduler(port)
        wait_for(lambda: cluster.ready({"w"}), timeout=30, what="worker to reconnect")
        assert qsrv.get(square(7), timeout=30) == 49  # the driver reconnects on its own
        with pytest.raises(ObjectLostError):
            qsrv.get(in_flight, timeout=10)  # values from before the restart are gone
    finally:
        cluster.stop()


def test_driver_death_cancels_its_tasks_and_frees_its_objects(tmp_path: Any) -> None:
    cluster = Cluster()
    try:
        cluster.worker("w", "--cpus", "2")
        wait_for(lambda: cluster.ready({"w"}), what="worker")
        script = tmp_path / "driver.py"
        script.write_text(
            "import time, qsrv\n"
            f"qsrv.init(address={cluster.address!r}, token={TOKEN!r})\n"
            "@qsrv.distribute_task\n"
            "def nap(s):\n    time.sleep(s)\n"
            "refs = [nap(120) for _ in range(4)]\n"
            "objs = [qsrv.put(b'x' * 1000) for _ in range(10)]\n"
            "print('ready', flush=True)\n"
            "time.sleep(300)\n")
        driver = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                                  text=True, env=cli_env())
        assert driver.stdout is not None and driver.stdout.readline().strip() == "ready"
        wait_for(lambda: cluster.status()["tasks"]["running"] == 2
                 and cluster.status()["objects"] >= 10, what="driver's work")
        driver.send_signal(signal.SIGKILL)
        driver.wait()

        def released() -> bool:
            s = cluster.status()
            t = s["tasks"]
            return t["running"] == t["queued"] == 0 and s["objects"] == 0 and s["clients"] == 0

        wait_for(released, timeout=15, what="the dead driver's tasks and objects to go")
        qsrv.init(address=cluster.address, token=TOKEN)
        assert qsrv.get([square(2), square(3)], timeout=30) == [4, 9]  # CPUs free again
    finally:
        cluster.stop()


class BlackholeProxy:
    """Forwards TCP to a target until `cut` is set; then drops every byte, keeping the
    connections open (a network partition, not a closed socket)."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.cut = threading.Event()
        self.sockets: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                if not self.cut.is_set():
                    dst.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.close()


def test_network_cut_removes_the_worker_and_retries_its_task() -> None:
    cluster = Cluster()
    proxy = BlackholeProxy(cluster.address)
    try:
        cluster.workers["cut"] = qsrv_cli("worker", "--address", f"127.0.0.1:{proxy.port}",
                                          "--name", "cut", "--cpus", "1", "--resources",
                                          "res=1")
        wait_for(lambda: cluster.ready({"cut"}), what="worker behind the proxy")
        qsrv.init(address=cluster.address, token=TOKEN)
        ref = nap.options(target={"res": 1}, max_retries=2)(6.0)  # outlasts starting "ok"
        wait_for(lambda: cluster.status()["tasks"]["running"] == 1, what="task start")
        cluster.worker("ok", "--cpus", "1", "--resources", "res=1")
        wait_for(lambda: cluster.ready({"ok"}), what="second worker")
        proxy.cut.set()
        names = {w["id"]: w["name"] for w in cluster.status()["workers"]}
        worker_id = qsrv.get(ref, timeout=60)
        assert names[worker_id] == "ok"
        assert "cut" not in {w["name"] for w in cluster.status()["workers"]}
    finally:
        proxy.close()
        cluster.stop()


def test_executor_segfault_fails_only_that_task() -> None:
    cluster = Cluster()
    try:
        cluster.worker("w", "--cpus", "1")
        wait_for(lambda: cluster.ready({"w"}), what="worker")
        qsrv.init(address=cluster.address, token=TOKEN)

        @qsrv.distribute_task(max_retries=0)
        def segfault() -> None:
            import ctypes

            ctypes.string_at(0)  # SIGSEGV in the executor

        with pytest.raises(WorkerDiedError):
            qsrv.get(segfault(), timeout=30)
        assert qsrv.get(square(5), timeout=30) == 25  # the agent replaced the executor
        assert cluster.workers["w"].poll() is None
    finally:
        cluster.stop()


def test_chaos_a_worker_killed_every_second() -> None:
    """5,000 tasks over 4 workers while one worker is SIGKILLed every second and a new one
    started: every result arrives in the driver exactly once, and is right."""
    cluster = Cluster()
    stop = threading.Event()
    kills = 0
    try:
        for i in range(4):
            cluster.worker(f"w{i}", "--cpus", "1")
        wait_for(lambda: cluster.ready({f"w{i}" for i in range(4)}), what="four workers")
        qsrv.init(address=cluster.address, token=TOKEN)
        core = _context.core
        assert core is not None
        deliveries: collections.Counter[int] = collections.Counter()
        on_value = core.on_value

        def counting(msg: Any) -> None:
            deliveries[msg.object_id] += 1
            on_value(msg)

        core.on_value = counting  # type: ignore[method-assign]

        @qsrv.distribute_task(max_retries=10)
        def work(i: int) -> int:
            time.sleep(0.004)
            return i * i

        def killer() -> None:
            nonlocal kills
            n = 4
            while not stop.wait(1.0):
                alive = [name for name, p in cluster.workers.items() if p.poll() is None]
                victim = random.choice(alive)
                cluster.workers[victim].send_signal(signal.SIGKILL)
                kills += 1
                cluster.worker(f"w{n}", "--cpus", "1")
                n += 1

        refs = [work(i) for i in range(5000)]
        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        results = qsrv.get(refs, timeout=240)
        stop.set()
        thread.join()
        assert results == [i * i for i in range(5000)]
        assert kills >= 3, "the run ended before the chaos had a chance"
        assert len(deliveries) == 5000 and set(deliveries.values()) == {1}
    finally:
        stop.set()
        cluster.stop()
