"""The driver's connection: user threads and a flusher thread write, a reader thread receives.

Submissions queue in the core's outbox; a flusher thread, woken once per burst, sends what has
accumulated as one frame (and, every _IDLE_FLUSH_INTERVAL when nothing else happens, the refs
dropped meanwhile). A user thread about to wait (get, wait) sends the outbox itself first, so
the round trip never waits for a thread hand-off. Writers combine: whoever holds the send lock
also sends what others queued meanwhile. The reader thread blocks in recv on the socket (one
system call per read, no poll) and hands values to the core, which wakes the waiters.
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
import threading
import time
from concurrent.futures import Future
from typing import Any

from qsrv.client._core import ClientCore
from qsrv.errors import (
    CONNECTION_ENDED,
    ConnectionClosedError,
    ConnectionLostError,
    GetTimeoutError,
    QsrvError,
)
from qsrv.protocol import (
    FollowOutput,
    Notice,
    ObjectValue,
    ReservationUpdate,
    StatusReply,
    StatusRequest,
    TaskOutput,
)
from qsrv.store import NodeStore, node_key
from qsrv.transport import SyncConnection

log = logging.getLogger("qsrv")
_IDLE_FLUSH_INTERVAL = 0.1  # how often dropped refs are sent when nothing else happens
_PROGRESS_AFTER = 10.0
_BURST = 200e-6  # submissions closer together than this are batched by the flusher


class Driver:
    core: ClientCore

    def __init__(self, address: str, token: str, *, connect_timeout: float = 10.0) -> None:
        self.address = address
        self.token = token
        self.sc = SyncConnection(address, token, "driver", timeout=connect_timeout)
        self.core = ClientCore(self.sc.client_no, self._queued, self._block)
        self.core.find_store = self._find_store
        self.core.token = token
        self._last_queued = 0.0
        self._send_lock = threading.Lock()
        self._flush_wanted = threading.Event()
        self._replies: dict[int, Future[dict[str, Any]]] = {}
        self._req_ids = itertools.count(1)
        self._closing = False
        self._tty = sys.stderr.isatty()  # progress lines while a get waits long
        self._reader = threading.Thread(target=self._read_forever, name="qsrv-reader",
                                        daemon=True)
        self._reader.start()
        self._flusher = threading.Thread(target=self._flush_forever, name="qsrv-flusher",
                                         daemon=True)
        self._flusher.start()

    # ---- sending (any thread) ----------------------------------------------------------------
    def _queued(self) -> None:
        """Something was queued. A lone submission goes out now, from this thread; one in a
        burst (queued within _BURST of the previous) is left to the flusher, which batches."""
        now = time.perf_counter()
        lone = now - self._last_queued > _BURST
        self._last_queued = now
        if lone:
            self.flush_soon()
        elif not self._flush_wanted.is_set():
            self._flush_wanted.set()

    def _flush_forever(self) -> None:
        while not self._closing:
            self._flush_wanted.wait(_IDLE_FLUSH_INTERVAL)  # also sends refs dropped while idle
            self._flush_wanted.clear()
            self.flush_soon()
            if self.core.closed is not None:
                return

    def flush_soon(self) -> None:
        """Send what the core has queued, now, from this thread (or leave it to the thread
        that is sending already: it looks again after releasing the lock)."""
        core = self.core
        while core.has_outgoing():
            if not self._send_lock.acquire(blocking=False):
                return  # the holder re-checks after releasing
            try:
                messages = core.take_outbox()
                if messages:
                    self.sc.send(messages)
            except CONNECTION_ENDED as exc:
                core.on_closed(exc)
                return
            finally:
                self._send_lock.release()

    def _send(self, messages: list[Any]) -> None:
        with self._send_lock:
            self.sc.send(messages)

    # ---- receiving (the reader thread) -------------------------------------------------------
    def _read_forever(self) -> None:
        core = self.core
        try:
            while True:
                messages = self.sc.receive()
                for msg in messages:
                    if type(msg) is ObjectValue:
                        core.on_value(msg)
                    elif type(msg) is Notice:
                        log.warning("%s", msg.text)
                    elif type(msg) is StatusReply:
                        fut = self._replies.pop(msg.req_id, None)
                        if fut is not None:
                            fut.set_result(msg.status)
                    elif type(msg) is ReservationUpdate:
                        core.on_reservation(msg)
                    elif type(msg) is TaskOutput:
                        print_output(msg)
                if core.dropped:
                    self.flush_soon()
        except CONNECTION_ENDED as exc:
            error: ConnectionClosedError | ConnectionLostError = (
                ConnectionClosedError("qsrv.shutdown() was called") if self._closing else exc)
            core.on_closed(error)
            for fut in list(self._replies.values()):
                fut.set_exception(error)
            self._replies.clear()

    # ---- waiting (user threads) --------------------------------------------------------------
    def _block(self, done: threading.Event, timeout: float | None) -> bool:
        self.flush_soon()  # send what this thread queued before waiting for its answer
        if timeout is not None or not self._tty:
            return done.wait(timeout)
        start = time.monotonic()
        while not done.wait(_PROGRESS_AFTER):
            print(f"qsrv: still waiting for results ({time.monotonic() - start:.0f} s)",
                  file=sys.stderr)
        return True

    def follow_output(self, on: bool = True) -> None:
        """Have what this driver's tasks print sent here, and printed (`print_output`)."""
        self.following_output = on
        self._send([FollowOutput(on)])

    def status(self, timeout: float = 10.0) -> dict[str, Any]:
        req_id = next(self._req_ids)
        fut: Future[dict[str, Any]] = Future()
        self._replies[req_id] = fut
        self.flush_soon()  # what this thread submitted goes first
        try:
            self._send([StatusRequest(req_id)])
            return fut.result(timeout)
        except TimeoutError:
            raise GetTimeoutError(f"no status reply within {timeout:g} s") from None
        finally:
            self._replies.pop(req_id, None)

    def _find_store(self) -> NodeStore | None:
        """The store of a worker agent on this node, if there is one this user can reach:
        large values then move through shared memory, never through the scheduler."""
        here = node_key()
        try:
            workers = self.status()["workers"]
        except (GetTimeoutError, *CONNECTION_ENDED):
            return None
        for worker in workers:
            store = (worker.get("info") or {}).get("store") or {}
            if store.get("node") == here and os.path.exists(store.get("socket", "")):
                try:
                    return NodeStore(store["socket"], self.token)
                except (QsrvError, OSError) as exc:
                    log.warning("cannot use the object store of worker %s: %s",
                                worker.get("id"), exc)
        return None

    def close(self) -> None:
        if self.core.store is not None:
            self.core.store.close()
        self.flush_soon()
        self._closing = True
        self._flush_wanted.set()
        self.sc.close()
        self._reader.join(5)
        self._flusher.join(5)
        if self.core.closed is None:
            self.core.on_closed(ConnectionClosedError("qsrv.shutdown() was called"))


def print_output(msg: TaskOutput) -> None:
    """A task's output on this process's stdout or stderr, each line prefixed with where it
    ran: ``(worker 1, pid 4242, task 1f2e...) text``."""
    stream = sys.stderr if msg.stream == "stderr" else sys.stdout
    prefix = f"(worker {msg.worker}, pid {msg.pid}, task {msg.task_id:016x}) "
    text = msg.text if msg.text.endswith("\n") else msg.text + "\n"
    try:
        stream.write("".join(prefix + line for line in text.splitlines(keepends=True)))
        stream.flush()
    except (OSError, ValueError):  # a closed stream: nobody to show it to
        pass
