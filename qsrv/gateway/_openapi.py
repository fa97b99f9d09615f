"""The OpenAPI 3 description of the gateway, served at ``/openapi.json``, made from the route
tables of the mounted doors (``_web.Route``; the assembly records each door in ``DOORS``), so
the description and the routing cannot drift apart. A test checks that every route is
described and every described path is a route.

The small builders below (``ref``, ``json_content``, ``errors``, ``path_param``, ``query``)
are for the doors' operation objects.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from qsrv.gateway._web import DOORS, ROUTES, SCHEMAS

__all__ = ["errors", "json_content", "openapi_spec", "path_param", "query", "ref"]

JSON = "application/json"
_ERROR_TEXT = {400: "Malformed request", 401: "Missing or unknown token",
               403: "Not allowed for this user", 404: "No such object for this user",
               409: "Not allowed in the object's state", 413: "Over a size limit",
               429: "Too many requests"}
_ERROR_SCHEMA = {
    "type": "object", "required": ["error", "message"],
    "properties": {"error": {"type": "string", "description": "Kind, e.g. not_found"},
                   "message": {"type": "string"}},
}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def json_content(schema: dict[str, Any], description: str) -> dict[str, Any]:
    """A response (or request body) of JSON ``schema``."""
    return {"description": description, "content": {JSON: {"schema": schema}}}


def errors(*statuses: int) -> dict[str, Any]:
    """qsrv's own error responses (``{"error", "message"}``) for these statuses."""
    return {str(s): json_content(ref("Error"), _ERROR_TEXT[s]) for s in statuses}


def path_param(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": {"type": "string"}}


def query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema}


def _operation(route: Any, prefix: str) -> dict[str, Any]:
    operation = dict(route.operation)
    operation.setdefault("summary", route.path)
    operation.setdefault("responses", {"200": {"description": "OK"}})
    params = list(operation.get("parameters", ()))
    named = {p["name"] for p in params if p.get("in") == "path"}
    for segment in (prefix + route.path).split("/"):
        if segment.startswith("{") and segment.endswith("}") and segment[1:-1] not in named:
            params.append({"name": segment[1:-1], "in": "path", "required": True,
                           "schema": {"type": "string"}})
    if params:
        operation["parameters"] = params
    if route.auth == "public":
        operation["security"] = []
    return operation


def openapi_spec(root: web.Application) -> dict[str, Any]:
    """The whole description of ``root`` and its doors, a fresh dict each call."""
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {"Error": _ERROR_SCHEMA}
    for prefix, app in [("", root), *root[DOORS]]:
        schemas.update(app.get(SCHEMAS, {}))
        for route in app.get(ROUTES, ()):
            operation = _operation(route, prefix)
            variants = (route.path, route.path + "/") if route.slash else (route.path,)
            for variant in variants:
                paths.setdefault(prefix + variant, {})[route.method.lower()] = operation
    return {
        "openapi": "3.0.3",
        "info": {"title": "qsrv gateway", "version": "1",
                 "description": "Programs, jobs and the quantum service on a qsrv cluster."},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }
