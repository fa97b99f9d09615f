# Type stub of the optional C extension built from native/module.c.
from typing_extensions import Buffer

SIMD: bool

def crc32(buffer: Buffer, threads: int = 1, simd: bool = True) -> int: ...
def copy_crc32(dst: Buffer, src: Buffer, threads: int = 1, simd: bool = True) -> int: ...
