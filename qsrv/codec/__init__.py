"""Serialisation of user values (cloudpickle, out-of-band buffers) and state vectors.

- ``dumps``/``loads``: user values as (pickle, out-of-band buffers, refs found inside);
  ``note_ref``/``current_resolver``: the hooks through which ObjectRefs are found and rebuilt.
- ``statevec``: state vectors (contiguous complex arrays) as header + raw bytes --
  ``encode``/``decode``, ``encode_header``, ``copy_into`` (copy and checksum in one pass),
  ``checksum``, ``is_statevector``; native or pure Python (``statevec.IMPLEMENTATION``).
- ``byte_view``: a flat byte view of a state vector or any contiguous buffer, no copy.

``statevec`` and ``byte_view`` load numpy on first use, not on import: ``import qsrv`` stays
light for drivers and CLI tools that never see a state vector.

Everything else in this package is private to it.
"""

from __future__ import annotations

import importlib
import types
from typing import TYPE_CHECKING, Any

from qsrv.codec._pickle import current_resolver, dumps, loads, note_ref

if TYPE_CHECKING:
    from qsrv.codec import _statevec as statevec
    from qsrv.codec._statevec_format import byte_view
else:
    class _OnFirstUse(types.ModuleType):
        """``qsrv.codec._statevec`` imported when one of its names is first read (under the
        import lock, so threads that race wait for one import); its names are then copied
        here and read directly."""

        def __getattr__(self, name: str) -> Any:
            module = importlib.import_module("qsrv.codec._statevec")
            self.__dict__.update(
                {k: v for k, v in vars(module).items() if not k.startswith("__")})
            return getattr(module, name)

    statevec = _OnFirstUse("qsrv.codec.statevec")

    def byte_view(obj: Any, *, writable: bool = False) -> memoryview:
        from qsrv.codec._statevec_format import byte_view as view

        return view(obj, writable=writable)

__all__ = ["byte_view", "current_resolver", "dumps", "loads", "note_ref", "statevec"]
