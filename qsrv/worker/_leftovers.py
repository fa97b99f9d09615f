"""The temporary directories of qsrv processes that died without removing them.

A killed worker agent leaves its store's socket directory (``qsrv-store-PID-XXXXXXXX``) and
its spill directory (``qsrv-spill-PID-XXXXXXXX``); a killed driver leaves the directory of its
local cluster's socket (``qsrv-PID-XXXXXXXX``). Each name carries the pid of its owner, so a
directory whose owner is gone can be told from a live one, as the store's arenas are in
/dev/shm. An agent sweeps them when it starts (`sweep_dirs`).

Directories named before the pid was part of the name (``qsrv-XXXXXXXX``,
``qsrv-store-XXXXXXXX``, ``qsrv-spill-XXXXXXXX``) are judged by what they hold: a directory
whose sockets nobody listens on (``/proc/net/unix``) is dead; an old spill directory holds no
socket, so it goes only when no agent of that older kind is alive (none of their store
sockets is listened on). Nothing younger than a minute is touched without a pid to check (its
owner may be starting), and only this user's directories are looked at.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Iterable
from typing import Final

__all__ = ["sweep_dirs"]

_RAND: Final = r"[a-z0-9_]{8}"  # tempfile's random part
_WITH_PID: Final = re.compile(rf"^qsrv-(?:store-|spill-)?(\d+)-{_RAND}$")
_OLD_SPILL_DIR: Final = re.compile(rf"^qsrv-spill-{_RAND}$")
# the older socket directories, and the one file each held
_OLD_SOCKET_DIRS: Final = ((re.compile(rf"^qsrv-store-{_RAND}$"), "store.sock"),
                           (re.compile(rf"^qsrv-{_RAND}$"), "scheduler.sock"))
_MIN_AGE: Final = 60.0  # seconds: a directory without a pid this young may be starting up


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def _listening_paths() -> set[str] | None:
    """Paths of the bound Unix sockets of this machine (None: cannot tell, assume all live)."""
    try:
        with open("/proc/net/unix") as f:
            next(f, None)  # the header
            return {parts[7] for line in f if len(parts := line.split()) >= 8}
    except OSError:
        return None


def _contents(path: str) -> list[str] | None:
    try:
        return os.listdir(path)
    except OSError:
        return None


def sweep_dirs(directories: Iterable[str | None] = (None,), *, now: float | None = None
               ) -> list[str]:
    """Remove the leftover directories of dead qsrv processes found in ``directories`` (None:
    the system's temporary directory); returns the paths removed."""
    now = time.time() if now is None else now
    uid = os.getuid()
    listening: set[str] | None = None
    dead: list[str] = []
    old_spill: list[str] = []
    old_agent_alive = False
    for directory in dict.fromkeys(d or tempfile.gettempdir() for d in directories):
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            name = entry.name
            if not name.startswith("qsrv-"):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid:
                continue
            old = now - st.st_mtime > _MIN_AGE
            if (match := _WITH_PID.match(name)) is not None:
                if not _pid_alive(int(match.group(1))):
                    dead.append(entry.path)
            elif _OLD_SPILL_DIR.match(name):
                if old:
                    old_spill.append(entry.path)
            else:
                for pattern, sock in _OLD_SOCKET_DIRS:
                    if not pattern.match(name):
                        continue
                    contents = _contents(entry.path)
                    if contents is None or not set(contents) <= {sock}:
                        break  # not what qsrv leaves there: not ours to judge
                    if listening is None:
                        listening = _listening_paths()
                    path = os.path.join(entry.path, sock)
                    live = bool(contents) and (listening is None or path in listening)
                    if live:
                        old_agent_alive = old_agent_alive or sock == "store.sock"
                    elif old:
                        dead.append(entry.path)
                    break
    if not old_agent_alive:  # no agent of the older kind lives: its spill dirs are orphans
        dead += old_spill
    for path in dead:
        shutil.rmtree(path, ignore_errors=True)
    return [p for p in dead if not os.path.exists(p)]
