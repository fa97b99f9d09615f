"""Compatibility layers: code written for other runtimes, running on qsrv.

- ``qsrv.compat.quantum_serverless``: the classic Quantum Serverless API
  (``QuantumServerless``, ``distribute_task``, ``put``, ``get``, ``Program``,
  ``GatewayProvider``, ``get_arguments``, ``save_result``). Programs written for it run after
  changing ``from quantum_serverless import ...`` to
  ``from qsrv.compat.quantum_serverless import ...``.

The other half of the compatibility lives in the gateway: the ``qiskit-serverless`` client
itself talks to ``qsrv gateway`` unmodified (``qsrv/gateway/_upstream_http.py``).
"""

from __future__ import annotations

__all__: list[str] = []
