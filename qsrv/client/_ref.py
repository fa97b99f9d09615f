"""ObjectRef: a handle to a value in the cluster, counted so it is freed with its last ref."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from qsrv.client import _context
from qsrv.codec import current_resolver, note_ref


class ObjectRef:
    """A reference to a task's result or a `put` value. Compare and hash by id; awaitable."""

    __slots__ = ("__weakref__", "_id")

    def __init__(self, oid: int) -> None:
        self._id = oid

    @property
    def id(self) -> str:
        return f"{self._id:016x}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectRef) and other._id == self._id

    def __hash__(self) -> int:
        return hash(self._id)

    def __repr__(self) -> str:
        return f"ObjectRef({self._id:016x})"

    def __await__(self) -> Generator[Any, None, Any]:
        from qsrv.client._api import get_async

        return get_async(self).__await__()

    def __reduce__(self) -> tuple[Any, tuple[int]]:
        note_ref(self._id)
        return _rebuild, (self._id,)

    def __del__(self) -> None:
        core = _context.core
        if core is not None:
            core.dropped.append(self._id)  # list.append is atomic: safe from any thread or GC


def _rebuild(oid: int) -> Any:
    resolve = current_resolver()
    if resolve is not None:
        return resolve(oid)
    core = _context.core
    if core is None:
        return ObjectRef(oid)
    return core.track(oid)
