"""Native kernels of the state-vector codec: the C extension ``qsrv.codec._native``.

Importing this module raises ImportError when the extension was not built, or when this CPU
lacks PCLMULQDQ: the extension's portable code is slower than ``zlib.crc32``, so the C code is
used only where it wins. ``_statevec`` then falls back to ``_statevec_fallback``.
"""

from __future__ import annotations

from typing import Final

from qsrv.codec import _native

__all__ = ["IMPLEMENTATION", "checksum", "copy_checksum"]

IMPLEMENTATION: Final = "native"
if not _native.SIMD:
    raise ImportError(
        "qsrv.codec._native: no PCLMULQDQ on this CPU; the pure-Python codec (zlib.crc32) "
        "is faster than the extension's portable code"
    )


def checksum(data: memoryview, threads: int) -> int:
    """zlib.crc32(data), on ``threads`` threads with the GIL released."""
    return _native.crc32(data, threads=threads)


def copy_checksum(dst: memoryview, src: memoryview, threads: int) -> int:
    """Copy src into dst and return zlib.crc32(src), in one pass over src."""
    return _native.copy_crc32(dst, src, threads=threads)
