"""The gateway's HTTP application: the root and its doors, each an aiohttp sub-application
under its own prefix with its own authentication middleware and error shape.

    /health, /openapi.json      the root (no token)
    /v1                         qsrv's own door (``_native_http``: programs, jobs, quantum)
    /api/v1, /dj-rest-auth      the Quantum Serverless door (``_upstream_http``)
    /scaleway                   the Scaleway QaaS door (``_scaleway``: qaas/v1alpha1)
    /pasqal                     the Pasqal Cloud door (``_pasqal``: core and account routes)
    /dashboard                  pages for browsers (``qsrv.dashboard``): mounted, not an API,
                                so not in ``/openapi.json`` (``PAGES``)

Adding a door: a package ``qsrv/gateway/_<name>/`` with ``build_app(service) ->
web.Application`` made by ``qsrv.gateway._web.door(service, routes, render=...)`` (the shared
HTTP helpers: route table, authentication middleware, error rendering, bounded body reading,
JSON, query and pagination parsing, bearer and header tokens), and one line in ``_DOORS``
below: ``("/prefix", build_app)``. Its route table feeds both the routing and
``/openapi.json`` (``_openapi``).
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from qsrv.dashboard import gateway_app, gateway_metrics, install_gateway_metrics
from qsrv.gateway import _native_http, _pasqal, _scaleway, _upstream_http
from qsrv.gateway._openapi import json_content, openapi_spec
from qsrv.gateway._service import GatewayService
from qsrv.gateway._upstream_http import note_gateway_url
from qsrv.gateway._web import DOORS, SERVICE, Handler, Route, door, json_limit

__all__ = ["PAGES", "build_app"]

# (prefix, builder) of every door, in mount order.
_DOORS: tuple[tuple[str, Callable[[GatewayService], web.Application]], ...] = (
    ("/v1", _native_http.build_app),
    ("/api/v1", _upstream_http.build_app),
    ("/dj-rest-auth", _upstream_http.build_login_app),
    (_pasqal.PREFIX, _pasqal.build_app),
    ("/scaleway", _scaleway.build_app),
)
# (prefix, builder) of what browsers see: mounted after the doors, not described by OpenAPI.
PAGES: tuple[tuple[str, Callable[[GatewayService], web.Application]], ...] = (
    ("/dashboard", gateway_app),
)


def build_app(service: GatewayService) -> web.Application:
    """The root application with every door mounted."""
    root = door(service, _ROUTES, client_max_size=json_limit(service))
    root.middlewares.append(_note_url)
    install_gateway_metrics(root, service)  # /metrics: requests by route, status, latency
    root[DOORS] = []
    for prefix, build in _DOORS:
        app = build(service)
        root.add_subapp(prefix, app)
        root[DOORS].append((prefix, app))
    for prefix, build in PAGES:
        root.add_subapp(prefix, build(service))
    return root


@web.middleware
async def _note_url(request: web.Request, handler: Handler) -> web.StreamResponse:
    note_gateway_url(request, request.app[SERVICE])
    return await handler(request)


async def _health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_spec(request.app))


_ROUTES = (
    Route("GET", "/health", _health, {
        "summary": "Liveness check (no token needed)",
        "responses": {"200": json_content({"type": "object"}, "Alive")}}, auth="public"),
    Route("GET", "/openapi.json", _openapi, {
        "summary": "This description (no token needed)",
        "responses": {"200": json_content({"type": "object"}, "OpenAPI 3")}}, auth="public"),
    Route("GET", "/metrics", gateway_metrics, {
        "summary": "Prometheus metrics (Authorization: Bearer <cluster token>)",
        "responses": {"200": {"description": "Prometheus text format"}}}, auth="public"),
)
