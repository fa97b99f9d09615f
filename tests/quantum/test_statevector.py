"""State vectors as object refs: out of a task, through the object path, into the next one."""

from __future__ import annotations

import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter
from qiskit.quantum_info import Statevector

import qsrv
from qsrv.quantum import QuantumPlacementError, statevector, with_initial_state

pytestmark = pytest.mark.usefixtures("local_cluster")


def ghz(n: int) -> QuantumCircuit:
    qc = QuantumCircuit(n)
    qc.h(0)
    for i in range(n - 1):
        qc.cx(i, i + 1)
    return qc


def layer(n: int, angle: float) -> QuantumCircuit:
    qc = QuantumCircuit(n)
    for i in range(n):
        qc.ry(angle * (i + 1), i)
    qc.cz(0, n - 1)
    return qc


def test_statevector_round_trip_through_the_object_path() -> None:
    ref = statevector(ghz(5))
    assert isinstance(ref, qsrv.ObjectRef)
    state = qsrv.get(ref)
    assert isinstance(state, np.ndarray) and state.dtype == np.complex128
    assert state.shape == (32,)
    np.testing.assert_allclose(state, Statevector(ghz(5)).data, atol=1e-12)


def test_a_state_ref_is_the_initial_state_of_the_next_task() -> None:
    first = statevector(ghz(4))
    second = statevector(layer(4, 0.3), initial_state=first)  # never leaves the cluster
    expected = Statevector(ghz(4)).evolve(layer(4, 0.3)).data
    np.testing.assert_allclose(qsrv.get(second), expected, atol=1e-12)
    # an array the driver holds works too, and so does a put one
    start = Statevector.from_label("+-01").data
    np.testing.assert_allclose(qsrv.get(statevector(layer(4, 0.5), initial_state=start)),
                               Statevector(start).evolve(layer(4, 0.5)).data, atol=1e-12)
    np.testing.assert_allclose(qsrv.get(statevector(layer(4, 0.5),
                                                    initial_state=qsrv.put(start))),
                               Statevector(start).evolve(layer(4, 0.5)).data, atol=1e-12)


def test_parameters_measurements_and_single_precision() -> None:
    theta = Parameter("theta")
    qc = QuantumCircuit(2)
    qc.rx(theta, 0)
    qc.cx(0, 1)
    qc.measure_all()  # final measurements are dropped for the state
    state = qsrv.get(statevector(qc, parameter_values={theta: 1.1},
                                 backend_options={"precision": "single"}))
    assert state.dtype == np.complex64
    expected = Statevector(qc.remove_final_measurements(inplace=False)
                           .assign_parameters({theta: 1.1})).data
    np.testing.assert_allclose(state, expected, atol=1e-6)


def test_wrong_sized_initial_state_fails_in_the_task() -> None:
    with pytest.raises(ValueError, match="initial state has 8 amplitudes"):
        qsrv.get(statevector(ghz(2), initial_state=np.ones(8) / np.sqrt(8)))


def test_a_state_too_big_for_every_worker_is_refused_at_once() -> None:
    with pytest.raises(QuantumPlacementError, match="36 qubits need 1 TiB"):
        statevector(ghz(36))


@qsrv.distribute_task
def energy_after(state: np.ndarray, angle: float) -> float:
    """A user's own task: start from a state it was given (a ref arrives as the array)."""
    from qiskit_aer import AerSimulator

    qc = with_initial_state(layer(3, angle), state)
    qc.save_expectation_value(__import__("qiskit.quantum_info", fromlist=["Pauli"]).Pauli("ZZZ"),
                              range(3), label="e")
    return float(AerSimulator(method="statevector").run(qc).result().data(0)["e"])


def test_with_initial_state_in_a_users_task() -> None:
    ref = statevector(ghz(3))
    value = qsrv.get(energy_after(ref, 0.4))
    expected = Statevector(ghz(3)).evolve(layer(3, 0.4)).expectation_value(
        __import__("qiskit.quantum_info", fromlist=["Pauli"]).Pauli("ZZZ"))
    assert value == pytest.approx(float(np.real(expected)), abs=1e-9)


def test_a_large_state_lives_in_the_node_store_and_starts_the_next_task() -> None:
    first = statevector(ghz(14))  # 256 KiB: stored in the node's shared memory
    state = qsrv.get(first)
    addr = state.__array_interface__["data"][0]
    with open("/proc/self/maps") as f:
        spans = [line.split() for line in f]
    mapping = next(parts for parts in spans
                   if int(parts[0].split("-")[0], 16) <= addr < int(parts[0].split("-")[1], 16))
    assert mapping[-1].startswith("/dev/shm/qsrv-") and not state.flags.writeable
    np.testing.assert_allclose(state, Statevector(ghz(14)).data, atol=1e-12)
    second = statevector(layer(14, 0.2), initial_state=first)
    np.testing.assert_allclose(qsrv.get(second),
                               Statevector(ghz(14)).evolve(layer(14, 0.2)).data, atol=1e-10)
