"""The process's runtime: one object, installed by init() (or the first call), removed by
shutdown(); "you closed it" told apart from "it broke"."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

import qsrv
from qsrv.client import Runtime
from qsrv.errors import CONNECTION_ENDED, ConnectionClosedError, ConnectionLostError, QsrvError


def _run(code: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("QSRV_ADDRESS", None)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=120, env=env)


def test_the_two_connection_errors_are_siblings() -> None:
    assert not issubclass(ConnectionClosedError, ConnectionLostError)
    assert not issubclass(ConnectionLostError, ConnectionClosedError)
    for cls in CONNECTION_ENDED:
        assert issubclass(cls, QsrvError) and issubclass(cls, ConnectionError)


def test_first_put_starts_a_local_cluster_and_installs_one_runtime() -> None:
    out = _run("""
        import qsrv
        from qsrv.client import _runtime
        assert _runtime.active is None and not qsrv.is_initialized()
        ref = qsrv.put(41)                       # starts the embedded local cluster
        runtime = _runtime.active
        assert runtime is not None and runtime.cluster is not None
        assert runtime.driver is not None and runtime.driver.core is runtime.core
        assert not runtime.in_executor
        assert qsrv.get(ref) == 41
        qsrv.shutdown()
        assert _runtime.active is None and not qsrv.is_initialized()
        print("ok")
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


@pytest.mark.usefixtures("local_cluster")
def test_an_executor_installs_its_own_runtime() -> None:
    @qsrv.distribute_task
    def describe() -> tuple[bool, bool, bool, int]:
        runtime = qsrv.client.connected()
        assert isinstance(runtime, Runtime)
        info = qsrv.init()  # inside a task: already connected, nothing started
        return (runtime.in_executor, runtime.driver is None, info["local"],
                qsrv.runtime_context().pid)

    in_executor, no_driver, local, pid = qsrv.get(describe.options(name="describe")())
    assert in_executor and no_driver and not local and pid != os.getpid()


def test_shutdown_then_in_flight_get_is_closed_not_lost() -> None:
    """A get in flight when this process shuts down says "you closed it"."""
    out = _run("""
        import threading, time, qsrv
        from qsrv.errors import ConnectionClosedError
        @qsrv.distribute_task
        def nap():
            time.sleep(30)
        qsrv.init(num_cpus=1)
        ref = nap()
        errors = []
        def getter():
            try:
                qsrv.get(ref)
            except Exception as exc:
                errors.append(exc)
        t = threading.Thread(target=getter)
        t.start()
        core = qsrv.client.connected().core
        while ref._id not in core.waiters:
            time.sleep(0.01)
        qsrv.shutdown()
        t.join(30)
        assert len(errors) == 1 and isinstance(errors[0], ConnectionClosedError), errors
        print(type(errors[0]).__name__)
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ConnectionClosedError"


def test_a_killed_local_scheduler_is_lost_not_closed() -> None:
    out = _run("""
        import os, signal, qsrv
        from qsrv.errors import ConnectionLostError
        @qsrv.distribute_task
        def one():
            return 1
        qsrv.init(num_cpus=1)
        runtime = qsrv.client.connected()
        os.kill(runtime.cluster.scheduler.pid, signal.SIGKILL)
        runtime.cluster.scheduler.wait()
        try:
            qsrv.get(one(), timeout=30)  # submitted to a dead scheduler, or in flight
        except ConnectionLostError as exc:
            print("lost:", exc)
        qsrv.shutdown()
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("lost:")



def test_shutdown_forgets_the_local_gateway() -> None:
    out = _run("""
        import os, qsrv, tempfile
        info = qsrv.init(num_cpus=1, gateway=True, data_dir=tempfile.mkdtemp())
        assert os.environ["QSRV_GATEWAY"] == info["gateway"]
        qsrv.shutdown()
        print(os.environ.get("QSRV_GATEWAY"), os.environ.get("QSRV_GATEWAY_TOKEN"))
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "None None"
