"""Each engine's kind of program through the service: a Pulser sequence with a variable and a
Perceval circuit with a free phase run as batch jobs on their platforms, with counts."""

from __future__ import annotations

import warnings

import pytest

from qsrv.errors import InvalidProgramError
from qsrv.gateway._models import User
from qsrv.gateway._quantum import JobSpec, QStatus
from qsrv.quantum import engines
from tests.quantum_service.conftest import AER, Quantum, bell

PULSER = "pulser.qutip.cpu"
PERCEVAL = "perceval.slos.cpu"


def rabi(atoms: int = 2) -> engines.Program:
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
    return engines.program_from(seq)


def mzi() -> engines.Program:
    import perceval as pcvl

    circuit = pcvl.Circuit(2) // pcvl.BS.H() // (0, pcvl.PS(pcvl.P("phi"))) // pcvl.BS.H()
    return engines.perceval_program(circuit, "|1,0>")


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
    with pytest.raises(InvalidProgramError):  # a QASM circuit on the photonic platform
        q.create_batch(alice, bell(), [JobSpec(10)], platform=PERCEVAL)
