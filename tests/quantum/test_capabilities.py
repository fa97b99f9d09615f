"""Capability probing and the memory arithmetic behind placement (no cluster)."""

from __future__ import annotations

import logging

import pytest

from qsrv.quantum import max_qubits, probe_capabilities, state_bytes
from qsrv.quantum._capabilities import format_bytes

GiB = 1 << 30


def test_state_bytes_per_method_and_precision() -> None:
    assert state_bytes(31) == 32 * GiB
    assert state_bytes(31, precision="single") == 16 * GiB
    assert state_bytes(10, "automatic") == state_bytes(10, "statevector") == 16 << 10
    assert state_bytes(10, "density_matrix") == 16 << 20
    assert state_bytes(10, "unitary") == 16 << 20
    assert state_bytes(3, "superop") == 16 << 12
    assert state_bytes(1000, "stabilizer") < 1 << 20  # polynomial, not 2**1000
    with pytest.raises(ValueError, match="unknown simulation method"):
        state_bytes(3, "quantum_magic")
    with pytest.raises(ValueError, match="precision"):
        state_bytes(3, precision="half")


def test_max_qubits_is_the_largest_state_that_fits() -> None:
    assert max_qubits(24 * GiB) == 30  # 16 GiB fits, 32 GiB does not
    assert max_qubits(32 * GiB) == 31
    assert max_qubits(32 * GiB - 1) == 30
    assert max_qubits(24 * GiB, precision="single") == 31
    assert max_qubits(24 * GiB, "density_matrix") == 15
    assert max_qubits(24 * GiB, "stabilizer") == 10_000
    assert max_qubits(8) == 0
    for n in range(1, 25):
        mem = state_bytes(n)
        assert max_qubits(mem) == n and max_qubits(mem - 1) == n - 1


def test_format_bytes() -> None:
    assert format_bytes(32 * GiB) == "32 GiB"
    assert format_bytes(24 * GiB + GiB // 2) == "24.5 GiB"
    assert format_bytes(100) == "100 B"


def test_probe_reports_cpu_methods_precisions_and_limits() -> None:
    caps = probe_capabilities(24 * GiB, [])
    assert caps["devices"] == ["CPU"]
    assert {"automatic", "statevector", "density_matrix", "stabilizer",
            "matrix_product_state"} <= set(caps["methods"])
    assert caps["precisions"] == ["double", "single"]
    assert caps["memory_bytes"] == 24 * GiB
    assert caps["max_qubits"]["CPU"]["statevector"] == {"double": 30, "single": 31}
    assert caps["max_qubits"]["CPU"]["density_matrix"]["double"] == 15
    assert "GPU" not in caps["max_qubits"]
    assert caps["warnings"] == []
    assert caps["aer_version"].count(".") >= 2


def test_gpus_that_aer_cannot_use_are_a_warning_not_a_device(
        caplog: pytest.LogCaptureFixture) -> None:
    """This machine's qiskit-aer has no GPU support: a worker given --gpus 1 must say so."""
    with caplog.at_level(logging.WARNING, logger="qsrv.quantum"):
        caps = probe_capabilities(8 * GiB, ["0"])
    assert caps["devices"] == ["CPU"]
    assert "GPU" not in caps["max_qubits"]
    assert len(caps["warnings"]) == 1
    assert "Aer cannot use them" in caps["warnings"][0]
    assert "nothing falls back to the CPU" in caps["warnings"][0]
    assert any("Aer cannot use them" in r.getMessage() for r in caplog.records)


def test_probe_result_travels_as_plain_data() -> None:
    import msgpack

    caps = probe_capabilities(4 * GiB, ["0"])
    assert msgpack.unpackb(msgpack.packb(caps), strict_map_key=False) == caps
