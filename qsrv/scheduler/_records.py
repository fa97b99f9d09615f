"""The scheduler's records: tasks, values (inline, or in a node's store), clients. Plain
slotted classes with no logic beyond construction; the parts of `SchedulerState` change them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qsrv.protocol import Bufs, SubmitReserved, SubmitTask
from qsrv.scheduler._lifecycle import PENDING, TaskState

if TYPE_CHECKING:
    from qsrv.scheduler._placement import Executor, Shape
    from qsrv.scheduler._reservations import Reservation

NO_DEPS: list[int] = []  # shared by every task without arguments to wait for; never mutated


class Task:
    """A task whose value does not exist yet; its directory entry until it finishes."""

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
        "reservation",
        "retry_exc",
        "shape",
        "state",
        "stats",
        "submitted",
        "subscribers",
        "timeout",
        "waiting",
    )

    def __init__(self, msg: SubmitTask | SubmitReserved, owner: int, shape: Shape,
                 fn_id: bytes, name: str) -> None:
        self.id = msg.task_id
        self.owner = owner  # the connection that submitted it
        self.fn_id = fn_id  # shared with every task of the function
        self.args = msg.args
        self.bufs = msg.bufs
        self.deps = msg.deps or NO_DEPS
        self.shape = shape
        self.max_retries = msg.max_retries  # retries left
        self.retry_exc = msg.retry_exceptions
        self.name = name  # shared with every task of the same name
        self.deadline = 0.0  # 0: none
        self.timeout = msg.timeout  # seconds from submission; 0: none
        self.state: TaskState = PENDING  # changed only through _lifecycle.set_state
        self.waiting = 0  # arguments not yet computed
        self.holders = 1  # the owner
        self.dependents: list[Task] | None = None  # PENDING tasks waiting for this one
        self.subscribers: list[int] | None = None  # connections that asked for the value
        self.executor: Executor | None = None  # while ASSIGNED or RUNNING
        self.gpu_ids: list[str] | None = None  # the devices it holds while RUNNING
        self.blocked = False  # RUNNING, waiting on others: its non-GPU share is lent out
        # The reservation it runs inside (its queue, its executors, its capacity), if any.
        self.reservation: Reservation | None = None
        self.submitted = 0.0  # epoch seconds, when a monitor records (0: not recorded)
        self.stats: list[float] | None = None  # a recording monitor's counters of its function


class Obj:
    """A value that exists: inline (``data``/``bufs``), or STORED in the store of worker
    ``node`` (``data`` says where; ``copies`` lists other nodes that pulled it)."""

    __slots__ = ("bufs", "copies", "data", "holders", "node", "refs", "size", "status")

    def __init__(self, status: int, data: bytes, bufs: Bufs, refs: list[int],
                 holders: int, node: int = 0, size: int = 0) -> None:
        self.status = status
        self.data = data
        self.bufs = bufs
        self.refs = refs  # ids of the objects this value contains (each holds them)
        self.holders = holders
        self.node = node  # worker id of a STORED value's store; 0 for the others
        self.size = size
        self.copies: list[int] | None = None


class Client:
    """An authenticated connection: a driver, a worker agent or an executor."""

    __slots__ = ("conn", "holds", "no", "role", "scope", "tasks", "tenant")

    def __init__(self, conn: int, role: str, no: int, tenant: str = "") -> None:
        self.conn = conn
        self.role = role
        self.no = no  # its id namespace (see qsrv.protocol.ID_BITS)
        self.tenant = tenant  # a scoped credential's (a gateway job's), "" for the token's
        # A tenant's client reads only ids of its namespace and the ids in this set: refs
        # inside values it was sent (see _validate.check_readable). None: reads anything.
        self.scope: set[int] | None = set() if tenant else None
        self.holds: set[int] = set()  # ids it holds a ref to (each counted once in holders)
        self.tasks: dict[int, Task] = {}  # its unfinished tasks by id, in submission order
