"""Serialisation of user values (cloudpickle, out-of-band buffers) and state vectors."""

from qsrv.codec._pickle import current_resolver, dumps, loads, note_ref

__all__ = ["current_resolver", "dumps", "loads", "note_ref"]
