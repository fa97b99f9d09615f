"""Typed messages and their encoding into frames. No IO here.

A frame's msgpack header is a list of messages, each ``[tag, field, field, ...]`` in the order
the class declares them. A field named ``bufs`` (a tuple of binary buffers) is written as its
count and its buffers go out-of-band, appended in order to the frame's buffer list.

Messages are frozen msgspec Structs (``array_like``, tagged with an int: the wire's
``[tag, fields...]``), so a frame header is decoded and every field's type checked in C, into
the typed messages themselves, with no intermediate lists or dicts. A header msgspec refuses
is walked again by the pure-Python checks (`_decode_checked`), which say precisely what is
wrong; so a frame is accepted only when both agree.

Invariants:
- every message class is a frozen Struct subclass of `Message`, registered here under a unique
  tag (its class keyword ``tag=``);
- `decode_frame` returns only instances of registered classes whose fields have the declared
  types, or raises RemoteProtocolError — nothing else escapes for any input bytes;
- user data (task arguments, results) is opaque ``bytes`` + ``bufs`` here; never unpickled.
"""

from __future__ import annotations

import reprlib
import typing
from collections.abc import Callable, Iterable
from typing import Annotated, Any, ClassVar

import msgpack
import msgspec
from msgspec.structs import astuple

from qsrv.errors import LocalProtocolError, RemoteProtocolError
from qsrv.protocol._framing import Buffer, encode_frame

# Status of an object's value.
OK = 0  # data: pickled value
TASK_ERROR = 1  # data: pickled (exception or None, traceback text, message)
SYSTEM_ERROR = 2  # data: (kind, message), see _objects.py; kind is a key of SYSTEM_ERRORS
STORED = 3  # data: the value's location in a node's store, see _objects.py

Bufs = tuple[Buffer, ...]


class Message(msgspec.Struct, frozen=True, array_like=True, forbid_unknown_fields=True,
              gc=False):
    """Base of all messages. A message is ``class Name(Message, tag=N)`` with typed fields;
    instances are immutable and hold no reference cycles (not tracked by the GC)."""

    TAG: ClassVar[int]


# tag -> (class, validators, index of the bufs field or -1)
_REGISTRY: dict[int, tuple[type[Any], tuple[Callable[[Any], bool], ...], int]] = {}
_BUFS_AT: dict[type[Any], int] = {}  # registered class -> index of its bufs field, or -1
_FROM_WIRE: dict[type[Any], tuple[type[Any], int]] = {}  # wire form -> (class, bufs index)


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
# The same types for msgspec, as they are on the wire.
_WIRE_TYPES: dict[str, Any] = {
    "int": int, "float": float, "bool": bool, "str": str, "bytes": bytes,
    "list[int]": list[int], "list[str]": list[str], "list[Any]": list[Any],
    "dict[str, int]": dict[str, int], "dict[str, float]": dict[str, float],
    "dict[str, Any]": dict[str, Any], "Bufs": Annotated[int, msgspec.Meta(ge=0)],
}


class _Wire(msgspec.Struct, frozen=True, array_like=True, forbid_unknown_fields=True,
            gc=False):
    """The wire form of a message with buffers: ``bufs`` is their count."""


def _register(cls: type[Message]) -> None:
    tag = cls.__struct_config__.tag
    assert isinstance(tag, int) and tag not in _REGISTRY, f"tag {tag} of {cls} is not unique"
    annotations = [str(cls.__annotations__[name]) for name in cls.__struct_fields__]
    validators = tuple(_VALIDATORS[a] for a in annotations)
    bufs_at = cls.__struct_fields__.index("bufs") if "bufs" in cls.__struct_fields__ else -1
    cls.TAG = tag
    _REGISTRY[tag] = (cls, validators, bufs_at)
    _BUFS_AT[cls] = bufs_at
    if bufs_at >= 0 or cls.__struct_defaults__:  # decoded as its wire form: every field needed
        wire = msgspec.defstruct(
            f"{cls.__name__}Wire", [(n, _WIRE_TYPES[a]) for n, a in
                                    zip(cls.__struct_fields__, annotations, strict=True)],
            bases=(_Wire,), tag=tag, module=__name__)
        _FROM_WIRE[wire] = (cls, bufs_at)


_DECODERS: dict[frozenset[int], msgspec.msgpack.Decoder[list[Any]]] = {}


def _decoder(tags: frozenset[int]) -> msgspec.msgpack.Decoder[list[Any]]:
    """A decoder of a list of the messages with these tags (each in its wire form)."""
    decoder = _DECODERS.get(tags)
    if decoder is None:
        wire = {cls: w for w, (cls, _) in _FROM_WIRE.items()}
        types = tuple(wire.get(cls, cls) for t, (cls, _, _) in sorted(_REGISTRY.items())
                      if t in tags)
        decoder = _DECODERS[tags] = msgspec.msgpack.Decoder(list[typing.Union[types]])  # type: ignore[valid-type]  # noqa: UP007
    return decoder


def encode_frame_of(messages: Iterable[Any]) -> list[Buffer]:
    """One frame carrying these messages, as pieces to write in order."""
    items: list[Any] = []
    buffers: list[Buffer] = []
    for msg in messages:
        bufs_at = _BUFS_AT.get(type(msg))
        if bufs_at is None:
            raise LocalProtocolError(f"{type(msg).__name__} is not a registered message")
        if bufs_at < 0:
            items.append(msg)  # msgspec writes [tag, fields...]
            continue
        values = list(astuple(msg))
        bufs = values[bufs_at]
        values[bufs_at] = len(bufs)
        buffers.extend(bufs)
        items.append([msg.TAG, *values])
    try:
        header = _ENCODER.encode(items)
    except (TypeError, ValueError, OverflowError) as exc:
        raise LocalProtocolError(f"cannot encode message: {exc}") from exc
    return encode_frame(header, buffers)


_ENCODER = msgspec.msgpack.Encoder()


def decode_frame(header: Buffer, buffers: list[Buffer],
                 allowed: typing.Container[int] | None = None,
                 max_messages: int = 262_144) -> list[Any]:
    """The messages of one frame; RemoteProtocolError for anything malformed, or for a message
    whose tag is not in `allowed` (checked before the message is built)."""
    tags = _ALL_TAGS if allowed is None else frozenset(t for t in _REGISTRY if t in allowed)
    try:
        items = _decoder(tags).decode(header)
    except Exception as exc:  # msgspec's errors, or a RecursionError of a deep nesting
        _decode_checked(header, buffers, allowed, max_messages)  # raises, saying what is wrong
        raise RemoteProtocolError(f"malformed frame header: {exc}") from None
    if len(items) > max_messages:
        raise RemoteProtocolError(
            f"frame of {len(items)} messages exceeds the limit of {max_messages}")
    next_buf = 0
    from_wire = _FROM_WIRE
    for i, msg in enumerate(items):
        entry = from_wire.get(type(msg))
        if entry is None:
            continue
        cls, bufs_at = entry
        values = list(astuple(msg))
        if bufs_at >= 0:
            count = values[bufs_at]
            if next_buf + count > len(buffers):
                raise RemoteProtocolError(f"{cls.__name__} claims more buffers than the frame has")
            values[bufs_at] = tuple(buffers[next_buf : next_buf + count])
            next_buf += count
        items[i] = cls(*values)
    if next_buf != len(buffers):
        raise RemoteProtocolError("frame carries buffers no message claims")
    return items


def _decode_checked(header: Buffer, buffers: list[Buffer],
                    allowed: typing.Container[int] | None, max_messages: int) -> list[Any]:
    """decode_frame's checks, one by one in Python: what a refused header breaks."""
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
class Hello(Message, tag=1, frozen=True):
    version: int
    role: str
    nonce: bytes


class Challenge(Message, tag=2, frozen=True):
    version: int
    nonce: bytes
    proof: bytes  # proves the server holds the token too


class Auth(Message, tag=3, frozen=True):
    proof: bytes


class Welcome(Message, tag=4, frozen=True):
    client_no: int  # the peer's id in this cluster; ids it mints: see ID_BITS (_objects.py)
    info: dict[str, Any]


class Reject(Message, tag=5, frozen=True):
    reason: str


# ---- drivers and executors -> scheduler -----------------------------------------------------
class RegisterFunction(Message, tag=10, frozen=True):
    fn_id: bytes
    payload: bytes


class SubmitTask(Message, tag=11, frozen=True):
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


class PutObject(Message, tag=12, frozen=True):
    object_id: int
    data: bytes
    bufs: Bufs
    refs: list[int]  # refs contained in the value
    status: int = OK  # OK (the value is here) or STORED (data says which node's store has it)


class RefUpdate(Message, tag=13, frozen=True):
    add: list[int]
    drop: list[int]


class Subscribe(Message, tag=14, frozen=True):
    ids: list[int]


class Cancel(Message, tag=15, frozen=True):
    task_id: int


class StatusRequest(Message, tag=16, frozen=True):
    req_id: int


# ---- scheduler -> drivers and executors -----------------------------------------------------
class ObjectValue(Message, tag=20, frozen=True):
    object_id: int
    status: int  # OK, TASK_ERROR or SYSTEM_ERROR
    data: bytes
    bufs: Bufs
    refs: list[int]


class Notice(Message, tag=21, frozen=True):
    level: str  # "warning" or "info"
    text: str


class StatusReply(Message, tag=22, frozen=True):
    req_id: int
    status: dict[str, Any]


# ---- worker agent <-> scheduler -------------------------------------------------------------
class RegisterWorker(Message, tag=30, frozen=True):
    name: str
    resources: dict[str, int]  # normalised totals
    gpu_ids: list[str]
    pid: int
    info: dict[str, Any]


class WorkerAccepted(Message, tag=31, frozen=True):
    worker_id: int


class Heartbeat(Message, tag=32, frozen=True):
    sent_at: float


class SpawnExecutor(Message, tag=33, frozen=True):
    count: int


class KillExecutor(Message, tag=34, frozen=True):
    pid: int
    reason: str


class WorkerInfo(Message, tag=35, frozen=True):
    """What a worker learned about itself after registering (e.g. what it can simulate)."""

    info: dict[str, Any]


class HoldObjects(Message, tag=36, frozen=True):
    """The directory now lists these objects on the agent's node: keep them."""

    ids: list[int]


class FreeObjects(Message, tag=37, frozen=True):
    """No ref to these objects is left: free the node's copies."""

    ids: list[int]


class ObjectsCopied(Message, tag=38, frozen=True):
    """Agent -> scheduler: the node pulled copies of these objects (evictable caches)."""

    ids: list[int]


# ---- executor <-> scheduler -----------------------------------------------------------------
class RegisterExecutor(Message, tag=40, frozen=True):
    worker_id: int
    pid: int


class FunctionDef(Message, tag=41, frozen=True):
    fn_id: bytes
    payload: bytes


class RunTask(Message, tag=42, frozen=True):
    task_id: int
    fn_id: bytes
    args: bytes
    bufs: Bufs
    deps: list[int]  # their ObjectValues precede this message
    gpu_ids: list[str]
    resources: dict[str, int]
    retry_exceptions: bool


class TaskDone(Message, tag=43, frozen=True):
    task_id: int
    status: int
    data: bytes
    bufs: Bufs
    refs: list[int]
    retryable: bool  # an application error the task asked to retry
    elapsed: float  # seconds the task's function ran


class TaskBlocked(Message, tag=44, frozen=True):
    task_id: int


class TaskUnblocked(Message, tag=45, frozen=True):
    task_id: int


class TaskReturned(Message, tag=46, frozen=True):
    """Tasks queued on an executor that it gives back unstarted (its running task blocked)."""

    task_ids: list[int]


# ---- node store service: executors and same-node drivers <-> their worker agent ---------------
class StoreCreate(Message, tag=50, frozen=True):
    """Reserve ``size`` bytes for a new object; the reply's location is written in place."""

    req: int
    object_id: int
    size: int


class StoreSeal(Message, tag=51, frozen=True):
    """The object is written: publish it (immutable from now on)."""

    req: int
    object_id: int
    header: bytes


class StorePin(Message, tag=52, frozen=True):
    """Map an object (pulled from the node named in ``source``, a STORED value's data, if it
    is not here) and keep it in place until unpinned."""

    req: int
    object_id: int
    source: bytes


class StoreUnpin(Message, tag=53, frozen=True):
    object_ids: list[int]


class StoreReply(Message, tag=54, frozen=True):
    req: int
    offset: int
    size: int
    header: bytes


class StoreFailed(Message, tag=55, frozen=True):
    req: int
    kind: str  # a key of errors.SYSTEM_ERRORS, or "full"
    message: str


# ---- scoped credentials (see _credentials.py) ------------------------------------------------
class HelloAs(Message, tag=7, frozen=True):
    """A Hello from the holder of a derived credential: ``credential`` is its id (the secret
    never travels); the challenge that follows is keyed by the secret derived from it."""

    version: int
    role: str
    nonce: bytes
    credential: str


class RevokeCredentials(Message, tag=60, frozen=True):
    """Gateway -> scheduler, and scheduler -> worker agents: these credentials ended (their
    jobs did): refuse them from now on and close the connections that use them. The scheduler
    passes each batch it is told on to every worker (whose store and transfer ports accept job
    credentials), and sends a worker that connects every revocation still in force."""

    ids: list[str]


# ---- monitors (dashboards, timelines): read-only observers of the scheduler -----------------
class MonitorRequest(Message, tag=80, frozen=True):
    """Monitor -> scheduler: what it has seen since ``since`` (epoch seconds; 0: all it
    keeps), as one `MonitorUpdate`; with ``follow`` > 0, one more every ``follow`` seconds
    until the connection closes."""

    req_id: int
    since: float
    follow: float


class MonitorUpdate(Message, tag=81, frozen=True):
    """Scheduler -> monitor: the cluster's status, counters by function, the task events and
    failures since the last update (see qsrv.scheduler._monitor for the shapes)."""

    req_id: int
    update: dict[str, Any]


# ---- reservations: capacity held on one worker (see qsrv/scheduler/_reservations.py) -----
class Reserve(Message, tag=70, frozen=True):
    """Driver -> scheduler: hold ``resources`` on one worker until released. ``res_id`` is
    minted in the driver's id namespace; ``timeout``: seconds to become ready (0: none)."""

    res_id: int
    resources: dict[str, int]  # normalised (see qsrv._resources)
    name: str
    timeout: float


class ReleaseReservation(Message, tag=71, frozen=True):
    res_id: int


class ReservationUpdate(Message, tag=72, frozen=True):
    """Scheduler -> the holder: the reservation's status changed ("pending", "ready",
    "infeasible", "released"); ``worker``: the name of the worker holding it ("" if none)."""

    res_id: int
    status: str
    worker: str
    reason: str


class SpawnTenantExecutor(Message, tag=74, frozen=True):
    """Scheduler -> agent: start executors that run only ``tenant``'s tasks (each given a
    credential derived for that tenant, never the cluster token)."""

    count: int
    tenant: str


class RetireExecutor(Message, tag=75, frozen=True):
    """Scheduler -> agent: stop this executor (idle, not needed) and do not replace it."""

    pid: int
    reason: str


class SubmitReserved(Message, tag=73, frozen=True):
    """A SubmitTask whose task runs only inside reservation ``reservation``."""

    reservation: int
    task_id: int
    fn_id: bytes
    args: bytes
    bufs: Bufs
    deps: list[int]
    resources: dict[str, int]
    max_retries: int
    timeout: float
    retry_exceptions: bool
    name: str


class TaskOutput(Message, tag=82, frozen=True):
    """Executor -> scheduler -> the task's owner, when it follows output (`FollowOutput`):
    what a task wrote to its stdout or stderr (``stream``), from executor ``pid`` of worker
    ``worker`` (set by the scheduler from the connection it came on)."""

    task_id: int
    stream: str
    text: str
    worker: int
    pid: int


class FollowOutput(Message, tag=83, frozen=True):
    """Driver -> scheduler: send me what my tasks print (TaskOutput), or stop (``on``)."""

    on: bool


for _cls in Message.__subclasses__():
    _register(_cls)
_ALL_TAGS = frozenset(_REGISTRY)
