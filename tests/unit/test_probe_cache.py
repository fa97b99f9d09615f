"""The capability probe runs once per machine: its answer is cached under the user's cache
directory, keyed by what it depends on, written atomically, and a corrupt cache is ignored.
The probe itself is replaced here by a counter (the real one runs in tests/quantum)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from qsrv.worker import _probe


@pytest.fixture
def probes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, list[str]]]:
    """The probe's calls; each answers with what it was asked."""
    calls: list[tuple[int, list[str]]] = []

    def fake(memory: int, gpu_ids: list[str]) -> dict[str, Any]:
        calls.append((memory, gpu_ids))
        return {"devices": ["CPU"], "memory_bytes": memory, "gpu_ids": gpu_ids,
                "warnings": []}

    monkeypatch.setattr(_probe, "_run_probe", fake)
    return calls


def test_probed_once_then_read_from_the_cache(tmp_path: Path, probes: list[Any]) -> None:
    first = _probe.cached_capabilities(1 << 30, [], directory=tmp_path)
    again = _probe.cached_capabilities(1 << 30, [], directory=tmp_path)
    assert first == again == {"devices": ["CPU"], "memory_bytes": 1 << 30, "gpu_ids": [],
                              "warnings": []}
    assert len(probes) == 1
    files = list(tmp_path.glob("capabilities-*.json"))
    assert len(files) == 1
    assert json.loads(files[0].read_text())["key"] == _probe.probe_key(1 << 30, [])
    assert not list(tmp_path.glob(".capabilities-*"))  # no temporary file left behind


def test_another_key_is_probed_again(tmp_path: Path, probes: list[Any],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    _probe.cached_capabilities(1 << 30, [], directory=tmp_path)
    _probe.cached_capabilities(2 << 30, [], directory=tmp_path)  # other memory offered
    monkeypatch.setattr(_probe, "_version",
                        lambda dist: "9.9" if dist == "qiskit-aer" else None)  # an upgrade
    _probe.cached_capabilities(1 << 30, [], directory=tmp_path)
    assert [memory for memory, _ in probes] == [1 << 30, 2 << 30, 1 << 30]


def test_the_key_names_what_the_answer_depends_on() -> None:
    key = _probe.probe_key(1 << 30, ["0"])
    for name in ("qiskit", "qiskit-aer", "python", "cpu_model", "cpu_count", "machine_memory",
                 "memory", "gpu_ids", "gpus", "probe"):
        assert name in key, name
    assert key["memory"] == 1 << 30 and key["gpu_ids"] == ["0"]


@pytest.mark.parametrize("content", ["{not json", "[]", '{"key": {}, "capabilities": {}}',
                                     '{"capabilities": "x"}', ""])
def test_a_corrupt_cache_is_ignored_and_replaced(tmp_path: Path, probes: list[Any],
                                                 content: str) -> None:
    _probe.cached_capabilities(1 << 30, [], directory=tmp_path)
    (path,) = tmp_path.glob("capabilities-*.json")
    path.write_text(content)
    assert _probe.cached_capabilities(1 << 30, [], directory=tmp_path)["memory_bytes"] == 1 << 30
    assert len(probes) == 2
    assert json.loads(path.read_text())["capabilities"]["memory_bytes"] == 1 << 30


def test_agents_starting_together_probe_once(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    inside = threading.Event()
    release = threading.Event()

    def slow(memory: int, gpu_ids: list[str]) -> dict[str, Any]:
        calls.append(memory)
        inside.set()
        release.wait(30)
        return {"memory_bytes": memory}

    monkeypatch.setattr(_probe, "_run_probe", slow)
    results: list[dict[str, Any] | None] = []
    threads = [threading.Thread(target=lambda: results.append(
        _probe.cached_capabilities(1 << 30, [], directory=tmp_path))) for _ in range(4)]
    for t in threads:
        t.start()
    assert inside.wait(30)  # one of them probes; the others wait on the lock
    release.set()
    for t in threads:
        t.join(30)
    assert calls == [1 << 30]
    assert results == [{"memory_bytes": 1 << 30}] * 4


def test_a_failed_probe_is_not_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_probe, "_run_probe", lambda memory, gpu_ids: None)
    assert _probe.cached_capabilities(1 << 30, [], directory=tmp_path) is None
    assert not list(tmp_path.glob("capabilities-*.json"))


def test_an_unwritable_cache_still_probes(tmp_path: Path, probes: list[Any]) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("")  # a file where the cache directory should be
    found = _probe.cached_capabilities(1 << 30, [], directory=blocked / "qsrv")
    assert found is not None and len(probes) == 1


def test_the_cache_is_under_the_users_cache_dir(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert _probe.cache_dir() == tmp_path / "qsrv"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert _probe.cache_dir() == Path.home() / ".cache" / "qsrv"


def test_the_real_probe_runs_in_a_subprocess(tmp_path: Path) -> None:
    """The probe's answer is plain data that came from another process (no simulator was
    imported here)."""
    import sys

    before = "qiskit_aer" in sys.modules
    found = _probe._run_probe(1 << 30, [])
    assert found is not None and found["memory_bytes"] == 1 << 30
    assert "CPU" in found["devices"] or "error" in found
    assert ("qiskit_aer" in sys.modules) == before
