"""The C extension: loaded when built, forced off by QSRV_PURE_PYTHON, and its own paths."""

from __future__ import annotations

import os
import subprocess
import sys
import zlib
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from qsrv.codec._statevec import codec as make_codec

PROBE = "from qsrv.codec import _statevec as s; print(s.IMPLEMENTATION, s.NATIVE_IMPORT_ERROR)"
SIMD_PROBE = "from qsrv.codec import _native; print(_native.SIMD)"


def run_python(code: str, pure_python: str | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "QSRV_PURE_PYTHON"}
    if pure_python is not None:
        env["QSRV_PURE_PYTHON"] = pure_python
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def selected(pure_python: str | None) -> str:
    return run_python(PROBE, pure_python)


@pytest.mark.parametrize("value", [None, "", "0"])
def test_native_is_selected_whenever_it_is_built(
    value: str | None, built_files: list[Path]
) -> None:
    if not built_files:
        assert selected(value).startswith("python ")
        return
    # Built: it must load (raises CalledProcessError for a wrong ABI or a missing symbol)...
    has_pclmul = run_python(SIMD_PROBE) == "True"
    # ...and be selected, unless the CPU lacks PCLMULQDQ (then the fallback is faster).
    expected = "native None" if has_pclmul else "python qsrv.codec._native: no PCLMULQDQ"
    assert selected(value).startswith(expected), (built_files, selected(value))


@pytest.mark.parametrize("value", ["1", "yes"])
def test_pure_python_forces_the_fallback(value: str) -> None:
    assert selected(value) == "python None"


def test_native_module_is_the_compiled_file(native: ModuleType, built_files: list[Path]) -> None:
    assert native.__file__ in {str(p) for p in built_files}
    assert make_codec("native").implementation == "native"


@pytest.mark.parametrize("simd", [True, False])
def test_c_kernels_match_zlib_on_every_small_length(native: ModuleType, simd: bool) -> None:
    # simd=False runs the portable table code even on a CPU with PCLMULQDQ.
    data = np.random.default_rng(3).integers(0, 256, 700, dtype=np.uint8).tobytes()
    for offset in (0, 1, 8, 15):
        for n in range(0, 700 - offset, 7 if offset else 1):
            chunk = memoryview(data)[offset : offset + n]
            assert native.crc32(chunk, simd=simd) == zlib.crc32(chunk), (offset, n)
            dst = bytearray(n + 1)
            assert native.copy_crc32(dst, chunk, simd=simd) == zlib.crc32(chunk)
            assert dst[:n] == chunk and dst[n] == 0


@pytest.mark.parametrize(
    ("nbytes", "threads"),
    [((3 << 20) + 1, 3), ((2 << 20) + 1, 2), (3 << 20, 3), ((4 << 20) - 1, 4), (8 << 20, 3)],
)
def test_c_ranges_cover_every_byte(native: ModuleType, nbytes: int, threads: int) -> None:
    # Lengths just past a multiple of the range size: the last byte must be copied and summed.
    data = np.random.default_rng(nbytes).integers(0, 256, nbytes, dtype=np.uint8)
    dst = np.zeros_like(data)
    assert native.copy_crc32(dst, data, threads=threads) == zlib.crc32(data.tobytes())
    assert dst[-1] == data[-1] and np.array_equal(dst, data)
    assert native.crc32(data, threads=threads) == zlib.crc32(data.tobytes())


@pytest.mark.parametrize("simd", [True, False])
def test_c_threads_split_and_combine(native: ModuleType, simd: bool) -> None:
    data = np.random.default_rng(4).integers(0, 256, (5 << 20) + 13, dtype=np.uint8)
    expected = zlib.crc32(data.tobytes())
    for threads in (1, 2, 4, 64, 1000):
        assert native.crc32(data, threads=threads, simd=simd) == expected
        dst = np.zeros_like(data)
        assert native.copy_crc32(dst, data, threads=threads, simd=simd) == expected
        assert np.array_equal(dst, data)


def test_c_module_checks_its_own_arguments(native: ModuleType) -> None:
    # Called directly, without the Python layer's checks, it must still be memory-safe.
    buf = bytearray(100)
    with pytest.raises(ValueError, match="overlap"):
        native.copy_crc32(memoryview(buf)[10:], memoryview(buf)[:50])
    with pytest.raises(ValueError, match="dst has"):
        native.copy_crc32(bytearray(5), b"123456")
    with pytest.raises(ValueError, match="threads"):
        native.crc32(b"x", threads=0)
    with pytest.raises(TypeError):
        native.copy_crc32(b"read-only", b"x")
