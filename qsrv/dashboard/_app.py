"""The dashboard's aiohttp application: login, live views (server-sent events), metrics.

Who sees what (`Viewer`):

- the holder of the **cluster token** (or of the one-time login token printed at start) sees
  the cluster pages (workers, tasks, failures, timeline);
- through the gateway, a **user** logging in with their own gateway token sees only their
  own jobs (with logs), quantum sessions and batches; the cluster pages need the cluster
  token.

A login sets a session cookie (random id, HttpOnly, SameSite=Strict, Secure over TLS); the
login token printed at start works once. ``/metrics`` takes the session cookie or
``Authorization: Bearer <cluster token>`` (what a Prometheus scrape config sends).

Live updates: ``GET api/stream`` is a server-sent event stream; each feed update becomes one
``update`` event with the viewer's view (the page never polls). ``GET api/state`` is the same
view once. Every URL is relative, so the same pages work at ``/`` and under ``/dashboard``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

from qsrv.dashboard._metrics import cluster_registry
from qsrv.dashboard._source import Feed

__all__ = ["COOKIE", "Viewer", "dashboard_app"]

log = logging.getLogger("qsrv.dashboard")

COOKIE = "qsrv_dashboard"
SESSION_TTL = 12 * 3600.0
MAX_SESSIONS = 10_000
STREAM_EVENTS = 2000  # task events in a stream's first message, at most
LOG_TAIL = 100_000  # characters of a followed job's logs in each update
_STATIC = {"index.html": "text/html", "login.html": "text/html", "app.js":
           "text/javascript", "style.css": "text/css"}


@dataclass(frozen=True)
class Viewer:
    cluster: bool  # may see the cluster pages
    user: Any = None  # a gateway User: sees their own jobs, sessions, batches
    name: str = "admin"
    token: str = field(default="", repr=False)  # a user's: checked again on every request


class _Sessions:
    def __init__(self, cluster_token: str | None, login_token: str | None,
                 service: Any) -> None:
        self.cluster_token = cluster_token
        self.login_token = login_token  # works once
        self.service = service
        self._by_id: dict[str, tuple[Viewer, float]] = {}

    def login(self, token: str) -> Viewer | None:
        if not token:
            return None
        if self.login_token and hmac.compare_digest(token, self.login_token):
            self.login_token = None
            return Viewer(cluster=True)
        if self.cluster_token and hmac.compare_digest(token, self.cluster_token):
            return Viewer(cluster=True)
        return self.bearer_user(token)

    def bearer_user(self, token: str) -> Viewer | None:
        if self.service is None:
            return None
        try:
            user = self.service.authenticate(token)
        except Exception:  # the service's UnauthorizedError: not a user
            return None
        return Viewer(cluster=False, user=user, name=str(getattr(user, "name", "user")),
                      token=token)

    def open(self, viewer: Viewer) -> str:
        now = time.monotonic()
        if len(self._by_id) >= MAX_SESSIONS:
            self._by_id = {k: v for k, v in self._by_id.items() if v[1] > now}
            while len(self._by_id) >= MAX_SESSIONS:
                self._by_id.pop(next(iter(self._by_id)))
        sid = secrets.token_urlsafe(32)
        self._by_id[sid] = (viewer, now + SESSION_TTL)
        return sid

    def get(self, sid: str | None) -> Viewer | None:
        if not sid:
            return None
        entry = self._by_id.get(sid)
        if entry is None:
            return None
        viewer = entry[0]
        if entry[1] < time.monotonic() or (
                viewer.user is not None and self.bearer_user(viewer.token) is None):
            del self._by_id[sid]  # expired, or the user's token was revoked or expired
            return None
        return viewer

    def close(self, sid: str | None) -> None:
        if sid:
            self._by_id.pop(sid, None)


_SESSIONS: web.AppKey[_Sessions] = web.AppKey("sessions", _Sessions)
_FEED: web.AppKey[Any] = web.AppKey("feed", object)
_SERVICE: web.AppKey[Any] = web.AppKey("service", object)
_REGISTRY: web.AppKey[Any] = web.AppKey("registry", object)
_PREFIX: web.AppKey[str] = web.AppKey("prefix", str)
_STREAMS: web.AppKey[dict[str, int]] = web.AppKey("streams", dict)
_COUNTS: web.AppKey[Any] = web.AppKey("counts", object)


def _static(name: str) -> bytes:
    return resources.files("qsrv.dashboard").joinpath("static", name).read_bytes()


def _viewer(request: web.Request) -> Viewer | None:
    return request.app[_SESSIONS].get(request.cookies.get(COOKIE))


def _need_viewer(request: web.Request) -> Viewer:
    viewer = _viewer(request)
    if viewer is None:
        raise web.HTTPUnauthorized(text="log in first", content_type="text/plain")
    return viewer


def _set_cookie(request: web.Request, response: web.StreamResponse, sid: str) -> None:
    path = request.app[_PREFIX] or "/"
    response.set_cookie(COOKIE, sid, httponly=True, samesite="Strict", path=path,
                        secure=request.secure, max_age=int(SESSION_TTL))


async def _index(request: web.Request) -> web.StreamResponse:
    token = request.query.get("token")
    if token is not None:  # the printed URL: log in, then drop the token from the address
        viewer = request.app[_SESSIONS].login(token)
        if viewer is None:
            return web.Response(body=_static("login.html"), content_type="text/html",
                                status=401, headers=_NO_STORE)
        response = web.HTTPFound("./")
        _set_cookie(request, response, request.app[_SESSIONS].open(viewer))
        raise response
    if _viewer(request) is None:
        return web.Response(body=_static("login.html"), content_type="text/html",
                            headers=_NO_STORE)
    return web.Response(body=_static("index.html"), content_type="text/html",
                        headers=_NO_STORE)


async def _login(request: web.Request) -> web.StreamResponse:
    try:
        form = await request.post()
    except (ValueError, UnicodeDecodeError, LookupError, HttpProcessingError):
        return web.Response(body=_static("login.html"), content_type="text/html", status=400)
    token = form.get("token")
    viewer = request.app[_SESSIONS].login(token if isinstance(token, str) else "")
    if viewer is None:
        return web.Response(body=_static("login.html"), content_type="text/html", status=401)
    response = web.HTTPFound("./")
    _set_cookie(request, response, request.app[_SESSIONS].open(viewer))
    raise response


async def _logout(request: web.Request) -> web.StreamResponse:
    request.app[_SESSIONS].close(request.cookies.get(COOKIE))
    response = web.HTTPFound("./")
    response.del_cookie(COOKIE, path=request.app[_PREFIX] or "/")
    raise response


async def _static_file(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    kind = _STATIC.get(name)
    if kind is None:
        raise web.HTTPNotFound()
    return web.Response(body=_static(name), content_type=kind,
                        headers={"Cache-Control": "no-cache"})


_NO_STORE = {"Cache-Control": "no-store"}


def _cluster_view(feed: Feed | None, update: dict[str, Any] | None, first: bool
                  ) -> dict[str, Any]:
    if feed is None:
        return {"error": "this dashboard follows no scheduler"}
    latest = update if update is not None else feed.latest
    if latest is None:
        return {"error": feed.error or "waiting for the scheduler"}
    functions = []
    for name, (sub, done, failed, seconds, longest) in latest.get("functions", {}).items():
        finished = done + failed
        functions.append({"function": name, "submitted": sub, "done": done,
                          "failed": failed, "seconds": round(seconds, 6),
                          "mean": round(seconds / finished, 6) if finished else 0.0,
                          "max": round(longest, 6)})
    functions.sort(key=lambda f: -f["mean"])
    events = list(feed.events)[-STREAM_EVENTS:] if first else latest.get("events", [])
    return {
        "error": feed.error,
        "platforms": _platforms(latest.get("status", {})),
        "now": latest.get("now"),
        "status": latest.get("status", {}),
        "workers": latest.get("workers", {}),
        "totals": latest.get("totals", {}),
        "rates": latest.get("rates", {}),
        "functions": functions[:50],
        "failures": list(feed.failures)[-20:],
        "failure_kinds": latest.get("failure_kinds", {}),
        "transfers": latest.get("transfers", {}),
        "events": events,
        "reset_events": first,
    }


def _platforms(status: dict[str, Any]) -> list[dict[str, Any]]:
    """The quantum platforms the workers offer (as the gateway's service lists them)."""
    try:
        from qsrv.quantum.engines import platforms

        return [{"name": p.name, "engine": p.engine, "method": p.method, "device": p.device,
                 "version": p.version, "max_qubits": p.max_qubits, "max_shots": p.max_shots,
                 "availability": p.availability, "workers": p.workers}
                for p in platforms(status)]
    except Exception:  # a status the engines cannot read: no platforms shown
        log.debug("platforms of the status", exc_info=True)
        return []


def _record(obj: Any) -> Any:
    """A gateway record as JSON (its own to_json, else its dataclass fields)."""
    to_json = getattr(obj, "to_json", None)
    if callable(to_json):
        return to_json()
    fields = getattr(obj, "__dataclass_fields__", None)
    if fields:
        out: dict[str, Any] = {}
        for name in fields:
            value = getattr(obj, name)
            if name in ("program", "jobs"):
                continue
            out[name] = value if isinstance(value, str | int | float | bool | type(None)) \
                else str(value)
        jobs = getattr(obj, "jobs", None)
        if isinstance(jobs, tuple):
            out["jobs"] = [{"id": j.id, "seq": j.seq, "status": str(j.status)} for j in jobs]
        return out
    return str(obj)


def _gateway_view(service: Any, viewer: Viewer, logs_of: str | None = None
                  ) -> dict[str, Any]:
    out: dict[str, Any] = {"user": viewer.name, "jobs": [], "sessions": [], "batches": []}
    if logs_of:  # the job whose logs the page shows: their tail, pushed with each update
        try:
            text = service.logs(viewer.user, logs_of).decode("utf-8", "replace")
            out["logs"] = {"job_id": logs_of, "text": text[-LOG_TAIL:]}
        except Exception as exc:  # another user's job, or none
            out["logs"] = {"job_id": logs_of, "error": str(exc)}
    try:
        jobs, total = service.jobs(viewer.user, limit=50)
        out["jobs"], out["jobs_total"] = [_record(j) for j in jobs], total
    except Exception as exc:  # shown, not fatal to the page
        out["jobs_error"] = str(exc)
    quantum = getattr(service, "quantum", None)
    if quantum is not None:
        for kind in ("sessions", "batches"):
            try:
                page = getattr(quantum, kind)(viewer.user)
                out[kind] = [_record(r) for r in getattr(page, "results", page)][:50]
            except Exception as exc:  # the service may not offer it yet
                out[f"{kind}_error"] = str(exc)
    return out


# (table, what the page calls it): the gateway's jobs, counted by status in its SQLite
_JOB_TABLES = (("jobs", "jobs"), ("q_jobs", "quantum jobs"))
COUNTS_TTL = 2.0  # seconds a count of jobs is reused (each stream asks on each update)


class _JobCounts:
    """Jobs by status, one user's or by user (the cluster token's view), from the gateway's
    SQLite (the same connection its metrics count with), kept `COUNTS_TTL` seconds."""

    def __init__(self, service: Any) -> None:
        self.service = service
        self._cache: dict[int | None, tuple[float, list[dict[str, Any]]]] = {}

    def get(self, user_id: int | None) -> list[dict[str, Any]]:
        now = time.monotonic()
        hit = self._cache.get(user_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        if len(self._cache) > 1024:
            self._cache.clear()
        rows = self._count(user_id)
        self._cache[user_id] = (now + COUNTS_TTL, rows)
        return rows

    def _count(self, user_id: int | None) -> list[dict[str, Any]]:
        try:
            conn = self.service.store.connection
        except Exception:  # a gateway not started
            return []
        out: list[dict[str, Any]] = []
        for table, kind in _JOB_TABLES:
            try:
                if user_id is None:
                    found = conn.execute(
                        f"SELECT u.name, t.status, COUNT(*) FROM {table} t JOIN users u "
                        "ON u.user_id = t.user_id GROUP BY u.name, t.status "
                        "ORDER BY u.name, t.status").fetchall()
                else:
                    found = [(None, status, n) for status, n in conn.execute(
                        f"SELECT status, COUNT(*) FROM {table} WHERE user_id = ? "
                        "GROUP BY status ORDER BY status", (user_id,)).fetchall()]
            except Exception:  # a table this gateway's schema does not have
                log.debug("counting %s", table, exc_info=True)
                continue
            out.extend({"user": name, "kind": kind, "status": str(status), "count": n}
                       for name, status, n in found)
        return out


def _view(request: web.Request, viewer: Viewer, update: dict[str, Any] | None,
          first: bool) -> dict[str, Any]:
    view: dict[str, Any] = {"viewer": {"name": viewer.name, "cluster": viewer.cluster,
                                       "user": viewer.user is not None}}
    if viewer.cluster:
        view["cluster"] = _cluster_view(request.app[_FEED], update, first)
    service = request.app[_SERVICE]
    counts: _JobCounts | None = request.app[_COUNTS]
    if service is not None and viewer.user is not None:
        view["gateway"] = _gateway_view(service, viewer, request.query.get("logs"))
        if counts is not None:
            view["gateway"]["by_status"] = counts.get(int(viewer.user.user_id))
    elif service is not None and viewer.cluster and counts is not None:
        view["by_user"] = counts.get(None)  # counts only: no user's jobs or logs
    return view


async def _state(request: web.Request) -> web.Response:
    viewer = _need_viewer(request)
    return web.json_response(_view(request, viewer, None, True), headers=_NO_STORE,
                             dumps=_dumps)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, default=str, allow_nan=False)


MAX_STREAMS = 256  # open event streams of one dashboard, at most
MAX_STREAMS_PER_SESSION = 8


async def _stream(request: web.Request) -> web.StreamResponse:
    viewer = _need_viewer(request)
    sid = request.cookies.get(COOKIE, "")
    streams: dict[str, int] = request.app[_STREAMS]
    if sum(streams.values()) >= MAX_STREAMS or streams.get(sid, 0) >= MAX_STREAMS_PER_SESSION:
        raise web.HTTPTooManyRequests(text="too many open streams", content_type="text/plain")
    streams[sid] = streams.get(sid, 0) + 1
    try:
        return await _serve_stream(request, viewer, sid)
    finally:
        streams[sid] -= 1
        if streams[sid] <= 0:
            del streams[sid]


async def _serve_stream(request: web.Request, viewer: Viewer, sid: str
                        ) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no"})
    await response.prepare(request)
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=4)
    feed: Feed | None = request.app[_FEED]

    def on_update(update: dict[str, Any]) -> None:
        if queue.full():  # a slow page skips updates; their events are lost to it only
            with contextlib.suppress(asyncio.QueueEmpty):
                queue.get_nowait()
        queue.put_nowait(update)

    stop = feed.listen(on_update) if feed is not None else (lambda: None)
    try:
        await _send(response, _view(request, viewer, None, True))
        while True:
            try:
                update: dict[str, Any] | None = await asyncio.wait_for(queue.get(), 15.0)
            except TimeoutError:
                update = None
            if request.app[_SESSIONS].get(sid) is None:
                break  # logged out, expired, or the user's token was revoked
            if update is None:
                if feed is None and viewer.user is not None:  # a gateway without a feed
                    await _send(response, _view(request, viewer, None, False))
                else:
                    await response.write(b": keep-alive\n\n")
                continue
            if "error" in update and len(update) == 1:
                await _send(response, _view(request, viewer, None, False))
            else:
                await _send(response, _view(request, viewer, update, False))
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        stop()
    return response


async def _send(response: web.StreamResponse, view: dict[str, Any]) -> None:
    await response.write(b"event: update\ndata: " + _dumps(view).encode() + b"\n\n")


async def _job_logs(request: web.Request) -> web.Response:
    viewer = _need_viewer(request)
    service = request.app[_SERVICE]
    if service is None or viewer.user is None:
        raise web.HTTPNotFound(text="no gateway jobs here")
    try:
        data = service.logs(viewer.user, request.match_info["job_id"])
    except Exception as exc:  # another user's job, or none: not found
        raise web.HTTPNotFound(text=str(exc)) from None
    return web.Response(text=data.decode("utf-8", "replace")[-200_000:],
                        content_type="text/plain", headers=_NO_STORE)


async def _metrics(request: web.Request) -> web.Response:
    viewer = _viewer(request)
    if viewer is None:
        auth = request.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else ""
        viewer = request.app[_SESSIONS].login(token) if token else None
    if viewer is None or not viewer.cluster:
        raise web.HTTPUnauthorized(text="metrics need the cluster token "
                                        "(Authorization: Bearer TOKEN)")
    registry: CollectorRegistry = request.app[_REGISTRY]
    return web.Response(body=generate_latest(registry),
                        headers={"Content-Type": CONTENT_TYPE_LATEST})


@web.middleware
async def _headers(request: web.Request, handler: Any) -> web.StreamResponse:
    response: web.StreamResponse = await handler(request)
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    return response


def dashboard_app(feed: Feed | None, *, cluster_token: str | None = None,
                  login_token: str | None = None, service: Any = None,
                  prefix: str = "", own_feed: bool = False) -> web.Application:
    """The dashboard as an aiohttp application (a sub-application under ``prefix`` when the
    gateway mounts it). ``feed`` follows the scheduler (started with the app when
    ``own_feed``); ``service``: the gateway's, whose users log in with their tokens."""
    app = web.Application(middlewares=[_headers])
    app[_SESSIONS] = _Sessions(cluster_token, login_token, service)
    app[_FEED] = feed
    app[_SERVICE] = service
    app[_REGISTRY] = cluster_registry(feed) if feed is not None else CollectorRegistry()
    app[_PREFIX] = prefix
    app[_STREAMS] = {}
    app[_COUNTS] = _JobCounts(service) if service is not None else None
    app.router.add_get("/", _index)
    app.router.add_post("/login", _login)
    app.router.add_get("/logout", _logout)
    app.router.add_get("/static/{name}", _static_file)
    app.router.add_get("/api/state", _state)
    app.router.add_get("/api/stream", _stream)
    app.router.add_get("/api/jobs/{job_id}/logs", _job_logs)
    app.router.add_get("/metrics", _metrics)
    if own_feed and feed is not None:
        async def _start(app: web.Application) -> None:
            feed.start()
            await feed.first(5.0)

        async def _stop(app: web.Application) -> None:
            await asyncio.get_running_loop().run_in_executor(None, feed.close)

        app.on_startup.append(_start)
        app.on_cleanup.append(_stop)
    return app
