"""ObjectRef: a handle to a value in the cluster, counted so it is freed with its last ref."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from qsrv.client import _runtime, _wait
from qsrv.codec import current_resolver, note_ref
from qsrv.errors import NotConnectedError


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
        return self._get().__await__()

    async def _get(self) -> Any:
        runtime = _runtime.active
        if runtime is None:
            raise NotConnectedError("awaiting an ObjectRef needs a cluster connection: "
                                    "this process has none (qsrv.shutdown() was called?)")
        values = await _wait.get_async(runtime.core, [self._id], None)
        return values[0]

    def __reduce__(self) -> tuple[Any, tuple[int]]:
        note_ref(self._id)
        return _rebuild, (self._id,)

    def __del__(self) -> None:
        runtime = _runtime.active
        if runtime is not None:
            # list.append is atomic: safe from any thread or the garbage collector
            runtime.core.dropped.append(self._id)


def _rebuild(oid: int) -> Any:
    resolve = current_resolver()
    if resolve is not None:
        return resolve(oid)
    runtime = _runtime.active
    if runtime is not None:
        runtime.core.track(oid)
    return ObjectRef(oid)
