"""qsrv.quantum's public names are exactly these; everything else is private."""

from __future__ import annotations

import qsrv.quantum


def test_public_names() -> None:
    assert sorted(qsrv.quantum.__all__) == [
        "Estimator", "Options", "QuantumJob", "QuantumPlacementError", "Sampler", "backends",
        "max_qubits", "probe_capabilities", "state_bytes", "statevector", "with_initial_state"]
    for name in qsrv.quantum.__all__:
        module = getattr(qsrv.quantum, name).__module__
        # errors live in the one tree of qsrv.errors; the rest is defined in private modules
        assert module == "qsrv.errors" if name.endswith("Error") else module.startswith(
            "qsrv.quantum._")
