"""The first process of a job without a PID namespace (``--job-sandbox none`` or ``users``):
it starts the job and, once the job's process exits, kills everything the job left behind,
including processes that left the job's process group or session (``setsid``, a double fork).

Run as a script of its own (``python -I -S _job_init.py``; it imports only the standard
library), as the leader of the job's session and process group, with the job's working
directory and umask. It reads what to run from its standard input, one JSON object
``{"argv", "env", "uid", "gid", "groups"}`` (so that the job's environment, which holds its
credentials, never shows in this process's own), then gives the job ``/dev/null`` as input.

- It marks itself a child subreaper (Linux ``PR_SET_CHILD_SUBREAPER``): every process the job
  starts stays its descendant, whatever parent dies, so it finds them all in ``/proc``.
- When the job's process exits it kills every descendant (SIGKILL), reaps them, and exits as
  the job's process did (the same exit code, or killed by the same signal). Its own exit
  therefore means that nothing of the job runs any more.
- SIGTERM (the gateway stopping the job: sent to the whole process group) is passed on to the
  descendants outside the group; this process itself lives on. SIGUSR1 (the gateway giving up
  waiting) kills every descendant at once.
- For ``users`` it runs as root and switches to the account only in the job's process, so
  the job cannot signal it. Under ``none`` the job runs as the same user and could kill it
  first; ``none`` is for one trusted user.

Limits: a process the job has another service start (``systemd-run``, ``at``, an ``ssh`` to
this host) is not its descendant and is not found. Where there is no child subreaper (not
Linux) the job's leftover processes are only killed when they stayed in its process group.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import sys

_PR_SET_CHILD_SUBREAPER = 36


def _become_subreaper() -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _descendants() -> list[tuple[int, int]]:
    """(pid, process group) of every descendant of this process, from ``/proc``."""
    children: dict[int, list[int]] = {}
    groups: dict[int, int] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:  # gone meanwhile
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        pid = int(name)
        children.setdefault(int(fields[1]), []).append(pid)
        groups[pid] = int(fields[2])
    out: list[tuple[int, int]] = []
    todo = [os.getpid()]
    while todo:
        for child in children.get(todo.pop(), ()):
            out.append((child, groups[child]))
            todo.append(child)
    return out


def _signal_descendants(sig: int, *, outside_group_only: bool = False) -> None:
    own_group = os.getpgrp()
    for pid, group in _descendants():
        if outside_group_only and group == own_group:
            continue
        with contextlib.suppress(OSError):
            os.kill(pid, sig)


def _start(spec: dict[str, object]) -> int:
    pid = os.fork()
    if pid:
        return pid
    try:  # the job's process
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        uid, gid, groups = spec.get("uid"), spec.get("gid"), spec.get("groups")
        if isinstance(gid, int):
            os.setgroups([g for g in groups if isinstance(g, int)]
                         if isinstance(groups, list) else [])
            os.setgid(gid)
        if isinstance(uid, int):
            os.setuid(uid)
        argv = [str(a) for a in spec["argv"]]  # type: ignore[attr-defined]
        env = {str(k): str(v) for k, v in spec["env"].items()}  # type: ignore[attr-defined]
        os.execvpe(argv[0], argv, env)
    except BaseException as exc:  # reported as the job's failure
        with contextlib.suppress(OSError):
            os.write(2, f"could not start the job: {exc}\n".encode())
    os._exit(127)


def main() -> int:
    spec = json.loads(sys.stdin.buffer.read())
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    _become_subreaper()
    signal.signal(signal.SIGTERM,
                  lambda *_: _signal_descendants(signal.SIGTERM, outside_group_only=True))
    signal.signal(signal.SIGUSR1, lambda *_: _signal_descendants(signal.SIGKILL))
    # (no stop is lost between the fork and the leader's pid being known: it is blocked)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGUSR1})
    leader = _start(spec)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGUSR1})
    status: int | None = None
    while True:
        try:
            pid, waited = os.waitpid(-1, 0)
        except ChildProcessError:  # no child left, hence no descendant
            break
        if pid == leader:
            status = waited
        if status is not None:  # the job ended: nothing of it may outlive it
            _signal_descendants(signal.SIGKILL)
    if status is None:
        return 127
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        with contextlib.suppress(OSError, ValueError):  # (SIGKILL has no handler to reset)
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        return 128 + sig
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main())
