"""Checks on what peers send, made before anything changes. Pure.

Each check returns what the message refers to, or raises ProtocolViolation; the state machine
then closes that one connection (and treats it as gone). A handler runs its checks first, so a
refused message leaves no half-made change behind.
"""

from __future__ import annotations

from qsrv.errors import ProtocolError
from qsrv.protocol import ID_BITS, decode_location
from qsrv.scheduler._placement import Executor, Worker
from qsrv.scheduler._records import Client, Obj, Task


class ProtocolViolation(Exception):
    """A peer broke the rules of the conversation; its connection gets closed."""


def client_of(clients: dict[int, Client], conn: int, role: str | None = None) -> Client:
    """The sender, which must have ``role`` when one is given."""
    client = clients.get(conn)
    if client is None:
        raise ProtocolViolation("message from an unknown connection")
    if role is not None and client.role != role:
        raise ProtocolViolation(f"only a {role} may send this")
    return client


def check_new_id(client: Client, oid: int, objects: dict[int, Task | Obj]) -> None:
    """A client creates objects only in its own id namespace, and each id once."""
    if oid >> ID_BITS != client.no or oid in objects:
        raise ProtocolViolation(f"object id {oid} is not this client's to create")


def check_readable(client: Client, ids: list[int]) -> None:
    """A tenant's client (a gateway job's driver) names only objects of its own namespace
    (its tasks and puts) or refs it was given inside values sent to it. Others: no check."""
    scope = client.scope
    if scope is None:
        return
    no = client.no
    for oid in ids:
        if oid >> ID_BITS != no and oid not in scope:
            raise ProtocolViolation(f"object {oid:#x} is not this tenant's to read")


def check_amounts(resources: dict[str, int]) -> None:
    for v in resources.values():
        if type(v) is not int or v < 0:
            raise ProtocolViolation("resource amounts must be non-negative integers")


def check_location(data: bytes) -> tuple[int, int]:
    """(worker id, size) of a STORED value's location."""
    try:
        wid, size, _ = decode_location(data)
    except ProtocolError:
        raise ProtocolViolation("malformed stored-object location") from None
    return wid, size


def worker_of(worker_by_conn: dict[int, Worker], conn: int, what: str) -> Worker:
    """The worker agent on ``conn``; ``what`` names the message for the error."""
    worker = worker_by_conn.get(conn)
    if worker is None:
        raise ProtocolViolation(f"{what} from a connection that is not a worker")
    return worker


def executor_of(executors: dict[int, Executor], clients: dict[int, Client], conn: int,
                task_id: int) -> tuple[Executor, Task] | None:
    """The executor on ``conn`` and the task it runs, which must be ``task_id``; None for an
    executor already let go (killed): its late reports are ignored."""
    ex = executors.get(conn)
    if ex is None:
        client = clients.get(conn)
        if client is not None and client.role == "executor":
            return None
        raise ProtocolViolation("only an executor may report on tasks")
    task = ex.task
    if task is None or task.id != task_id:
        raise ProtocolViolation(f"executor reports on task {task_id:#x} it is not running")
    return ex, task
