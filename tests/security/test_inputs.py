"""Hostile input: archives built to exhaust the gateway, malformed bodies on every route, and
oversize uploads announced with ``Expect: 100-continue``."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import socket
import struct
import tarfile
import threading
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

import qsrv.gateway._archive as archive_module
import qsrv.gateway._service as service_module
from qsrv.gateway import (
    ArchiveError,
    ArchiveLimits,
    Client,
    PayloadTooLargeError,
    add_user,
)
from qsrv.gateway._archive import MAX_EXTENSION_BYTES, inspect_archive
from tests._support import wait_for
from tests._support.gateway import ThreadedGateway
from tests.security.conftest import (
    file_member,
    headed_zeros_bomb,
    long_name_bomb,
    request,
    tar_of,
    upload_form,
    zeros_bomb,
)


def call(method: str, url: str, token: str | None = None, **kwargs: Any) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    headers.update(kwargs.pop("headers", {}))
    return asyncio.run(request(method, url, headers, **kwargs))


# -- archives ----------------------------------------------------------------------------------


def test_a_long_name_header_is_refused_before_it_is_read() -> None:
    """A GNU long-name header declaring 2 GiB: tarfile alone would read all of it into
    memory; it is refused from its declared size, having allocated next to nothing."""
    bomb = long_name_bomb()
    tracemalloc.start()
    try:
        with pytest.raises(ArchiveError, match="extension header"):
            inspect_archive(bomb, ArchiveLimits())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, peak
    # pax headers and long link names are judged the same way
    for kind in (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.GNUTYPE_LONGLINK):
        info = tarfile.TarInfo("x")
        info.type, info.size = kind, MAX_EXTENSION_BYTES + 1
        with pytest.raises(ArchiveError, match="extension header"):
            inspect_archive(info.tobuf(format=tarfile.GNU_FORMAT) + bytes(1024),
                            ArchiveLimits())


def test_chains_of_extension_headers_and_long_names_are_refused() -> None:
    header = tarfile.TarInfo("././@LongLink")
    header.type, header.size = tarfile.GNUTYPE_LONGNAME, 512
    name = b"a" * 511 + b"\0"
    chain = (header.tobuf(format=tarfile.GNU_FORMAT) + name) * 50
    with pytest.raises(ArchiveError, match="extension headers"):
        inspect_archive(chain + bytes(1024), ArchiveLimits())
    long_name = "d/" * 3000 + "main.py"
    with pytest.raises(ArchiveError, match="name over"):
        inspect_archive(tar_of(file_member(long_name, b"x"), mode="w:gz"), ArchiveLimits())
    sparse = tarfile.TarInfo("s")
    sparse.type = tarfile.GNUTYPE_SPARSE
    with pytest.raises(ArchiveError, match="sparse"):
        inspect_archive(sparse.tobuf(format=tarfile.GNU_FORMAT) + bytes(1024),
                        ArchiveLimits())


def test_a_decompression_bomb_stops_at_its_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    produced: list[int] = []
    original = archive_module._Decompressed._count

    def count(self: Any, chunk: bytes) -> bytes:
        produced.append(len(chunk))
        return original(self, chunk)

    monkeypatch.setattr(archive_module._Decompressed, "_count", count)
    # 250 MiB of zeros: the tar ends at its first two zero blocks; nothing more is inflated
    assert inspect_archive(zeros_bomb(), ArchiveLimits()) == {}
    assert sum(produced) < 4 << 20
    # a member whose content must all be inflated to reach the end: the stream is capped
    produced.clear()
    limits = ArchiveLimits(max_unpacked_bytes=1 << 20, max_members=10)
    with pytest.raises(PayloadTooLargeError):
        inspect_archive(headed_zeros_bomb(8 << 20), limits)
    assert sum(produced) < 4 << 20


def test_every_compression_round_trips() -> None:
    for mode in ("w", "w:gz", "w:bz2", "w:xz"):
        data = tar_of(file_member("main.py", b"print(1)\n"), file_member("d/x.txt", b"x"),
                      mode=mode)
        assert inspect_archive(data, ArchiveLimits()) == {"main.py": True, "d/x.txt": True}


def test_archive_checks_run_off_the_event_loop_a_bounded_number_at_once(
        make_gateway: Callable[..., ThreadedGateway], data_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """While uploads are stuck inside their archive check, other requests are answered; and
    no more checks run at once than the gateway's pool allows."""
    release = threading.Event()
    inside: list[int] = []
    most = [0]
    lock = threading.Lock()
    original = service_module.inspect_archive

    def stuck(data: bytes, limits: ArchiveLimits) -> dict[str, bool]:
        with lock:
            inside.append(1)
            most[0] = max(most[0], len(inside))
        release.wait(60)
        with lock:
            inside.pop()
        return original(data, limits)

    monkeypatch.setattr(service_module, "inspect_archive", stuck)
    token = add_user(data_dir, "alice")[1]
    gateway = make_gateway(archive_workers=2)
    archive = tar_of(file_member("main.py", b"print(1)\n"))
    results: list[int] = []

    def upload(title: str) -> None:
        results.append(call("POST", f"{gateway.url}/v1/programs", token,
                            data=upload_form(archive, title))[0])

    uploads = [threading.Thread(target=upload, args=(f"p{i}",)) for i in range(3)]
    for thread in uploads:
        thread.start()
    try:
        wait_for(lambda: len(inside) == 2, what="two uploads inside their archive check")
        assert call("GET", f"{gateway.url}/v1/me", token) == (200, {"name": "alice"})
        assert len(inside) == 2  # the third waits for a slot
    finally:
        release.set()
        for thread in uploads:
            thread.join(60)
    assert results == [201, 201, 201] and most[0] == 2


def test_hostile_archives_over_http_are_400s(make_gateway: Callable[..., ThreadedGateway],
                                             data_dir: Path) -> None:
    token = add_user(data_dir, "alice")[1]
    gateway = make_gateway()
    for bomb in (long_name_bomb(), zeros_bomb(16 << 20)):
        status, body = call("POST", f"{gateway.url}/v1/programs", token,
                            data=upload_form(bomb))
        assert status == 400, body
    assert Client(gateway.url, token).programs() == []


def _zip(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def _hostile_zips() -> dict[str, bytes]:
    """Zips an attacker would send: a bomb (256 MiB of zeros, about 250 kB sent), a
    central directory claiming millions of members, a 64 kB member name, an empty one."""
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf, \
            zf.open("main.py", "w", force_zip64=True) as member:
        chunk = bytes(1 << 20)
        for _ in range(256):
            member.write(chunk)
    plain = _zip({"main.py": b"print(1)\n"})
    end = plain.rindex(b"PK\x05\x06")  # the end record: claim 65535 members, 4 GiB of them
    many = plain[:end + 8] + struct.pack("<HHII", 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0) \
        + plain[end + 20:]
    return {"plain": plain, "bomb": bomb.getvalue(), "many members": many,
            "long name": _zip({"a" * 65_000: b"x"}, zipfile.ZIP_STORED),
            "empty": _zip({})}


def test_zip_archives_are_refused_before_any_of_them_is_read() -> None:
    """The gateway takes tar only: every zip, hostile or not, is an ArchiveError saying so,
    found from its first bytes (nothing of its directory, names or sizes is parsed)."""
    for what, data in _hostile_zips().items():
        tracemalloc.start()
        try:
            with pytest.raises(ArchiveError, match="zip archives are not accepted"):
                inspect_archive(data, ArchiveLimits())
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 1 << 20, (what, peak)  # next to nothing, whatever the zip declares


def test_zip_uploads_are_400s_on_both_upload_routes(
        make_gateway: Callable[..., ThreadedGateway], data_dir: Path) -> None:
    token = add_user(data_dir, "alice")[1]
    gateway = make_gateway()
    zips = _hostile_zips()
    for what in ("plain", "bomb"):
        status, body = call("POST", f"{gateway.url}/v1/programs", token,
                            data=upload_form(zips[what]))
        assert status == 400 and "zip archives are not accepted" in json.dumps(body), body
        form = aiohttp.FormData()
        form.add_field("title", "p")
        form.add_field("entrypoint", "main.py")
        form.add_field("artifact", zips[what], filename="p.zip",
                       content_type="application/zip")
        status, body = call("POST", f"{gateway.url}/api/v1/programs/upload/", token, data=form)
        assert status == 400 and "zip archives are not accepted" in json.dumps(body), body
    assert Client(gateway.url, token).programs() == []


# -- malformed bodies on every route -----------------------------------------------------------


def _garbage_bodies() -> list[tuple[str, dict[str, Any]]]:
    deep = "[" * 100_000 + "]" * 100_000
    header = "X-Junk: " + "a" * 100_000
    huge_part = (f"--b\r\n{header}\r\nContent-Disposition: form-data; name=\"metadata\"\r\n\r\n"
                 "{}\r\n--b--\r\n").encode()
    return [
        ("garbage multipart", {"data": b"\x00\xff--nonsense\r\n\r\n--",
                               "headers": {"Content-Type": "multipart/form-data; boundary=b"}}),
        ("no boundary", {"data": b"--x\r\n", "headers": {"Content-Type": "multipart/form-data"}}),
        ("100 kB part header", {"data": huge_part,
                                "headers": {"Content-Type": "multipart/form-data; boundary=b"}}),
        ("deep JSON", {"data": deep.encode(), "headers": {"Content-Type": "application/json"}}),
        ("deep JSON in a form", {"data": b"username=" + deep.encode(),
                                 "headers": {"Content-Type":
                                             "application/x-www-form-urlencoded"}}),
        ("bad UTF-8 JSON", {"data": b'{"a": "\xff\xfe"}',
                            "headers": {"Content-Type": "application/json"}}),
        ("bad charset", {"data": b'{"a": 1}',
                         "headers": {"Content-Type": "application/json; charset=nonsense"}}),
        ("truncated form", {"data": b"username=%zz&&=",
                            "headers": {"Content-Type": "application/x-www-form-urlencoded"}}),
    ]


def test_every_route_answers_malformed_bodies_with_a_4xx(
        make_gateway: Callable[..., ThreadedGateway], data_dir: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """Driven by the OpenAPI description: every route, every method, every kind of garbage.
    A route that reads a body answers 4xx; none answers 5xx (a GET ignores its body); none
    logs an error for the client's mistake."""
    token = add_user(data_dir, "alice")[1]
    gateway = make_gateway()
    status, spec = call("GET", f"{gateway.url}/openapi.json")
    assert status == 200
    caplog.set_level(logging.WARNING)
    failures = []
    for path, methods in spec["paths"].items():
        concrete = path.replace("{job_id}", "0" * 32).replace("{title}", "p")
        url = f"{gateway.url}{concrete}?function=p"
        for method in methods:
            for name, kwargs in _garbage_bodies():
                status, body = call(method.upper(), url, token, **dict(kwargs))
                reads_body = method != "get"
                if status == 503 and not reads_body:
                    continue  # no cluster behind this gateway: quantum reads are unavailable
                if status >= 500 or (reads_body and not 400 <= status < 500):
                    failures.append((method, path, name, status, str(body)[:200]))
    assert not failures, failures
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR
              and r.name.startswith(("qsrv", "aiohttp"))]
    assert not errors, [r.getMessage() for r in errors]


def test_routes_outside_the_openapi_description_answer_malformed_bodies_with_a_4xx(
        make_gateway: Callable[..., ThreadedGateway], data_dir: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """The routes the description leaves out (the dashboard's) are taken from the gateway's
    router itself: every one that reads a body answers garbage with a 4xx, logging no error."""
    add_user(data_dir, "alice")
    gateway = make_gateway()
    status, spec = call("GET", f"{gateway.url}/openapi.json")
    described = {(m.upper(), p) for p, ms in spec["paths"].items() for m in ms}
    app = gateway.server._runner.app  # the routes as served
    others = sorted({(r.method, r.resource.canonical) for r in app.router.routes()
                     if r.resource is not None and r.method not in ("GET", "HEAD", "OPTIONS")
                     and (r.method, r.resource.canonical) not in described})
    assert others, "every route is described: this test has nothing left to check"
    caplog.set_level(logging.WARNING)
    failures = []
    for method, path in others:
        url = gateway.url + path.replace("{job_id}", "0" * 32).replace("{name}", "x")
        for name, kwargs in _garbage_bodies():
            status, body = call(method, url, **dict(kwargs))
            if not 400 <= status < 500:
                failures.append((method, path, name, status, str(body)[:200]))
    assert not failures, failures
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR
              and r.name.startswith(("qsrv", "aiohttp"))]
    assert not errors, [r.getMessage() for r in errors]


def _exchange(url: str, path: str, token: str, length: int) -> bytes:
    """Send only the headers of an upload announcing ``length`` bytes; the first answer."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall((f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                      f"Content-Type: multipart/form-data; boundary=b\r\n"
                      f"Content-Length: {length}\r\nExpect: 100-continue\r\n\r\n").encode())
        return sock.recv(4096)


@pytest.mark.parametrize("path", ["/v1/programs", "/api/v1/programs/upload",
                                  "/api/v1/files/upload?function=p", "/v1/jobs",
                                  "/dj-rest-auth/keycloak/login"])
def test_an_oversize_upload_is_refused_before_100_continue(
        make_gateway: Callable[..., ThreadedGateway], data_dir: Path, path: str) -> None:
    token = add_user(data_dir, "alice")[1]
    gateway = make_gateway()
    if "function=p" in path:
        Client(gateway.url, token).upload(_program(data_dir))
    answer = _exchange(gateway.url, path, token, 100 << 30)  # 100 GB
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"100 Continue" not in answer
    # a reasonable size goes on
    assert _exchange(gateway.url, path, token, 1000).startswith(b"HTTP/1.1 100 Continue")


def _program(root: Path) -> Any:
    from qsrv.gateway import Program

    folder = root.parent / "prog"
    folder.mkdir(exist_ok=True)
    (folder / "main.py").write_text("print(1)\n")
    return Program("p", "main.py", folder)


def test_the_upstream_login_throttles_and_says_when_to_retry(
        make_gateway: Callable[..., ThreadedGateway], data_dir: Path) -> None:
    from qsrv.gateway import set_password

    add_user(data_dir, "alice")
    set_password(data_dir, "alice", "correct horse battery")
    gateway = make_gateway(login_failures_per_user=2)
    url = f"{gateway.url}/dj-rest-auth/keycloak/login"

    def login(password: str) -> tuple[int, Any]:
        return call("POST", url, data={"username": "alice", "password": password})

    assert login("wrong one")[0] == 401
    assert login("wrong two")[0] == 401
    assert login("wrong three")[0] == 401  # the third failure: backed off from now
    async def throttled() -> tuple[int, str]:
        async with aiohttp.ClientSession() as session, session.post(
                url, data={"username": "alice", "password": "correct horse battery"}) as resp:
            return resp.status, resp.headers.get("Retry-After", "")

    status, retry = asyncio.run(throttled())
    assert status == 429 and int(retry) >= 1  # even the right password waits
    assert json.loads(json.dumps({"ok": 1}))  # (the body format is the door's own)
