"""Where a job runs: how its process is started, as whom, and what it can see.

``--job-sandbox`` chooses one of:

- ``bwrap``: Linux namespaces through bubblewrap. The job sees a read-only system (/usr, /etc,
  the Python installation and qsrv), its own job directory at ``/job`` (working directory
  ``/job/work``, arguments, result), its scratch area at ``/tmp`` (on the job directory's disk),
  its user's files of the program at ``/data``, a fresh ``/proc`` of its own PID namespace, and
  nothing else: not the gateway's data directory (masked even where it lies inside a bound
  path), not other jobs, not other processes or their environments. The network is shared
  (jobs reach the cluster and the gateway over TCP). A gateway running as root starts
  bubblewrap as root with every capability dropped but the three needed to switch user, and
  the job then runs as ``nobody`` with no capabilities and no_new_privs (``setpriv``); any
  other gateway runs it in a user namespace of its own (no nested ones).
- ``users``: one OS account per gateway user, named like the user (JupyterHub's local
  spawner); the gateway must run as root. The job runs as that account, its directories are
  the account's (0700); the data directory is 0711 so each account reaches its own folders and
  nothing else. The interpreter (``--job-python``) must be readable by the accounts.
- ``none``: the job runs as the gateway's own OS user and could read everything the gateway
  holds. For one trusted user (a laptop); unsafe for several.
- ``auto`` (the default): ``none`` while the gateway has one user; ``bwrap`` once it has more,
  and if bubblewrap cannot run here the gateway refuses, saying how to choose.

The bubblewrap command line is the one the worker agents' confined executors use
(``qsrv._bwrap``). A sandbox never falls back silently: an explicit choice that cannot work
fails at start with the reason (``check``), and a job it cannot start fails with the reason.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from qsrv._bwrap import KEPT_ENV, bwrap_argv, drop_to, nobody, python_roots
from qsrv.errors import ConfigError

__all__ = ["CHOICES", "HOW_TO_CHOOSE", "JOB_ROOT", "JOB_SANDBOXES", "Launch", "Sandbox",
           "make_sandbox"]

CHOICES = JOB_SANDBOXES = ("auto", "bwrap", "users", "none")
HOW_TO_CHOOSE = (
    "choose a sandbox with --job-sandbox: 'bwrap' (Linux namespaces; install bubblewrap, "
    "e.g. apt-get install bubblewrap), 'users' (run the gateway as root; each user's jobs run "
    "as the OS account of the same name) or 'none' (no isolation: only for a single trusted "
    "user)"
)
JOB_ROOT = "/job"  # where a bwrap job sees its directory
DATA_ROOT = "/data"  # and its user's files of the program


@dataclass(frozen=True, slots=True)
class Launch:
    """How to start one job's process."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path | None = None
    user: int | None = None
    group: int | None = None
    extra_groups: list[int] | None = None


@dataclass(frozen=True, slots=True)
class JobView:
    """A job's paths as the job sees them."""

    job_dir: str
    data: str | None
    tmp: str


def base_env(keep_all: bool) -> dict[str, str]:
    """The gateway's environment a job starts from: all of it without a sandbox (the one user
    set it), only ``KEPT_ENV`` (``qsrv._bwrap``) and locale variables in one. Never the
    gateway's own QSRV_*."""
    out = {}
    for key, value in os.environ.items():
        if key.startswith("QSRV_") and key != "QSRV_PURE_PYTHON":
            continue
        if keep_all or key in KEPT_ENV or key.startswith("LC_"):
            out[key] = value
    return out


class Sandbox:
    """No sandbox (``none``): the job runs as the gateway's user and sees what it sees."""

    name = "none"
    isolates = False  # whether jobs of different users are kept apart
    data_dir_mode = 0o700

    def check(self) -> None:
        """Raise ConfigError saying why this sandbox cannot run jobs here."""

    def owner(self, user: str) -> tuple[int, int] | None:
        """The (uid, gid) that must own the job's files, None for the gateway's own."""
        return None

    def view(self, job_dir: Path, data: Path | None) -> JobView:
        return JobView(str(job_dir), None if data is None else str(data), str(job_dir / "tmp"))

    def env(self, user: str, view: JobView) -> dict[str, str]:
        env = base_env(keep_all=True)
        env["TMPDIR"] = view.tmp
        return env

    def launch(self, python: str, entrypoint: str, job_dir: Path, data: Path | None,
               env: dict[str, str], user: str) -> Launch:
        return Launch([python, "-u", entrypoint], env, cwd=job_dir / "work")


class UserAccounts(Sandbox):
    """``users``: each gateway user's jobs run as the OS account of the same name."""

    name = "users"
    isolates = True
    data_dir_mode = 0o711

    def check(self) -> None:
        if os.geteuid() != 0:
            raise ConfigError("--job-sandbox users starts each job as its user's OS account, "
                              "which needs the gateway to run as root; " + HOW_TO_CHOOSE)

    def _account(self, user: str) -> pwd.struct_passwd:
        try:
            account = pwd.getpwnam(user)
        except KeyError:
            raise ConfigError(
                f"no OS account named {user!r} for the gateway user {user!r}: create it "
                f"(useradd {user}), or choose --job-sandbox bwrap") from None
        if account.pw_uid == 0 or account.pw_gid == 0:
            raise ConfigError(f"the OS account {user!r} is root's: jobs never run as root")
        return account

    def owner(self, user: str) -> tuple[int, int] | None:
        account = self._account(user)
        return account.pw_uid, account.pw_gid

    def env(self, user: str, view: JobView) -> dict[str, str]:
        account = self._account(user)
        env = base_env(keep_all=False)
        home = account.pw_dir if os.path.isdir(account.pw_dir) else view.tmp
        env.update(HOME=home, USER=user, LOGNAME=user, TMPDIR=view.tmp)
        return env

    def launch(self, python: str, entrypoint: str, job_dir: Path, data: Path | None,
               env: dict[str, str], user: str) -> Launch:
        account = self._account(user)
        groups = os.getgrouplist(user, account.pw_gid)
        return Launch([python, "-u", entrypoint], env, cwd=job_dir / "work",
                      user=account.pw_uid, group=account.pw_gid, extra_groups=groups)


@dataclass
class Bubblewrap(Sandbox):
    """``bwrap``: namespaces through bubblewrap (see the module's docstring)."""

    hidden: tuple[Path, ...] = ()  # never visible to a job (the gateway's data directory)
    cluster_socket: str | None = None  # a ``unix:`` cluster address's socket, bound in
    python: str = sys.executable
    bwrap: str = field(default_factory=lambda: shutil.which("bwrap") or "bwrap")
    setpriv: str = field(default_factory=lambda: shutil.which("setpriv") or "setpriv")

    name = "bwrap"
    isolates = True

    def __post_init__(self) -> None:
        self._as_root = os.geteuid() == 0
        self._nobody = nobody()
        self._nested_userns_flag = True  # --disable-userns (bubblewrap 0.8 and later)

    def check(self) -> None:
        if shutil.which(self.bwrap) is None:
            raise ConfigError(f"--job-sandbox bwrap: bubblewrap ({self.bwrap}) is not "
                              "installed (apt-get install bubblewrap); " + HOW_TO_CHOOSE)
        if self._as_root and shutil.which(self.setpriv) is None:
            raise ConfigError("--job-sandbox bwrap as root needs setpriv (util-linux) to run "
                              "jobs as nobody")
        if self._as_root and self.cluster_socket:
            raise ConfigError(
                f"jobs sandboxed by bwrap run as nobody and cannot connect to the cluster's "
                f"Unix socket {self.cluster_socket}: give the gateway the cluster's TCP "
                "address (--cluster HOST:PORT)")
        done = self._probe()
        if done.returncode != 0 and b"disable-userns" in done.stderr:
            self._nested_userns_flag = False  # an older bubblewrap
            done = self._probe()
        if done.returncode != 0:
            why = done.stderr.decode(errors="replace").strip() or f"exit {done.returncode}"
            raise ConfigError(
                f"--job-sandbox bwrap: bubblewrap cannot create its namespaces here ({why}); "
                "user namespaces may be disabled (sysctl kernel.unprivileged_userns_clone, "
                "or a container without them); " + HOW_TO_CHOOSE)

    def _probe(self) -> subprocess.CompletedProcess[bytes]:
        argv = [*self._wrapper([]), "--", *self._drop(), "/usr/bin/true"]
        try:
            return subprocess.run(argv, capture_output=True, timeout=30,
                                  stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ConfigError(f"--job-sandbox bwrap: bubblewrap cannot run here: {exc}; "
                              + HOW_TO_CHOOSE) from exc

    def owner(self, user: str) -> tuple[int, int] | None:
        return self._nobody if self._as_root else None

    def view(self, job_dir: Path, data: Path | None) -> JobView:
        return JobView(JOB_ROOT, None if data is None else DATA_ROOT, "/tmp")

    def env(self, user: str, view: JobView) -> dict[str, str]:
        env = base_env(keep_all=False)
        env.update(HOME="/tmp", TMPDIR="/tmp", USER=user, LOGNAME=user)
        return env

    def launch(self, python: str, entrypoint: str, job_dir: Path, data: Path | None,
               env: dict[str, str], user: str) -> Launch:
        binds = ["--bind", str(job_dir), JOB_ROOT, "--bind", str(job_dir / "tmp"), "/tmp"]
        if data is not None:
            binds += ["--bind", str(data), DATA_ROOT]
        if self.cluster_socket:
            binds += ["--bind", self.cluster_socket, self.cluster_socket]
        argv = [*self._wrapper(binds, python), "--chdir", f"{JOB_ROOT}/work", "--",
                *self._drop(), python, "-u", entrypoint]
        return Launch(argv, env)

    def _wrapper(self, binds: list[str], python: str | None = None) -> list[str]:
        # The job's own places (its /tmp above all) first: the interpreter, a virtualenv or
        # qsrv's sources may live under /tmp, and are bound over them, not hidden.
        return bwrap_argv(
            self.bwrap, as_root=self._as_root,
            # for setpriv, and for --chdir into the job's directory
            root_caps=("CAP_SETUID", "CAP_SETGID", "CAP_DAC_READ_SEARCH"),
            nested_userns_flag=self._nested_userns_flag, mounts=binds,
            roots=python_roots(python or self.python), hidden=[str(h) for h in self.hidden],
            after=["--proc", "/proc", "--dev", "/dev"])

    def _drop(self) -> list[str]:
        return drop_to(self.setpriv, *self._nobody) if self._as_root else []


def make_sandbox(choice: str, *, data_dir: Path, cluster_address: str | None,
                 python: str) -> Sandbox:
    """The sandbox ``choice`` names (``auto`` is resolved by the service, per job)."""
    if choice == "none":
        return Sandbox()
    if choice == "users":
        return UserAccounts()
    if choice == "bwrap":
        socket = cluster_address[len("unix:"):] if cluster_address and \
            cluster_address.startswith("unix:") else None
        with contextlib.suppress(OSError):
            data_dir = data_dir.resolve()
        return Bubblewrap(hidden=(data_dir,), cluster_socket=socket, python=python)
    raise ConfigError(f"unknown --job-sandbox {choice!r}: one of {', '.join(CHOICES)}")
