"""Fixtures and settings for the whole suite (loaded by tests/conftest.py as a plugin)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import cloudpickle
import pytest
from hypothesis import settings

import tests._support
from tests._support.gates import Flag

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

# Executors cannot import the test packages: what tasks use from here travels by value.
cloudpickle.register_pickle_by_value(tests._support)

# No test fails for being slow: Hypothesis's per-example deadline is a timing assertion.
settings.register_profile("qsrv", deadline=None, print_blob=True)
settings.load_profile("qsrv")


@pytest.fixture(autouse=True, scope="module")
def _pickle_test_functions_by_value(request: pytest.FixtureRequest) -> None:
    """Test modules are not importable by executors: ship their task functions by value."""
    module = request.module
    if module.__name__ not in cloudpickle.list_registry_pickle_by_value():
        cloudpickle.register_pickle_by_value(module)


@pytest.fixture
def flags(tmp_path: Path) -> Iterator[Callable[[str], Flag]]:
    """``flags(name)``: a Flag (not set) under this test's temporary directory. All are set
    when the test ends, so that nothing it left waiting on one (a task) outlives it."""
    made: list[Flag] = []

    def make(name: str) -> Flag:
        made.append(Flag(tmp_path / name))
        return made[-1]

    yield make
    for flag in made:
        flag.set()


@pytest.fixture
def run_example() -> Callable[[str], str]:
    """Run ``examples/<path>`` as a user would (its own process, its own directory, no
    cluster address inherited) and return what it printed; it must exit 0."""

    def run(path: str) -> str:
        script = EXAMPLES / path
        env = dict(os.environ)
        env.pop("QSRV_ADDRESS", None)
        out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                             timeout=120, env=env, cwd=script.parent)
        assert out.returncode == 0, out.stderr
        return out.stdout

    return run


@pytest.fixture(scope="module")
def local_cluster() -> Iterator[dict[str, object]]:
    """An embedded local cluster (2 CPUs, a custom resource) with this process as its
    driver, one per test module."""
    import qsrv

    qsrv.shutdown()
    info = qsrv.init(num_cpus=2, resources={"custom": 2})
    yield info
    qsrv.shutdown()
