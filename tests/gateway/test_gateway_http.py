"""The HTTP surface: authentication, isolation between users, limits, errors, OpenAPI."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import tarfile
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from qsrv.gateway import (
    ArchiveError,
    ArchiveLimits,
    Client,
    InvalidRequestError,
    Job,
    JobStatus,
    NotFoundError,
    PayloadTooLargeError,
    Program,
    UnauthorizedError,
)
from qsrv.gateway._errors import error_for
from qsrv.gateway._http import PAGES
from qsrv.gateway._runtime import dumps
from tests._support import GATE_CLIENT, Gate
from tests._support.gateway import ThreadedGateway


async def _raw(method: str, url: str, token: str | None = None, **kwargs: Any,
               ) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    headers.update(kwargs.pop("headers", {}))
    async with aiohttp.ClientSession() as session, \
            session.request(method, url, headers=headers, **kwargs) as resp:
        return resp.status, await resp.read()


def raw(method: str, url: str, token: str | None = None, **kwargs: Any) -> tuple[int, Any]:
    """One HTTP request; the body parsed as JSON when it is JSON."""
    status, body = asyncio.run(_raw(method, url, token, **kwargs))
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body


def test_every_route_needs_a_valid_token(gateway: ThreadedGateway, alice_token: str) -> None:
    for path in ("/v1/me", "/v1/programs", "/v1/jobs", "/v1/jobs/abc", "/v1/jobs/abc/logs"):
        status, body = raw("GET", gateway.url + path)
        assert status == 401 and body["error"] == "unauthorized", path
        status, body = raw("GET", gateway.url + path, token="qsrv_wrong")
        assert status == 401 and body["message"] == "unknown token", path
    status, body = raw("GET", gateway.url + "/v1/me", headers={"Authorization": alice_token})
    assert status == 401  # the scheme is required
    assert raw("GET", gateway.url + "/v1/me", alice_token) == (200, {"name": "alice"})
    assert raw("GET", gateway.url + "/health") == (200, {"status": "ok"})
    with pytest.raises(UnauthorizedError):
        Client(gateway.url, "qsrv_wrong").jobs()


def test_users_cannot_see_or_control_each_others_jobs(
        alice: Client, bob: Client, make_program: Callable[..., Program], gate: Gate) -> None:
    job = alice.run(make_program("private", GATE_CLIENT + f"gate({gate.port})\n"))
    conn = gate.accept()
    for attempt in (lambda: bob.job(job.job_id), lambda: bob.job(job.job_id).stop()):
        with pytest.raises(NotFoundError):
            attempt()
    stolen = Job(bob, {"job_id": job.job_id, "status": "RUNNING"})  # bob knows alice's id
    for call in (stolen.status, stolen.logs, stolen.stop, stolen.events,
                 lambda: stolen.result(timeout=1)):
        with pytest.raises(NotFoundError):
            call()
    with pytest.raises(NotFoundError):
        bob.run("private")  # programs are per user too
    assert bob.jobs().total == 0 and bob.programs() == []
    assert job.status() is JobStatus.RUNNING  # bob's stop did nothing
    conn.sendall(b"g")
    assert job.wait(timeout=30) is JobStatus.SUCCEEDED


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def _upload_form(archive: bytes, entrypoint: str = "main.py") -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("metadata", json.dumps({"title": "evil", "entrypoint": entrypoint}),
                   content_type="application/json")
    form.add_field("archive", archive, filename="a.tar.gz", content_type="application/gzip")
    return form


def test_malicious_archives_are_rejected(gateway: ThreadedGateway, alice_token: str) -> None:
    main = tarfile.TarInfo("main.py")
    main.size = 1
    escape = tarfile.TarInfo("../../escape.py")
    escape.size = 1
    link = tarfile.TarInfo("link")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    device = tarfile.TarInfo("dev")
    device.type = tarfile.CHRTYPE
    absolute = tarfile.TarInfo("/tmp/abs.py")
    absolute.size = 1
    for bad in (escape, link, device, absolute):
        archive = _tar([(main, b"x"), (bad, b"x" if bad.size else None)])
        status, body = raw("POST", gateway.url + "/v1/programs", alice_token,
                           data=_upload_form(archive))
        assert status == 400 and body["error"] == "invalid_archive", bad.name
    status, body = raw("POST", gateway.url + "/v1/programs", alice_token,
                       data=_upload_form(_tar([(main, b"x")]), entrypoint="other.py"))
    assert status == 400 and body["error"] == "invalid_request"
    assert raw("GET", gateway.url + "/v1/programs", alice_token) == (200, {"programs": []})


def test_server_errors_reach_the_client_as_the_same_classes(
        alice: Client, make_program: Callable[..., Program]) -> None:
    program = make_program("p", "print(1)")
    with pytest.raises(InvalidRequestError, match="entrypoint"):
        alice.upload(Program("p", "missing.py", program.working_dir))
    with pytest.raises(InvalidRequestError, match="title"):
        alice.upload(Program("a/b", "main.py", program.working_dir))
    with pytest.raises(InvalidRequestError, match="environment variable"):
        alice.upload(Program("p", "main.py", program.working_dir, env_vars={"A=B": "1"}))
    err = error_for("invalid_archive", "bad", 400)
    assert isinstance(err, ArchiveError) and isinstance(err, ValueError) and err.status == 400


def test_oversize_uploads_are_rejected(make_gateway: Callable[..., ThreadedGateway],
                                       alice_token: str, tmp_path: Any) -> None:
    gateway = make_gateway(archive_limits=ArchiveLimits(max_archive_bytes=20_000))
    alice = Client(gateway.url, alice_token)
    big = tmp_path / "big"
    big.mkdir()
    (big / "main.py").write_text("print(1)\n")
    (big / "data.bin").write_bytes(os.urandom(200_000))  # incompressible
    with pytest.raises(PayloadTooLargeError, match="limit"):
        alice.upload(Program("big", "main.py", big))
    # Without Expect: 100-continue the body is cut off while streaming.
    archive = os.urandom(30_000)
    status, body = raw("POST", gateway.url + "/v1/programs", alice_token,
                       data=_upload_form(archive))
    assert status == 413 and body["error"] == "too_large"
    (big / "data.bin").unlink()
    assert alice.upload(Program("big", "main.py", big)).version == 1


def test_oversize_arguments_are_rejected(make_gateway: Callable[..., ThreadedGateway],
                                         alice_token: str,
                                         make_program: Callable[..., Program]) -> None:
    gateway = make_gateway(max_arguments_bytes=1000)
    alice = Client(gateway.url, alice_token)
    alice.upload(make_program("args", "print(1)"))
    with pytest.raises(PayloadTooLargeError):
        alice.run("args", {"blob": "x" * 5000})
    assert alice.jobs().total == 0


def test_bad_requests(gateway: ThreadedGateway, alice_token: str, alice: Client,
                      make_program: Callable[..., Program]) -> None:
    url = gateway.url
    alice.upload(make_program("p", "from qsrv.gateway import get_arguments, save_result\n"
                                   "save_result(get_arguments())"))
    assert raw("POST", url + "/v1/jobs", alice_token, data=b"{not json")[0] == 400
    assert raw("POST", url + "/v1/jobs", alice_token, json=[1])[0] == 400
    assert raw("POST", url + "/v1/jobs", alice_token, json={"program": 3})[0] == 400
    status, body = raw("POST", url + "/v1/jobs", alice_token,
                       json={"program": "p", "arguments": "%%%"})
    assert status == 400 and "base64" in body["message"]
    assert raw("GET", url + "/v1/jobs?limit=0", alice_token)[0] == 400
    assert raw("GET", url + "/v1/jobs?limit=x", alice_token)[0] == 400
    assert raw("GET", url + "/v1/jobs?status=DONE", alice_token)[0] == 400
    assert raw("GET", url + "/v1/jobs?created_after=yesterday", alice_token)[0] == 400
    assert raw("GET", url + "/v1/nowhere", alice_token)[0] == 404
    assert raw("POST", url + "/v1/programs", alice_token, json={})[0] == 400
    form = aiohttp.FormData()
    form.add_field("metadata", "x" * 200_000, content_type="application/json")
    assert raw("POST", url + "/v1/programs", alice_token, data=form)[0] == 413
    form = aiohttp.FormData()
    form.add_field("metadata", "{}", content_type="application/json")
    form.add_field("metadata", "{}", content_type="application/json")
    status, body = raw("POST", url + "/v1/programs", alice_token, data=form)
    assert status == 400 and "repeated" in body["message"]
    # JSON arguments (for curl and other front doors) reach get_arguments as a dict.
    status, job = raw("POST", url + "/v1/jobs", alice_token,
                      json={"program": "p", "arguments_json": {"k": [1, "two"]}})
    assert status == 201 and job["status"] in ("QUEUED", "RUNNING")
    assert alice.job(job["job_id"]).result(timeout=30) == {"k": [1, "two"]}
    # base64 pickled arguments, as qsrv's client sends them.
    encoded = base64.b64encode(dumps({"n": 5})).decode()
    status, job = raw("POST", url + "/v1/jobs", alice_token,
                      json={"program": "p", "arguments": encoded})
    assert alice.job(job["job_id"]).result(timeout=30) == {"n": 5}
    # The result of a job that is not SUCCEEDED is a conflict.
    status, waited = raw("GET", url + f"/v1/jobs/{job['job_id']}/wait?timeout=5", alice_token)
    assert waited["status"] == "SUCCEEDED"
    status, body = raw("GET", url + f"/v1/jobs/{job['job_id']}/result", alice_token)
    assert status == 200 and isinstance(body, bytes)


def test_result_of_an_unfinished_job_is_a_conflict(
        alice: Client, alice_token: str, gateway: ThreadedGateway,
        make_program: Callable[..., Program], gate: Gate) -> None:
    job = alice.run(make_program("slow", GATE_CLIENT + f"gate({gate.port})\n"))
    conn = gate.accept()
    status, body = raw("GET", gateway.url + f"/v1/jobs/{job.job_id}/result", alice_token)
    assert status == 409 and body["error"] == "conflict"
    status, body = raw("GET", gateway.url + f"/v1/jobs/{job.job_id}/wait?timeout=0.05",
                       alice_token)
    assert status == 200 and body["status"] == "RUNNING"
    conn.sendall(b"g")
    assert job.wait(timeout=30) is JobStatus.SUCCEEDED


def test_openapi_describes_every_route(gateway: ThreadedGateway) -> None:
    status, spec = raw("GET", gateway.url + "/openapi.json")
    assert status == 200 and spec["openapi"].startswith("3.")
    app = gateway.server._runner.app  # type: ignore[union-attr]
    pages = tuple(prefix + "/" for prefix, _ in PAGES)  # browser pages, not an API
    routes = {(r.resource.canonical, r.method.lower()) for r in app.router.routes()
              if r.method != "HEAD" and r.resource is not None
              and not r.resource.canonical.startswith(pages)}
    described = {(path, method) for path, item in spec["paths"].items() for method in item}
    assert routes == described
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            assert operation["responses"], (path, method)
            for name in (p["name"] for p in operation.get("parameters", [])
                         if p["in"] == "path"):
                assert "{" + name + "}" in path
    refs = json.dumps(spec)
    for name in spec["components"]["schemas"]:
        assert f"#/components/schemas/{name}" in refs


def test_upload_with_a_bad_token_is_refused_before_the_body(
        gateway: ThreadedGateway, make_program: Callable[..., Program]) -> None:
    with pytest.raises(UnauthorizedError):
        Client(gateway.url, "qsrv_wrong").upload(make_program("p", "print(1)"))


def test_client_configuration(gateway: ThreadedGateway, alice_token: str,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    from qsrv.errors import ConfigError
    from qsrv.gateway import GatewayUnavailableError

    with pytest.raises(ConfigError, match="QSRV_GATEWAY"):
        Client()
    monkeypatch.setenv("QSRV_GATEWAY", gateway.url.removeprefix("http://"))
    with pytest.raises(ConfigError, match="QSRV_GATEWAY_TOKEN"):
        Client()
    monkeypatch.setenv("QSRV_GATEWAY_TOKEN", alice_token)
    assert Client().jobs().total == 0
    closed = socket_port_without_listener()
    with pytest.raises(GatewayUnavailableError, match="cannot reach"):
        Client(f"http://127.0.0.1:{closed}", alice_token).jobs()


def socket_port_without_listener() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_public_names() -> None:
    import qsrv.gateway as gateway_pkg

    for name in gateway_pkg.__all__:
        if isinstance(getattr(gateway_pkg, name), str | tuple):
            continue  # the names of environment variables, the job sandboxes
        module = getattr(gateway_pkg, name).__module__
        # errors live in the one tree of qsrv.errors; everything else in private modules
        assert module.startswith("qsrv.gateway._") or module == "qsrv.errors", name
    assert set(gateway_pkg.__all__) == set(gateway_pkg._WHERE)
    assert {"Client", "Program", "Job", "get_arguments", "save_result"} <= set(
        gateway_pkg.__all__)
    with pytest.raises(AttributeError):
        gateway_pkg.not_a_name  # noqa: B018
