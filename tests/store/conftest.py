"""Stores over real shared memory, removed after each test."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from qsrv.store import ObjectStore


@pytest.fixture
def make_store(tmp_path: Path) -> Iterator[Callable[..., ObjectStore]]:
    """make_store(capacity, name=None) -> a fresh store spilling under tmp_path."""
    stores: list[ObjectStore] = []

    def make(capacity: int, name: str | None = None) -> ObjectStore:
        store = ObjectStore(capacity, tmp_path / f"spill{len(stores)}",
                            name=name or f"test-{os.getpid()}-{len(stores)}")
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()
        assert not os.path.exists(f"/dev/shm/qsrv-{store.name}")
