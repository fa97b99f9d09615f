"""What a task prints, sent to its owner (``qsrv.init(log_to_driver=True)``).

An executor's ``sys.stdout`` and ``sys.stderr`` are wrapped (`Capture`): writes still go where
they went (the worker's output; with ``QSRV_TASK_OUTPUT=driver``, which an embedded cluster
started with ``log_to_driver`` sets, a task's writes go only to its driver), and while a task
runs they are also kept, per task and stream, in `OutputBuffer`. The executor sends them as
`TaskOutput` messages before the task's result (so a driver prints them before `get` returns),
or sooner: once `FLUSH_BYTES` are kept, and every `FLUSH_EVERY` seconds while a long task
prints. The scheduler forwards them only to owners that follow output, and drops them otherwise.
A task that prints nothing costs nothing."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any, TextIO

from qsrv.protocol import TaskOutput

__all__ = ["Capture", "OutputBuffer"]

FLUSH_BYTES = 8192
FLUSH_EVERY = 0.2
MAX_KEPT = 1 << 20  # characters kept unsent at most (a task printing faster loses the rest)


class OutputBuffer:
    def __init__(self, send: Callable[[list[Any]], None]) -> None:
        self._send = send
        self._lock = threading.Lock()
        self._parts: list[tuple[int, str, str]] = []
        self._size = 0
        self._flusher: threading.Thread | None = None
        self.dropped = 0

    def add(self, task_id: int, stream: str, text: str) -> None:
        with self._lock:
            if self._size + len(text) > MAX_KEPT:
                self.dropped += len(text)
                return
            parts = self._parts
            if parts and parts[-1][0] == task_id and parts[-1][1] == stream:
                parts[-1] = (task_id, stream, parts[-1][2] + text)
            else:
                parts.append((task_id, stream, text))
            self._size += len(text)
            full = self._size >= FLUSH_BYTES
            if self._flusher is None:
                self._flusher = threading.Thread(target=self._flush_forever,
                                                 name="qsrv-output", daemon=True)
                self._flusher.start()
        if full:
            self.flush()

    def take(self) -> list[Any]:
        """The output kept so far, as messages (and forgotten here)."""
        with self._lock:
            parts, self._parts, self._size = self._parts, [], 0
        return [TaskOutput(task_id, stream, text, 0, 0) for task_id, stream, text in parts]

    def flush(self) -> None:
        messages = self.take()
        if messages:
            with contextlib.suppress(Exception):  # the connection is gone: the executor ends
                self._send(messages)

    def _flush_forever(self) -> None:
        stop = threading.Event()
        while not stop.wait(FLUSH_EVERY):
            self.flush()


class Capture:
    """A text stream that writes through to ``original`` and keeps what the running task
    (``current()``: its id, or None between tasks) writes. ``through=False``: what a task
    writes is only kept (an embedded cluster whose driver prints its tasks' output itself:
    the terminal they share would show it twice, interleaved)."""

    def __init__(self, original: TextIO, stream: str, current: Callable[[], int | None],
                 buffer: OutputBuffer, *, through: bool = True) -> None:
        self._original = original
        self._stream = stream
        self._current = current
        self._buffer = buffer
        self._through = through

    def write(self, text: str) -> int:
        task_id = self._current()
        if task_id is None or self._through:
            self._original.write(text)
        if task_id is not None and text:
            self._buffer.add(task_id, self._stream, text)
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self._original.flush()

    def __getattr__(self, name: str) -> Any:  # encoding, fileno, isatty, buffer...
        return getattr(self._original, name)
