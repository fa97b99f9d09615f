"""What a worker offers when not told: cores, memory, NVIDIA GPUs (through nvidia-smi)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from qsrv._resources import SCALE
from qsrv.worker import WorkerConfig, _detect


def fake_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, indices: list[int]) -> None:
    script = tmp_path / "nvidia-smi"
    lines = "".join(f"echo {i}\n" for i in indices)
    script.write_text(f"#!/bin/sh\n{lines}")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def test_gpus_found_by_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_nvidia_smi(tmp_path, monkeypatch, [0, 1])
    assert _detect.gpu_ids() == ["0", "1"]
    totals, gpu_ids = WorkerConfig(address="x:1", token="t").capacity()
    assert gpu_ids == ["0", "1"] and totals["gpu"] == 2 * SCALE


def test_cuda_visible_devices_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_nvidia_smi(tmp_path, monkeypatch, [0, 1, 2, 3])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert _detect.gpu_ids() == ["2", "3"]
    _, gpu_ids = WorkerConfig(address="x:1", token="t", gpus=1).capacity()
    assert gpu_ids == ["2"]


def test_no_gpu_and_declared_gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi anywhere
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert _detect.gpu_ids() == []
    totals, gpu_ids = WorkerConfig(address="x:1", token="t").capacity()
    assert "gpu" not in totals and gpu_ids == []
    _, gpu_ids = WorkerConfig(address="x:1", token="t", gpus=1).capacity()
    assert gpu_ids == ["0"]  # declared without hardware: placed as if it existed (warned)


def test_cores_and_memory() -> None:
    assert _detect.cpu_count() == len(os.sched_getaffinity(0))
    meminfo = Path("/proc/meminfo").read_text().split("\n")[0].split()
    assert _detect.memory_bytes() == int(meminfo[1]) * 1024
    totals, _ = WorkerConfig(address="x:1", token="t", cpus=1.5, memory="2GB",
                             resources={"qpu": 1}).capacity()
    assert totals == {"cpu": 15_000, "memory": 2 * 10**9, "qpu": SCALE}
