"""Every state-vector codec test runs against both implementations.

The pure-Python one always runs. The native one runs when the C extension is built (CI builds
it with ``pip install -e .``) and the CPU has PCLMULQDQ; test_statevec_native.py fails if it is
built but does not load.
"""

from __future__ import annotations

import importlib.machinery
import os
from pathlib import Path
from types import ModuleType

import pytest

import qsrv.codec
from qsrv.codec._statevec import codec as make_codec
from qsrv.codec._statevec_format import Codec

CODEC_DIR = Path(qsrv.codec.__file__).parent


def native_extension_files() -> list[Path]:
    """The compiled qsrv.codec._native files present in the package directory."""
    return [
        CODEC_DIR / f"_native{suffix}"
        for suffix in importlib.machinery.EXTENSION_SUFFIXES
        if (CODEC_DIR / f"_native{suffix}").exists()
    ]


def _native_usable() -> bool:
    try:
        make_codec("native")
    except ImportError:
        return False
    return True


NATIVE_BUILT = bool(native_extension_files())
requires_native = pytest.mark.skipif(
    not _native_usable(),
    reason="native codec not usable: not built (pip install -e .) or no PCLMULQDQ",
)


@pytest.fixture(
    params=["python", pytest.param("native", marks=requires_native)],
)
def codec(request: pytest.FixtureRequest) -> Codec:
    """A codec over one implementation, loaded directly (not the env-selected one)."""
    return make_codec(request.param)


@pytest.fixture
def built_files() -> list[Path]:
    """The compiled extension files (empty when not built)."""
    return native_extension_files()


@pytest.fixture
def native() -> ModuleType:
    """The C extension module itself. Where it must exist (CI sets QSRV_REQUIRE_NATIVE=1)
    a missing build fails; elsewhere (a machine with no compiler) only the native half of
    the suite is skipped — the fallback, which such a machine uses, is fully tested."""
    if not NATIVE_BUILT:
        if os.environ.get("QSRV_REQUIRE_NATIVE") == "1":
            pytest.fail("the C extension was not built (QSRV_REQUIRE_NATIVE=1)")
        pytest.skip("C extension not built (python setup.py build_ext --inplace)")
    from qsrv.codec import _native

    return _native
