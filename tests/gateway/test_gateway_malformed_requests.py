"""Malformed requests are the client's fault, on every door: query integers beyond what the
stores hold, and bodies that never arrive whole.

A body that never arrives whole: cut short of its
Content-Length by a client that goes away, broken chunked encoding, a Content-Encoding it
does not have. Each is answered 400 (counted so by /metrics), never 500, and the gateway
logs no ERROR for it. Raw sockets: no HTTP client sends such bodies.

Each request says ``Expect: 100-continue`` and the bad part of its body is sent only after
the gateway's ``100 Continue``: by then the route's handler is reading the body (the
continue is written on its way to the handler), so the failure meets the handler's read and
not aiohttp's parsing of a request it has not handed over yet."""

from __future__ import annotations

import logging
import socket
import urllib.request
from collections.abc import Callable
from functools import partial
from urllib.parse import urlsplit

import pytest

from tests._support import wait_for
from tests._support.gateway import ThreadedGateway

# (door, method and path, token header, content type): a body-reading route of each door.
ROUTES = [
    ("native", "POST /v1/jobs", "Authorization: Bearer", "application/json"),
    ("native", "POST /v1/batches", "Authorization: Bearer", "application/json"),
    ("native", "POST /v1/programs", "Authorization: Bearer",
     "multipart/form-data; boundary=xyz"),
    ("serverless", "POST /api/v1/programs/run/", "Authorization: Bearer", "application/json"),
    ("serverless", "POST /api/v1/programs/upload/", "Authorization: Bearer",
     "multipart/form-data; boundary=xyz"),
    ("scaleway", "POST /scaleway/qaas/v1alpha1/sessions", "X-Auth-Token:", "application/json"),
    ("pasqal", "POST /pasqal/core/api/v1/batches", "Authorization: Bearer",
     "application/json"),
    ("pasqal", "POST /pasqal/core/api/v2/batches/b1/jobs", "Authorization: Bearer",
     "application/json"),
]
BODY = b'{"program": "p", "jobs": [], "title": "t", "platform_id": "x"}'
# How each body goes wrong: extra headers, what follows the 100 Continue, and whether the
# client then goes away (half-closes) instead of waiting for its answer.
CASES: dict[str, tuple[str, bytes, bool]] = {
    "cut short": (f"Content-Length: {len(BODY) + 50}\r\n", BODY[:10], True),
    "bad chunks": ("Transfer-Encoding: chunked\r\n",
                   b"5\r\n" + BODY[:5] + b"\r\nzz\r\nabc\r\n", True),
    "not gzip": (f"Content-Encoding: gzip\r\nContent-Length: {len(BODY)}\r\n", BODY, False),
}


def _exchange(url: str, route: str, auth: str, token: str, content_type: str,
              headers: str, rest: bytes, abort: bool) -> bytes:
    """Send the request's head, wait for 100 Continue, send ``rest`` (then half-close when
    ``abort``); all the gateway answered after the 100 Continue (b"" where it had no one
    left to answer)."""
    address = urlsplit(url)
    head = (f"{route} HTTP/1.1\r\nHost: {address.netloc}\r\n{auth} {token}\r\n"
            f"Content-Type: {content_type}\r\nExpect: 100-continue\r\n"
            f"Connection: close\r\n{headers}\r\n")
    with socket.create_connection((address.hostname, address.port), timeout=60) as conn:
        conn.sendall(head.encode())
        seen = b""
        while b"\r\n\r\n" not in seen:
            chunk = conn.recv(4096)
            assert chunk, f"{route}: closed before 100 Continue"
            seen += chunk
        interim, _, after = seen.partition(b"\r\n\r\n")
        assert interim.startswith(b"HTTP/1.1 100"), interim
        conn.sendall(rest)
        if abort:
            conn.shutdown(socket.SHUT_WR)
        answer = after
        while chunk := _recv(conn):
            answer += chunk
    return answer


def _recv(conn: socket.socket) -> bytes:
    try:
        return conn.recv(65536)
    except ConnectionResetError:
        return b""


def _counts(url: str, token: str) -> dict[tuple[str, str], float]:
    """(route, status) -> requests answered, from the gateway's /metrics."""
    request = urllib.request.Request(url + "/metrics",
                                     headers={"Authorization": f"Bearer {token}"})
    counts: dict[tuple[str, str], float] = {}
    for line in urllib.request.urlopen(request, timeout=30).read().decode().splitlines():
        if line.startswith("qsrv_gateway_requests_total{"):
            labels, _, value = line.partition("} ")
            fields = dict(part.split("=", 1) for part in labels.split("{", 1)[1].split(","))
            key = (fields["route"].strip('"'), fields["status"].strip('"'))
            counts[key] = counts.get(key, 0) + float(value)
    return counts


def _statuses(url: str, token: str, path: str) -> set[str]:
    return {status for (route, status), n in _counts(url, token).items() if route == path and n}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_body_not_received_whole_is_a_400_on_every_door(
        case: str, make_gateway: Callable[..., ThreadedGateway], alice_token: str,
        caplog: pytest.LogCaptureFixture) -> None:
    gateway = make_gateway()
    headers, rest, abort = CASES[case]
    caplog.set_level(logging.INFO, logger="qsrv")
    for door, route, auth, content_type in ROUTES:
        path = route.split(" ", 1)[1].replace("/b1/", "/{batch_id}/")
        answer = _exchange(gateway.url, route, auth, alice_token, content_type, headers, rest,
                           abort)
        if answer or not abort:  # the client was still there to be told
            assert answer.startswith(b"HTTP/1.1 400"), (door, route, answer[:300])
        if door == "pasqal" and answer:
            assert b'"status": "fail"' in answer and b'"code": 400' in answer, answer
        # The handler's answer is counted once the gateway has seen the connection end.
        statuses = wait_for(partial(_statuses, gateway.url, alice_token, path),
                            timeout=30, what=f"{route} answered ({case})")
        assert statuses == {"400"}, (door, route, statuses)
    errors = [r for r in caplog.records
              if r.name.startswith("qsrv") and r.levelno >= logging.ERROR]
    assert errors == []


def test_query_integers_beyond_the_stores_are_400s(
        make_gateway: Callable[..., ThreadedGateway], alice_token: str,
        caplog: pytest.LogCaptureFixture) -> None:
    """Offsets, limits and bounds past SQLite's 64-bit integers are refused with the reason
    (they were 500s: OverflowError from the store)."""
    import requests

    gateway = make_gateway()
    big = str(2**70)
    headers = {"Authorization": f"Bearer {alice_token}"}
    for path in (f"/v1/jobs?offset={big}", f"/v1/quantum-jobs?offset=-{big}",
                 f"/v1/batches?limit={big}", f"/api/v1/jobs/?offset={big}",
                 f"/pasqal/core/api/v2/jobs?offset={big}",
                 f"/pasqal/core/api/v2/jobs?min_runs={big}",
                 f"/pasqal/core/api/v1/batches?offset={big}"):
        answer = requests.get(gateway.url + path, headers=headers, timeout=30)
        assert answer.status_code == 400, (path, answer.text)
        assert "must be an integer from" in answer.text, (path, answer.text)
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_shot_filters_and_pages_beyond_the_stores_are_400s(
        make_gateway: Callable[..., ThreadedGateway], alice_token: str,
        caplog: pytest.LogCaptureFixture) -> None:
    """Shot bounds in the native door's job filters (query and cancel body) and Scaleway's
    pages past 64-bit offsets are refused with the reason (they were 500s)."""
    import requests

    gateway = make_gateway()
    big = 2**70
    bearer = {"Authorization": f"Bearer {alice_token}"}
    answers = [
        requests.get(f"{gateway.url}/v1/quantum-jobs?min_shots={big}", headers=bearer,
                     timeout=30),
        requests.post(f"{gateway.url}/v1/quantum-jobs/cancel", headers=bearer, timeout=30,
                      json={"filters": {"max_shots": big}}),
        requests.get(f"{gateway.url}/scaleway/qaas/v1alpha1/sessions?page={big}",
                     headers={"X-Auth-Token": alice_token}, timeout=30),
        requests.get(f"{gateway.url}/scaleway/qaas/v1alpha1/sessions?page={2**62}",
                     headers={"X-Auth-Token": alice_token}, timeout=30),
    ]
    reasons = ["min_shots must be an integer from", "max_shots must be an integer from",
               "page must be an integer from", "is past any listing"]
    for answer, reason in zip(answers, reasons, strict=True):
        assert answer.status_code == 400, (answer.url, answer.status_code, answer.text)
        assert reason in answer.text, (answer.url, answer.text)
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
