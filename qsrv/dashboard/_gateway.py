"""The dashboard and Prometheus metrics inside the gateway.

- `gateway_app(service)`: the dashboard as the gateway's ``/dashboard`` sub-application. A
  user logs in with their own gateway token and sees their own jobs (with logs), quantum
  sessions and batches; the cluster token opens the cluster pages. It follows the gateway's
  cluster as a monitor (the gateway holds the cluster token).
- `GatewayMetrics`: ``/metrics`` of the gateway: requests by route (the route's pattern, not
  the raw path: bounded labels), method and status, with latencies; jobs, quantum sessions,
  batches and jobs by status (counted in SQLite when scraped); quota and rate refusals (429).
  Scraping needs ``Authorization: Bearer <cluster token>`` when the gateway has one, else any
  user's token.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from qsrv.dashboard._app import dashboard_app
from qsrv.dashboard._source import Feed

__all__ = ["GatewayMetrics", "gateway_app", "gateway_metrics", "install_gateway_metrics"]

PREFIX = "/dashboard"


def gateway_app(service: Any) -> web.Application:
    """The dashboard sub-application of a gateway (mounted under /dashboard)."""
    config = service.config
    address = getattr(config, "cluster_address", None)
    token = getattr(config, "cluster_token", None)
    feed = Feed(address, token) if address and token else None
    return dashboard_app(feed, cluster_token=token, service=service, prefix=PREFIX,
                         own_feed=True)


_COUNTS = (
    ("qsrv_gateway_jobs", "Program jobs by status", "jobs"),
    ("qsrv_gateway_quantum_sessions", "Quantum sessions by status", "q_sessions"),
    ("qsrv_gateway_quantum_batches", "Quantum batches by status", "q_batches"),
    ("qsrv_gateway_quantum_jobs", "Quantum jobs by status", "q_jobs"),
)


class _StoreCollector(Collector):
    def __init__(self, service: Any) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        try:
            conn = self.service.store.connection
        except Exception:  # a gateway not started: nothing to count
            return
        for name, doc, table in _COUNTS:
            family = GaugeMetricFamily(name, doc, labels=["status"])
            try:
                rows = conn.execute(
                    f"SELECT status, COUNT(*) FROM {table} GROUP BY status").fetchall()
            except Exception:  # a table this gateway's schema does not have
                continue
            for status, count in rows:
                family.add_metric([str(status)], count)
            yield family


class GatewayMetrics:
    """Request metrics (a middleware) and ``/metrics`` (a handler) of one gateway."""

    def __init__(self, service: Any) -> None:
        self.service = service
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("qsrv_gateway_requests", "HTTP requests answered",
                                ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("qsrv_gateway_request_seconds", "Time to answer a request",
                                 ["route"], registry=self.registry,
                                 buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120))
        self.refusals = Counter("qsrv_gateway_quota_refusals",
                                "Requests refused over a quota or a rate limit (429)",
                                ["route"], registry=self.registry)
        self.registry.register(_StoreCollector(service))

    @web.middleware
    async def middleware(self, request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                         ) -> web.StreamResponse:
        start = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else "(unmatched)"
            self.requests.labels(route, request.method, str(status)).inc()
            self.latency.labels(route).observe(time.perf_counter() - start)
            if status == 429:
                self.refusals.labels(route).inc()

    async def handler(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        cluster_token = getattr(self.service.config, "cluster_token", None)
        allowed = False
        if token:
            if cluster_token:
                import hmac

                allowed = hmac.compare_digest(token, cluster_token)
            if not allowed:
                try:
                    self.service.authenticate(token)
                    allowed = not cluster_token
                except Exception:  # not a user's token
                    allowed = False
        if not allowed:
            raise web.HTTPUnauthorized(
                text="metrics need Authorization: Bearer <cluster token>",
                content_type="text/plain")
        return web.Response(body=generate_latest(self.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    def install(self, root: web.Application) -> None:
        """Count every request of ``root`` and its sub-applications."""
        root.middlewares.append(self.middleware)


_METRICS: web.AppKey[GatewayMetrics] = web.AppKey("qsrv_gateway_metrics", GatewayMetrics)


def install_gateway_metrics(root: web.Application, service: Any) -> None:
    """Count the requests of the gateway's root application (and its doors) for
    `gateway_metrics`."""
    metrics = GatewayMetrics(service)
    root[_METRICS] = metrics
    metrics.install(root)


async def gateway_metrics(request: web.Request) -> web.Response:
    """``GET /metrics`` of the gateway (after `install_gateway_metrics` on its root)."""
    return await request.app[_METRICS].handler(request)
