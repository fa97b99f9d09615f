"""Acting at the moment a thread is blocked inside a call (e.g. ``qsrv.get``), without
guessing how long the call takes to get there."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType

import qsrv

_QSRV_DIR = os.path.dirname(qsrv.__file__)


def _inside(frame: FrameType | None, directory: str) -> bool:
    while frame is not None:
        if frame.f_code.co_filename.startswith(directory):
            return True
        frame = frame.f_back
    return False


def blocked_in(thread: threading.Thread, directory: str = _QSRV_DIR, samples: int = 3,
               interval: float = 0.01) -> bool:
    """Whether ``thread`` is blocked in a call into code under ``directory`` (qsrv's by
    default): the call is on its stack, and its innermost frame has not moved over
    ``samples`` looks (a blocking wait or read, not code still running)."""
    seen: tuple[FrameType, int] | None = None
    for i in range(samples):
        if i:
            time.sleep(interval)
        frame = sys._current_frames().get(thread.ident or -1)
        if frame is None or not _inside(frame, directory):
            return False
        here = (frame, frame.f_lasti)
        if seen is not None and (here[0] is not seen[0] or here[1] != seen[1]):
            return False
        seen = here
    return True


def when_waiting(thread: threading.Thread, action: Callable[[], object],
                 timeout: float = 30.0) -> Callable[[], None]:
    """Run ``action`` in another thread as soon as ``thread`` blocks inside qsrv.

    Returns ``check()``, which waits for the action and re-raises its failure (or says that
    ``thread`` never blocked within ``timeout`` s, in which case ``action`` did not run).
    """
    errors: list[BaseException] = []

    def watch() -> None:
        try:
            deadline = time.monotonic() + timeout
            while not blocked_in(thread):
                if time.monotonic() >= deadline:
                    raise AssertionError(f"{thread.name} never blocked inside qsrv")
            action()
        except BaseException as exc:
            errors.append(exc)

    watcher = threading.Thread(target=watch, daemon=True, name="when_waiting")
    watcher.start()

    def check() -> None:
        watcher.join(timeout)
        if errors:
            raise errors[0]

    return check
