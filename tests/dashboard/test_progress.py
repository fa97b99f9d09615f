"""Progress bars: drawn in a real pseudo-terminal by a real driver, absent where they must be;
the Jupyter widget's model."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import qsrv
from qsrv.client import ProgressBar
from qsrv.client import _progress as progress_module

SCRIPT = textwrap.dedent("""
    import sys, time
    import qsrv

    qsrv.init(num_cpus=2)

    @qsrv.distribute_task
    def square(i):
        return i * i

    @qsrv.distribute_task
    def fails(i):
        raise ValueError(i)

    @qsrv.distribute_task
    def slow(i):
        if i == 0:
            time.sleep(3.0)  # the wait lasts longer than the 2 s after which a bar appears
        return i

    if sys.argv[1] == "explicit":
        refs = [square(i) for i in range(50)] + [fails(i) for i in range(3)]
        try:
            qsrv.get(refs, progress=True)
        except ValueError:
            print("RAISED", flush=True)
    print("AUTO", flush=True)
    print("TOTAL", sum(qsrv.get([slow(i) for i in range(120)])), flush=True)
    qsrv.shutdown()
""")


def _run(tmp_path: Path, mode: str, *, tty: bool, script: str = SCRIPT, **env: str) -> str:
    source = script
    script_path = tmp_path / "driver.py"
    script_path.write_text(source)
    script = str(script_path)
    root = str(Path(qsrv.__file__).resolve().parents[1])
    environ = dict(os.environ, COLUMNS="120", **env)
    environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    environ.pop("QSRV_ADDRESS", None)
    if not tty:
        done = subprocess.run([sys.executable, script, mode], capture_output=True,
                              text=True, timeout=180, env=environ)
        assert done.returncode == 0, done.stderr
        return done.stdout + done.stderr
    main, child = pty.openpty()
    proc = subprocess.Popen([sys.executable, script, mode], stdin=child, stdout=child,
                            stderr=child, env=environ, close_fds=True)
    os.close(child)
    chunks: list[bytes] = []
    try:
        while True:
            ready, _, _ = select.select([main], [], [], 180)
            if not ready:
                break
            try:
                data = os.read(main, 65536)
            except OSError:  # EIO: the child side is closed
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(main)
        assert proc.wait(60) == 0, b"".join(chunks).decode(errors="replace")
    return b"".join(chunks).decode(errors="replace")


def test_bars_in_a_terminal(tmp_path: Path) -> None:
    out = _run(tmp_path, "explicit", tty=True)
    explicit, auto = out.split("AUTO", 1)
    assert "53/53" in explicit and "100%" in explicit
    assert "failed=3" in explicit
    assert "RAISED" in explicit
    assert "120/120" in auto  # 120 refs waited on for over 2 s: a bar of its own accord
    assert "TOTAL 7140" in auto


def test_no_bar_when_turned_off_or_not_a_terminal(tmp_path: Path) -> None:
    off = _run(tmp_path, "auto", tty=True, QSRV_PROGRESS="0")
    assert "TOTAL 7140" in off and "120/120" not in off and "%|" not in off
    piped = _run(tmp_path, "auto", tty=False)
    assert "TOTAL 7140" in piped and "120/120" not in piped and "%|" not in piped


GATEWAY_SCRIPT = textwrap.dedent("""
    import pathlib, sys
    import qsrv
    from qsrv.gateway import Client, Program

    root = pathlib.Path(sys.argv[1])
    info = qsrv.init(num_cpus=2, gateway=True, data_dir=str(root / "data"))
    client = Client(info["gateway"], info["gateway_token"])
    (root / "prog").mkdir()
    (root / "prog" / "main.py").write_text(
        "import time\\nfrom qsrv import save_result\\ntime.sleep(1.5)\\nsave_result(42)\\n")
    job = client.run(Program(title="p", entrypoint="main.py", working_dir=str(root / "prog")))
    print("RESULT", job.result(timeout=120, progress=True), flush=True)
    qasm = ('OPENQASM 2.0;\\ninclude "qelib1.inc";\\nqreg q[2];\\ncreg c[2];\\n'
            'h q[0];\\ncx q[0],q[1];\\nmeasure q -> c;\\n')
    batch = client.create_batch(qasm, [{"shots": 100}] * 5, platform="aer.statevector.cpu")
    print("BATCH", batch.wait(timeout=120, progress=True).status, flush=True)
    qsrv.shutdown()
""")


def test_job_and_batch_bars(tmp_path: Path) -> None:
    out = _run(tmp_path, str(tmp_path), tty=True, script=GATEWAY_SCRIPT)
    job_part, batch_part = out.split("RESULT", 1)
    assert "job " in job_part and "SUCCEEDED" in job_part
    assert batch_part.splitlines()[0].strip() == "42"
    assert "5/5" in batch_part and "DONE" in batch_part
    assert "BATCH DONE" in batch_part


def test_the_jupyter_widget(monkeypatch: pytest.MonkeyPatch) -> None:
    import ipywidgets  # noqa: F401  (a test dependency: the widget needs it)

    monkeypatch.setattr(progress_module, "in_notebook", lambda: True)
    bar = ProgressBar(10, desc="qsrv.get")
    for i in range(7):
        bar.advance(ok=i != 3)
    bar.close()
    widget = bar.bar
    assert type(widget).__module__ == "tqdm.notebook"
    progress = widget.container.children[1]
    assert (progress.value, progress.max) == (7, 10)
    assert "failed=1" in widget.container.children[2].value


def test_wanted() -> None:
    assert progress_module.wanted(True, 1) == (True, 0.0)
    assert progress_module.wanted(False, 10_000)[0] is False
    assert progress_module.wanted(None, 99)[0] is False
