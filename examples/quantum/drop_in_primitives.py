"""qsrv.quantum.Sampler/Estimator as drop-in replacements for qiskit-aer's V2 primitives.

The one changed line is the import; with the same seeds the results are identical.
"""

from __future__ import annotations

import numpy as np
from qiskit.circuit.library import real_amplitudes
from qiskit.quantum_info import SparsePauliOp
from qiskit_aer.primitives import EstimatorV2 as AerEstimator
from qiskit_aer.primitives import SamplerV2 as AerSampler

import qsrv
from qsrv.quantum import Estimator, Sampler  # was: from qiskit_aer.primitives import ...


def main() -> None:
    qsrv.init(num_cpus=2)
    circuit = real_amplitudes(4, reps=2)
    measured = circuit.measure_all(inplace=False)
    values = np.random.default_rng(7).uniform(0, np.pi, (8, circuit.num_parameters))
    observable = SparsePauliOp.from_list([("ZZII", 1.0), ("IXXI", 0.3), ("IIZZ", -0.7)])

    sampled = Sampler(default_shots=1000, seed=123).run([(measured, values)]).result()
    estimated = Estimator(options={"run_options": {"seed_simulator": 5}}).run(
        [(circuit, observable, values)]).result()

    aer_sampled = AerSampler(default_shots=1000, seed=123).run([(measured, values)]).result()
    aer_estimated = AerEstimator(options={"run_options": {"seed_simulator": 5}}).run(
        [(circuit, observable, values)]).result()

    print("counts of binding 0:", dict(sorted(sampled[0].data.meas.get_counts(0).items())[:3]),
          "...")
    print("energies:", np.round(estimated[0].data.evs, 4).tolist())
    print("sampler identical to Aer's:",
          bool(np.array_equal(sampled[0].data.meas.array, aer_sampled[0].data.meas.array)))
    print("estimator identical to Aer's:",
          bool(np.array_equal(estimated[0].data.evs, aer_estimated[0].data.evs)))
    qsrv.shutdown()


if __name__ == "__main__":
    main()
