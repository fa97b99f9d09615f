"""Compatibility layers: code written for other runtimes, running on qsrv.

- ``qsrv.compat.quantum_serverless``: the classic Quantum Serverless API
  (``QuantumServerless``, ``distribute_task``, ``put``, ``get``, ``Program``,
  ``GatewayProvider``, ``get_arguments``, ``save_result``). Programs written for it run after
  changing ``from quantum_serverless import ...`` to
  ``from qsrv.compat.quantum_serverless import ...``.
- ``qsrv.compat.qiskit_primitives``: qiskit's V1 ``Sampler`` and ``Estimator``, which qiskit 2
  removed, on Aer over the cluster. Programs that used them run after changing
  ``from qiskit.primitives import Sampler, Estimator`` to
  ``from qsrv.compat.qiskit_primitives import Sampler, Estimator``.

The other half of the compatibility lives in the gateway: the ``qiskit-serverless`` client
itself talks to ``qsrv gateway`` unmodified (``qsrv/gateway/_upstream_http.py``).
"""

from __future__ import annotations

__all__: list[str] = []
