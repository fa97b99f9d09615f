"""qsrv.quantum.engines without a cluster: programs, strict validation, platforms from a status,
the engine probe (and platforms vanishing when an engine is missing), runs equal to each
engine run directly with the same seed."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import warnings
from typing import Any

import numpy as np
import perceval as pcvl
import pulser
import pytest
from perceval.serialization import deserialize
from pulser import Pulse, Register, Sequence
from pulser.devices import AnalogDevice, DigitalAnalogDevice
from pulser_simulation import QutipEmulator
from qiskit import QuantumCircuit, qasm2, qasm3
from qiskit.circuit import Parameter
from qiskit_aer import AerSimulator

from qsrv.errors import InvalidProgramError, InvalidRequestError
from qsrv.quantum import probe_capabilities
from qsrv.quantum.engines import (
    EngineResult,
    Platform,
    Program,
    check,
    describe,
    execute,
    perceval_program,
    platforms,
    probe_engines,
    program_from,
)

GiB = 1 << 30


# ---- programs ------------------------------------------------------------------------------
def rx_bell() -> QuantumCircuit:
    theta = Parameter("theta")
    qc = QuantumCircuit(2)
    qc.rx(theta, 0)
    qc.cx(0, 1)
    qc.measure_all()
    return qc


def mzi() -> pcvl.Circuit:
    """A Mach-Zehnder interferometer with a free phase "phi"."""
    return pcvl.Circuit(2) // pcvl.BS.H() // (0, pcvl.PS(pcvl.P("phi"))) // pcvl.BS.H()


def rabi(device: Any = AnalogDevice, atoms: int = 4) -> Sequence[Any]:
    """Atoms on a line driven by a constant pulse of amplitude variable "omega_max"."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        register = Register.from_coordinates([(6.0 * i, 0.0) for i in range(atoms)],
                                             prefix="q")
        seq = Sequence(register, device)
        seq.declare_channel("ryd", "rydberg_global")
        omega = seq.declare_variable("omega_max")
        seq.add(Pulse.ConstantPulse(400, omega, 0.0, 0.0), "ryd")
        seq.measure("ground-rydberg")
    return seq


@pytest.fixture(scope="module")
def status() -> dict[str, Any]:
    """A status of one 4-CPU worker with this machine's engines, probed here (8 GiB)."""
    capabilities = probe_capabilities(8 * GiB, [])
    return {"workers": [{"id": 1, "name": "w1", "total": {"cpu": 4.0, "memory": "8 GiB"},
                         "free": {"cpu": 4.0, "memory": "8 GiB"}, "gpu_ids": [],
                         "executors": 1, "info": {"quantum": capabilities}}]}


@pytest.fixture(scope="module")
def offer(status: dict[str, Any]) -> dict[str, Platform]:
    return {p.name: p for p in platforms(status)}


def test_programs_from_each_kind_and_what_describe_reads() -> None:
    qc = rx_bell()
    qpy = program_from(qc)
    assert qpy.kind == "qiskit.qpy" and qpy.engine == "aer"
    info = describe(qpy)
    assert (info.engine, info.width, info.parameters, info.circuits) == (
        "aer", 2, frozenset({"theta"}), 1)
    assert describe(program_from([qc, qc.assign_parameters({"theta": 0.1})])).circuits == 2
    bound = qc.assign_parameters({"theta": 0.2})
    assert program_from(qasm2.dumps(bound)).kind == "qiskit.qasm2"
    q3 = program_from(qasm3.dumps(qc))
    assert q3.kind == "qiskit.qasm3" and describe(q3).parameters == {"theta"}
    assert program_from(qpy) is qpy
    assert Program.from_dict(json.loads(json.dumps(qpy.to_dict()))) == qpy

    photonic = perceval_program(mzi(), "|1,0>")
    assert describe(photonic) == describe(program_from(mzi(), input_state="|1,0>"))
    assert (describe(photonic).engine, describe(photonic).width,
            describe(photonic).parameters) == ("perceval", 2, frozenset({"phi"}))
    fixed = perceval_program(mzi(), pcvl.BasicState("|0,1>"), parameters={"phi": 0.3})
    assert describe(fixed).parameters == frozenset()
    processor = pcvl.Processor("SLOS", mzi())
    processor.with_input(pcvl.BasicState("|1,0>"))
    assert describe(program_from(processor)).parameters == {"phi"}

    atoms = program_from(rabi())
    assert atoms.kind == "pulser"
    assert describe(atoms) == describe(Program("pulser", rabi().to_abstract_repr()))
    assert (describe(atoms).width, describe(atoms).parameters) == (4, frozenset({"omega_max"}))


@pytest.mark.parametrize(("program", "match"), [
    (Program("qiskit.qasm2", "OPENQASM 2.0; qreg q[2]; frobnicate q[0];"), "cannot read"),
    (Program("qiskit.qpy", "not base64!"), "cannot read"),
    (Program("qiskit.qasm2", 'OPENQASM 2.0; include "qelib1.inc"; qreg q[1000000000];'),
     "declares or indexes a register of 1000000000 \\(qu\\)bits; at most 65536"),
    (Program("qiskit.qasm3", "OPENQASM 3.0; qubit[70000] q;"), "at most 65536"),
    (Program("pulser", '{"version": "1"}'), "cannot read the Pulser sequence"),
    (Program("perceval", "[]"), "JSON object with 'command' and 'experiment'"),
    (Program("perceval", '{"command": "teleport", "experiment": ""}'), "unknown Perceval"),
])
def test_unreadable_programs_are_refused_with_the_reason(program: Program, match: str) -> None:
    with pytest.raises(InvalidProgramError, match=match):
        describe(program)


def test_bad_programs_are_refused_at_construction() -> None:
    with pytest.raises(InvalidProgramError, match="unknown program kind 'cirq'"):
        Program("cirq", "")
    with pytest.raises(InvalidProgramError, match="not OpenQASM"):
        program_from("H 0")
    with pytest.raises(InvalidProgramError, match="needs an input state"):
        perceval_program(mzi())
    with pytest.raises(InvalidProgramError, match=r"cannot make a program from a builtins\.int"):
        program_from(3)
    assert issubclass(InvalidProgramError, InvalidRequestError)
    assert InvalidProgramError("why").reason == "why" and InvalidProgramError.status == 400


def test_public_names() -> None:
    import qsrv.quantum.engines as engines

    assert sorted(engines.__all__) == [
        "EngineResult", "Hardware", "InvalidProgramError", "KINDS", "Platform", "Program",
        "ProgramInfo", "check", "check_options", "describe", "execute", "perceval_program",
        "platforms", "probe_engines", "program_from"]


# ---- platforms ---------------------------------------------------------------------------------
def test_platforms_from_a_status(status: dict[str, Any], offer: dict[str, Platform]) -> None:
    assert list(offer) == ["aer.statevector.cpu", "aer.mps.cpu", "perceval.slos.cpu",
                           "pulser.qutip.cpu"]  # no GPU Aer here: no aer.statevector.gpu
    sv = offer["aer.statevector.cpu"]
    quantum = status["workers"][0]["info"]["quantum"]
    assert (sv.engine, sv.method, sv.device) == ("aer", "statevector", "cpu")
    assert sv.max_qubits == quantum["max_qubits"]["CPU"]["statevector"]["double"] == 29
    assert sv.version == quantum["aer_version"]
    assert (sv.hardware.vcpus, sv.hardware.ram_bytes, sv.hardware.gpus) == (4, 8 * GiB, 0)
    assert sv.availability == "available" and sv.target == {"cpu": 1.0} and sv.workers == 1
    assert sv.device_specs is None
    assert offer["aer.mps.cpu"].max_qubits == 63
    assert offer["perceval.slos.cpu"].version == pcvl.__version__
    atoms = offer["pulser.qutip.cpu"]
    assert atoms.version == pulser.__version__ and atoms.max_qubits == 12
    device = pulser.devices.Device.from_abstract_repr(atoms.device_specs or "")
    assert device.max_atom_num == 12 and list(device.channels) == ["rydberg_global"]
    assert atoms.max_shots == device.max_runs
    assert json.loads(json.dumps(atoms.to_dict()))["hardware"]["vcpus"] == 4


def _with_worker(status: dict[str, Any], **changes: Any) -> dict[str, Any]:
    worker = {**status["workers"][0], **changes}
    return {**status, "workers": [worker]}


def test_availability_follows_free_capacity_and_reservations(status: dict[str, Any]) -> None:
    taken = _with_worker(status, free={"cpu": 0.0, "memory": "8 GiB"})
    assert {p.availability for p in platforms(taken)} == {"busy"}
    queued = {**status, "reservations": [
        {"id": f"r{i}", "name": None, "target": {"cpu": 1.0}, "worker": None,
         "status": "pending", "holder": "c", "tasks": 0} for i in range(4)]}
    assert {p.availability for p in platforms(queued)} == {"busy"}
    assert {p.availability for p in platforms({**status, "reservations": queued[
        "reservations"][:3]})} == {"available"}
    no_cpu = _with_worker(status, total={"memory": "8 GiB"}, free={"memory": "8 GiB"})
    assert {p.availability for p in platforms(no_cpu)} == {"unavailable"}


def test_targets_name_the_engine_when_workers_advertise_it(status: dict[str, Any]) -> None:
    tagged = _with_worker(status, total={"cpu": 4.0, "engine.pulser": 8.0},
                          free={"cpu": 4.0, "engine.pulser": 8.0})
    found = {p.name: p for p in platforms(tagged)}
    assert found["pulser.qutip.cpu"].target == {"cpu": 1.0, "engine.pulser": 1.0}
    assert found["aer.statevector.cpu"].target == {"cpu": 1.0}


def test_a_gpu_aer_worker_offers_the_gpu_platform(status: dict[str, Any]) -> None:
    quantum = dict(status["workers"][0]["info"]["quantum"])
    quantum["devices"] = ["CPU", "GPU"]
    quantum["gpu_memory_bytes"] = 16 * GiB
    quantum["max_qubits"] = {**quantum["max_qubits"],
                             "GPU": {"statevector": {"double": 30, "single": 31}}}
    gpu = _with_worker(status, gpu_ids=["0"], info={"quantum": quantum},
                       total={"cpu": 4.0, "gpu": 1.0}, free={"cpu": 4.0, "gpu": 1.0})
    found = {p.name: p for p in platforms(gpu)}
    assert found["aer.statevector.gpu"].target == {"cpu": 1.0, "gpu": 1.0}
    assert found["aer.statevector.gpu"].max_qubits == 30
    assert found["aer.statevector.gpu"].hardware.vram_bytes == 16 * GiB
    assert found["aer.statevector.gpu"].hardware.gpus == 1


def test_engines_missing_from_the_probe_have_no_platform(
        monkeypatch: pytest.MonkeyPatch, status: dict[str, Any]) -> None:
    for name in ("perceval", "pulser", "pulser_simulation"):
        monkeypatch.setitem(sys.modules, name, None)  # import fails as if not installed
    engines = probe_engines()
    assert "not installed" in engines["perceval"]["error"]
    assert "qsrv[perceval]" in engines["perceval"]["error"]
    assert "not installed" in engines["pulser"]["error"]
    quantum = {**status["workers"][0]["info"]["quantum"], "engines": engines}
    names = [p.name for p in platforms(_with_worker(status, info={"quantum": quantum}))]
    assert names == ["aer.statevector.cpu", "aer.mps.cpu"]
    old = {k: v for k, v in quantum.items() if k != "engines"}  # a worker from before
    assert [p.name for p in platforms(_with_worker(status, info={"quantum": old}))] == names


def test_importing_qsrv_and_the_engines_imports_no_vendor_library() -> None:
    code = ("import sys, qsrv, qsrv.quantum.engines\n"
            "from qsrv.quantum.engines import Program, Platform, check, execute\n"
            "print(sorted(m for m in ('perceval', 'pulser', 'pulser_simulation', 'qutip',"
            " 'qiskit', 'qiskit_aer') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.strip() == "[]"


# ---- strict validation -------------------------------------------------------------------------
def test_check_accepts_a_job_that_fits(offer: dict[str, Platform]) -> None:
    check(offer["aer.statevector.cpu"], program_from(rx_bell()), 1000, {"theta": 0.3})
    check(offer["perceval.slos.cpu"], perceval_program(mzi(), "|1,0>"), 1000, {"phi": 0.1})
    check(offer["pulser.qutip.cpu"], program_from(rabi()), 100, {"omega_max": 6})
    check(offer["pulser.qutip.cpu"], program_from(rabi(offer_device(offer))), 100,
          {"omega_max": 10.5})


def offer_device(offer: dict[str, Platform]) -> Any:
    return pulser.devices.Device.from_abstract_repr(offer["pulser.qutip.cpu"].device_specs or "")


def _wide(n: int) -> QuantumCircuit:
    qc = QuantumCircuit(n)
    qc.h(0)
    qc.measure_all()
    return qc


def _refusals(offer: dict[str, Platform]) -> list[tuple[Platform, Program, int, dict[str, Any],
                                                        str]]:
    sv, mps = offer["aer.statevector.cpu"], offer["aer.mps.cpu"]
    photonic, atoms = offer["perceval.slos.cpu"], offer["pulser.qutip.cpu"]
    bell = program_from(rx_bell())
    seq = program_from(rabi())
    return [
        (sv, program_from(_wide(30)), 10, {}, "the program has 30 qubits; platform "
                                              "aer.statevector.cpu takes at most 29"),
        (sv, bell, 1_000_001, {"theta": 1}, "1000001 shots is over platform "
                                            "aer.statevector.cpu's maximum of 1000000"),
        (sv, bell, 0, {"theta": 1}, "shots must be a positive integer, got 0"),
        (dataclasses.replace(mps, max_circuits=1), program_from([_wide(2), _wide(2)]), 10, {},
         "2 circuits is over platform aer.mps.cpu's maximum of 1 per job"),
        (sv, bell, 10, {}, r"missing variable\(s\) \['theta'\]"),
        (sv, bell, 10, {"theta": 1, "phi": 2}, r"unknown variable\(s\) \['phi'\]"),
        (sv, program_from(_wide(2)), 10, {"phi": 2}, "the program has no parameters"),
        (sv, bell, 10, {"theta": "x"}, "variable 'theta' must be a number"),
        (atoms, bell, 10, {"theta": 1}, "a qiskit.qpy program runs on the aer engine; "
                                        "platform pulser.qutip.cpu runs pulser programs"),
        (sv, seq, 10, {"omega_max": 1}, "runs on the pulser engine"),
        (photonic, perceval_program(pcvl.Circuit(25), "|" + ",".join("0" * 25) + ">"), 10, {},
         "the program has 25 modes; platform perceval.slos.cpu takes at most 24"),
        (photonic, perceval_program(mzi(), "|1,0>"), 10, {"phi": 1, "theta": 2},
         r"unknown variable\(s\) \['theta'\]"),
        (photonic, perceval_program(pcvl.Circuit(13), "|" + ",".join("1" * 13) + ">"), 10,
         {}, "the input state has 13 photons; platform perceval.slos.cpu takes at most 12"),
        (atoms, program_from(rabi(atoms=13)), 10, {"omega_max": 1},
         "the program has 13 atoms; platform pulser.qutip.cpu takes at most 12"),
        (atoms, seq, 100_001, {"omega_max": 1}, "over platform pulser.qutip.cpu's maximum"),
        (atoms, seq, 10, {}, r"missing variable\(s\) \['omega_max'\]"),
        (atoms, seq, 10, {"omega_max": 1, "delta": 0}, r"unknown variable\(s\) \['delta'\]"),
        (atoms, program_from(_raman()), 10, {},
         "uses channel 'raman_local' \\(declared as 'raman'\\), which device "
         "QsrvQutipEmulator lacks"),
        (dataclasses.replace(atoms, max_qubits=20), program_from(rabi(atoms=13)), 10,
         {"omega_max": 1}, "the sequence has 13 atoms; device QsrvQutipEmulator holds at "
                           "most 12"),
    ]


def _raman() -> Sequence[Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seq = Sequence(Register.from_coordinates([(0, 0), (6, 0)], prefix="q"),
                       DigitalAnalogDevice)
        seq.declare_channel("raman", "raman_local", initial_target="q0")
        seq.add(Pulse.ConstantPulse(200, 1.0, 0.0, 0.0), "raman")
    return seq


def test_check_refuses_each_misfit_with_its_reason(offer: dict[str, Platform]) -> None:
    for platform, program, shots, variables, reason in _refusals(offer):
        with pytest.raises(InvalidProgramError, match=reason):
            check(platform, program, shots, variables)


def test_values_pulser_refuses_are_refused_at_check(offer: dict[str, Platform]) -> None:
    with pytest.raises(InvalidProgramError, match="cannot build the Pulser sequence with these "
                                                  "variables: The pulse's amplitude goes over"):
        check(offer["pulser.qutip.cpu"], program_from(rabi()), 10, {"omega_max": 200.0})


def test_a_mappable_register_takes_its_traps_as_the_qubits_variable(
        offer: dict[str, Platform]) -> None:
    from pulser.register.special_layouts import TriangularLatticeLayout

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seq = Sequence(TriangularLatticeLayout(20, 6).make_mappable_register(3), AnalogDevice)
        seq.declare_channel("ryd", "rydberg_global")
        seq.add(Pulse.ConstantPulse(600, seq.declare_variable("omega"), 0.0, 0.0), "ryd")
        seq.measure("ground-rydberg")
    program = program_from(seq)
    assert describe(program).parameters == {"omega", "qubits"}
    assert describe(program).width == 3
    traps = {"q0": 1, "q1": 2, "q2": 5}
    check(offer["pulser.qutip.cpu"], program, 100, {"omega": 8.0, "qubits": traps})
    with pytest.raises(InvalidProgramError, match="'trap_id' must be a unique integer"):
        check(offer["pulser.qutip.cpu"], program, 100, {"omega": 8.0,
                                                        "qubits": {**traps, "q2": 1}})
    with pytest.raises(InvalidProgramError, match="variable 'qubits' maps qubit ids to trap"):
        check(offer["pulser.qutip.cpu"], program, 100, {"omega": 8.0, "qubits": [1, 2, 5]})
    ours = execute(program, 100, {"omega": 8.0, "qubits": traps}, platform="pulser.qutip.cpu",
                   seed=4)
    np.random.seed(4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        built = seq.build(omega=8.0, qubits=traps)
        expected = QutipEmulator.from_sequence(built).run().sample_final_state(100)
    assert ours.counts == dict(expected)


def test_a_register_the_device_refuses_is_refused(offer: dict[str, Platform]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seq = Sequence(Register.from_coordinates([(0, 0), (0, 80)], prefix="q"),
                       DigitalAnalogDevice)  # 40 um from the centre: over AnalogDevice's 38
        seq.declare_channel("ryd", "rydberg_global")
        seq.add(Pulse.ConstantPulse(200, 1.0, 0.0, 0.0), "ryd")
    with pytest.raises(InvalidProgramError, match="register is not valid on device "
                                                  "QsrvQutipEmulator"):
        check(offer["pulser.qutip.cpu"], program_from(seq), 10, {})


# ---- execution here, equal to each engine run directly ---------------------------------------
def test_execute_equals_each_engine_run_directly() -> None:
    qc = rx_bell()
    ours = execute(program_from(qc), 500, {"theta": 0.9}, platform="aer.statevector.cpu",
                   seed=42)
    theirs = AerSimulator(method="statevector").run(qc.assign_parameters({"theta": 0.9}),
                                                    shots=500, seed_simulator=42).result()
    assert ours.counts == theirs.get_counts()
    assert json.loads(ours.native or "")["results"][0]["data"]["counts"] == \
        theirs.to_dict()["results"][0]["data"]["counts"]

    photonic = execute(perceval_program(mzi(), "|1,0>"), 2000, {"phi": 0.8},
                       platform="perceval.slos.cpu", seed=7)
    circuit = mzi()
    circuit.get_parameters()[0].set_value(0.8)
    pcvl.random_seed(7)
    processor = pcvl.Processor("SLOS", circuit)
    processor.with_input(pcvl.BasicState("|1,0>"))
    direct = pcvl.algorithm.Sampler(processor, max_shots_per_call=2000).sample_count(2000)
    assert photonic.counts == {str(s): n for s, n in direct["results"].items()}
    assert deserialize(json.loads(photonic.native or ""), strict=False)["results"] == \
        direct["results"]

    atoms = execute(program_from(rabi()), 300, {"omega_max": 6.0},
                    platform="pulser.qutip.cpu", seed=3)
    np.random.seed(3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sampled = QutipEmulator.from_sequence(rabi().build(omega_max=6.0)).run() \
            .sample_final_state(300)
    assert atoms == EngineResult(dict(sampled), None)


def test_several_circuits_run_as_one_aer_run_and_unmeasured_ones_count_nothing() -> None:
    first, second = rx_bell().assign_parameters({"theta": 0.5}), _wide(3)
    ours = execute(program_from([first, second]), 300, {}, platform="aer.statevector.cpu",
                   seed=8)
    theirs = AerSimulator(method="statevector").run([first, second], shots=300,
                                                     seed_simulator=8).result()
    assert ours.counts == {**{f"0:{k}": v for k, v in theirs.get_counts(0).items()},
                           **{f"1:{k}": v for k, v in theirs.get_counts(1).items()}}
    assert len(json.loads(ours.native or "")["results"]) == 2
    silent = QuantumCircuit(2)
    silent.h(0)
    assert execute(program_from(silent), 10, {}, platform="aer.mps.cpu", seed=1).counts == {}


def test_a_perceval_remote_processor_payload_runs_as_perceval_would() -> None:
    """The JSON a Perceval remote processor sends (the Scaleway door's ``percevalCircuit``),
    made by Perceval's own payload generator and serialised containers, with a Sampler's
    iterations: equal to a local Sampler given the same iterations and seed; the result decodes
    as a RemoteJob decodes it, with the job context echoed."""
    from perceval.runtime.payload_generator import PayloadGenerator
    from perceval.serialization._serialized_containers import make_serialized

    experiment = pcvl.Experiment(mzi())
    experiment.with_input(pcvl.BasicState("|1,0>"))
    steps = [{"circuit_params": {"phi": 0.2}}, {"circuit_params": {"phi": 1.4},
                                                "input_state": pcvl.BasicState("|0,1>")}]
    payload = PayloadGenerator.generate_payload("sample_count", experiment)["payload"]
    payload.update(iterator=steps, max_shots=800, max_samples=800,
                   job_context={"result_mapping": ["perceval.utils", "sample_count_to_probs"]})
    program = Program("perceval", json.dumps(make_serialized(payload)))
    assert describe(program).parameters == frozenset()  # every iteration sets phi
    ours = execute(program, 800, {}, platform="perceval.slos.cpu", seed=5)

    pcvl.random_seed(5)
    local = pcvl.Processor("SLOS", mzi())
    local.with_input(pcvl.BasicState("|1,0>"))
    sampler = pcvl.algorithm.Sampler(local, max_shots_per_call=800)
    sampler.add_iteration_list(steps)
    direct = sampler.sample_count(800)
    assert ours.counts == {f"{i}:{state}": n for i, item in enumerate(direct["results_list"])
                           for state, n in item["results"].items()}
    decoded = deserialize(json.loads(ours.native or ""), strict=False)
    assert [r["results"] for r in decoded["results_list"]] == \
        [r["results"] for r in direct["results_list"]]
    assert decoded["job_context"]["result_mapping"][1] == "sample_count_to_probs"


def test_a_missing_library_is_a_clear_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    program = program_from(rabi())
    monkeypatch.setitem(sys.modules, "pulser", None)
    with pytest.raises(InvalidProgramError, match="pulser programs cannot be read here: pulser "
                                                  "is not installed"):
        describe(program)


def test_execute_refuses_what_it_cannot_run() -> None:
    bell = program_from(rx_bell())
    with pytest.raises(InvalidProgramError, match=r"unknown platform 'aer\.qpu'"):
        execute(bell, 10, {"theta": 1}, platform="aer.qpu")
    with pytest.raises(InvalidProgramError, match="runs on the aer engine"):
        execute(bell, 10, {"theta": 1}, platform="pulser.qutip.cpu")
    with pytest.raises(InvalidProgramError, match="missing variable"):
        execute(bell, 10, {}, platform="aer.statevector.cpu")
    with pytest.raises(InvalidProgramError, match=r"unknown Aer option\(s\) \['shots'\]"):
        execute(bell, 10, {"theta": 1}, platform="aer.statevector.cpu", options={"shots": 3})
    with pytest.raises(InvalidProgramError, match="unknown Perceval option"):
        execute(perceval_program(mzi(), "|1,0>"), 10, {"phi": 1}, platform="perceval.slos.cpu",
                options={"backend": "Naive"})
