"""Stopping and inspecting processes a test started (or that its code started)."""

from __future__ import annotations

import contextlib
import subprocess
import time

import psutil

Proc = subprocess.Popen[str] | subprocess.Popen[bytes]


def stop_process(proc: Proc | int, timeout: float = 10.0, *, tree: bool = False,
                 close_pipes: bool = True) -> int | None:
    """Stop ``proc`` (a Popen, or the pid of any process) and reap it: SIGTERM, ``timeout``
    seconds' grace, then SIGKILL. A process that has already ended is only reaped.

    With ``tree``, its descendants (as they are when this is called) are stopped the same way
    after it. A Popen's pipes are closed afterwards unless ``close_pipes`` is false (a thread
    still reading one). Returns the exit code (None for a pid that was not this process's
    child).
    """
    return stop_processes([proc], timeout, tree=tree, close_pipes=close_pipes)[0]


def stop_processes(procs: list[Proc | int], timeout: float = 10.0, *, tree: bool = False,
                   close_pipes: bool = True) -> list[int | None]:
    """Stop several processes at once: all get SIGTERM first, then share the grace period."""
    popens = [p for p in procs if not isinstance(p, int)]
    others: list[psutil.Process] = []
    for pid in (p for p in procs if isinstance(p, int)):
        with contextlib.suppress(psutil.NoSuchProcess):
            others.append(psutil.Process(pid))
    if tree:
        for pid in [p.pid for p in popens] + [p.pid for p in others]:
            with contextlib.suppress(psutil.NoSuchProcess):
                others += psutil.Process(pid).children(recursive=True)
    for popen in popens:
        if popen.poll() is None:
            popen.terminate()
    for other in others:
        with contextlib.suppress(psutil.NoSuchProcess):
            other.terminate()
    deadline = time.monotonic() + timeout
    codes: dict[int, int | None] = {}
    for popen in popens:
        try:
            codes[popen.pid] = popen.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            popen.kill()
            codes[popen.pid] = popen.wait()
    _, alive = psutil.wait_procs(others, timeout=max(0.0, deadline - time.monotonic()))
    for other in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            other.kill()
    psutil.wait_procs(alive, timeout=timeout)
    if close_pipes:
        for popen in popens:
            for pipe in (popen.stdin, popen.stdout, popen.stderr):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()
    return [codes.get(p if isinstance(p, int) else p.pid) for p in procs]


def process_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie counts as dead)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def process_env(pid: int) -> dict[str, str]:
    """The environment ``pid`` started with (empty once it is gone)."""
    try:
        return psutil.Process(pid).environ()
    except psutil.NoSuchProcess:
        return {}
