"""A job's processes, by process group: signal it, see whether any of it lives, wait until it
is gone, and find and kill what jobs of a previous gateway left running."""

from __future__ import annotations

import contextlib
import os
import signal

import psutil  # type: ignore[import-untyped]

from qsrv._retry import poll_until_async
from qsrv.gateway._runtime import JOB_ID_ENV

__all__ = ["group_alive", "kill_orphans", "killpg", "wait_group_gone"]

_POLL_S = 0.02


def killpg(pgid: int, sig: int) -> None:
    """Signal the group; one that is gone, or not ours to signal, is let be."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


_EXITED = frozenset({psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD})


def group_alive(pgid: int) -> bool:
    """Whether any process of the group is still alive (zombies do not count)."""
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() not in _EXITED:
                return True
        except (OSError, psutil.Error):  # gone meanwhile, or not ours to look at
            continue
    return False


async def wait_group_gone(pgid: int, timeout: float) -> None:
    """Wait until every process of the group has exited, killing stragglers."""
    def gone() -> bool:
        if not group_alive(pgid):
            return True
        killpg(pgid, signal.SIGKILL)
        return False

    await poll_until_async(gone, timeout, _POLL_S)


def kill_orphans(job_ids: set[str]) -> dict[str, int]:
    """Kill every process left by these jobs of a previous gateway; count them per job.

    Processes are found by the ``QSRV_JOB_ID`` in their environment (psutil), not by a
    recorded pid: a gateway can die between starting a job and recording its pid, and a
    recorded pid may since belong to someone else. Each one's process group is killed, so
    children that have not set their own session go too, and the job's ``_job_init`` (whose
    own environment holds nothing of the job) with its leader.
    """
    killed: dict[str, int] = {}
    if not job_ids:
        return killed
    own_group = os.getpgrp()
    for proc in psutil.process_iter():
        try:
            job_id = proc.environ().get(JOB_ID_ENV)
        except (OSError, psutil.Error):  # gone, a zombie, or not ours to read
            continue
        if job_id not in job_ids:
            continue
        pid: int = proc.pid
        with contextlib.suppress(ProcessLookupError):
            group = os.getpgid(pid)
            if group != own_group:  # never our own group, whatever the environment says
                killpg(group, signal.SIGKILL)
        if pid != os.getpid():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        killed[job_id] = killed.get(job_id, 0) + 1
    return killed
