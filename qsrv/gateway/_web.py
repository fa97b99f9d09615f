"""What every door of the gateway shares: one route table per door, authentication by
middleware, error rendering, bounded body reading, JSON, query and pagination parsing.

A door is an aiohttp sub-application made by ``door(service, routes, render=...)``:

- ``Route(method, path, handler, operation, auth=...)``: the door's table is the only place a
  route is declared; routing and the OpenAPI description (``operation``, an OpenAPI operation
  object; ``_openapi`` walks every mounted door's table) both come from it.
- Authentication is the door's middleware, default deny: a route is ``auth="user"`` unless it
  says ``"public"`` (no token) or ``"job"`` (a running job's own token or its owner's, for the
  calls a job makes about itself; the route has ``{job_id}``). Handlers read the caller with
  ``current_user(request)`` / ``current_job(request)``; no handler checks a token itself.
  A door may pass its own ``authenticate`` (a header other than ``Authorization: Bearer``).
- Errors: a ``GatewayError`` (or aiohttp's own 4xx) leaves through the door's ``render``
  (``native_error`` by default: ``{"error": kind, "message": text}``, which the Python client
  maps back to the same class), with ``Retry-After`` when the error carries one; anything
  else is logged once and answered 500 without a traceback.
- Bodies: a declared Content-Length over the route's limit is refused (413) before
  ``100 Continue`` (and, for ``"user"`` routes, so is a bad token) by the route's
  ``expect_handler``; ``check_length`` refuses it before any byte is read without ``Expect``;
  every read goes through ``reading_body`` (``json_body`` for a JSON object, ``json_value``
  for any JSON value), so a malformed body (garbage multipart, JSON nested too deep, a bad
  charset, bad chunked encoding, a body cut short by the client) is a 400 and never a 500;
  a route that takes no body calls ``no_body``, which refuses one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from qsrv.gateway._errors import GatewayError, InvalidRequestError, PayloadTooLargeError
from qsrv.gateway._models import JobRecord, User
from qsrv.gateway._service import GatewayService

__all__ = [
    "DOORS",
    "INT_QUERY_MAX",
    "ROUTES",
    "SCHEMAS",
    "SERVICE",
    "Auth",
    "Handler",
    "Render",
    "Route",
    "bearer_token",
    "bearer_user",
    "check_length",
    "current_job",
    "current_user",
    "door",
    "error_response",
    "errors_middleware",
    "expect_within",
    "float_query",
    "int_query",
    "json_body",
    "json_limit",
    "json_value",
    "native_error",
    "no_body",
    "pagination",
    "reading_body",
    "service_of",
    "timeout_query",
    "timestamp",
]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Render = Callable[[int, str, str], web.StreamResponse]
Auth = Literal["user", "public", "job"]

SERVICE = web.AppKey("qsrv_service", GatewayService)
# The door's route table, kept on its application for the OpenAPI description.
ROUTES = web.AppKey("qsrv_routes", tuple)
# OpenAPI component schemas the door's operations refer to.
SCHEMAS = web.AppKey("qsrv_schemas", dict)
# The mounted doors of the root application: (prefix, sub-application), in mount order.
DOORS = web.AppKey("qsrv_doors", list)
_AUTH = web.AppKey("qsrv_auth_policy", dict)
_AUTHENTICATE: web.AppKey[Callable[[web.Request], User]] = web.AppKey("qsrv_authenticate")
_USER = web.RequestKey("qsrv_user", User)
_JOB = web.RequestKey("qsrv_job", JobRecord)

_log = logging.getLogger("qsrv.gateway")
_KIND_BY_STATUS = {400: "invalid_request", 401: "unauthorized", 403: "forbidden",
                   404: "not_found", 405: "invalid_request", 409: "conflict", 413: "too_large",
                   415: "invalid_request", 417: "invalid_request", 429: "too_many_requests"}


@dataclass(frozen=True)
class Route:
    """One route of a door. ``path`` is relative to the door's prefix; ``operation`` is its
    OpenAPI operation object (summary, parameters, requestBody, responses);
    ``body_limit(request)`` caps the body (default: the door's); ``slash`` also serves the
    path with a trailing slash."""

    method: str
    path: str
    handler: Handler
    operation: Mapping[str, Any] = field(default_factory=dict)
    auth: Auth = "user"
    body_limit: Callable[[web.Request], int] | None = None
    slash: bool = False


# -- errors -----------------------------------------------------------------------------------


def error_response(status: int, kind: str, message: str) -> web.Response:
    """qsrv's own error body: ``{"error": kind, "message": text}``."""
    return web.json_response({"error": kind, "message": message}, status=status)


native_error: Render = error_response


def errors_middleware(render: Render) -> Any:
    """A middleware answering ``GatewayError`` and aiohttp's 4xx through ``render``."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except GatewayError as exc:
            response = render(exc.status, exc.kind, str(exc))
            retry = getattr(exc, "retry_after", None)
            if retry:
                response.headers["Retry-After"] = str(int(retry))
            return response
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return render(exc.status, _KIND_BY_STATUS.get(exc.status, "internal"), exc.reason)
        except Exception:
            _log.exception("internal error serving %s %s", request.method, request.path)
            return render(500, "internal", "internal gateway error (see its log)")

    return middleware


# -- authentication ---------------------------------------------------------------------------


def bearer_token(request: web.Request, header: str = "Authorization") -> str:
    """The token of ``Authorization: Bearer TOKEN`` (or of a plain header such as
    ``X-Auth-Token: TOKEN`` when ``header`` names another one); "" when absent."""
    raw = request.headers.get(header, "")
    if header.lower() != "authorization":
        return raw.strip()
    scheme, _, token = raw.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def bearer_user(request: web.Request) -> User:
    """The user of the request's bearer token (UnauthorizedError otherwise)."""
    return service_of(request).authenticate(bearer_token(request))


def service_of(request: web.Request) -> GatewayService:
    return request.app[SERVICE]


def current_user(request: web.Request) -> User:
    """The caller of a ``"user"`` route, authenticated by the door's middleware."""
    return request[_USER]


def current_job(request: web.Request) -> JobRecord:
    """The job of a ``"job"`` route, authenticated by the door's middleware."""
    return request[_JOB]


@web.middleware
async def _auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    app = request.app
    match = request.match_info
    if match.http_exception is not None or match.apps[-1] is not app:
        return await handler(request)  # no route (404, 405), or an inner door's route
    policy = app[_AUTH].get(match.route, "user")
    if policy == "user":
        request[_USER] = app[_AUTHENTICATE](request)
    elif policy == "job":
        request[_JOB] = service_of(request).authenticate_job(
            bearer_token(request), request.match_info.get("job_id", ""))
    return await handler(request)


def door(service: GatewayService, routes: Iterable[Route], *,
         render: Render = native_error,
         authenticate: Callable[[web.Request], User] = bearer_user,
         body_limit: int | None = None,
         schemas: Mapping[str, Any] | None = None,
         client_max_size: int | None = None) -> web.Application:
    """A door: an application serving ``routes``, authenticated and rendered as above.

    ``body_limit``: the default cap of a route's body (default: the service's JSON limit).
    ``client_max_size`` only matters for the root application (aiohttp reads it there).
    """
    limit = json_limit(service) if body_limit is None else body_limit
    table = tuple(routes)
    app = web.Application(middlewares=[errors_middleware(render), _auth_middleware],
                          client_max_size=client_max_size or limit)
    app[SERVICE] = service
    app[ROUTES] = table
    app[SCHEMAS] = dict(schemas or {})
    app[_AUTHENTICATE] = authenticate
    policies: dict[web.AbstractRoute, Auth] = {}

    def default_limit(request: web.Request) -> int:
        return limit

    for route in table:
        check: Callable[[web.Request], object] = (
            authenticate if route.auth == "user" else lambda request: None)
        expect = expect_within(route.body_limit or default_limit, check, render)
        for variant in (route.path, route.path + "/") if route.slash else (route.path,):
            added = app.router.add_route(route.method, variant, route.handler,
                                         expect_handler=expect)
            policies[added] = route.auth
    app[_AUTH] = policies
    return app


def json_limit(service: GatewayService) -> int:
    """The cap of a JSON body: base64 arguments of ``max_arguments_bytes`` and some room."""
    return max(1 << 20, service.config.max_arguments_bytes * 4 // 3 + (64 << 10))


# -- bodies -----------------------------------------------------------------------------------

# What parsing a client's body raises when the body (not the gateway) is at fault.
_BAD_BODY = (ValueError, AssertionError, LookupError, RecursionError, HttpProcessingError,
             UnicodeError)


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc).strip() else type(exc).__name__


@asynccontextmanager
async def reading_body() -> AsyncIterator[None]:
    """Turn what a malformed body makes aiohttp or json raise into a 400 (413 for size).

    A body that never arrives whole is the client's fault too: aiohttp's
    ``RequestPayloadError`` (bad chunked or content encoding) and the ``ConnectionResetError``
    a read meets when the client goes away mid-body (shorter than its Content-Length, an
    abort) are 400s, logged at INFO (no one may be left to read the answer)."""
    try:
        yield
    except GatewayError:
        raise
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLargeError("request body too large") from None
    except (RequestPayloadError, ConnectionResetError) as exc:
        _log.info("request body not received whole: %s", _first_line(exc))
        raise InvalidRequestError(f"request body not received whole: {_first_line(exc)}"
                                  ) from None
    except _BAD_BODY as exc:
        raise InvalidRequestError(f"malformed request body: {_first_line(exc)}") from None


def expect_within(limit: Callable[[web.Request], int],
                  check: Callable[[web.Request], object] = lambda request: None,
                  render: Render = native_error,
                  ) -> Callable[[web.Request], Awaitable[web.StreamResponse | None]]:
    """An aiohttp ``expect_handler``: on ``Expect: 100-continue``, answer ``check``'s error
    (authentication) or 413 for a declared Content-Length over ``limit(request)`` instead of
    ``100 Continue``, so the client never sends the body."""

    async def handler(request: web.Request) -> web.StreamResponse | None:
        try:
            check(request)
            length = request.content_length
            cap = limit(request)
            if length is not None and length > cap:
                raise PayloadTooLargeError(
                    f"request body of {length} bytes, over the limit of {cap}")
        except GatewayError as exc:
            return render(exc.status, exc.kind, str(exc))
        expect = request.headers.get("Expect", "").lower()
        if request.version == (1, 1) and expect == "100-continue":
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0
        elif expect:
            return render(417, "invalid_request", f"cannot meet Expect: {expect}")
        return None

    return handler


def check_length(request: web.Request, limit: int) -> None:
    """Refuse a declared body over ``limit`` before reading any of it (no Expect header)."""
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLargeError(f"request body of {length} bytes, over the limit of {limit}")


async def json_body(request: web.Request, *, empty: bool = False) -> dict[str, Any]:
    """The body as a JSON object (400 otherwise); ``empty``: no body reads as ``{}``."""
    if empty and not request.can_read_body:
        return {}
    body = await json_value(request, "the body must be a JSON object")
    if not isinstance(body, dict):
        raise InvalidRequestError("the body must be a JSON object")
    return body


async def json_value(request: web.Request, invalid: str = "the body must be JSON") -> Any:
    """The body as any JSON value; ``invalid`` is the 400's message when it does not parse
    (a body that does not arrive whole or does not decode keeps ``reading_body``'s)."""
    async with reading_body():
        text = await request.text()
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise InvalidRequestError(invalid) from None


async def no_body(request: web.Request) -> None:
    """For routes that take no body: none, or an empty JSON object; anything else is a 400."""
    if not request.can_read_body:
        return
    async with reading_body():
        raw = await request.read()
    if raw.strip() and raw.strip() != b"{}":
        raise InvalidRequestError(f"{request.method} {request.path} takes no body")


# -- queries ----------------------------------------------------------------------------------


# The largest integer a query may carry: what the stores (SQLite) hold.
INT_QUERY_MAX = 2**63 - 1


def int_query(request: web.Request, name: str, default: int) -> int:
    """``?name=`` as an integer within +-``INT_QUERY_MAX`` (a 400 otherwise)."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequestError(f"query parameter {name} must be an integer") from None
    if not -INT_QUERY_MAX <= value <= INT_QUERY_MAX:
        raise InvalidRequestError(f"query parameter {name} must be an integer from "
                                  f"-{INT_QUERY_MAX} to {INT_QUERY_MAX}")
    return value


def float_query(request: web.Request, name: str, default: float | None) -> float | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise InvalidRequestError(f"query parameter {name} must be a number") from None


def timeout_query(request: web.Request, default: float, cap: float = 60.0) -> float:
    """``?timeout=`` in seconds, clamped to [0, cap]."""
    value = float_query(request, "timeout", default)
    assert value is not None
    if value != value:  # NaN
        raise InvalidRequestError("query parameter timeout must be a number")
    return min(max(value, 0.0), cap)


def pagination(request: web.Request, default_limit: int,
               max_limit: int | None = None) -> tuple[int, int]:
    """``?offset=&limit=`` as (offset, limit): non-negative, limit at most ``max_limit``."""
    offset = int_query(request, "offset", 0)
    limit = int_query(request, "limit", default_limit)
    if offset < 0 or limit < 0:
        raise InvalidRequestError("offset and limit must not be negative")
    if max_limit is not None and limit > max_limit:
        raise InvalidRequestError(f"limit {limit} is over the maximum of {max_limit}")
    return offset, limit


def timestamp(raw: str) -> float:
    """A time: seconds since the epoch, or ISO 8601 (UTC when no zone is given; ``Z`` too)."""
    try:
        return float(raw)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequestError(f"bad time {raw!r}: use ISO 8601 or epoch seconds") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()
