"""An executor subprocess: runs one task at a time, talking straight to the scheduler.

Started by its worker agent (`python -m qsrv.worker._executor ADDRESS WORKER_ID`, token in
QSRV_TOKEN). Blocking IO on purpose: the only work here is one task, and a task that waits on
other tasks' results pumps the same socket itself (telling the scheduler it is blocked, so its
CPU share can run the tasks it waits on). It exits when the scheduler connection goes away.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import sys
import threading
import time
import traceback
from collections import deque
from typing import Any

from qsrv.client import ClientCore, Runtime, RuntimeContext, install
from qsrv.codec import dumps, loads
from qsrv.errors import CONNECTION_ENDED
from qsrv.protocol import (
    OK,
    TASK_ERROR,
    FunctionDef,
    ObjectValue,
    RegisterExecutor,
    RunTask,
    TaskBlocked,
    TaskDone,
    TaskReturned,
    TaskUnblocked,
)
from qsrv.store import NodeStore
from qsrv.transport import SyncConnection
from qsrv.worker._output import Capture, OutputBuffer

_NONE = dumps(None)[0]  # a task's None result, pickled once


class Executor:
    def __init__(self, address: str, token: str, worker_id: int) -> None:
        self.worker_id = worker_id
        self.sc = SyncConnection(address, token, "executor")
        self.core = ClientCore(self.sc.client_no, flush_soon=lambda: None, block=self.block,
                               pumps=True)
        self.core.token = token
        store_socket = os.environ.get("QSRV_STORE_SOCKET")
        if store_socket:  # large arguments and results go through the node's store
            self.core.find_store = lambda: NodeStore(store_socket, token)
        install(Runtime(self.core, task_context=self.context))
        self.functions: dict[bytes, Any] = {}
        self.payloads: dict[bytes, bytes] = {}
        self.deps: dict[int, ObjectValue] = {}
        self.current: RunTask | None = None
        self.pending: deque[RunTask] = deque()  # tasks sent ahead, run in order
        self._reader = threading.Lock()
        self._blockers = 0
        self._blockers_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._gpus_set = True  # CUDA_VISIBLE_DEVICES must be written before the first task
        # the pid its agent knows it by (another one inside a sandbox of its own)
        # what tasks print also goes to their owners, when they follow it (_output.py)
        self.output = OutputBuffer(self.sc.send)
        through = os.environ.get("QSRV_TASK_OUTPUT", "") != "driver"
        for name in ("stdout", "stderr"):
            original = getattr(sys, name)
            if original is not None:
                setattr(sys, name, Capture(original, name, self._current_id, self.output,
                                           through=through))
        pid = os.environ.pop("QSRV_EXECUTOR_PID", "")
        self.sc.send([RegisterExecutor(worker_id, int(pid) if pid.isdigit() else os.getpid())])

    # ---- main loop ---------------------------------------------------------------------------
    def run_forever(self) -> None:
        try:
            while True:
                with self._reader:
                    messages = self.sc.receive()
                self._dispatch(messages)
                while self.pending:
                    self._run(self.pending.popleft())
        except CONNECTION_ENDED:
            return

    def _dispatch(self, messages: list[Any]) -> None:
        for msg in messages:
            kind = type(msg)
            if kind is ObjectValue:
                self.deps[msg.object_id] = msg
                self.core.on_value(msg)
            elif kind is FunctionDef:
                self.payloads[msg.fn_id] = msg.payload
            elif kind is RunTask:
                if self._blockers:  # the running task waits on others: give it back
                    self.sc.send([TaskReturned([msg.task_id])])
                else:
                    self.pending.append(msg)

    def _current_id(self) -> int | None:
        msg = self.current
        return None if msg is None else msg.task_id

    def _function(self, fn_id: bytes) -> Any:
        fn = self.functions.get(fn_id)
        if fn is None:
            fn = self.functions[fn_id] = loads(self.payloads.pop(fn_id))
        return fn

    def _resolve(self, oid: int) -> Any:
        return self.core.load(self.deps[oid])

    def _run(self, msg: RunTask) -> None:
        self.current = msg
        if msg.gpu_ids or self._gpus_set:  # set only when it changes the environment
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(msg.gpu_ids)
            self._gpus_set = bool(msg.gpu_ids)
        retryable = False
        retry_types = None
        start = time.perf_counter()
        try:
            fn = self._function(msg.fn_id)
            args, kwargs, retry_types = loads(msg.args, msg.bufs, self._resolve)
            result = fn(*args, **kwargs)
            if inspect.iscoroutine(result):  # not isawaitable: an ObjectRef is awaitable
                result = self._event_loop().run_until_complete(result)
            bufs: tuple[Any, ...]
            refs: list[int]
            if result is None:  # the most common result: its bytes are known
                status, data, bufs, refs = OK, _NONE, (), []
            else:
                data, bufs, refs = dumps(result)
                status, data, bufs = self.core.encode(msg.task_id, data, bufs)
        except Exception as exc:
            status = TASK_ERROR
            retryable = msg.retry_exceptions and (
                retry_types is None or isinstance(exc, retry_types))
            data, bufs, refs = _dump_error(exc)
        finally:
            elapsed = time.perf_counter() - start
            self.current = None
            if msg.deps:
                still_needed = {d for queued in self.pending for d in queued.deps}
                for dep in msg.deps:
                    if dep not in still_needed:
                        self.deps.pop(dep, None)
        out = self.core.take_outbox() + self.output.take()
        out.append(TaskDone(msg.task_id, status, data, bufs, refs, retryable, elapsed))
        self.sc.send(out)

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop

    # ---- waiting inside a task ---------------------------------------------------------------
    def block(self, done: threading.Event, timeout: float | None) -> bool:
        """Wait for `done` while pumping the connection (values arrive through it)."""
        self.sc.send(self.core.take_outbox())
        if done.is_set():
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        self._blocking(+1)
        try:
            while not done.is_set():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                step = 0.05 if remaining is None else min(0.05, remaining)
                if self._reader.acquire(timeout=step):
                    try:
                        if not done.is_set():
                            self._dispatch(self.sc.receive(timeout=step))
                    finally:
                        self._reader.release()
                self.sc.send(self.core.take_outbox())
            return True
        finally:
            self._blocking(-1)

    def _blocking(self, delta: int) -> None:
        task = self.current
        with self._blockers_lock:
            before = self._blockers
            self._blockers += delta
            after = self._blockers
        if task is None:
            return
        if before == 0 and after == 1:
            # tasks sent ahead would wait behind this one, maybe for themselves: give them back
            returned = [queued.task_id for queued in self.pending]
            self.pending.clear()
            self.sc.send([TaskBlocked(task.task_id)]
                         + ([TaskReturned(returned)] if returned else []))
        elif before == 1 and after == 0:
            self.sc.send([TaskUnblocked(task.task_id)])

    def context(self) -> RuntimeContext:
        msg = self.current
        if msg is None:
            raise RuntimeError("runtime_context() is only available inside a task")
        return RuntimeContext(
            task_id=f"{msg.task_id:016x}", worker_id=self.worker_id,
            node=os.uname().nodename, pid=os.getpid(), gpu_ids=tuple(msg.gpu_ids),
            resources={k: v / (1 if k == "memory" else 10_000) for k, v in msg.resources.items()},
        )


def _dump_error(exc: Exception) -> tuple[bytes, tuple[memoryview, ...], list[int]]:
    tb = "".join(traceback.format_exception(exc))
    message = f"{type(exc).__name__}: {exc}"
    try:
        return dumps((exc, tb, message))
    except Exception:  # the exception itself cannot be pickled: keep its text
        return dumps((None, tb, message))


def main() -> None:
    address, worker_id = sys.argv[1], int(sys.argv[2])
    token = os.environ.pop("QSRV_TOKEN", "")
    try:
        executor = Executor(address, token, worker_id)
    except CONNECTION_ENDED as exc:
        print(f"qsrv executor: {exc}", file=sys.stderr)
        sys.exit(1)
    executor.run_forever()


if __name__ == "__main__":
    main()
