"""The quantum service: platforms, sessions, batches and quantum jobs on the cluster's workers.

One service (``QuantumService``, reached as ``GatewayService.quantum``) owns every state
change; the doors (native /v1, Scaleway, Pasqal) only map their shapes onto it.
"""

from qsrv.gateway._quantum._models import (
    ACTIVE_SESSION,
    MAX_PAGE,
    TERMINAL,
    BatchFilters,
    BatchRecord,
    JobFilters,
    JobSpec,
    Page,
    Pagination,
    QJobRecord,
    QResult,
    QStatus,
    SessionFilters,
    SessionRecord,
    SessionStatus,
    StopReason,
    parse_duration,
)
from qsrv.gateway._quantum._service import QuantumConfig, QuantumService

__all__ = [
    "ACTIVE_SESSION",
    "MAX_PAGE",
    "TERMINAL",
    "BatchFilters",
    "BatchRecord",
    "JobFilters",
    "JobSpec",
    "Page",
    "Pagination",
    "QJobRecord",
    "QResult",
    "QStatus",
    "QuantumConfig",
    "QuantumService",
    "SessionFilters",
    "SessionRecord",
    "SessionStatus",
    "StopReason",
    "parse_duration",
]
