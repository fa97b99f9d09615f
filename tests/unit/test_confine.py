"""How an executor of a tenant's tasks is started: its environment (no cluster token, no
secrets of the agent) and the bubblewrap command around it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from qsrv.worker import _confine


def test_a_tenants_executor_gets_its_credential_and_none_of_the_agents_secrets() -> None:
    base = {"PATH": "/usr/bin", "LC_ALL": "C", "QSRV_TOKEN": "cluster-secret",
            "QSRV_STORE_SOCKET": "/tmp/s", "AWS_SECRET_ACCESS_KEY": "x",
            "PYTHONPATH": "/src:cluster-secret", "QSRV_PURE_PYTHON": "1"}
    env = _confine.tenant_env(base, "cluster-secret", "qsrvcred:executor/alice/w1/9:ab")
    assert env == {"PATH": "/usr/bin", "LC_ALL": "C", "QSRV_PURE_PYTHON": "1",
                   "QSRV_TOKEN": "qsrvcred:executor/alice/w1/9:ab"}


def test_the_sandbox_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_confine, "gpu_devices", lambda: ["/dev/nvidia0", "/dev/nvidiactl"])
    confinement = _confine.Confinement(bwrap="/usr/bin/bwrap")
    cwd = os.getcwd()
    argv = confinement.wrap(["python", "-m", "x"], cwd=cwd)
    assert argv[0] == "/usr/bin/bwrap" and argv[-3:] == ["python", "-m", "x"]
    assert "--unshare-pid" in argv and argv[argv.index("--tmpfs"):][:2] == ["--tmpfs", "/tmp"]
    joined = " ".join(argv)
    assert "--dev-bind /dev/nvidia0 /dev/nvidia0" in joined
    assert f"--chdir {cwd} --" in joined
    assert f"--ro-bind {os.path.realpath(cwd)} " in joined or any(
        os.path.realpath(cwd).startswith(root + "/") for root in _confine._python_roots())
    if os.geteuid() == 0:  # as root: no capabilities, then nobody
        assert "--cap-drop" in argv and any(a.startswith("--reuid=") for a in argv)
        socket_argv = confinement.wrap(["x"], cwd=cwd, binds=("/tmp/sched.sock",))
        assert not any(a.startswith("--reuid=") for a in socket_argv)
        assert "--bind /tmp/sched.sock /tmp/sched.sock" in " ".join(socket_argv)
    else:
        assert "--unshare-user" in argv


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
def test_a_confined_process_sees_no_other_process_and_no_home(tmp_path: Path) -> None:
    """Also from a working directory under /tmp (the sandbox's /tmp is its own: the directory
    is bound over it)."""
    confinement = _confine.Confinement()
    if not confinement.available():
        pytest.skip("bubblewrap cannot create namespaces here")
    code = ("import os, tempfile; tempfile.TemporaryFile().close(); "  # a writable /tmp
            "print(len([p for p in os.listdir('/proc') if p.isdigit()]), "
            "os.path.exists(os.path.expanduser('~root/.bashrc')), os.getuid())")
    for cwd in (os.getcwd(), str(tmp_path)):
        argv = confinement.wrap([sys.executable, "-c", code], cwd=cwd)
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                             env={"PATH": os.environ.get("PATH", "")})
        assert out.returncode == 0, out.stderr
        count, home, uid = out.stdout.split()
        assert int(count) <= 3 and home == "False"
        if os.geteuid() == 0:
            assert int(uid) != 0


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
def test_secrets_inside_a_bound_path_are_masked(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    confinement = _confine.Confinement()
    if not confinement.available():
        pytest.skip("bubblewrap cannot create namespaces here")
    tmp_path.chmod(0o755)  # readable by nobody, whom a root agent's executors run as
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    (state / "token").write_text("secret")
    (tmp_path / "visible").write_text("ok")
    monkeypatch.setattr(_confine, "_hidden", lambda: [os.path.realpath(state)])
    code = (f"import os; print(os.path.exists({str(state / 'token')!r}), "
            f"os.path.exists({str(tmp_path / 'visible')!r}))")
    argv = confinement.wrap([sys.executable, "-c", code], cwd=str(tmp_path))
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True"]
