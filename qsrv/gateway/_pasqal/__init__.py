"""The Pasqal Cloud door: the routes the ``pasqal-cloud`` SDK (0.24) calls, under ``/pasqal``.

``SDK(project_id=..., token_provider=<returns a qsrv gateway token>,
endpoints=Endpoints(core=GATEWAY + "/pasqal/core", account=GATEWAY + "/pasqal/account"))``
runs its batches, jobs, workloads and device specs against a qsrv gateway unmodified. The
door is an aiohttp sub-application with its own authentication (``Authorization: Bearer``
with a qsrv gateway token) and its own error shape (JSend, which the SDK's exceptions read);
everything it answers comes from the quantum service (``GatewayService.quantum``), which
owns the batches, the validation and the execution (each job's Pulser sequence, built with
its variables, sampled by pulser-simulation on the batch's reservation).
"""

from __future__ import annotations

from aiohttp import web

from qsrv.gateway._pasqal._links import LinkSigner
from qsrv.gateway._pasqal._routes import LINKS, RESULT_ROUTE, ROUTES_TABLE, download_result
from qsrv.gateway._pasqal._shapes import render_error
from qsrv.gateway._service import GatewayService
from qsrv.gateway._web import door

__all__ = ["PREFIX", "build_app"]

PREFIX = "/pasqal"


def build_app(service: GatewayService) -> web.Application:
    """The door's application, to mount under ``PREFIX``."""
    app = door(service, ROUTES_TABLE, render=render_error)
    app[LINKS] = LinkSigner()
    for route in app.router.routes():
        if route.handler is download_result and route.resource is not None:
            app[RESULT_ROUTE] = route.resource
    return app
