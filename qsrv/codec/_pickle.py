"""User values to bytes and back: cloudpickle protocol 5, large buffers out-of-band.

`dumps` also reports every ObjectRef found inside the value, so the scheduler can keep those
objects alive while the value exists. A large pickle (a big `bytes` or list is pickled in-band)
leaves the message header too: `data` is then empty and the pickle is the first buffer — frame
headers stay small whatever the value. `loads` rebuilds refs through a hook: plain loading makes
new ObjectRefs, while loading task arguments replaces each ref by its value.
"""

from __future__ import annotations

import pickle
import threading
from collections.abc import Callable
from typing import Any

import cloudpickle

OOB_MIN = 4096  # buffers at least this large travel out-of-band, never copied into the pickle
INLINE_MAX = 256 * 1024  # a pickle larger than this travels as a buffer, not in the header

_local = threading.local()


def dumps(value: Any) -> tuple[bytes, tuple[memoryview, ...], list[int]]:
    """(pickle bytes, out-of-band buffers, ids of the refs inside)."""
    buffers: list[memoryview] = []

    def keep(buf: pickle.PickleBuffer) -> bool:
        view = buf.raw()
        if view.nbytes < OOB_MIN:
            return True  # in-band
        buffers.append(view)
        return False

    outer = getattr(_local, "refs", None)
    refs: list[int] = []
    _local.refs = refs
    try:
        data = cloudpickle.dumps(value, protocol=5, buffer_callback=keep)
    finally:
        _local.refs = outer
    if len(data) > INLINE_MAX:
        return b"", (memoryview(data), *buffers), refs
    return data, tuple(buffers), refs


def note_ref(oid: int) -> None:
    """Called by ObjectRef.__reduce__: record a ref inside the value being pickled."""
    refs = getattr(_local, "refs", None)
    if refs is not None:
        refs.append(oid)


def loads(data: bytes, buffers: tuple[Any, ...] = (),
          resolve: Callable[[int], Any] | None = None) -> Any:
    """Unpickle; with `resolve`, every ObjectRef inside is replaced by resolve(id)."""
    if not data and buffers:  # the pickle itself travelled out-of-band
        data, buffers = buffers[0], buffers[1:]
    outer = getattr(_local, "resolve", None)
    _local.resolve = resolve
    try:
        return pickle.loads(data, buffers=buffers)
    finally:
        _local.resolve = outer


def current_resolver() -> Callable[[int], Any] | None:
    return getattr(_local, "resolve", None)
