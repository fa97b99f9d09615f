"""A clean exit is quiet: nothing above INFO from the driver, the scheduler, the worker or its
executors, also when tasks are still running or queued at shutdown."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest

LOUD = re.compile(r"\b(WARNING|ERROR|CRITICAL)\b|Traceback")


def _run(code: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QSRV_")}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=120, env=env)


@pytest.mark.parametrize("ending", ["shutdown", "exit"])
def test_clean_exit_logs_nothing_above_info(ending: str) -> None:
    out = _run(f"""
        import qsrv
        @qsrv.distribute_task
        def square(x):
            return x * x
        print(sum(qsrv.get([square(i) for i in range(20)])))
        {"qsrv.shutdown()" if ending == "shutdown" else "pass"}
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "2470"
    assert not LOUD.search(out.stderr), out.stderr


def test_shutdown_with_tasks_running_and_queued_is_quiet() -> None:
    out = _run("""
        import pathlib, tempfile, time, qsrv
        flag = pathlib.Path(tempfile.mkdtemp()) / "started"
        @qsrv.distribute_task
        def nap(flag):
            pathlib.Path(flag).touch()
            time.sleep(60)
        qsrv.init(num_cpus=1)
        refs = [nap(str(flag)) for _ in range(3)]   # one runs, two wait
        while not flag.exists():
            time.sleep(0.01)
        qsrv.shutdown()
        print("done")
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "done"
    assert not LOUD.search(out.stderr), out.stderr
