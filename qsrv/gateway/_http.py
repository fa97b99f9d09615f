"""qsrv's own HTTP front door: aiohttp routes over ``GatewayService``.

Each handler parses the request, calls one service method and renders its answer; no state or
rule lives here. Invariants:

- Every route but ``PUBLIC_PATHS`` is authenticated by the middleware before its handler runs
  (``Authorization: Bearer TOKEN``); handlers read the user with ``_user(request)``. The
  Quantum Serverless door (``_upstream_http``, mounted here under ``UPSTREAM_PREFIXES``)
  authenticates its own routes and renders its own errors, as its client expects.
- Every error leaves as JSON ``{"error": kind, "message": text}`` with the status of its
  ``GatewayError`` class (``_errors``), which the client maps back to the same class.
- Bodies are bounded before they are read: uploads by ``max_archive_bytes``, JSON by
  ``max_arguments_bytes``. A declared Content-Length over the limit is refused (413) before
  ``100 Continue`` on every route (``expect_within``) and before any byte is read; the limit
  holds again while streaming.
- A client's malformed request is a 4xx with a message, never a 500 nor a traceback in the
  log: every read of a body goes through ``reading_body`` (garbage multipart, oversize part
  headers, JSON nested too deep, bad encodings).
- Arguments travel as base64 of their pickle (``arguments``) or as plain JSON
  (``arguments_json``, stored as JSON text, so programs of either runtime read them); results
  come back as the pickled bytes (``application/octet-stream``), 204 when the job saved none.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from aiohttp import BodyPartReader, web

from qsrv.gateway._bodies import check_length, error_response, expect_within, reading_body
from qsrv.gateway._errors import (
    GatewayError,
    InvalidRequestError,
    PayloadTooLargeError,
)
from qsrv.gateway._models import JobStatus, User
from qsrv.gateway._openapi import openapi_spec
from qsrv.gateway._service import GatewayService
from qsrv.gateway._upstream_http import UPSTREAM_PREFIXES, add_upstream_routes, note_gateway_url

__all__ = ["PUBLIC_PATHS", "SERVICE", "build_app"]

SERVICE = web.AppKey("service", GatewayService)
# The authenticated user of the request being handled; set by the middleware in the request's
# own task, so every handler (and nothing else) sees its request's user.
_CURRENT_USER: ContextVar[User] = ContextVar("qsrv_gateway_user")
PUBLIC_PATHS = frozenset({"/health", "/openapi.json"})
MAX_WAIT_S = 60.0
_CHUNK = 1 << 16
_MULTIPART_SLACK = 64 << 10  # room for the metadata part and multipart framing
_log = logging.getLogger("qsrv.gateway")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


_error_response = error_response


_KIND_BY_STATUS = {400: "invalid_request", 401: "unauthorized", 403: "forbidden",
                   404: "not_found", 405: "invalid_request", 409: "conflict", 413: "too_large",
                   415: "invalid_request", 429: "too_many_requests"}
@web.middleware
async def _errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except GatewayError as exc:
        response = _error_response(exc.status, exc.kind, str(exc))
        retry = getattr(exc, "retry_after", None)
        if retry:
            response.headers["Retry-After"] = str(int(retry))
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error_response(exc.status, _KIND_BY_STATUS.get(exc.status, "internal"),
                               exc.reason)
    except Exception:
        _log.exception("internal error serving %s %s", request.method, request.path)
        return _error_response(500, "internal", "internal gateway error (see its log)")


def _authenticate(request: web.Request) -> User:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        token = ""
    return request.app[SERVICE].authenticate(token.strip())


@web.middleware
async def _auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    note_gateway_url(request, request.app[SERVICE])
    if request.path not in PUBLIC_PATHS and not request.path.startswith(UPSTREAM_PREFIXES):
        reset = _CURRENT_USER.set(_authenticate(request))
        try:
            return await handler(request)
        finally:
            _CURRENT_USER.reset(reset)
    return await handler(request)


def build_app(service: GatewayService) -> web.Application:
    json_limit = max(1 << 20, service.config.max_arguments_bytes * 4 // 3 + (64 << 10))
    app = web.Application(middlewares=[_errors_middleware, _auth_middleware],
                          client_max_size=json_limit)
    app[SERVICE] = service
    within_json = expect_within(lambda request: json_limit)
    app.router.add_get("/health", _health)
    app.router.add_get("/openapi.json", _openapi)
    app.router.add_get("/v1/me", _me)
    app.router.add_post("/v1/programs", _upload_program, expect_handler=expect_within(
        _upload_limit, _authenticate))
    app.router.add_get("/v1/programs", _list_programs)
    app.router.add_get("/v1/programs/{title}/versions", _program_versions)
    app.router.add_post("/v1/jobs", _submit_job, expect_handler=within_json)
    app.router.add_get("/v1/jobs", _list_jobs)
    app.router.add_get("/v1/jobs/{job_id}", _get_job)
    app.router.add_get("/v1/jobs/{job_id}/wait", _wait_job)
    app.router.add_get("/v1/jobs/{job_id}/logs", _job_logs)
    app.router.add_get("/v1/jobs/{job_id}/result", _job_result)
    app.router.add_get("/v1/jobs/{job_id}/events", _job_events)
    app.router.add_post("/v1/jobs/{job_id}/stop", _stop_job, expect_handler=within_json)
    add_upstream_routes(app, service, json_limit)
    return app


def _upload_limit(request: web.Request) -> int:
    return int(_service(request).config.archive_limits.max_archive_bytes + _MULTIPART_SLACK)


# -- helpers ----------------------------------------------------------------------------------


def _service(request: web.Request) -> GatewayService:
    return request.app[SERVICE]


def _user(request: web.Request) -> User:
    return _CURRENT_USER.get()


def _int_query(request: web.Request, name: str, default: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise InvalidRequestError(f"query parameter {name} must be an integer") from None


def _timeout_query(request: web.Request, default: float) -> float:
    raw = request.query.get("timeout")
    try:
        value = default if raw in (None, "") else float(raw)
    except ValueError:
        raise InvalidRequestError("query parameter timeout must be a number") from None
    return min(max(value, 0.0), MAX_WAIT_S)


def _timestamp(raw: str) -> float:
    """A query time: seconds since the epoch, or ISO 8601 (UTC when no zone is given)."""
    try:
        return float(raw)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidRequestError(f"bad time {raw!r}: use ISO 8601 or epoch seconds") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        async with reading_body():
            body = await request.json()
    except InvalidRequestError:
        raise InvalidRequestError("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise InvalidRequestError("the body must be a JSON object")
    return body


# -- routes -----------------------------------------------------------------------------------


async def _health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_spec())


async def _me(request: web.Request) -> web.Response:
    return web.json_response({"name": _user(request).name})


async def _upload_program(request: web.Request) -> web.Response:
    service = _service(request)
    limit = service.config.archive_limits.max_archive_bytes
    check_length(request, _upload_limit(request))
    if not request.content_type.startswith("multipart/"):
        raise InvalidRequestError("upload a program as multipart/form-data")
    parts: dict[str, bytes] = {}
    async with reading_body():
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise InvalidRequestError("nested multipart is not supported")
            name = part.name or ""
            if name not in ("metadata", "archive") or name in parts:
                raise InvalidRequestError(f"unexpected or repeated form field {name!r}")
            parts[name] = await _read_part(part,
                                           limit if name == "archive" else _MULTIPART_SLACK)
    try:
        metadata = json.loads(parts["metadata"]) if "metadata" in parts else None
    except (ValueError, RecursionError):
        raise InvalidRequestError("metadata must be JSON") from None
    archive = parts.get("archive")
    if not isinstance(metadata, dict) or archive is None:
        raise InvalidRequestError("the upload needs a 'metadata' JSON part and an 'archive'")
    env_vars = metadata.get("env_vars") or {}
    if not isinstance(env_vars, dict):
        raise InvalidRequestError("env_vars must be an object")
    program = await service.upload_program(
        _user(request),
        title=str(metadata.get("title", "")),
        entrypoint=str(metadata.get("entrypoint", "")),
        archive=archive,
        env_vars=env_vars,
        description=str(metadata.get("description", "")),
    )
    return web.json_response(program.to_json(), status=201)


async def _read_part(part: BodyPartReader, limit: int) -> bytes:
    data = bytearray()
    while chunk := await part.read_chunk(_CHUNK):
        data += chunk
        if len(data) > limit:
            raise PayloadTooLargeError(f"form field {part.name!r} over its limit of {limit} bytes")
    return bytes(data)


async def _list_programs(request: web.Request) -> web.Response:
    programs = _service(request).programs(_user(request))
    return web.json_response({"programs": [p.to_json() for p in programs]})


async def _program_versions(request: web.Request) -> web.Response:
    versions = _service(request).program_versions(_user(request), request.match_info["title"])
    return web.json_response({"versions": [p.to_json() for p in versions]})


async def _submit_job(request: web.Request) -> web.Response:
    body = await _json_body(request)
    title = body.get("program")
    version = body.get("version")
    if not isinstance(title, str) or not (version is None or isinstance(version, int)):
        raise InvalidRequestError("'program' must be a title and 'version' an integer or null")
    arguments_format = "pickle"
    if "arguments" in body:
        try:
            arguments = base64.b64decode(str(body["arguments"]), validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequestError("'arguments' must be base64 (of a pickle)") from None
    else:
        plain = body.get("arguments_json") or {}
        if not isinstance(plain, dict):
            raise InvalidRequestError("'arguments_json' must be an object")
        arguments, arguments_format = json.dumps(plain).encode(), "json"
    job = _service(request).submit_job(_user(request), title, arguments, version,
                                       arguments_format=arguments_format)
    return web.json_response(job.to_json(), status=201)


async def _list_jobs(request: web.Request) -> web.Response:
    statuses = []
    for raw in request.query.getall("status", []):
        for word in filter(None, raw.split(",")):
            try:
                statuses.append(JobStatus(word.upper()))
            except ValueError:
                raise InvalidRequestError(f"unknown status {word!r}") from None
    created_after = request.query.get("created_after")
    limit = _int_query(request, "limit", 10)
    offset = _int_query(request, "offset", 0)
    jobs, total = _service(request).jobs(
        _user(request), limit=limit, offset=offset, statuses=statuses,
        created_after=_timestamp(created_after) if created_after else None,
    )
    return web.json_response({"jobs": [j.to_json() for j in jobs], "total": total,
                              "limit": limit, "offset": offset})


async def _get_job(request: web.Request) -> web.Response:
    job = _service(request).job(_user(request), request.match_info["job_id"])
    return web.json_response(job.to_json())


async def _wait_job(request: web.Request) -> web.Response:
    job = await _service(request).wait(
        _user(request), request.match_info["job_id"], _timeout_query(request, 30.0)
    )
    return web.json_response(job.to_json())


async def _job_logs(request: web.Request) -> web.Response:
    logs = _service(request).logs(_user(request), request.match_info["job_id"])
    return web.Response(body=logs, content_type="text/plain", charset="utf-8")


async def _job_result(request: web.Request) -> web.Response:
    result = _service(request).result(_user(request), request.match_info["job_id"])
    if result is None:
        return web.Response(status=204)
    return web.Response(body=result, content_type="application/octet-stream")


async def _job_events(request: web.Request) -> web.Response:
    events = _service(request).events(
        _user(request), request.match_info["job_id"], _int_query(request, "after", 0)
    )
    return web.json_response({"events": [e.to_json() for e in events]})


async def _stop_job(request: web.Request) -> web.Response:
    job = await _service(request).stop(
        _user(request), request.match_info["job_id"], _timeout_query(request, MAX_WAIT_S)
    )
    return web.json_response(job.to_json())
