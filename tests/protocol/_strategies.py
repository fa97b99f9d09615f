"""Hypothesis strategies for every registered message, derived from the dataclass annotations."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from hypothesis import strategies as st

from qsrv.protocol import Message
from qsrv.protocol._messages import _REGISTRY

INT64_MIN, UINT64_MAX = -(2**63), 2**64 - 1

# msgpack-representable leaves and containers (lists, not tuples: msgpack returns lists).
_leaves = (
    st.none() | st.booleans() | st.integers(INT64_MIN, UINT64_MAX)
    | st.floats(allow_nan=False) | st.text(max_size=20) | st.binary(max_size=20)
)
any_value = st.recursive(
    _leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)
buffer = st.one_of(
    st.binary(max_size=64),
    st.binary(max_size=64).map(bytearray),
    st.binary(max_size=64).map(memoryview),
    st.sampled_from([b"", bytes(range(256)) * 1200]),  # 300 kB: above the direct-read size
)

BY_ANNOTATION: dict[str, st.SearchStrategy[Any]] = {
    "int": st.integers(INT64_MIN, UINT64_MAX),
    "float": st.floats(allow_nan=False),
    "bool": st.booleans(),
    "str": st.text(max_size=40),
    "bytes": st.binary(max_size=64),
    "list[int]": st.lists(st.integers(INT64_MIN, UINT64_MAX), max_size=6),
    "list[str]": st.lists(st.text(max_size=10), max_size=6),
    "dict[str, int]": st.dictionaries(st.text(max_size=10), st.integers(INT64_MIN, UINT64_MAX),
                                      max_size=6),
    "dict[str, Any]": st.dictionaries(st.text(max_size=10), any_value, max_size=6),
    "Bufs": st.lists(buffer, max_size=4).map(tuple),
}

# One valid wire value per annotation (Bufs travels as its count).
SAMPLE_WIRE: dict[str, Any] = {
    "int": 3, "float": 1.5, "bool": True, "str": "s", "bytes": b"b", "list[int]": [1, 2],
    "list[str]": ["a"], "dict[str, int]": {"a": 1}, "dict[str, Any]": {"a": [1, None]},
    "Bufs": 0,
}

# Wire values of the wrong type for each annotation.
WRONG_WIRE: dict[str, list[Any]] = {
    "int": ["3", 3.0, True, None, b"3", [3]],
    "float": ["1.5", True, None, b"", [1.5]],
    "bool": [1, 0, "true", None, 1.0],
    "str": [b"s", 1, None, ["s"]],
    "bytes": ["b", 1, None, [1]],
    "list[int]": [1, "1", [1.0], ["1"], [True], {"a": 1}, None],
    "list[str]": ["a", [1], [b"a"], [None], None],
    "dict[str, int]": [[], {"a": "1"}, {"a": None}, {"a": True}, None],
    "dict[str, Any]": [[], ["a", 1], None, 1, "a"],
    "Bufs": [-1, "1", 1.0, True, None, [b"x"]],
}

MESSAGE_CLASSES: list[type[Any]] = [cls for _, (cls, _, _) in sorted(_REGISTRY.items())]


def fields_of(cls: type[Any]) -> list[SimpleNamespace]:
    """Each field's name and its declared type, as written (a message is a msgspec Struct)."""
    return [SimpleNamespace(name=name, type=str(cls.__annotations__[name]))
            for name in cls.__struct_fields__]


def message_strategy(cls: type[Any]) -> st.SearchStrategy[Message]:
    return st.builds(cls, *[BY_ANNOTATION[str(f.type)] for f in fields_of(cls)])


any_message = st.one_of([message_strategy(cls) for cls in MESSAGE_CLASSES])


def wire_item(cls: type[Any], **override: Any) -> list[Any]:
    """A valid ``[tag, fields...]`` header item for `cls` (no buffers), with overrides."""
    return [cls.TAG, *[override.get(f.name, SAMPLE_WIRE[str(f.type)]) for f in fields_of(cls)]]
