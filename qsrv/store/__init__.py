"""The node's shared-memory object store.

- ``ObjectStore``: owned by one process per node (the worker agent): put/create/seal, get,
  reference counts by holder, pins, eviction and spilling, ``stats()``.
- ``StoreClient``: any other process of the node maps the arena by name and reads an object
  from its ``Location`` without copying.
- ``TransferSender``/``TransferReceiver``: sans-IO chunked transfer of an object between the
  stores of two nodes, checksum verified on arrival.
"""

from qsrv.store._client import StoreClient
from qsrv.store._store import Location, ObjectStore
from qsrv.store._transfer import (
    ObjectReceived,
    TransferFailed,
    TransferReceiver,
    TransferSender,
    encode_request,
)

__all__ = [
    "Location",
    "ObjectReceived",
    "ObjectStore",
    "StoreClient",
    "TransferFailed",
    "TransferReceiver",
    "TransferSender",
    "encode_request",
]
