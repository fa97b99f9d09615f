"""What runs inside a worker's executor: a chunk of experiments on one AerSimulator.

A chunk is a contiguous run of the experiments (circuit x parameter binding) that qiskit-aer's
own primitive would have run in one ``AerSimulator.run`` call, started at experiment
`first`. Aer seeds experiment *i* of a call with ``seed_simulator + 2113 * i`` (as unsigned
64-bit numbers); so a chunk that starts at experiment *k* and is run with
``derive_seed(seed, k)`` samples exactly what Aer's own primitive samples for it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Aer's per-experiment seed stride (controller: seed of experiment i = seed + 2113 * i).
SEED_STRIDE = 2113
_U64 = 1 << 64

#: Instructions Aer handles without being in its target (directives and classical flow).
_ALWAYS_SUPPORTED = frozenset({"barrier", "measure", "reset", "delay", "if_else", "for_loop",
                               "while_loop", "switch_case", "break_loop", "continue_loop",
                               "store", "initialize"})

_simulators: dict[str, Any] = {}


def derive_seed(seed: int, index: int) -> int:
    """The seed Aer gives experiment `index` of a run seeded with `seed`, as a signed int64
    (the form ``seed_simulator`` accepts; the same 64 bits Aer uses)."""
    value = (seed + SEED_STRIDE * index) % _U64
    return value - _U64 if value >= 1 << 63 else value


def simulator(backend_options: dict[str, Any]) -> Any:
    """An AerSimulator with these options, built once per executor process."""
    key = repr(sorted(backend_options.items()))
    sim = _simulators.get(key)
    if sim is None:
        from qiskit_aer import AerSimulator  # type: ignore[import-untyped]

        sim = _simulators[key] = AerSimulator(**backend_options)
    return sim


def prepare(circuit: Any, sim: Any) -> Any:
    """The circuit as Aer will run it: unchanged when Aer supports every instruction (as
    qiskit-aer's primitives run it), else transpiled for `sim` (optimization level 0)."""
    names = {inst.operation.name for inst in circuit.data}
    if names <= (set(sim.target.operation_names) | _ALWAYS_SUPPORTED):
        return circuit
    from qiskit import transpile  # type: ignore[import-untyped]

    return transpile(circuit, sim, optimization_level=0)


def _run(sim: Any, circuits: list[Any], binds: list[dict[Any, Any]],
         run_options: dict[str, Any]) -> Any:
    from qiskit_aer.aererror import AerError  # type: ignore[import-untyped]

    result = sim.run(circuits, parameter_binds=binds, **run_options).result()
    for exp in result.results:
        if isinstance(exp.status, str) and exp.status.upper().startswith("ERROR"):
            raise AerError(f"Aer simulation failed: {exp.status}")
    if not result.success:
        raise AerError(f"Aer simulation failed: {result.status}")
    return result


def sample_chunk(parts: list[tuple[Any, dict[Any, Any]]], shots: int, seed: int,
                 backend_options: dict[str, Any],
                 run_options: dict[str, Any]) -> tuple[list[dict[str, np.ndarray]], dict[str, Any]]:
    """Sample `parts` ((circuit, parameter binds) of consecutive experiments) in one Aer run
    seeded with `seed`; per part, {classical register: packed bits (experiments, shots,
    bytes)}, and the run's metadata."""
    from qiskit.primitives.backend_sampler_v2 import (  # type: ignore[import-untyped]
        _analyze_circuit,
        _memory_array,
        _samples_to_packed_array,
    )

    sim = simulator(backend_options)
    circuits = [prepare(circuit, sim) for circuit, _ in parts]
    result = _run(sim, circuits, [binds for _, binds in parts],
                  {**run_options, "shots": shots, "seed_simulator": seed, "memory": True})
    memory = []
    for exp in result.results:
        if hasattr(exp.data, "memory") and exp.data.memory:
            memory.append(exp.data.memory)
        else:  # no measurement in the circuit
            memory.append(["0x0"] * exp.shots)
    out: list[dict[str, np.ndarray]] = []
    start = 0
    for circuit, binds in parts:
        count = len(next(iter(binds.values()))) if binds else 1
        meas_info, max_num_bytes = _analyze_circuit(circuit)
        arrays = {item.creg_name: np.zeros((count, shots, item.num_bytes), dtype=np.uint8)
                  for item in meas_info}
        samples_all = _memory_array(memory[start:start + count], max_num_bytes)
        for j, samples in enumerate(samples_all):
            for item in meas_info:
                arrays[item.creg_name][j] = _samples_to_packed_array(
                    samples, item.num_bits, item.start)
        out.append(arrays)
        start += count
    return out, dict(result.metadata)


def estimate_chunk(circuit: Any, paulis: list[str], binds: dict[Any, Any], seed: int | None,
                   backend_options: dict[str, Any],
                   run_options: dict[str, Any]) -> tuple[list[dict[str, float]], dict[str, Any]]:
    """Expectation values of `paulis` for each parameter binding in `binds` (one Aer run, as
    qiskit-aer's EstimatorV2 runs one PUB); per experiment {pauli: value}, and the metadata."""
    import qiskit_aer  # noqa: F401 - adds save_expectation_value to QuantumCircuit
    from qiskit.quantum_info import Pauli  # type: ignore[import-untyped]

    sim = simulator(backend_options)
    circuit = prepare(circuit, sim).copy()
    for pauli in paulis:
        circuit.save_expectation_value(Pauli(pauli), qubits=range(circuit.num_qubits),
                                       label=pauli)
    options = dict(run_options)
    if seed is not None:
        options["seed_simulator"] = seed
    result = _run(sim, [circuit], [binds], options)
    count = len(result.results)
    values = [{p: result.data(i)[p] for p in paulis} for i in range(count)]
    return values, dict(result.metadata)


def statevector(circuit: Any, initial_state: np.ndarray | None, binds: dict[Any, Any] | None,
                backend_options: dict[str, Any], run_options: dict[str, Any]) -> np.ndarray:
    """The final state vector of `circuit` (started from `initial_state` if given)."""
    import qiskit_aer  # noqa: F401 - adds set/save_statevector to QuantumCircuit
    from qiskit import QuantumCircuit

    options = {**backend_options, "method": backend_options.get("method", "statevector")}
    if options["method"] == "automatic":
        options["method"] = "statevector"
    sim = simulator(options)
    body = prepare(circuit.remove_final_measurements(inplace=False), sim)
    if binds:
        body = body.assign_parameters({p: v for p, v in binds.items()})
    full = QuantumCircuit(*body.qregs, *body.cregs)
    if initial_state is not None:
        state = np.asarray(initial_state, dtype=np.complex128).ravel()
        if state.size != 1 << body.num_qubits:
            raise ValueError(f"initial state has {state.size} amplitudes; a {body.num_qubits}"
                             f"-qubit circuit needs {1 << body.num_qubits}")
        full.set_statevector(state)
    full.compose(body, inplace=True)
    full.save_statevector()
    result = _run(sim, [full], [{}], run_options)
    # Aer simulated in single precision: keep (and ship) it at that precision
    dtype = np.complex64 if options.get("precision") == "single" else np.complex128
    return np.ascontiguousarray(np.asarray(result.get_statevector(0)), dtype=dtype)
