"""The scheduler's records: tasks, values (inline or in a node's store: the object directory),
clients. Plain slotted classes, no logic beyond construction; `_state.py` owns every change.
"""

from __future__ import annotations

from typing import Any

import msgpack

from qsrv.protocol import SubmitTask
from qsrv.scheduler._placement import Executor, Shape

PENDING, READY, RUNNING, FINISHED, ASSIGNED = 0, 1, 2, 3, 4  # ASSIGNED: queued on an executor
NO_DEPS: list[int] = []  # shared by every task without arguments to wait for; never mutated


class Task:
    __slots__ = (
        "args",
        "blocked",
        "bufs",
        "deadline",
        "dependents",
        "deps",
        "executor",
        "fn_id",
        "gpu_ids",
        "holders",
        "id",
        "max_retries",
        "name",
        "owner",
        "retry_exc",
        "shape",
        "state",
        "subscribers",
        "waiting",
    )

    def __init__(self, msg: SubmitTask, owner: int, shape: Shape, fn_id: bytes,
                 name: str) -> None:
        self.id = msg.task_id
        self.owner = owner
        self.fn_id = fn_id  # shared with every task of the function
        self.args = msg.args
        self.bufs = msg.bufs
        self.deps = msg.deps or NO_DEPS
        self.shape = shape
        self.max_retries = msg.max_retries
        self.retry_exc = msg.retry_exceptions
        self.name = name  # shared with every task of the same name
        self.deadline = 0.0
        self.state = PENDING
        self.waiting = 0  # arguments not yet computed
        self.holders = 1  # the owner
        self.dependents: list[Task] | None = None
        self.subscribers: list[int] | None = None
        self.executor: Executor | None = None
        self.gpu_ids: list[str] | None = None
        self.blocked = False


class Obj:
    """A value that exists: inline (``data``/``bufs``), or STORED in the store of worker
    ``node`` (``data`` says where; ``copies`` lists other nodes that pulled it)."""

    __slots__ = ("bufs", "copies", "data", "holders", "node", "refs", "size", "status")

    def __init__(self, status: int, data: bytes, bufs: tuple[Any, ...], refs: list[int],
                 holders: int, node: int = 0, size: int = 0) -> None:
        self.status = status
        self.data = data
        self.bufs = bufs
        self.refs = refs
        self.holders = holders
        self.node = node
        self.size = size
        self.copies: list[int] | None = None


def stored_at(data: bytes) -> tuple[int, int] | None:
    """(worker id, size) from a STORED value's location, None if malformed."""
    try:
        wid, size, address = msgpack.unpackb(data)
    except Exception:
        return None
    if type(wid) is not int or type(size) is not int or type(address) is not str:
        return None
    return wid, size


class Client:
    __slots__ = ("conn", "holds", "no", "role")

    def __init__(self, conn: int, role: str, no: int) -> None:
        self.conn = conn
        self.role = role
        self.no = no
        self.holds: set[int] = set()


def system_error(kind: str, message: str) -> bytes:
    return bytes(msgpack.packb([kind, message]))


class ProtocolViolation(Exception):
    """A peer broke the rules of the conversation; its connection gets closed."""
