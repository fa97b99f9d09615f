"""Reading a client's request body safely, for both front doors.

- ``reading_body``: what a malformed body makes aiohttp or json raise (garbage multipart, a
  part header over aiohttp's line limit, JSON nested too deep, a bad charset) becomes an
  InvalidRequestError (400) with a short message; an oversize body a PayloadTooLargeError (413).
  Never a 500 nor a traceback in the log for the client's mistake.
- ``expect_within``: an ``expect_handler`` that refuses a declared Content-Length over the
  route's limit (413), or a failed check (authentication), *instead of* ``100 Continue``.
- ``check_length``: the same refusal for a request without ``Expect``, before any byte of the
  body is read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from qsrv.gateway._errors import GatewayError, InvalidRequestError, PayloadTooLargeError

__all__ = ["check_length", "error_response", "expect_within", "reading_body"]


def error_response(status: int, kind: str, message: str) -> web.Response:
    """qsrv's own door's error body."""
    return web.json_response({"error": kind, "message": message}, status=status)


# What parsing a client's body raises when the body (not the gateway) is at fault.
_BAD_BODY = (ValueError, AssertionError, LookupError, RecursionError, HttpProcessingError,
             UnicodeError)


@asynccontextmanager
async def reading_body() -> AsyncIterator[None]:
    """Turn what a malformed body makes aiohttp or json raise into a 400 (413 for size)."""
    try:
        yield
    except GatewayError:
        raise
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLargeError("request body too large") from None
    except _BAD_BODY as exc:
        text = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise InvalidRequestError(f"malformed request body: {text}") from None


def expect_within(limit: Callable[[web.Request], int],
                  check: Callable[[web.Request], object] = lambda request: None,
                  render: Callable[[GatewayError], web.StreamResponse] | None = None,
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
            if render is not None:
                return render(exc)
            return error_response(exc.status, exc.kind, str(exc))
        expect = request.headers.get("Expect", "").lower()
        if request.version == (1, 1) and expect == "100-continue":
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0
        elif expect:
            return error_response(417, "invalid_request", f"cannot meet Expect: {expect}")
        return None

    return handler


def check_length(request: web.Request, limit: int) -> None:
    """Refuse a declared body over ``limit`` before reading any of it (no Expect header)."""
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLargeError(f"request body of {length} bytes, over the limit of {limit}")
