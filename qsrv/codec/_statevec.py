"""State vectors on the wire and in shared memory: native fast path, pure-Python fallback.

A state vector is a numpy.ndarray of complex64/complex128, C- or Fortran-contiguous, any shape
(what Aer's ``get_statevector()`` gives after ``numpy.asarray``). It travels as a small header
plus its raw bytes (see ``_statevec_format`` for the layout); the raw bytes are never copied
by ``encode``/``decode``, and are copied into shared memory by ``copy_into``, which computes the
checksum in the same pass.

The implementation is chosen at import: the C extension ``qsrv.codec._native`` when it was
built and the CPU has PCLMULQDQ (x86-64 since ~2010), else the pure-Python kernels
(``NATIVE_IMPORT_ERROR`` says why). ``QSRV_PURE_PYTHON=1`` (any value but "" and "0") forces
the pure-Python one. ``IMPLEMENTATION`` says which is active. Both give identical bytes and
checksums (CRC-32 with zlib's polynomial, i.e. ``zlib.crc32``).

Errors: TypeError/ValueError for arguments that are not state vectors or buffers of the right
kind; ``qsrv.errors.RemoteProtocolError`` for a malformed header or one that does not match its
buffer; ``ChecksumError`` (a RemoteProtocolError) when the bytes fail the checksum.
"""

from __future__ import annotations

import os
from typing import Any, Literal

import numpy.typing as npt

from qsrv.codec import _statevec_fallback
from qsrv.codec._statevec_format import (
    HEADER_MAX_SIZE,
    ChecksumError,
    Codec,
    StatevectorHeader,
    is_statevector,
    parse_header,
)

__all__ = [
    "HEADER_MAX_SIZE",
    "IMPLEMENTATION",
    "NATIVE_IMPORT_ERROR",
    "ChecksumError",
    "StatevectorHeader",
    "checksum",
    "codec",
    "copy_into",
    "decode",
    "encode",
    "encode_header",
    "is_statevector",
    "parse_header",
]


def codec(implementation: Literal["native", "python"]) -> Codec:
    """The codec over one implementation, whatever is selected; ImportError if not usable."""
    if implementation == "python":
        return Codec(_statevec_fallback)
    if implementation == "native":
        from qsrv.codec import _statevec_native

        return Codec(_statevec_native)
    raise ValueError(f"unknown implementation {implementation!r}")


def _select() -> tuple[Codec, str | None]:
    if os.environ.get("QSRV_PURE_PYTHON", "") not in ("", "0"):
        return codec("python"), None
    try:
        return codec("native"), None
    except ImportError as exc:  # not built, built for another interpreter, or no PCLMULQDQ
        return codec("python"), str(exc)


_CODEC, NATIVE_IMPORT_ERROR = _select()
IMPLEMENTATION: str = _CODEC.implementation  # "native" or "python"


def checksum(buffer: Any, *, threads: int | None = None) -> int:
    """CRC-32 of buffer's bytes, equal to ``zlib.crc32(buffer)``."""
    return _CODEC.checksum(buffer, threads=threads)


def copy_into(dst: Any, src: Any, *, threads: int | None = None) -> int:
    """Copy src's bytes into the start of the writable dst; return their checksum.

    One pass: the checksum is computed while copying. Large copies use several threads with
    the GIL released; ``threads=None`` picks one per 8 MiB up to the usable CPUs (max 8).
    """
    return _CODEC.copy_into(dst, src, threads=threads)


def encode_header(arr: npt.NDArray[Any], *, checksum: int | None = None) -> bytes:
    """The header for arr; ``checksum`` skips recomputing one already known (from copy_into)."""
    return _CODEC.encode_header(arr, checksum=checksum)


def encode(arr: npt.NDArray[Any]) -> tuple[bytes, memoryview]:
    """(header, raw bytes of arr as a memoryview, not a copy)."""
    return _CODEC.encode(arr)


def decode(
    header: bytes | bytearray | memoryview, buffer: Any, *, verify: bool = True
) -> npt.NDArray[Any]:
    """The array as a zero-copy view over buffer (read-only if buffer is).

    Raises RemoteProtocolError for a malformed or mismatched header, ChecksumError when
    ``verify`` and the bytes do not match.
    """
    return _CODEC.decode(header, buffer, verify=verify)
