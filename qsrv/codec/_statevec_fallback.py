"""Pure-Python kernels of the state-vector codec: stdlib zlib and numpy, nothing compiled here.

Same results as the native kernels: ``zlib.crc32`` is the checksum, so there is nothing to
reimplement. Both kernels still use threads for large buffers, because ``zlib.crc32`` and
``numpy.copyto`` release the GIL; per-range CRCs are joined with ``crc32_combine`` below.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Final

import numpy as np

__all__ = ["IMPLEMENTATION", "checksum", "copy_checksum", "crc32_combine"]

IMPLEMENTATION: Final = "python"

_POLY: Final = 0xEDB88320  # zlib's CRC-32 polynomial, bit-reflected
_PAGE: Final = 4096
_MIN_RANGE: Final = 1 << 20  # as in native/module.c: smaller ranges are not worth a thread
# copy_checksum works in blocks this size: the CRC then reads the block from cache, not RAM.
_BLOCK: Final = 256 << 10


def _multmodp(a: int, b: int) -> int:
    """a * b modulo the CRC polynomial (reflected bit order)."""
    m, p = 1 << 31, 0
    while True:
        if a & m:
            p ^= b
            if a & (m - 1) == 0:
                return p
        m >>= 1
        b = (b >> 1) ^ _POLY if b & 1 else b >> 1


def _x2n_table() -> tuple[int, ...]:
    table = [1 << 30]  # x^1
    for _ in range(31):
        table.append(_multmodp(table[-1], table[-1]))
    return tuple(table)


_X2N: Final = _x2n_table()  # _X2N[k] = x^(2^k) mod P


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """CRC-32 of A followed by B from crc1 = CRC(A), crc2 = CRC(B), len2 = len(B) (zlib's)."""
    p, k = 1 << 31, 3  # x^0; len2 counts bytes, 2^3 bits each
    while len2:
        if len2 & 1:
            p = _multmodp(_X2N[k & 31], p)
        len2 >>= 1
        k += 1
    return _multmodp(p, crc1) ^ crc2


def _ranges(nbytes: int, threads: int) -> list[tuple[int, int]]:
    """Up to ``threads`` consecutive ranges of whole pages covering [0, nbytes)."""
    n = max(1, min(threads, nbytes // _MIN_RANGE))
    step = -(-nbytes // n // _PAGE) * _PAGE or _PAGE
    return [(lo, min(lo + step, nbytes)) for lo in range(0, nbytes, step)] or [(0, 0)]


def _run(work: Callable[[int, int], int], ranges: list[tuple[int, int]]) -> int:
    """work(lo, hi) -> CRC over each range, the first in this thread; the combined CRC."""
    if len(ranges) == 1:
        return work(*ranges[0])
    with ThreadPoolExecutor(max_workers=len(ranges) - 1) as pool:
        futures = [pool.submit(work, lo, hi) for lo, hi in ranges[1:]]
        crc = work(*ranges[0])
        for (lo, hi), future in zip(ranges[1:], futures, strict=True):
            crc = crc32_combine(crc, future.result(), hi - lo)
    return crc


def checksum(data: memoryview, threads: int) -> int:
    """zlib.crc32(data), split over ``threads`` threads when data is large."""
    return _run(lambda lo, hi: zlib.crc32(data[lo:hi]), _ranges(data.nbytes, threads))


def copy_checksum(dst: memoryview, src: memoryview, threads: int) -> int:
    """Copy src into dst (same length) and return zlib.crc32(src)."""
    d = np.frombuffer(dst, np.uint8)
    s = np.frombuffer(src, np.uint8)

    def work(lo: int, hi: int) -> int:
        crc = 0
        for start in range(lo, hi, _BLOCK):
            stop = min(start + _BLOCK, hi)
            np.copyto(d[start:stop], s[start:stop])  # releases the GIL, unlike view slicing
            crc = zlib.crc32(dst[start:stop], crc)
        return crc

    return _run(work, _ranges(src.nbytes, threads))
