"""Fixtures shared by the whole suite."""

from __future__ import annotations

from collections.abc import Iterator

import cloudpickle
import pytest


@pytest.fixture(autouse=True, scope="module")
def _pickle_test_functions_by_value(request: pytest.FixtureRequest) -> None:
    """Test modules are not importable by executors: ship their task functions by value."""
    module = request.module
    if module.__name__ not in cloudpickle.list_registry_pickle_by_value():
        cloudpickle.register_pickle_by_value(module)


@pytest.fixture(scope="module")
def local_cluster() -> Iterator[dict[str, object]]:
    """An embedded local cluster (2 CPUs, a custom resource), one per test module."""
    import qsrv

    qsrv.shutdown()
    info = qsrv.init(num_cpus=2, resources={"custom": 2})
    yield info
    qsrv.shutdown()
