"""qsrv.init(log_to_driver=True): what tasks print shows on the driver, prefixed with the worker,
executor and task, while a long task still runs; nothing of it without the option."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import qsrv

SCRIPT = textwrap.dedent("""
    import os, sys, time
    import qsrv

    qsrv.init(num_cpus=2, log_to_driver=sys.argv[1] == "follow")

    @qsrv.distribute_task
    def chatty(i):
        print(f"hello {i}")
        print(f"warn {i}", file=sys.stderr)
        ctx = qsrv.runtime_context()
        return ctx.worker_id, ctx.pid, ctx.task_id

    @qsrv.distribute_task
    def long(flag):
        print("long task started", flush=True)
        while not os.path.exists(flag):
            time.sleep(0.05)
        return "long done"

    for w, pid, task in qsrv.get([chatty(i) for i in range(4)]):
        print(f"RAN worker {w}, pid {pid}, task {task}", flush=True)
    if sys.argv[1] == "follow":
        ref = long(sys.argv[2])
        print(qsrv.get(ref), flush=True)
    print("END", flush=True)
    qsrv.shutdown()
""")


def _start(tmp_path: Path, mode: str) -> subprocess.Popen[str]:
    script = tmp_path / "driver.py"
    script.write_text(SCRIPT)
    root = str(Path(qsrv.__file__).resolve().parents[1])
    env = dict(os.environ)
    env.pop("QSRV_ADDRESS", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return subprocess.Popen([sys.executable, str(script), mode, str(tmp_path / "flag")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_task_output_followed_on_the_driver(tmp_path: Path) -> None:
    proc = _start(tmp_path, "follow")
    assert proc.stdout is not None and proc.stderr is not None
    lines = []
    while True:  # the long task's first line arrives while it runs (it waits for the flag)
        line = proc.stdout.readline()
        assert line, "".join(lines) + proc.stderr.read()
        lines.append(line)
        if line.rstrip().endswith("long task started"):
            break
    (tmp_path / "flag").touch()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    lines += out.splitlines(keepends=True)
    ran = [line.split("RAN ", 1)[1].strip() for line in lines if line.startswith("RAN ")]
    assert len(ran) == 4
    for i, where in enumerate(ran):  # "worker W, pid P, task T": the prefix of its lines
        assert f"({where}) hello {i}\n" in lines
        assert f"({where}) warn {i}\n" in err.splitlines(keepends=True)
    assert "long done\n" in lines and lines[-1] == "END\n"
    # The embedded cluster's executors share this terminal: the driver alone prints what its
    # tasks print (once, prefixed; not also raw from the executors, interleaved with it).
    assert not [line for line in lines if line.startswith(("hello", "long task"))], lines
    assert not [line for line in err.splitlines() if line.startswith("warn")], err


def test_no_output_without_the_option(tmp_path: Path) -> None:
    proc = _start(tmp_path, "quiet")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "END" in out
    # (an embedded cluster's executors share this terminal: their own lines may show, but
    # nothing is forwarded to the driver)
    assert "(worker " not in out and "(worker " not in err
