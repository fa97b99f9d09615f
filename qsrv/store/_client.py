"""Reading the node's object store from another process (executors, same-node drivers).

A ``StoreClient`` maps the owner's arena by name, once, and turns a ``Location`` (sent by the
owner, which pinned the object for this reader) into a view of the object's bytes: no copy,
no message per byte. The mapping is read-only at the OS level unless the client was opened
``writable`` (a producer filling space the owner ``create``d): a stray write through a
read-only view raises instead of corrupting an object other readers share.

Invariant: a view is valid while the owner keeps the object pinned; the client cannot check
that, the runtime's protocol must (pin before sending the Location, unpin when the reader says
it is done).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qsrv.codec import statevec
from qsrv.errors import ObjectLostError
from qsrv.store._arena import Arena
from qsrv.store._store import Location

if TYPE_CHECKING:  # numpy loads when an array is first made, not on import
    import numpy.typing as npt

__all__ = ["StoreClient"]


class StoreClient:
    """A mapping of store ``name``'s arena in this process."""

    def __init__(self, name: str, *, directory: str | None = None,
                 writable: bool = False) -> None:
        try:
            self._arena = Arena.attach(name, directory=directory, writable=writable)
        except FileNotFoundError as exc:
            raise ObjectLostError(f"no object store named {name!r} on this node") from exc
        self.name = name

    @property
    def buffer(self) -> memoryview:
        """The whole arena (read-only unless writable)."""
        return self._arena.buf

    def view(self, location: Location) -> memoryview:
        """The object's body, in shared memory (read-only unless the client is writable)."""
        if location.store != self.name:
            raise ValueError(f"location is in store {location.store!r}, not {self.name!r}")
        end = location.offset + location.size
        if location.offset < 0 or end > self._arena.capacity:
            raise ValueError(f"location [{location.offset}, {end}) is outside the arena "
                             f"of {self._arena.capacity} bytes")
        return self._arena.buf[location.offset:end]

    def get(self, location: Location) -> tuple[bytes, memoryview]:
        """(header, body view): the same pair ``ObjectStore.get`` gives in the owner."""
        return location.header, self.view(location)

    def array(self, location: Location, *, verify: bool = False) -> npt.NDArray[Any]:
        """The state vector at ``location`` as a numpy array over shared memory (zero copy;
        read-only unless the client is writable). ``verify`` checks the CRC-32 first
        (ChecksumError on mismatch): the owner already checked it when the bytes arrived."""
        return statevec.decode(location.header, self.view(location), verify=verify)

    def close(self) -> None:
        """Unmap; arrays still alive keep the mapping until they are collected."""
        self._arena.close()

    def __enter__(self) -> StoreClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
