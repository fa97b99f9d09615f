"""Who sees what, over HTTP: nothing without a login, a user only their own view and only while
their token is valid, the cluster pages only with the cluster token, a printed token once,
bounded streams, cookie flags."""

from __future__ import annotations

import http.cookiejar
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qsrv.dashboard import DashboardServer
from qsrv.gateway import GatewayConfig, add_user, revoke_tokens
from tests._support.cluster import TOKEN, Cluster
from tests._support.gateway import ThreadedGateway


class Browser:
    """A cookie-keeping HTTP client."""

    def __init__(self) -> None:
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def get(self, url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        try:
            with self.opener.open(urllib.request.Request(url, headers=headers or {}),
                                  timeout=30) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def login(self, base: str, token: str) -> int:
        data = urllib.parse.urlencode({"token": token}).encode()
        try:
            with self.opener.open(base + "login", data=data, timeout=30) as r:
                return int(r.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    def state(self, base: str) -> tuple[int, Any]:
        code, body = self.get(base + "api/state")
        return code, json.loads(body) if code == 200 else body


@pytest.fixture
def gateway(cluster: Cluster, tmp_path: Path) -> Iterator[tuple[ThreadedGateway, Path]]:
    data = tmp_path / "data"
    gw = ThreadedGateway(GatewayConfig(data_dir=data, port=0, cluster_address=cluster.address,
                                       cluster_token=TOKEN, stop_grace_s=2.0))
    yield gw, data
    gw.stop()


def test_nothing_without_a_login(gateway: tuple[ThreadedGateway, Path]) -> None:
    gw, _ = gateway
    base = gw.url + "/dashboard/"
    anonymous = Browser()
    for path in ("api/state", "api/stream", "api/jobs/x/logs", "metrics"):
        assert anonymous.get(base + path)[0] == 401, path
    code, page = anonymous.get(base)
    assert code == 200 and b'name="token"' in page  # the login form, nothing else
    assert Browser().login(base, "not-a-token") == 401
    assert anonymous.get(gw.url + "/metrics")[0] == 401
    assert anonymous.get(gw.url + "/metrics", {"Authorization": "Bearer nope"})[0] == 401
    assert anonymous.get(gw.url + "/metrics", {"Authorization": f"Bearer {TOKEN}"})[0] == 200


def test_a_user_sees_only_their_view_while_their_token_holds(
        gateway: tuple[ThreadedGateway, Path]) -> None:
    gw, data = gateway
    base = gw.url + "/dashboard/"
    alice_token = add_user(data, "alice")[1]
    alice = Browser()
    assert alice.login(base, alice_token) == 200
    cookie = next(c for c in alice.jar if c.name == "qsrv_dashboard")
    assert cookie.path == "/dashboard"
    assert cookie.has_nonstandard_attr("HttpOnly")
    code, view = alice.state(base)
    assert code == 200 and view["viewer"] == {"name": "alice", "cluster": False, "user": True}
    assert "cluster" not in view and view["gateway"]["jobs"] == []
    assert view["gateway"]["by_status"] == [] and "by_user" not in view
    # a user's token cannot read the cluster's metrics either
    assert alice.get(gw.url + "/metrics", {"Authorization": f"Bearer {alice_token}"})[0] == 401
    revoke_tokens(data, "alice")
    assert alice.state(base)[0] == 401  # the session ends with the token

    admin = Browser()
    assert admin.login(base, TOKEN) == 200
    code, view = admin.state(base)
    assert code == 200 and view["viewer"]["cluster"] is True
    assert "gateway" not in view and len(view["cluster"]["status"]["workers"]) == 2
    assert view["by_user"] == []  # counts by user only (no jobs yet), never a user's jobs


def test_a_printed_token_logs_in_once_and_streams_are_bounded(cluster: Cluster) -> None:
    server = DashboardServer(cluster.address, TOKEN, port=0)
    url = server.start_in_thread()
    try:
        first = Browser()
        assert first.get(url)[0] == 200
        assert first.state(server.url)[0] == 200
        assert Browser().get(url)[0] == 401  # spent
        streams = []
        try:
            for _ in range(8):
                streams.append(first.opener.open(server.url + "api/stream", timeout=30))
                assert streams[-1].readline().startswith(b"event: update")
            assert first.get(server.url + "api/stream")[0] == 429
        finally:
            for stream in streams:
                stream.close()
        code, page = first.get(server.url + "logout")  # back to the login form
        assert code == 200 and b'name="token"' in page
        assert first.state(server.url)[0] == 401
    finally:
        server.stop_thread()


def test_off_loopback_only_over_tls_with_secure_cookies(cluster: Cluster,
                                                        tmp_path: Path) -> None:
    import ssl
    import subprocess

    from qsrv.errors import ConfigError

    with pytest.raises(ConfigError, match="without TLS"):
        DashboardServer(cluster.address, TOKEN, host="0.0.0.0", port=0)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    "key.pem", "-out", "cert.pem", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   cwd=tmp_path, check=True, capture_output=True)
    server = DashboardServer(cluster.address, TOKEN, host="0.0.0.0", port=0,
                             certfile=str(tmp_path / "cert.pem"),
                             keyfile=str(tmp_path / "key.pem"))
    url = server.start_in_thread()
    try:
        assert url.startswith("https://")
        port = server.url.rsplit(":", 1)[1].rstrip("/")
        context = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context),
                                             urllib.request.HTTPCookieProcessor(jar))
        base = f"https://127.0.0.1:{port}/"
        with opener.open(base + "?token=" + server.login_token, timeout=30) as r:
            assert r.status == 200
        cookie = next(c for c in jar if c.name == "qsrv_dashboard")
        assert cookie.secure and cookie.has_nonstandard_attr("HttpOnly")
        with opener.open(base + "api/state", timeout=30) as r:
            assert json.loads(r.read())["viewer"]["cluster"] is True
        with pytest.raises(OSError):  # no plain HTTP on that port
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/state", timeout=30).read()
    finally:
        server.stop_thread()
