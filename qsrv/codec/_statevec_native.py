"""Native kernels of the state-vector codec: the C extension ``qsrv.codec._native``.

Importing this module raises ImportError when the extension was not built; ``_statevec``
then falls back to ``_statevec_fallback``.
"""

from __future__ import annotations

from typing import Final

from qsrv.codec import _native

__all__ = ["IMPLEMENTATION", "SIMD", "checksum", "copy_checksum"]

IMPLEMENTATION: Final = "native"
SIMD: Final = _native.SIMD  # the PCLMULQDQ kernels run on this CPU (else C table code)


def checksum(data: memoryview, threads: int) -> int:
    """zlib.crc32(data), on ``threads`` threads with the GIL released."""
    return _native.crc32(data, threads=threads)


def copy_checksum(dst: memoryview, src: memoryview, threads: int) -> int:
    """Copy src into dst and return zlib.crc32(src), in one pass over src."""
    return _native.copy_crc32(dst, src, threads=threads)
