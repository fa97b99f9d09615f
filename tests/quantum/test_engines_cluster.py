"""Engines on a real cluster: workers advertise them, platforms come from ``qsrv.status()``,
each engine's program runs as a task and equals that engine run directly with the same seed,
availability turns busy while capacity is taken, and a reservation's executor stays warm."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import perceval as pcvl
import pytest
from pulser import Pulse, Register, Sequence
from pulser.devices import AnalogDevice
from pulser_simulation import QutipEmulator
from qiskit import QuantumCircuit, qasm3
from qiskit.circuit import Parameter
from qiskit_aer import AerSimulator

import qsrv
from qsrv.errors import InvalidProgramError, TaskError
from qsrv.quantum import engines
from qsrv.quantum.engines import EngineResult, Platform, Program, perceval_program, program_from
from tests._support.gates import Flag
from tests._support.waiting import wait_for


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    """An embedded cluster of one 2-CPU worker whose capability probe has reported."""
    qsrv.shutdown()
    qsrv.init(num_cpus=2)
    wait_for(lambda: all((w["info"].get("quantum") or {}).get("engines")
                         for w in qsrv.status()["workers"]), 120, "the engine probe")
    yield
    qsrv.shutdown()


def offered() -> dict[str, Platform]:
    return {p.name: p for p in engines.platforms(qsrv.status())}


def run(program: Program, shots: int, variables: dict[str, Any], platform: str,
        seed: int, **options: Any) -> EngineResult:
    """`engines.execute` as a cluster task (as the quantum service runs it)."""
    task = qsrv.distribute_task(engines.execute)
    result: EngineResult = qsrv.get(task(program, shots, variables, platform=platform,
                                         seed=seed, options=options))
    return result


def test_workers_advertise_engines_and_platforms_follow(cluster: None) -> None:
    worker = qsrv.status()["workers"][0]
    found = worker["info"]["quantum"]["engines"]
    assert found["perceval"]["version"] == pcvl.__version__
    assert found["pulser"]["emulator"] == "QutipEmulator"
    platforms = offered()
    assert list(platforms) == ["aer.statevector.cpu", "aer.mps.cpu", "perceval.slos.cpu",
                               "pulser.qutip.cpu"]
    for platform in platforms.values():
        assert platform.availability == "available"
        assert platform.workers == 1 and platform.hardware.vcpus == 2
        assert platform.target == {"cpu": 1.0}
    assert platforms["aer.statevector.cpu"].max_qubits == \
        worker["info"]["quantum"]["max_qubits"]["CPU"]["statevector"]["double"]
    assert engines.platforms() == list(platforms.values())  # asks the connected cluster


def test_aer_program_with_parameters_equals_aer_run_directly(cluster: None) -> None:
    theta = Parameter("theta")
    qc = QuantumCircuit(3)
    qc.ry(theta, 0)
    qc.cx(0, 1)
    qc.rx(theta, 2)
    qc.measure_all()
    bound = qc.assign_parameters({theta: 1.1})
    direct = AerSimulator(method="statevector").run(bound, shots=2000, seed_simulator=9)
    expected = direct.result().get_counts()
    for program in (program_from(qc), Program("qiskit.qasm3", qasm3.dumps(qc))):
        ours = run(program, 2000, {"theta": 1.1}, "aer.statevector.cpu", 9)
        assert ours.counts == expected
    mps = AerSimulator(method="matrix_product_state").run(bound, shots=500, seed_simulator=5)
    assert run(program_from(qc), 500, {"theta": 1.1}, "aer.mps.cpu", 5).counts == \
        mps.result().get_counts()


def test_perceval_circuit_with_input_state_equals_slos_run_directly(cluster: None) -> None:
    def circuit() -> pcvl.Circuit:
        return (pcvl.Circuit(3) // pcvl.BS.H() // (1, pcvl.PS(pcvl.P("phi")))
                // (1, pcvl.BS.H()))

    ours = run(perceval_program(circuit(), "|1,1,0>"), 5000, {"phi": 0.6},
               "perceval.slos.cpu", 21)
    direct_circuit = circuit()
    direct_circuit.get_parameters()[0].set_value(0.6)
    pcvl.random_seed(21)
    processor = pcvl.Processor("SLOS", direct_circuit)
    processor.with_input(pcvl.BasicState("|1,1,0>"))
    direct = pcvl.algorithm.Sampler(processor, max_shots_per_call=5000).sample_count(5000)
    assert ours.counts == {str(state): n for state, n in direct["results"].items()}
    assert sum(ours.counts.values()) == 5000 and len(ours.counts) > 1


def test_pulser_sequence_with_a_variable_equals_the_emulator_run_directly(
        cluster: None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seq = Sequence(Register.square(2, spacing=6, prefix="q"), AnalogDevice)
        seq.declare_channel("ryd", "rydberg_global")
        omega = seq.declare_variable("omega_max")
        seq.add(Pulse.ConstantPulse(500, omega, 0.0, 0.0), "ryd")
        seq.measure("ground-rydberg")
    for value, seed in ((6.0, 1), (10.5, 2)):
        ours = run(program_from(seq), 200, {"omega_max": value}, "pulser.qutip.cpu", seed)
        np.random.seed(seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            direct = QutipEmulator.from_sequence(seq.build(omega_max=value)).run()
            expected = direct.sample_final_state(200)
        assert ours == EngineResult(dict(expected), None)


def test_a_program_refused_in_the_executor_comes_back_as_invalid_program(
        cluster: None) -> None:
    qc = QuantumCircuit(1)
    qc.rx(Parameter("theta"), 0)
    qc.measure_all()
    with pytest.raises(TaskError) as caught:
        run(program_from(qc), 10, {}, "aer.statevector.cpu", 1)
    assert isinstance(caught.value, InvalidProgramError)
    assert "missing variable(s) ['theta']" in str(caught.value)


def _hold(started: Flag, release: Flag) -> None:
    started.set()
    release.wait()


def test_availability_is_busy_while_the_capacity_is_taken(
        cluster: None, flags: Callable[[str], Flag]) -> None:
    started, release = flags("started"), flags("release")
    hold = qsrv.distribute_task(_hold).options(target={"cpu": 2})
    ref = hold(started, release)
    started.wait()
    wait_for(lambda: {p.availability for p in offered().values()} == {"busy"}, 30,
             "every platform busy")
    release.set()
    qsrv.get(ref)
    wait_for(lambda: {p.availability for p in offered().values()} == {"available"}, 30,
             "every platform available again")


def _simulator_id() -> int:
    from qsrv.quantum.engines import _aer

    return id(_aer.simulator("statevector", "cpu", {}))


def test_reserved_platforms_turn_busy_and_their_executor_stays_warm(cluster: None) -> None:
    target = offered()["aer.statevector.cpu"].target
    first = qsrv.reserve(target, name="engines-1").wait(60)
    try:
        assert offered()["aer.statevector.cpu"].availability == "available"
        second = qsrv.reserve(target, name="engines-2").wait(60)
        try:
            assert {p.availability for p in offered().values()} == {"busy"}
            third = qsrv.reserve(target, name="engines-3")  # waits: pending
            assert third.status == "pending"
            assert offered()["pulser.qutip.cpu"].availability == "busy"
            third.release()
            inside = qsrv.distribute_task(_simulator_id).options(reservation=second)
            assert qsrv.get(inside()) == qsrv.get(inside())  # the same AerSimulator object
        finally:
            second.release()
    finally:
        first.release()
    wait_for(lambda: {p.availability for p in offered().values()} == {"available"}, 30,
             "every platform available after release")
