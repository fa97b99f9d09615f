"""Serialisation of user values (cloudpickle, out-of-band buffers) and state vectors.

- ``dumps``/``loads``: user values as (pickle, out-of-band buffers, refs found inside);
  ``note_ref``/``current_resolver``: the hooks through which ObjectRefs are found and rebuilt.
- ``statevec``: state vectors (contiguous complex arrays) as header + raw bytes --
  ``encode``/``decode``, ``encode_header``, ``copy_into`` (copy and checksum in one pass),
  ``checksum``, ``is_statevector``; native or pure Python (``statevec.IMPLEMENTATION``).
- ``byte_view``: a flat byte view of a state vector or any contiguous buffer, no copy.

Everything else in this package is private to it.
"""

from qsrv.codec import _statevec as statevec
from qsrv.codec._pickle import current_resolver, dumps, loads, note_ref
from qsrv.codec._statevec_format import byte_view

__all__ = ["byte_view", "current_resolver", "dumps", "loads", "note_ref", "statevec"]
