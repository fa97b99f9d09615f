"""The Scaleway QaaS door: the ``qaas/v1alpha1`` API that Perceval's Scaleway session,
qiskit-scaleway, CUDA-Q's ``scaleway`` target and scaleway-qaas-client speak, served from the
quantum service (mounted under ``/scaleway``: clients take ``url=GATEWAY + "/scaleway"``).

    platforms   GET  qaas/v1alpha1/platforms[/{id}]   Aer and Perceval platforms of the cluster
    sessions    POST/GET qaas/v1alpha1/sessions[/{id}], POST .../{id}/terminate, DELETE .../{id}
    models      POST/GET qaas/v1alpha1/models[/{id}]   qio computation models, kept to be run
    jobs        POST/GET qaas/v1alpha1/jobs[/{id}], POST .../{id}/cancel, GET .../{id}/results

``X-Auth-Token`` carries a qsrv gateway token (the door's own middleware checks it); a
``project_id`` is kept as a label that scopes listings. Errors are Scaleway's body,
``{"message": ..., "type": ...}`` (``invalid_arguments``, ``denied_authentication``,
``not_found``, ``precondition_failed``, ...).
"""

from __future__ import annotations

from aiohttp import web

from qsrv.gateway._scaleway._routes import ROUTES, SCHEMAS, STORE, authenticate
from qsrv.gateway._scaleway._store import ScalewayStore
from qsrv.gateway._service import GatewayService
from qsrv.gateway._web import door

__all__ = ["build_app", "error_body"]

# qsrv's error kinds (``GatewayError.kind``, or the status) as Scaleway's error types.
_TYPES = {400: "invalid_arguments", 401: "denied_authentication", 403: "permissions_denied",
          404: "not_found", 405: "invalid_arguments", 409: "precondition_failed",
          413: "invalid_arguments", 415: "invalid_arguments", 417: "invalid_arguments",
          429: "quotas_exceeded"}


def error_body(status: int, kind: str, message: str) -> web.Response:
    """An error as Scaleway's API answers one (its clients print the body)."""
    kind = _TYPES.get(status, "internal" if status == 500 else kind)
    return web.json_response({"message": message, "type": kind}, status=status)


def build_app(service: GatewayService) -> web.Application:
    """The door's application (its routes, its authentication, its error shape)."""
    app = door(service, ROUTES, render=error_body, authenticate=authenticate,
               schemas=SCHEMAS)
    app[STORE] = ScalewayStore(lambda: service.store.connection)
    return app
