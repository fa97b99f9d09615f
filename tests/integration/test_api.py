"""The task API against a real embedded local cluster (scheduler, worker agent, executors)."""

from __future__ import annotations

import asyncio
import os
import pathlib
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import qsrv
from qsrv.errors import (
    ConfigError,
    GetTimeoutError,
    InfeasibleTaskError,
    TaskCancelledError,
    TaskError,
    TaskTimeoutError,
    WorkerDiedError,
)
from tests._support import Flag, wait_for

pytestmark = pytest.mark.usefixtures("local_cluster")

REPO = pathlib.Path(__file__).resolve().parents[2]  # where ``tests`` imports from


@qsrv.distribute_task
def square(x: int) -> int:
    return x * x


@qsrv.distribute_task(target={"cpu": 1})
def total(*xs: Any, **named: Any) -> Any:
    def flat(v: Any) -> float:
        if isinstance(v, list | tuple):
            return sum(flat(i) for i in v)
        if isinstance(v, dict):
            return sum(flat(i) for i in v.values())
        return float(v)

    return flat(list(xs)) + flat(named)


@qsrv.distribute_task
def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@qsrv.distribute_task
def fail(message: str) -> None:
    raise ValueError(message)


@qsrv.distribute_task
def held(value: Any, release: Flag) -> Any:
    """Returns ``value`` once ``release`` is set."""
    release.wait()
    return value


@qsrv.distribute_task(target={"cpu": 1, "custom": 1})
def occupy(started: Flag | None = None, release: Flag | None = None) -> None:
    """Holds a CPU until cancelled (or released): says when it starts, if asked.

    The scheduler may send a call of a function whose calls have been short ahead, to queue
    behind a running task of the same target, where it waits until that one ends. So this is
    not ``held`` (no call of it ends quickly), and its target is its own (no other task
    queues behind it).
    """
    if started is not None:
        started.set()
    if release is not None:
        release.wait(600)


def test_call_returns_ref_at_once_and_get_collects(flags: Callable[[str], Flag]) -> None:
    release = flags("release")
    ref = held(0.5, release)  # a call that waited for its task would never return
    assert isinstance(ref, qsrv.ObjectRef)
    assert qsrv.wait([ref], timeout=0) == ([], [ref])
    release.set()
    assert qsrv.get(ref) == 0.5
    assert qsrv.get([square(i) for i in range(20)]) == [i * i for i in range(20)]


def test_put_get_values_and_large_arrays() -> None:
    for value in [None, 1, "text", {"a": [1, 2]}, b"\x00" * 10]:
        assert qsrv.get(qsrv.put(value)) == value
    big = np.arange(2**20, dtype=np.complex128)  # 16 MiB: travels out-of-band
    ref = qsrv.put(big)
    assert np.array_equal(qsrv.get(ref), big)

    @qsrv.distribute_task
    def norm(v: np.ndarray) -> float:
        return float(np.linalg.norm(v))

    assert qsrv.get(norm(ref)) == pytest.approx(float(np.linalg.norm(big)))


def test_large_in_band_values_travel_out_of_band() -> None:
    @qsrv.distribute_task
    def blob(n: int) -> bytes:
        return b"q" * n

    size = 96 * 2**20  # beyond the 64 MiB frame-header limit if it travelled in the header
    data = qsrv.get(blob(size), timeout=60)
    assert len(data) == size and data[:1] == b"q"
    assert qsrv.get(qsrv.put(list(range(300_000))))[-1] == 299_999


def test_refs_in_arguments_are_resolved_also_inside_lists_and_dicts() -> None:
    a, b = qsrv.put(1), square(2)
    assert qsrv.get(total(a, b)) == 5
    assert qsrv.get(total([a, b], {"x": a})) == 6
    assert qsrv.get(total(values={"k": [b, b]})) == 8


def test_refs_inside_put_values_stay_refs_and_keep_objects_alive() -> None:
    inner = square(3)
    outer = qsrv.put({"ref": inner})
    inner_id = inner.id
    del inner
    got = qsrv.get(outer)
    assert isinstance(got["ref"], qsrv.ObjectRef) and got["ref"].id == inner_id
    assert qsrv.get(got["ref"]) == 9


def test_task_returning_a_ref() -> None:
    @qsrv.distribute_task
    def make() -> qsrv.ObjectRef:
        return square(5)

    inner = qsrv.get(make())
    assert isinstance(inner, qsrv.ObjectRef)
    assert qsrv.get(inner) == 25


def test_remote_exception_keeps_type_and_traceback() -> None:
    ref = fail("bad input")
    with pytest.raises(ValueError, match="bad input") as info:
        qsrv.get(ref)
    err = info.value
    assert isinstance(err, TaskError) and isinstance(err, qsrv.QsrvError)
    assert "in fail" in err.remote_traceback and "raise ValueError" in err.remote_traceback
    assert "Remote traceback" in str(err)


def test_unpicklable_exception_still_reported() -> None:
    @qsrv.distribute_task
    def weird() -> None:
        class Local(Exception):
            def __reduce__(self) -> Any:
                raise TypeError("cannot pickle me")

        raise Local("odd")

    with pytest.raises(TaskError, match="odd"):
        qsrv.get(weird())


def test_async_def_tasks_and_await_get() -> None:
    @qsrv.distribute_task
    async def slow_double(x: int) -> int:
        await asyncio.sleep(0.01)
        return 2 * x

    async def main() -> list[int]:
        one = await slow_double(4)  # an ObjectRef is awaitable
        many = await qsrv.get([slow_double(i) for i in range(5)])
        return [one, *many]

    assert asyncio.run(main()) == [8, 0, 2, 4, 6, 8]


def test_await_get_under_uvloop(flags: Callable[[str], Flag]) -> None:
    import uvloop

    blocked = occupy(release=flags("never"))

    async def main() -> Any:
        ready, pending = await qsrv.wait([square(2), blocked], num_returns=1, timeout=60)
        return await qsrv.get(ready), pending

    assert uvloop.run(main()) == ([4], [blocked])
    qsrv.cancel(blocked)


def test_nested_tasks_do_not_deadlock() -> None:
    @qsrv.distribute_task
    def fib(n: int) -> int:
        if n < 2:
            return n
        return sum(qsrv.get([fib(n - 1), fib(n - 2)]))

    # depth 5 with only 2 CPUs: every level blocks in get and lends its CPU
    assert qsrv.get(fib(6), timeout=60) == 8


def test_wait_returns_same_refs_in_order(flags: Callable[[str], Flag]) -> None:
    release = flags("release")
    fast, slow = square(1), held(3, release)
    ready, pending = qsrv.wait([slow, fast], num_returns=1, timeout=60)
    assert ready == [fast] and pending == [slow]
    assert ready[0] is fast and pending[0] is slow
    ready, pending = qsrv.wait([slow], num_returns=1, timeout=0.1)
    assert ready == [] and pending == [slow]
    with pytest.raises(ConfigError):
        qsrv.wait([fast], num_returns=2)
    release.set()
    assert qsrv.wait([slow, fast], num_returns=2, timeout=60) == ([slow, fast], [])


def test_get_timeout_is_distinct_from_task_errors(flags: Callable[[str], Flag]) -> None:
    release = flags("release")
    ref = held(1.0, release)
    with pytest.raises(GetTimeoutError) as info:
        qsrv.get(ref, timeout=0.1)
    assert isinstance(info.value, TimeoutError) and isinstance(info.value, qsrv.QsrvError)
    assert not isinstance(info.value, TaskError)
    release.set()
    assert qsrv.get(ref, timeout=60) == 1.0  # the task itself went on


def test_cancel_queued_and_running_tasks(flags: Callable[[str], Flag]) -> None:
    never = flags("never")
    started = [flags("started-0"), flags("started-1")]
    running = [occupy(flag, never) for flag in started]  # both CPUs busy
    for flag in started:
        flag.wait()
    queued = occupy(release=never)
    qsrv.cancel(queued)
    for ref in running:
        qsrv.cancel(ref)
    for ref in [queued, *running]:
        with pytest.raises(TaskCancelledError):
            qsrv.get(ref, timeout=10)
    # the killed executors are replaced and the CPUs free again
    assert qsrv.get([square(3), square(4)], timeout=20) == [9, 16]


def test_task_timeout_and_infeasible_timeout() -> None:
    with pytest.raises(TaskTimeoutError, match=r"within its timeout of 0\.5 s: still running"):
        qsrv.get(sleep.options(timeout=0.5)(30), timeout=20)
    with pytest.raises(InfeasibleTaskError, match="gpu"):
        qsrv.get(square.options(target={"gpu": 4}, timeout=0.5)(1), timeout=20)


def test_infeasible_task_is_shown_by_status_not_hung() -> None:
    ref = square.options(target={"qpu": 1})(1)
    wait_for(lambda: qsrv.status()["tasks"]["infeasible"], what="an infeasible task")
    reason = qsrv.status()["infeasible"][0]["reason"]
    assert "qpu" in reason
    qsrv.cancel(ref)


def test_executor_crash_fails_task_and_agent_survives(tmp_path: Any) -> None:
    @qsrv.distribute_task(max_retries=0)
    def crash() -> None:
        os._exit(3)

    with pytest.raises(WorkerDiedError, match="died"):
        qsrv.get(crash(), timeout=30)

    marker = tmp_path / "crashed-once"

    @qsrv.distribute_task(max_retries=1)
    def crash_once(path: str) -> str:
        if not os.path.exists(path):
            open(path, "w").close()
            os._exit(1)
        return "second try"

    assert qsrv.get(crash_once(str(marker)), timeout=30) == "second try"


def test_retry_exceptions() -> None:
    @qsrv.distribute_task(retry_exceptions=[KeyError], max_retries=2)
    def flaky(path: str) -> int:
        marker = pathlib.Path(path)
        count = int(marker.read_text()) if marker.exists() else 0
        marker.write_text(str(count + 1))
        if count < 2:
            raise KeyError("not yet")
        return count

    path = f"/tmp/qsrv-flaky-{os.getpid()}-{time.time_ns()}"
    try:
        assert qsrv.get(flaky(path), timeout=30) == 2
    finally:
        os.unlink(path)


def test_options_and_runtime_context() -> None:
    @qsrv.distribute_task(target={"cpu": 1, "custom": 0.5, "memory": "1MB"})
    def where() -> Any:
        ctx = qsrv.runtime_context()
        return ctx.worker_id, ctx.resources, os.environ["CUDA_VISIBLE_DEVICES"]

    worker_id, resources, cuda = qsrv.get(where())
    assert worker_id >= 1 and cuda == ""
    assert resources == {"cpu": 1.0, "custom": 0.5, "memory": 1_000_000}
    _, resources, _ = qsrv.get(where.options(target={"cpu": 0.5})())
    assert resources == {"cpu": 0.5}


def test_malformed_targets_fail_at_decoration() -> None:
    for target in [{"cpu": -1}, {"cpu": "two"}, {"memory": "8 parsecs"}, {"gpu": float("nan")}]:
        with pytest.raises(ConfigError):
            qsrv.distribute_task(target=target)(square)
    with pytest.raises(ConfigError, match="unknown task option"):
        qsrv.distribute_task(retries=3)(square)
    with pytest.raises(TypeError):
        qsrv.get(42)


def test_dropped_refs_free_objects() -> None:
    refs = [qsrv.put(i) for i in range(200)]
    assert qsrv.get(refs[-1]) == 199
    during = qsrv.status()["objects"]  # puts are sent before the status request
    assert during >= 200
    del refs
    wait_for(lambda: qsrv.status()["objects"] <= during - 200, what="dropped refs freed")


def test_local_cluster_can_start_the_gateway(tmp_path: pathlib.Path) -> None:
    """A second local cluster in a child process, with its gateway; a program runs as a job."""
    script = tmp_path / "with_gateway.py"
    program = tmp_path / "program"
    program.mkdir()
    (program / "main.py").write_text(
        "import qsrv\n"
        "qsrv.init()\n"
        "@qsrv.distribute_task\n"
        "def double(x):\n    return 2 * x\n"
        "args = qsrv.get_arguments()\n"
        "qsrv.save_result(qsrv.get([double(x) for x in args['xs']]))\n")
    script.write_text(
        "import qsrv, sys\n"
        f"info = qsrv.init(num_cpus=1, gateway=True, data_dir={str(tmp_path / 'data')!r})\n"
        "client = qsrv.Client()\n"
        f"job = client.run(qsrv.Program(title='double', entrypoint='main.py', "
        f"working_dir={str(program)!r}), {{'xs': [1, 2, 3]}})\n"
        "print('result', job.result(timeout=60), job.status())\n"
        "qsrv.shutdown()\n")
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("QSRV_")}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert "result [2, 4, 6] SUCCEEDED" in out.stdout


def test_stopping_a_running_job_cancels_its_tasks(tmp_path: pathlib.Path) -> None:
    """The job's process tree is killed, and the tasks it submitted stop with it."""
    program = tmp_path / "program"
    program.mkdir()
    (program / "main.py").write_text(
        "import time, qsrv\n"
        "qsrv.init()\n"
        "@qsrv.distribute_task\n"
        "def nap(s):\n    time.sleep(s)\n"
        "refs = [nap(120) for _ in range(2)]\n"
        "print('submitted', flush=True)\n"
        "qsrv.get(refs)\n")
    script = tmp_path / "stop_job.py"
    script.write_text(
        "import sys, qsrv\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "from tests._support import wait_for\n"
        f"qsrv.init(num_cpus=2, gateway=True, data_dir={str(tmp_path / 'data')!r})\n"
        "client = qsrv.Client()\n"
        f"job = client.run(qsrv.Program(title='naps', entrypoint='main.py', "
        f"working_dir={str(program)!r}), {{}})\n"
        "wait_for(lambda: qsrv.status()['tasks']['running'] == 2, what='the tasks to start')\n"
        "wait_for(lambda: 'submitted' in job.logs(), what=\"the job's output\")\n"
        "print('logs', job.logs().strip())\n"
        "print('stopped', job.stop(timeout=30))\n"
        "wait_for(lambda: qsrv.status()['tasks']['running'] == 0, what='the tasks to stop')\n"
        "print('tasks after stop', qsrv.status()['tasks'])\n"
        "qsrv.shutdown()\n")
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("QSRV_")}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "logs submitted" in out.stdout
    assert "stopped STOPPED" in out.stdout
    assert "'running': 0" in out.stdout and "'queued': 0" in out.stdout


def test_local_cluster_joins_over_a_private_unix_socket(local_cluster: dict[str, Any]) -> None:
    import stat

    address = str(local_cluster["address"])
    assert address.startswith("unix:")
    path = pathlib.Path(address[len("unix:"):])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert qsrv.get(square(6)) == 36  # executors joined the same way
