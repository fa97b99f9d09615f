"""How an executor of one tenant's tasks is started (a gateway job's tasks: see
qsrv/scheduler/_placement.py, shapes by tenant).

- It never holds the cluster token: its ``QSRV_TOKEN`` is a credential derived for its tenant
  (``qsrv.protocol.executor_credential``), which the scheduler accepts only as an executor of
  that tenant's tasks (and the node stores only to pull objects).
- Its environment is the agent's with the secrets left out: only the variables in `KEPT_ENV`
  (and the locale's), never a ``QSRV_*`` one but those it needs, nor any value equal to the
  token.
- Where bubblewrap runs, it runs in namespaces of its own (`Confinement`, with the command
  line the gateway's job sandbox uses: ``qsrv._bwrap``): a read-only view of
  the system, the Python installation, qsrv and the agent's working directory (tasks' modules
  import from there), the node's GPU device files (``/dev/nvidia*``; which GPUs a task uses is
  still set by CUDA_VISIBLE_DEVICES), a private ``/tmp``, and ``/proc`` of its own PID
  namespace: it sees no other process (not the agent's or the scheduler's environment, where
  the token is), nothing of the agent's object store or spill directory, no file of the home
  directory, and neither the local cluster's state (its token file) nor the default gateway
  data directory (``~/.qsrv``), even where they lie inside a bound path (masked). As root,
  every capability is dropped and it runs as ``nobody`` (as root without capabilities when the
  scheduler is reached through a Unix socket, which only root may open). The network is shared
  (it talks to the scheduler over TCP). Where bubblewrap is missing or cannot create
  namespaces, the executor runs unconfined (the agent says so once): the token is still not in
  its environment, and the agent makes its own ``/proc`` entries unreadable to processes of its
  user (``protect_self``), but a task running as the agent's user may reach what that user can.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import logging
import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from qsrv import _bwrap
from qsrv._bwrap import bwrap_argv, drop_to, nobody
from qsrv._bwrap import python_roots as _python_roots
from qsrv._local_cluster import state_dir

log = logging.getLogger("qsrv.worker")

KEPT_ENV = (*_bwrap.KEPT_ENV, "CUDA_HOME", "LD_LIBRARY_PATH")  # a GPU task's libraries too
_PR_SET_DUMPABLE = 4


def tenant_env(base: Mapping[str, str], cluster_token: str, credential: str) -> dict[str, str]:
    """The environment of an executor of one tenant: ``base`` without its secrets, and the
    tenant's credential as QSRV_TOKEN."""
    env = {k: v for k, v in base.items()
           if (k in KEPT_ENV or k.startswith("LC_")) and (not cluster_token
                                                          or cluster_token not in v)}
    env["QSRV_TOKEN"] = credential
    return env


def protect_self() -> None:
    """Make this process's /proc entries (environment, memory, command line's fds...)
    readable only by root, and keep processes of the same user from tracing it."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)


class Confinement:
    """bubblewrap around an executor's command, when it can run here (probed once)."""

    def __init__(self, bwrap: str | None = None) -> None:
        self.bwrap = bwrap or shutil.which("bwrap")
        self.setpriv = shutil.which("setpriv")
        self._as_root = os.geteuid() == 0
        self._works: bool | None = None
        self._userns_flag = True

    def available(self) -> bool:
        if self._works is None:
            self._works = self._probe()
        return self._works

    def _probe(self) -> bool:
        if self.bwrap is None:
            log.warning("bubblewrap is not installed: executors of tenants' tasks run "
                        "unconfined (apt-get install bubblewrap to confine them)")
            return False
        if self._as_root and self.setpriv is None:
            log.warning("setpriv is missing: executors of tenants' tasks run unconfined")
            return False
        for _ in range(2):
            argv = self.wrap(["/bin/true"], cwd="/")
            try:
                done = subprocess.run(argv, capture_output=True, timeout=30,
                                      stdin=subprocess.DEVNULL)
            except (OSError, subprocess.TimeoutExpired) as exc:
                log.warning("bubblewrap cannot run here (%s): executors of tenants' tasks "
                            "run unconfined", exc)
                return False
            if done.returncode == 0:
                return True
            if b"disable-userns" in done.stderr and self._userns_flag:
                self._userns_flag = False  # an older bubblewrap
                continue
            break
        log.warning("bubblewrap cannot create its namespaces here (%s): executors of "
                    "tenants' tasks run unconfined",
                    done.stderr.decode(errors="replace").strip() or done.returncode)
        return False

    def wrap(self, command: list[str], *, cwd: str, binds: tuple[str, ...] = ()) -> list[str]:
        """``command`` run inside the sandbox, in ``cwd`` (bound read-only), with the paths
        in ``binds`` (a Unix socket to reach the scheduler) bound in."""
        as_nobody = self._as_root and not binds
        assert self.bwrap is not None
        mounts = ["--perms", "1777", "--tmpfs", "/tmp", "--proc", "/proc", "--dev", "/dev"]
        for device in gpu_devices():  # a GPU task's devices (its libraries are under /usr)
            mounts += ["--dev-bind", device, device]
        argv = bwrap_argv(
            self.bwrap, as_root=self._as_root,
            root_caps=("CAP_SETUID", "CAP_SETGID") if as_nobody else (),
            nested_userns_flag=self._userns_flag, mounts=mounts,
            mounted=("/tmp", "/proc", "/dev"),
            roots=[*_python_roots(), os.path.realpath(cwd)], hidden=_hidden(), binds=binds)
        argv += ["--chdir", cwd, "--"]
        if as_nobody:
            argv += drop_to(self.setpriv or "setpriv", *nobody())
        return argv + command


def _hidden() -> list[str]:
    """Places holding secrets an executor must not see: the local cluster's state (its
    token) and the default data directory of a gateway."""
    places = [state_dir(), Path.home() / ".qsrv"]
    return [os.path.realpath(p) for p in places if p.is_dir()]


def gpu_devices() -> list[str]:
    """The GPU device files of this node (NVIDIA's: the cards, control and UVM devices)."""
    return sorted(p for p in glob.glob("/dev/nvidia*") if not os.path.isdir(p))
