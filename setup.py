"""Build of the optional C extension ``qsrv.codec._native``; everything else is in pyproject.toml.

The extension is optional: when there is no compiler, or it fails, the install still succeeds
with a warning, and ``qsrv.codec._statevec`` uses its pure-Python fallback.
"""

from __future__ import annotations

import sys
import warnings

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """build_ext that warns instead of failing when the C extension cannot be built."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # no compiler at all: setuptools raises before any build
            _warn(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # CompileError, LinkError, OSError, ...
            _warn(exc)


def _warn(exc: BaseException) -> None:
    warnings.warn(
        f"qsrv: building the optional C extension failed ({exc!r}); "
        "the pure-Python state-vector codec will be used.",
        stacklevel=1,
    )


native = Extension(
    "qsrv.codec._native",
    sources=["native/module.c", "native/crc32.c"],
    depends=["native/crc32.h"],
    extra_compile_args=["-O2", "-std=c11", "-pthread", "-Wall", "-Wextra"],
    extra_link_args=["-pthread"],
    optional=True,
)

# The extension uses pthreads and GCC/Clang builtins: leave it out where those are missing.
ext_modules = [] if sys.platform == "win32" else [native]

setup(ext_modules=ext_modules, cmdclass={"build_ext": OptionalBuildExt})
