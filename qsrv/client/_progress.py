"""Progress bars for waits: ``qsrv.get(refs, progress=True)``, a gateway job or batch.

A bar counts finished (and failed) of total, with the rate and the time left (tqdm); in a
Jupyter kernel it is a widget (tqdm.notebook, when ipywidgets is there). Values arriving do not
touch the bar: the reader thread only counts, and a refresher thread draws at most ten times a
second.

When: ``progress=True`` shows it at once; ``progress=None`` (the default) shows it only for
a wait on `AUTO_MIN` refs or more that lasts over `AUTO_DELAY` seconds, in an interactive
terminal or a notebook, unless ``QSRV_PROGRESS=0``; ``progress=False`` never.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

from qsrv.protocol import OK, STORED

if TYPE_CHECKING:
    from qsrv.client._core import ClientCore

__all__ = ["AUTO_DELAY", "AUTO_MIN", "ProgressBar", "RefProgress", "in_notebook", "wanted"]

AUTO_MIN = 100
AUTO_DELAY = 2.0
REFRESH = 0.1


def in_notebook() -> bool:
    """True in a Jupyter kernel (IPython's ZMQ shell)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:  # an IPython in a strange state: no widgets
        return False
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def wanted(progress: bool | None, count: int, file: TextIO | None = None
           ) -> tuple[bool, float]:
    """Whether to show a bar for a wait on ``count`` items, and after how many seconds."""
    if progress is True:
        return True, 0.0
    if progress is False or progress is not None:
        return False, 0.0
    if count < AUTO_MIN or os.environ.get("QSRV_PROGRESS", "1").strip() in ("0", "false", "no"):
        return False, 0.0
    out = file or sys.stderr
    try:
        interactive = out.isatty()
    except (AttributeError, ValueError):
        interactive = False
    return (interactive or in_notebook()), AUTO_DELAY


def _make_bar(total: int | None, desc: str, initial: int, file: TextIO | None,
              unit: str) -> Any:
    if in_notebook():
        try:
            from tqdm.notebook import tqdm as notebook_tqdm  # type: ignore[import-untyped]

            return notebook_tqdm(total=total, desc=desc, initial=initial, unit=unit)
        except ImportError:  # no ipywidgets: the text bar
            pass
    from tqdm import tqdm  # type: ignore[import-untyped]

    out = file or sys.stderr
    try:  # a terminal that reports no size (a bare pty) gets $COLUMNS x $LINES or 80 x 24
        size = os.get_terminal_size(out.fileno())
        dynamic = size.columns > 0 and size.lines > 0
    except (AttributeError, OSError, ValueError):
        dynamic = False
    fallback = shutil.get_terminal_size()
    return tqdm(total=total, desc=desc, initial=initial, file=out, unit=unit,
                dynamic_ncols=dynamic, ncols=None if dynamic else fallback.columns,
                nrows=None if dynamic else fallback.lines, mininterval=REFRESH,
                smoothing=0.1)


class ProgressBar:
    """A bar drawn by its own thread from counters anyone may bump (``advance``)."""

    def __init__(self, total: int | None, *, desc: str = "qsrv", delay: float = 0.0,
                 file: TextIO | None = None, unit: str = "task") -> None:
        self.total = total
        self.desc = desc
        self.delay = delay
        self.file = file
        self.unit = unit
        self.done = 0
        self.failed = 0
        self.note = ""
        self.bar: Any = None
        self._lock = threading.Lock()
        self._finished = threading.Event()
        self._thread = threading.Thread(target=self._draw, name="qsrv-progress", daemon=True)
        self._thread.start()

    def advance(self, ok: bool = True, n: int = 1) -> None:
        with self._lock:
            self.done += n
            if not ok:
                self.failed += n

    def set(self, done: int, failed: int = 0, total: int | None = None, note: str = "") -> None:
        with self._lock:
            self.done, self.failed, self.note = done, failed, note
            if total is not None:
                self.total = total

    def _draw(self) -> None:
        if self.delay > 0 and self._finished.wait(self.delay):
            return  # over before the bar was worth showing
        with self._lock:  # what was done before the bar shows is its start, not a burst
            shown = self.done
        self.bar = _make_bar(self.total, self.desc, shown, self.file, self.unit)
        while True:
            finished = self._finished.wait(REFRESH)
            with self._lock:
                done, failed, total, note = self.done, self.failed, self.total, self.note
            bar = self.bar
            if total != bar.total:
                bar.total = total
            if done > shown:
                bar.update(done - shown)
                shown = done
            post = []
            if failed:
                post.append(f"failed={failed}")
            if note:
                post.append(note)
            bar.set_postfix_str(", ".join(post), refresh=False)
            bar.refresh()
            if finished:
                bar.close()
                return

    def close(self) -> None:
        self._finished.set()
        self._thread.join(timeout=5)

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RefProgress:
    """A bar over the values of ``ids`` arriving at ``core`` (finished / failed / total)."""

    def __init__(self, core: ClientCore, ids: list[int], *, delay: float = 0.0,
                 desc: str = "qsrv.get", file: TextIO | None = None) -> None:
        self._core = core
        self._ids = list(dict.fromkeys(ids))
        self.bar = ProgressBar(len(self._ids), desc=desc, delay=delay, file=file)
        self._cb: Callable[[int], None] = self._ready
        for oid in core.watch(self._ids, self._cb):
            self._ready(oid)

    def _ready(self, oid: int) -> None:
        msg = self._core.values.get(oid)
        status = getattr(msg, "status", OK)
        self.bar.advance(status in (OK, STORED))

    def close(self) -> None:
        self._core.unwatch(self._ids, self._cb)
        self.bar.close()


def job_progress(status_of: Callable[[], str], is_terminal: Callable[[], bool], *,
                 desc: str, interval: float = 0.5, timeout: float | None = None) -> None:
    """A bar (no total) showing a job's status until it is terminal or ``timeout`` passes."""
    start = time.monotonic()
    with ProgressBar(None, desc=desc, unit="s") as bar:
        while True:
            note = status_of()
            bar.set(int(time.monotonic() - start), note=note)
            if is_terminal() or (timeout is not None and time.monotonic() - start >= timeout):
                return
            time.sleep(interval)
