"""Typed messages: every registered class round-trips; every malformed header is refused."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import qsrv.protocol
from qsrv.errors import LocalProtocolError, RemoteProtocolError
from qsrv.protocol import (
    Cancel,
    FrameDecoder,
    Message,
    Notice,
    ObjectValue,
    PutObject,
    RegisterWorker,
    RunTask,
    StatusRequest,
    SubmitTask,
    decode_frame,
    encode_frame,
    encode_frame_of,
)
from qsrv.protocol._messages import _REGISTRY

from ._helpers import join
from ._strategies import (
    BY_ANNOTATION,
    MESSAGE_CLASSES,
    SAMPLE_WIRE,
    WRONG_WIRE,
    any_message,
    fields_of,
    message_strategy,
    wire_item,
)

FUZZ = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def header(*items: Any) -> bytes:
    return msgpack.packb(list(items), use_bin_type=True)


def assert_same_message(got: Any, sent: Any) -> None:
    assert type(got) is type(sent)
    for f in fields_of(type(sent)):
        value, expected = getattr(got, f.name), getattr(sent, f.name)
        if f.type == "Bufs":
            assert type(value) is tuple
            assert [bytes(b) for b in value] == [bytes(memoryview(b).cast("B")) for b in expected]
        elif f.type == "float":
            assert type(value) is float
            assert value == expected or (math.isnan(value) and math.isnan(expected))
        else:
            assert value == expected
            assert type(value) is type(expected)


# -- the registry ----------------------------------------------------------------------------------
def _all_subclasses(cls: type) -> set[type]:
    out = set()
    for sub in cls.__subclasses__():
        out |= {sub} | _all_subclasses(sub)
    return out


def test_every_message_class_is_registered_once_and_is_frozen_and_slotted() -> None:
    registered = {cls for cls, _, _ in _REGISTRY.values()}
    assert len(registered) == len(_REGISTRY)
    # compare by name, and check the registered class is the one qsrv.protocol exports.
    declared = {c.__name__ for c in _all_subclasses(Message) if c.__module__.startswith("qsrv.")}
    assert {c.__name__ for c in registered} == declared
    for cls in registered:
        assert getattr(qsrv.protocol, cls.__name__) is cls
    for tag, (cls, _, _) in _REGISTRY.items():
        assert tag == cls.TAG == cls.__struct_config__.tag
        assert cls.__struct_config__.frozen  # frozen msgspec Structs
        assert "__slots__" in cls.__dict__
        for f in fields_of(cls):
            assert str(f.type) in BY_ANNOTATION, f"no strategy for {cls.__name__}.{f.name}"


# -- round trips -----------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", MESSAGE_CLASSES, ids=lambda c: c.__name__)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_each_message_round_trips(cls: type[Any], data: st.DataObject) -> None:
    msg = data.draw(message_strategy(cls))
    pieces = encode_frame_of([msg])
    dec = FrameDecoder()
    dec.feed(join(pieces))
    [(hdr, bufs)] = dec.frames()
    [got] = decode_frame(hdr, bufs)
    assert_same_message(got, msg)


@FUZZ
@given(st.lists(any_message, max_size=6))
def test_frames_of_several_messages_round_trip(messages: list[Any]) -> None:
    pieces = encode_frame_of(messages)
    dec = FrameDecoder()
    dec.feed(join(pieces))
    [(header_bytes, bufs)] = dec.frames()
    got = decode_frame(header_bytes, bufs)
    assert len(got) == len(messages)
    for g, m in zip(got, messages, strict=True):
        assert_same_message(g, m)
    assert len(bufs) == sum(len(getattr(m, "bufs", ())) for m in messages)


def test_buffers_are_claimed_in_message_order() -> None:
    a = PutObject(1, b"a", (b"1", b"22"), [])
    b = ObjectValue(2, 0, b"b", (), [1])
    c = SubmitTask(3, b"f", b"c", (b"333",), [1, 2], {"cpu": 10000}, 0, 0.0, False, "t")
    pieces = encode_frame_of([a, b, c])
    dec = FrameDecoder()
    dec.feed(join(pieces))
    [(hdr, bufs)] = dec.frames()
    got = decode_frame(hdr, bufs)
    assert [bytes(x) for x in got[0].bufs] == [b"1", b"22"]
    assert got[1].bufs == ()
    assert [bytes(x) for x in got[2].bufs] == [b"333"]


# -- malformed headers ------------------------------------------------------------------------
@pytest.mark.parametrize("cls", MESSAGE_CLASSES, ids=lambda c: c.__name__)
def test_wrong_arity_is_refused(cls: type[Any]) -> None:
    item = wire_item(cls)
    with pytest.raises(RemoteProtocolError, match="fields"):
        decode_frame(header(item[:-1]), [])
    with pytest.raises(RemoteProtocolError, match="fields"):
        decode_frame(header([*item, 0]), [])
    with pytest.raises(RemoteProtocolError):
        decode_frame(header([cls.TAG]), [])


WRONG_TYPE_CASES = [
    (cls, f.name, bad)
    for cls in MESSAGE_CLASSES
    for f in fields_of(cls)
    for bad in WRONG_WIRE[str(f.type)]
]


@pytest.mark.parametrize(("cls", "field", "bad"), WRONG_TYPE_CASES,
                         ids=[f"{c.__name__}.{n}={b!r}" for c, n, b in WRONG_TYPE_CASES])
def test_wrong_field_type_is_refused(cls: type[Any], field: str, bad: Any) -> None:
    with pytest.raises(RemoteProtocolError, match="wrong type"):
        decode_frame(header(wire_item(cls, **{field: bad})), [])


@pytest.mark.parametrize("cls", [SubmitTask, RegisterWorker, RunTask], ids=lambda c: c.__name__)
def test_integer_resource_amounts_refuse_floats(cls: type[Any]) -> None:
    """`resources: dict[str, int]` holds exact integers (see qsrv._resources); 1.5 is malformed.

    The decoder's invariant is that fields have their declared types; this one lets floats in.
    """
    with pytest.raises(RemoteProtocolError, match="wrong type"):
        decode_frame(header(wire_item(cls, resources={"cpu": 1.5})), [])


def test_sample_items_are_valid() -> None:
    """The malformed cases above differ from a valid item in one place only."""
    for cls in MESSAGE_CLASSES:
        [msg] = decode_frame(header(wire_item(cls)), [])
        assert type(msg) is cls
    assert set(SAMPLE_WIRE) == set(WRONG_WIRE) == set(BY_ANNOTATION)


@pytest.mark.parametrize("tag", [0, 6, 9, 17, 99, -1, 2**31, 2**64 - 1, -(2**63)])
def test_unknown_tag_is_refused(tag: int) -> None:
    with pytest.raises(RemoteProtocolError, match="unknown message tag"):
        decode_frame(header([tag, 1]), [])


@pytest.mark.parametrize("raw", [
    msgpack.packb({"tag": 16}), msgpack.packb(16), msgpack.packb("x"), msgpack.packb(None),
    msgpack.packb(b"\x91\x10", use_bin_type=True), msgpack.packb(1.5), b"", b"\xc1",
    b"\x92\x91", header([16, 1])[:-1], header([16, 1]) + b"\x00",
    msgpack.packb({1: [16, 1]}, use_bin_type=True), b"\xd4\x05\x00", b"\xd6\xff\x00",
], ids=lambda r: r.hex() or "empty")
def test_header_that_is_not_a_list_is_refused(raw: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_frame(raw, [])


@pytest.mark.parametrize("items", [
    [16], [[]], [["16", 1]], [[True, 1]], [[16.0, 1]], [[None]], [{"16": 1}], [b"\x10"],
    [[16, 1], 5],
], ids=repr)
def test_malformed_message_item_is_refused(items: list[Any]) -> None:
    with pytest.raises(RemoteProtocolError, match="malformed message"):
        decode_frame(msgpack.packb(items, use_bin_type=True), [])


def test_empty_frame_decodes_to_no_messages() -> None:
    assert decode_frame(header(), []) == []


def test_buffer_count_beyond_the_frame_is_refused() -> None:
    item = wire_item(PutObject, bufs=2)
    with pytest.raises(RemoteProtocolError, match="more buffers"):
        decode_frame(header(item), [b"only-one"])
    with pytest.raises(RemoteProtocolError, match="more buffers"):
        decode_frame(header(item), [])
    # two messages sharing the frame's buffers may not overlap
    with pytest.raises(RemoteProtocolError, match="more buffers"):
        decode_frame(header(wire_item(PutObject, bufs=1), item), [b"1", b"2"])
    with pytest.raises(RemoteProtocolError, match="more buffers"):
        decode_frame(header(wire_item(PutObject, bufs=2**64 - 1)), [b"1"])


def test_unclaimed_buffers_are_refused() -> None:
    with pytest.raises(RemoteProtocolError, match="no message claims"):
        decode_frame(header(wire_item(StatusRequest)), [b"stray"])
    with pytest.raises(RemoteProtocolError, match="no message claims"):
        decode_frame(header(wire_item(PutObject, bufs=1)), [b"1", b"2"])
    with pytest.raises(RemoteProtocolError, match="no message claims"):
        decode_frame(header(), [b""])


def test_malformed_header_inside_a_real_frame_is_refused() -> None:
    dec = FrameDecoder()
    dec.feed(join(encode_frame(header(wire_item(Cancel, task_id="x")))))
    [(hdr, bufs)] = dec.frames()
    with pytest.raises(RemoteProtocolError):
        decode_frame(hdr, bufs)


# -- sending ----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class Lookalike:
    req_id: int


class StatusRequestSubclass(StatusRequest):  # type: ignore[misc]
    pass


@pytest.mark.parametrize("obj", [
    object(), {"req_id": 1}, [16, 1], (16, 1), None, Lookalike(1), StatusRequestSubclass(1),
    StatusRequest,
], ids=lambda o: type(o).__name__)
def test_sending_an_unregistered_object_is_a_local_error(obj: Any) -> None:
    with pytest.raises(LocalProtocolError, match="not a registered message"):
        encode_frame_of([StatusRequest(1), obj])


@pytest.mark.parametrize("msg", [
    Cancel(2**64), Cancel(-(2**63) - 1), Notice("info", object()),  # type: ignore[arg-type]
], ids=["too-big", "too-small", "unpackable"])
def test_sending_an_unencodable_value_is_a_local_error(msg: Any) -> None:
    with pytest.raises(LocalProtocolError, match="cannot encode"):
        encode_frame_of([msg])
