"""The state-vector wire format, shared by the native and the pure-Python implementations.

A state vector travels as a small fixed-format header plus its raw bytes, untouched. The header
(little-endian, 24 + 8 * ndim bytes)::

    offset  size  field
         0     4  magic       b"QSSV"
         4     1  version     1
         5     1  dtype       1 = complex64 ("<c8"), 2 = complex128 ("<c16")
         6     1  order       0 = C, 1 = Fortran (memory order of the raw bytes)
         7     1  ndim        0 .. 64
         8     8  nbytes      length of the raw bytes
        16     4  checksum    CRC-32 of the raw bytes (zlib's polynomial: zlib.crc32)
        20     4  reserved    0
        24  8*ndim shape      one u64 per axis

Everything here is shared: only the two kernels (``checksum`` and ``copy_checksum``) differ
between implementations, so the header bytes are identical by construction.

Headers may come from the network: ``parse_header`` checks every field, and ``Codec.decode``
checks ``nbytes`` against the real buffer before it touches the buffer.
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol

import numpy as np
import numpy.typing as npt

from qsrv.errors import ChecksumError, RemoteProtocolError

__all__ = [
    "HEADER_MAX_SIZE",
    "ChecksumError",
    "Codec",
    "Kernels",
    "StatevectorHeader",
    "byte_view",
    "is_statevector",
    "parse_header",
]

MAGIC: Final = b"QSSV"
VERSION: Final = 1
MAX_NDIM: Final = 64  # numpy 2's limit
_FIXED: Final = struct.Struct("<4sBBBBQII")
_DIM: Final = struct.Struct("<Q")
HEADER_MAX_SIZE: Final = _FIXED.size + MAX_NDIM * _DIM.size

# Only little-endian complex dtypes: the raw bytes are sent as they lie in memory, so the dtype
# must name their byte order. "<c16" is numpy's complex128 on every host we run on.
_DTYPE_CODES: Final[dict[np.dtype[Any], int]] = {np.dtype("<c8"): 1, np.dtype("<c16"): 2}
_CODE_DTYPES: Final = {code: dtype for dtype, code in _DTYPE_CODES.items()}
_ORDERS: Final[tuple[Literal["C"], Literal["F"]]] = ("C", "F")

# threads=None: one thread per this many bytes, up to the usable CPUs and _AUTO_MAX_THREADS.
_AUTO_BYTES_PER_THREAD: Final = 8 << 20
_AUTO_MAX_THREADS: Final = 8
_MAX_THREADS: Final = 64


@dataclass(frozen=True, slots=True)
class StatevectorHeader:
    """A parsed, validated header: ``nbytes == prod(shape) * dtype.itemsize`` holds."""

    dtype: np.dtype[Any]
    shape: tuple[int, ...]
    order: Literal["C", "F"]
    nbytes: int
    checksum: int


class Kernels(Protocol):
    """What an implementation provides; the rest of the codec is shared.

    Both take 1-d, C-contiguous byte memoryviews already checked by ``Codec`` (dst writable,
    at least as long as src, not overlapping it) and a thread count >= 1.
    """

    IMPLEMENTATION: str

    def checksum(self, data: memoryview, threads: int) -> int: ...

    def copy_checksum(self, dst: memoryview, src: memoryview, threads: int) -> int: ...


def is_statevector(obj: object) -> bool:
    """True for a numpy.ndarray (not a subclass) of complex64/complex128 stored little-endian,
    C- or Fortran-contiguous, of any shape (0-d and empty included).

    Subclasses are left to the generic serialiser, which keeps their extra state.
    """
    return (
        type(obj) is np.ndarray
        and obj.dtype in _DTYPE_CODES
        and (obj.flags.c_contiguous or obj.flags.f_contiguous)
    )


def _check_statevector(arr: object) -> npt.NDArray[Any]:
    if not isinstance(arr, np.ndarray) or type(arr) is not np.ndarray:
        raise TypeError(f"expected a numpy.ndarray, got {type(arr).__name__}")
    if arr.dtype not in _DTYPE_CODES:
        raise TypeError(
            f"expected dtype complex64 or complex128 (little-endian), got {arr.dtype.str}"
        )
    if not (arr.flags.c_contiguous or arr.flags.f_contiguous):
        raise ValueError(
            "state vector must be C- or Fortran-contiguous; use numpy.ascontiguousarray"
        )
    return arr


def _array_order(arr: npt.NDArray[Any]) -> Literal["C", "F"]:
    # Arrays that are both (0-d, 1-d, single-element axes) are written as C.
    return "C" if arr.flags.c_contiguous else "F"


def byte_view(obj: Any, *, writable: bool = False) -> memoryview:
    """A 1-d unsigned-byte memoryview over obj's memory, without copying.

    obj is a state vector (either order) or any C-contiguous buffer (bytes, bytearray, mmap,
    SharedMemory.buf, memoryview). Raises TypeError when obj is not a buffer or, with
    ``writable``, when it is read-only; ValueError when it is not contiguous.
    """
    if isinstance(obj, np.ndarray) and (obj.flags.c_contiguous or obj.flags.f_contiguous):
        obj = obj.reshape(-1, order="A").view(np.uint8)  # memory order, still a view
    view = memoryview(obj)
    if writable and view.readonly:
        raise TypeError("destination buffer is read-only")
    if not view.c_contiguous:
        raise ValueError("buffer must be contiguous")
    if view.ndim != 1 or view.format != "B":
        view = view.cast("B")
    return view


def parse_header(header: bytes | bytearray | memoryview) -> StatevectorHeader:
    """Parse and validate a header; raise RemoteProtocolError if it is malformed."""
    size = memoryview(header).nbytes
    if size < _FIXED.size:
        raise RemoteProtocolError(f"state-vector header truncated: {size} bytes")
    magic, version, dtype_code, order_code, ndim, nbytes, crc, reserved = _FIXED.unpack_from(
        header
    )
    if magic != MAGIC:
        raise RemoteProtocolError(f"not a state-vector header (magic {magic!r})")
    if version != VERSION:
        raise RemoteProtocolError(f"unsupported state-vector header version {version}")
    dtype = _CODE_DTYPES.get(dtype_code)
    if dtype is None:
        raise RemoteProtocolError(f"unknown state-vector dtype code {dtype_code}")
    if order_code >= len(_ORDERS):
        raise RemoteProtocolError(f"unknown state-vector order code {order_code}")
    if reserved != 0:
        raise RemoteProtocolError("state-vector header reserved field is not zero")
    if ndim > MAX_NDIM:
        raise RemoteProtocolError(f"state-vector header claims {ndim} dimensions")
    if size != _FIXED.size + ndim * _DIM.size:
        raise RemoteProtocolError(
            f"state-vector header is {size} bytes, expected {_FIXED.size + ndim * _DIM.size}"
        )
    shape = tuple(_DIM.unpack_from(header, _FIXED.size + i * _DIM.size)[0] for i in range(ndim))
    if math.prod(shape) * dtype.itemsize != nbytes:  # Python ints: no overflow
        raise RemoteProtocolError(
            f"state-vector header shape {shape} of {dtype} does not make {nbytes} bytes"
        )
    return StatevectorHeader(dtype, shape, _ORDERS[order_code], nbytes, crc)


def _resolve_threads(threads: int | None, nbytes: int) -> int:
    if threads is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        want = nbytes // _AUTO_BYTES_PER_THREAD
        return max(1, min(want, cpus or 1, _AUTO_MAX_THREADS))
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int or None, got {threads!r}")
    return min(threads, _MAX_THREADS)


@dataclass(frozen=True, slots=True)
class Codec:
    """The state-vector codec over one implementation's kernels."""

    kernels: Kernels

    @property
    def implementation(self) -> str:
        return self.kernels.IMPLEMENTATION

    def checksum(self, buffer: Any, *, threads: int | None = None) -> int:
        """CRC-32 of buffer's bytes (equal to ``zlib.crc32``)."""
        view = byte_view(buffer)
        return self.kernels.checksum(view, _resolve_threads(threads, view.nbytes))

    def copy_into(self, dst: Any, src: Any, *, threads: int | None = None) -> int:
        """Copy src's bytes into the start of dst and return their checksum, in one pass.

        dst must be writable and at least as long as src; bytes past ``len(src)`` are left
        alone. Large copies run on several threads with the GIL released, each thread writing
        its own page range (so fresh pages of dst fault in parallel).
        """
        d = byte_view(dst, writable=True)
        s = byte_view(src)
        if d.nbytes < s.nbytes:
            raise ValueError(f"destination has {d.nbytes} bytes, source {s.nbytes}")
        d = d[: s.nbytes]
        if s.nbytes and np.may_share_memory(
            np.frombuffer(d, np.uint8), np.frombuffer(s, np.uint8)
        ):
            raise ValueError("source and destination overlap")
        return self.kernels.copy_checksum(d, s, _resolve_threads(threads, s.nbytes))

    def encode_header(self, arr: npt.NDArray[Any], *, checksum: int | None = None) -> bytes:
        """The header for arr. Pass ``checksum`` when it is already known (from copy_into)."""
        arr = _check_statevector(arr)
        if checksum is None:
            checksum = self.checksum(arr)
        elif not 0 <= checksum <= 0xFFFFFFFF:
            raise ValueError(f"checksum out of range: {checksum}")
        order = _array_order(arr)
        fixed = _FIXED.pack(
            MAGIC, VERSION, _DTYPE_CODES[arr.dtype], _ORDERS.index(order), arr.ndim,
            arr.nbytes, checksum, 0,
        )
        return fixed + b"".join(_DIM.pack(n) for n in arr.shape)

    def encode(self, arr: npt.NDArray[Any]) -> tuple[bytes, memoryview]:
        """(header, raw bytes): the raw bytes are a view of arr's memory, not a copy."""
        header = self.encode_header(arr)
        return header, byte_view(arr)

    def decode(
        self, header: bytes | bytearray | memoryview, buffer: Any, *, verify: bool = True
    ) -> npt.NDArray[Any]:
        """The array described by header, as a view over buffer (no copy).

        The array is read-only when buffer is. Raises RemoteProtocolError when the header is
        malformed or does not match the buffer's length, ChecksumError (with ``verify``) when
        the bytes do not match the header's checksum.
        """
        h = parse_header(header)
        view = byte_view(buffer)
        if view.nbytes != h.nbytes:
            raise RemoteProtocolError(
                f"state-vector header says {h.nbytes} bytes, buffer has {view.nbytes}"
            )
        if verify:
            actual = self.kernels.checksum(view, _resolve_threads(None, view.nbytes))
            if actual != h.checksum:
                raise ChecksumError(
                    f"state-vector checksum mismatch: header {h.checksum:#010x}, "
                    f"data {actual:#010x}"
                )
        flat = np.frombuffer(view, dtype=h.dtype)
        return flat.reshape(h.shape, order=h.order)
