"""Typed messages and their encoding into frames. No IO here.

A frame's msgpack header is a list of messages, each ``[tag, field, field, ...]`` in the order
the dataclass declares them. A field named ``bufs`` (a tuple of binary buffers) is written as its
count and its buffers go out-of-band, appended in order to the frame's buffer list.

Invariants:
- every message class is a frozen, slotted dataclass registered here under a unique tag;
- `decode_frame` returns only instances of registered classes whose fields have the declared
  types, or raises RemoteProtocolError — nothing else escapes for any input bytes;
- user data (task arguments, results) is opaque ``bytes`` + ``bufs`` here; never unpickled.
"""

from __future__ import annotations

import dataclasses
import reprlib
import typing
from collections.abc import Callable, Iterable
from operator import attrgetter
from typing import Any, TypeVar

import msgpack

from qsrv.errors import LocalProtocolError, RemoteProtocolError
from qsrv.protocol._framing import Buffer, encode_frame

# Status of an object's value.
OK = 0  # data: pickled value
TASK_ERROR = 1  # data: pickled (exception or None, traceback text, message)
SYSTEM_ERROR = 2  # data: (kind, message), see _objects.py; kind is a key of SYSTEM_ERRORS
STORED = 3  # data: the value's location in a node's store, see _objects.py

Bufs = tuple[Buffer, ...]
_M = TypeVar("_M")


class Message:
    """Base of all messages (for typing); concrete ones are frozen slotted dataclasses."""

    __slots__ = ()
    TAG: typing.ClassVar[int]


# tag -> (class, validators, index of the bufs field or -1)
_REGISTRY: dict[int, tuple[type[Any], tuple[Callable[[Any], bool], ...], int]] = {}
_ENCODERS: dict[type[Any], tuple[int, Callable[[Any], tuple[Any, ...]], int]] = {}


def _is_int(v: Any) -> bool:
    return type(v) is int


def _is_float(v: Any) -> bool:
    return type(v) in (int, float)


def _is_int_list(v: Any) -> bool:
    return type(v) is list and all(type(x) is int for x in v)


def _is_str_list(v: Any) -> bool:
    return type(v) is list and all(type(x) is str for x in v)


def _is_int_dict(v: Any) -> bool:
    return type(v) is dict and all(type(k) is str and type(x) is int for k, x in v.items())


def _is_num_dict(v: Any) -> bool:
    return type(v) is dict and all(
        type(k) is str and type(x) in (int, float) for k, x in v.items()
    )


_VALIDATORS: dict[str, Callable[[Any], bool]] = {
    "int": _is_int,
    "float": _is_float,
    "bool": lambda v: type(v) is bool,
    "str": lambda v: type(v) is str,
    "bytes": lambda v: type(v) is bytes,
    "list[int]": _is_int_list,
    "list[str]": _is_str_list,
    "list[Any]": lambda v: type(v) is list,
    "dict[str, int]": _is_int_dict,
    "dict[str, float]": _is_num_dict,
    "dict[str, Any]": lambda v: type(v) is dict and all(type(k) is str for k in v),
    "Bufs": lambda v: type(v) is int and v >= 0,  # on the wire: the count
}


@typing.dataclass_transform(frozen_default=True)
def message(tag: int) -> Callable[[type[_M]], type[_M]]:
    """Register a frozen slotted dataclass as the message with this tag."""

    def register(cls: type[_M]) -> type[_M]:
        assert tag not in _REGISTRY, f"tag {tag} used twice"
        dc = dataclasses.dataclass(frozen=True, slots=True)(cls)
        fields = [f.name for f in dataclasses.fields(dc)]  # type: ignore[arg-type]
        validators = tuple(_VALIDATORS[str(f.type)] for f in dataclasses.fields(dc))  # type: ignore[arg-type]
        bufs_at = fields.index("bufs") if "bufs" in fields else -1
        getter = attrgetter(*fields) if len(fields) > 1 else (lambda m: (getattr(m, fields[0]),))
        dc.TAG = tag  # type: ignore[attr-defined]
        _REGISTRY[tag] = (dc, validators, bufs_at)
        _ENCODERS[dc] = (tag, getter, bufs_at)
        return dc

    return register


def encode_frame_of(messages: Iterable[Any]) -> list[Buffer]:
    """One frame carrying these messages, as pieces to write in order."""
    items: list[list[Any]] = []
    buffers: list[Buffer] = []
    for msg in messages:
        try:
            tag, getter, bufs_at = _ENCODERS[type(msg)]
        except KeyError:
            raise LocalProtocolError(f"{type(msg).__name__} is not a registered message") from None
        values = list(getter(msg))
        if bufs_at >= 0:
            bufs = values[bufs_at]
            values[bufs_at] = len(bufs)
            buffers.extend(bufs)
        values.insert(0, tag)
        items.append(values)
    try:
        header = msgpack.packb(items, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise LocalProtocolError(f"cannot encode message: {exc}") from exc
    return encode_frame(header, buffers)


def decode_frame(header: Buffer, buffers: list[Buffer],
                 allowed: typing.Container[int] | None = None,
                 max_messages: int = 262_144) -> list[Any]:
    """The messages of one frame; RemoteProtocolError for anything malformed, or for a message
    whose tag is not in `allowed` (checked before the message is built)."""
    try:
        items = msgpack.unpackb(header, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types
        raise RemoteProtocolError(f"malformed frame header: {exc}") from None
    if type(items) is not list:
        raise RemoteProtocolError("frame header is not a list of messages")
    if len(items) > max_messages:
        raise RemoteProtocolError(
            f"frame of {len(items)} messages exceeds the limit of {max_messages}")
    out: list[Any] = []
    next_buf = 0
    for item in items:
        if type(item) is not list or not item or type(item[0]) is not int:
            raise RemoteProtocolError("malformed message: expected [tag, fields...]")
        entry = _REGISTRY.get(item[0])
        if entry is None:
            raise RemoteProtocolError(f"unknown message tag {item[0]}")
        if allowed is not None and item[0] not in allowed:
            raise RemoteProtocolError(f"{entry[0].__name__} is not allowed during the handshake")
        cls, validators, bufs_at = entry
        values = item[1:]
        if len(values) != len(validators):
            raise RemoteProtocolError(
                f"{cls.__name__} needs {len(validators)} fields, got {len(values)}"
            )
        for value, valid in zip(values, validators, strict=True):
            if not valid(value):
                raise RemoteProtocolError(
                    f"{cls.__name__}: field of the wrong type: {reprlib.repr(value)}"
                )
        if bufs_at >= 0:
            count = values[bufs_at]
            if next_buf + count > len(buffers):
                raise RemoteProtocolError(f"{cls.__name__} claims more buffers than the frame has")
            values[bufs_at] = tuple(buffers[next_buf : next_buf + count])
            next_buf += count
        out.append(cls(*values))
    if next_buf != len(buffers):
        raise RemoteProtocolError("frame carries buffers no message claims")
    return out


# ---- handshake ---------------------------------------------------------------------------------
@message(1)
class Hello(Message):
    version: int
    role: str
    nonce: bytes


@message(2)
class Challenge(Message):
    version: int
    nonce: bytes
    proof: bytes  # proves the server holds the token too


@message(3)
class Auth(Message):
    proof: bytes


@message(4)
class Welcome(Message):
    client_no: int  # the peer's id in this cluster; ids it mints: see ID_BITS (_objects.py)
    info: dict[str, Any]


@message(5)
class Reject(Message):
    reason: str


# ---- drivers and executors -> scheduler -----------------------------------------------------
@message(10)
class RegisterFunction(Message):
    fn_id: bytes
    payload: bytes


@message(11)
class SubmitTask(Message):
    task_id: int
    fn_id: bytes
    args: bytes
    bufs: Bufs
    deps: list[int]  # refs found anywhere in the arguments
    resources: dict[str, int]  # normalised (see qsrv._resources)
    max_retries: int
    timeout: float  # seconds from submission; 0 means none
    retry_exceptions: bool
    name: str


@message(12)
class PutObject(Message):
    object_id: int
    data: bytes
    bufs: Bufs
    refs: list[int]  # refs contained in the value
    status: int = OK  # OK (the value is here) or STORED (data says which node's store has it)


@message(13)
class RefUpdate(Message):
    add: list[int]
    drop: list[int]


@message(14)
class Subscribe(Message):
    ids: list[int]


@message(15)
class Cancel(Message):
    task_id: int


@message(16)
class StatusRequest(Message):
    req_id: int


# ---- scheduler -> drivers and executors -----------------------------------------------------
@message(20)
class ObjectValue(Message):
    object_id: int
    status: int  # OK, TASK_ERROR or SYSTEM_ERROR
    data: bytes
    bufs: Bufs
    refs: list[int]


@message(21)
class Notice(Message):
    level: str  # "warning" or "info"
    text: str


@message(22)
class StatusReply(Message):
    req_id: int
    status: dict[str, Any]


# ---- worker agent <-> scheduler -------------------------------------------------------------
@message(30)
class RegisterWorker(Message):
    name: str
    resources: dict[str, int]  # normalised totals
    gpu_ids: list[str]
    pid: int
    info: dict[str, Any]


@message(31)
class WorkerAccepted(Message):
    worker_id: int


@message(32)
class Heartbeat(Message):
    sent_at: float


@message(33)
class SpawnExecutor(Message):
    count: int


@message(34)
class KillExecutor(Message):
    pid: int
    reason: str


@message(35)
class WorkerInfo(Message):
    """What a worker learned about itself after registering (e.g. what it can simulate)."""

    info: dict[str, Any]


@message(36)
class HoldObjects(Message):
    """The directory now lists these objects on the agent's node: keep them."""

    ids: list[int]


@message(37)
class FreeObjects(Message):
    """No ref to these objects is left: free the node's copies."""

    ids: list[int]


@message(38)
class ObjectsCopied(Message):
    """Agent -> scheduler: the node pulled copies of these objects (evictable caches)."""

    ids: list[int]


# ---- executor <-> scheduler -----------------------------------------------------------------
@message(40)
class RegisterExecutor(Message):
    worker_id: int
    pid: int


@message(41)
class FunctionDef(Message):
    fn_id: bytes
    payload: bytes


@message(42)
class RunTask(Message):
    task_id: int
    fn_id: bytes
    args: bytes
    bufs: Bufs
    deps: list[int]  # their ObjectValues precede this message
    gpu_ids: list[str]
    resources: dict[str, int]
    retry_exceptions: bool


@message(43)
class TaskDone(Message):
    task_id: int
    status: int
    data: bytes
    bufs: Bufs
    refs: list[int]
    retryable: bool  # an application error the task asked to retry
    elapsed: float  # seconds the task's function ran


@message(44)
class TaskBlocked(Message):
    task_id: int


@message(45)
class TaskUnblocked(Message):
    task_id: int


@message(46)
class TaskReturned(Message):
    """Tasks queued on an executor that it gives back unstarted (its running task blocked)."""

    task_ids: list[int]


# ---- node store service: executors and same-node drivers <-> their worker agent ---------------
@message(50)
class StoreCreate(Message):
    """Reserve ``size`` bytes for a new object; the reply's location is written in place."""

    req: int
    object_id: int
    size: int


@message(51)
class StoreSeal(Message):
    """The object is written: publish it (immutable from now on)."""

    req: int
    object_id: int
    header: bytes


@message(52)
class StorePin(Message):
    """Map an object (pulled from the node named in ``source``, a STORED value's data, if it
    is not here) and keep it in place until unpinned."""

    req: int
    object_id: int
    source: bytes


@message(53)
class StoreUnpin(Message):
    object_ids: list[int]


@message(54)
class StoreReply(Message):
    req: int
    offset: int
    size: int
    header: bytes


@message(55)
class StoreFailed(Message):
    req: int
    kind: str  # a key of errors.SYSTEM_ERRORS, or "full"
    message: str
