"""The dashboard: live pages of the cluster (and of a gateway's jobs, sessions, batches),
Prometheus metrics, and the task timeline, following the scheduler as a read-only monitor.

    qsrv dashboard --address HOST:PORT --port 7423     # prints a URL with a login token
    qsrv.init(dashboard=True)                          # the same for a local cluster
    qsrv timeline --address HOST:PORT --output trace.json --since 60s

Static pages shipped in the package (no build step, nothing fetched: works offline).
"""

from typing import Any

from qsrv.dashboard._app import COOKIE, Viewer, dashboard_app
from qsrv.dashboard._errors import error_text
from qsrv.dashboard._gateway import (
    GatewayMetrics,
    gateway_app,
    gateway_metrics,
    install_gateway_metrics,
)
from qsrv.dashboard._metrics import ClusterCollector, cluster_registry
from qsrv.dashboard._server import DEFAULT_PORT, DashboardServer, is_loopback
from qsrv.dashboard._source import Feed, MonitorClient
from qsrv.dashboard._trace import parse_since, trace_events, trace_from_update

__all__ = [
    "COOKIE",
    "DEFAULT_PORT",
    "ClusterCollector",
    "DashboardServer",
    "Feed",
    "GatewayMetrics",
    "MonitorClient",
    "Viewer",
    "cluster_registry",
    "dashboard_app",
    "error_text",
    "gateway_app",
    "gateway_metrics",
    "install_gateway_metrics",
    "is_loopback",
    "parse_since",
    "timeline",
    "trace_events",
    "trace_from_update",
]


def timeline(address: str, token: str, since: float = 0.0, timeout: float = 10.0
             ) -> dict[str, Any]:
    """The recent task events of the scheduler at ``address`` as a Chrome trace document
    (``{"traceEvents": [...]}``); ``since``: seconds back from now (0: all it keeps)."""
    with MonitorClient(address, token, timeout=timeout) as client:
        update = client.snapshot(timeout=timeout)
    return trace_from_update(update, since)
