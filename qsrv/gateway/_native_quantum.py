"""The quantum service's routes of the ``/v1`` door (platforms, sessions, batches, quantum
jobs), over ``GatewayService.quantum``."""

from __future__ import annotations

from typing import Any

from qsrv.gateway._web import Route

__all__ = ["QUANTUM_ROUTES", "QUANTUM_SCHEMAS"]

QUANTUM_SCHEMAS: dict[str, Any] = {}
QUANTUM_ROUTES: tuple[Route, ...] = ()
