"""The node's shared-memory object store.

- ``ObjectStore``: owned by one process per node (the worker agent): put/create/seal, get,
  reference counts by holder, pins, eviction and spilling, ``stats()``.
- ``StoreService``: the agent's store served to the processes of its node (Unix socket) and to
  other nodes (TCP transfers), at most ``MAX_WAITING`` connections waiting to authenticate
  per port (``MAX_WAITING_PER_HOST`` from one address) by default; ``sweep_stale`` removes
  the arenas of agents that died.
- ``NodeStore``: a process's door to its node's store (executors, same-node drivers): put a
  large value in place, map one without a copy; values of ``MIN_STORED`` bytes or more go
  there. ``fetch`` pulls a stored value into private memory where no agent runs;
  ``node_key`` names this machine (same node or not).
- ``StoreClient``: any other process of the node maps the arena by name and reads an object
  from its ``Location`` without copying.
- ``TransferSender``/``TransferReceiver``: sans-IO chunked transfer of an object between the
  stores of two nodes, checksum verified on arrival.

Everything else in this package is private to it.
"""

from qsrv.store._arena import sweep_stale
from qsrv.store._client import StoreClient
from qsrv.store._node import MIN_STORED, NodeStore, fetch
from qsrv.store._service import MAX_WAITING, MAX_WAITING_PER_HOST, StoreService, node_key
from qsrv.store._store import Location, ObjectStore
from qsrv.store._transfer import (
    ObjectReceived,
    TransferFailed,
    TransferReceiver,
    TransferSender,
    encode_request,
)

__all__ = [
    "MAX_WAITING",
    "MAX_WAITING_PER_HOST",
    "MIN_STORED",
    "Location",
    "NodeStore",
    "ObjectReceived",
    "ObjectStore",
    "StoreClient",
    "StoreService",
    "TransferFailed",
    "TransferReceiver",
    "TransferSender",
    "encode_request",
    "fetch",
    "node_key",
    "sweep_stale",
]
