"""Each engine's kind of program through the service: an Aer circuit with a parameter in a
session, a Pulser sequence with a variable and a Perceval circuit with a free phase as batch
jobs on their platforms; each job's counts equal that engine run directly (in this process)
with the same seed."""

from __future__ import annotations

import warnings
from typing import Any

import pytest

from qsrv.errors import InvalidProgramError
from qsrv.gateway._models import User
from qsrv.gateway._quantum import JobSpec, QStatus
from qsrv.quantum import engines
from tests.quantum_service.conftest import AER, Quantum, bell

PULSER = "pulser.qutip.cpu"
PERCEVAL = "perceval.slos.cpu"


def rabi_sequence(atoms: int = 2) -> Any:
    from pulser import Pulse, Register, Sequence
    from pulser.devices import AnalogDevice

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        register = Register.from_coordinates([(6.0 * i, 0.0) for i in range(atoms)],
                                             prefix="q")
        seq = Sequence(register, AnalogDevice)
        seq.declare_channel("ryd", "rydberg_global")
        omega = seq.declare_variable("omega_max")
        seq.add(Pulse.ConstantPulse(200, omega, 0.0, 0.0), "ryd")
        seq.measure("ground-rydberg")
    return seq


def rabi(atoms: int = 2) -> engines.Program:
    return engines.program_from(rabi_sequence(atoms))


def mzi_circuit() -> Any:
    import perceval as pcvl

    return pcvl.Circuit(2) // pcvl.BS.H() // (0, pcvl.PS(pcvl.P("phi"))) // pcvl.BS.H()


def mzi() -> engines.Program:
    return engines.perceval_program(mzi_circuit(), "|1,0>")


def pulser_directly(omega_max: float, shots: int, seed: int) -> dict[str, int]:
    """The sequence run on Pulser's emulator in this process, seeded as the engine seeds."""
    import numpy as np
    from pulser_simulation import QutipEmulator

    seq = rabi_sequence()
    np.random.seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        counts = QutipEmulator.from_sequence(seq.build(omega_max=omega_max)).run() \
            .sample_final_state(shots)
    return {str(k): int(v) for k, v in counts.items()}


def perceval_directly(phi: float, shots: int, seed: int) -> dict[str, int]:
    """The circuit sampled by Perceval's SLOS in this process with the same seed."""
    import perceval as pcvl

    circuit = mzi_circuit()
    circuit.get_parameters()[0].set_value(phi)
    pcvl.random_seed(seed)
    processor = pcvl.Processor("SLOS", circuit)
    processor.with_input(pcvl.BasicState("|1,0>"))
    found = pcvl.algorithm.Sampler(processor, max_shots_per_call=shots).sample_count(shots)
    return {str(state): int(n) for state, n in found["results"].items()}


def _needs(q: Quantum, name: str) -> None:
    """The test extra installs Perceval and Pulser: a platform missing is a failure, with
    what the worker's probe said about its engine."""
    offered = {p.name for p in q.platforms()}
    if name in offered:
        return
    engine = name.split(".")[0]
    status = q.gateway.call(q.service.cluster.status())
    said = [((w.get("info") or {}).get("quantum") or {}).get("engines", {}).get(engine)
            for w in status.get("workers") or ()]
    pytest.fail(f"no worker offers {name} (offered: {sorted(offered)}); the workers' probes "
                f"of {engine}: {said}")


def test_pulser_sequence_with_variables(q: Quantum, alice: User) -> None:
    _needs(q, PULSER)
    batch = q.create_batch(alice, rabi(), [JobSpec(20, {"omega_max": 6.0}, seed=1),
                                           JobSpec(30, {"omega_max": 10.5}, seed=2)],
                           platform=PULSER)
    done = q.wait_batch(alice, batch.id, 170)
    assert done.status is QStatus.DONE, [j.errors for j in done.jobs]
    counts = [q.result(alice, j.id).counts for j in done.jobs]
    assert [sum(c.values()) for c in counts] == [20, 30]
    assert all(len(bits) == 2 for c in counts for bits in c)
    # Equal to Pulser's emulator run directly with the same seed.
    assert counts == [pulser_directly(6.0, 20, 1), pulser_directly(10.5, 30, 2)]
    with pytest.raises(InvalidProgramError, match="missing variable"):
        q.create_batch(alice, rabi(), [JobSpec(20, {})], platform=PULSER)
    with pytest.raises(InvalidProgramError):  # a Pulser sequence on an Aer platform
        q.create_batch(alice, rabi(), [JobSpec(20, {"omega_max": 1.0})], platform=AER)


def test_perceval_circuit(q: Quantum, alice: User) -> None:
    _needs(q, PERCEVAL)
    batch = q.create_batch(alice, mzi(), [JobSpec(100, {"phi": 0.0}, seed=3),
                                          JobSpec(100, {"phi": 3.14159}, seed=4)],
                           platform=PERCEVAL)
    done = q.wait_batch(alice, batch.id, 120)
    assert done.status is QStatus.DONE, [j.errors for j in done.jobs]
    results = [q.result(alice, j.id) for j in done.jobs]
    assert all(sum(r.counts.values()) == 100 for r in results)
    assert results[0].counts != results[1].counts  # the phase moves the photon
    assert all(r.native for r in results)  # Perceval's own serialised result
    # Equal to SLOS run directly with the same seed.
    assert [r.counts for r in results] == [perceval_directly(0.0, 100, 3),
                                           perceval_directly(3.14159, 100, 4)]
    with pytest.raises(InvalidProgramError):  # a QASM circuit on the photonic platform
        q.create_batch(alice, bell(), [JobSpec(10)], platform=PERCEVAL)


def test_aer_circuit_with_a_parameter_in_a_session(q: Quantum, alice: User) -> None:
    from qiskit import QuantumCircuit
    from qiskit.circuit import Parameter
    from qiskit_aer import AerSimulator

    _needs(q, AER)
    theta = Parameter("theta")
    qc = QuantumCircuit(3)
    qc.ry(theta, 0)
    qc.cx(0, 1)
    qc.rx(theta, 2)
    qc.measure_all()
    session, _ = q.open_session(alice, AER)
    jobs = [q.submit(alice, session.id, JobSpec(1000, {"theta": value}, engines.program_from(qc),
                                                seed=seed))
            for value, seed in ((0.4, 11), (1.9, 12))]
    done = [q.wait_job(alice, j.id, 120) for j in jobs]
    assert all(j.status is QStatus.DONE for j in done), [j.errors for j in done]
    for job, (value, seed) in zip(done, ((0.4, 11), (1.9, 12)), strict=True):
        bound = qc.assign_parameters({theta: value})
        direct = AerSimulator(method="statevector").run(bound, shots=1000,
                                                        seed_simulator=seed)
        assert q.result(alice, job.id).counts == direct.result().get_counts()
    q.terminate_session(alice, session.id)
