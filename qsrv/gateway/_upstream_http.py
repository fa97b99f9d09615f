"""The Quantum Serverless front door: the routes the ``qiskit-serverless`` 0.37 client calls.

``qiskit_serverless.ServerlessClient(host=URL, token=TOKEN, channel="local")`` works against a
qsrv gateway unmodified: these routes answer under ``/api/v1/`` what its gateway answers. Like
``_http`` (qsrv's own door) every handler parses, calls one ``GatewayService`` method and
renders; users, programs, jobs, logs, results and isolation are the same records for both
doors. Invariants:

- Every path is served with and without its trailing slash (the client uses both).
- These routes authenticate themselves (``_http`` lets ``UPSTREAM_PREFIXES`` through): with a
  user token (``Authorization: Bearer``), except the login route and the two calls a running job
  makes about itself (sub-status, error event), which also accept that job's own token.
  ``Service-Channel`` and ``Service-CRN`` are accepted and ignored.
- Errors leave as ``{"message": text}`` with the status of their ``GatewayError`` class: the
  client shows the values of an error body as its exception text.
- Arguments arrive as JSON text (the client's ``QiskitObjectsEncoder``) and are stored as such
  (``arguments_format="json"``); a result is served as the JSON text the job saved.
- Status words are the service's: QUEUED, RUNNING (+ ``sub_status``), STOPPING, STOPPED,
  SUCCEEDED, FAILED. A FAILED job that reported no error event gets one made from its error (the
  traceback), which is what the client raises from ``job.result()``.
- Providers, custom images and installing dependencies are not supported and are refused with
  a message saying so (a dependency already installed is accepted).
- Bodies are read through ``_bodies``: malformed ones are a 400, oversize ones a 413, refused
  before ``100 Continue`` on every route with a body.
- A user's file is served from a descriptor opened without following links, and only when it
  is a regular file: a job that replaced it by a link cannot make the gateway serve anything
  else.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import BodyPartReader, web

from qsrv.gateway._bodies import check_length, expect_within, reading_body
from qsrv.gateway._errors import (
    GatewayError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
)
from qsrv.gateway._models import JobEvent, JobRecord, JobStatus, ProgramVersion, User, isoformat
from qsrv.gateway._requirements import missing_requirements
from qsrv.gateway._service import GatewayService

__all__ = ["UPSTREAM_PREFIXES", "add_upstream_routes", "note_gateway_url", "openapi_paths"]

UPSTREAM_PREFIXES = ("/api/v1/", "/dj-rest-auth/")
_SERVICE = web.AppKey("upstream_service", GatewayService)
_FIELD_LIMIT = 64 << 10  # any form field but the artifact
_MAX_PARTS = 32
_CHUNK = 1 << 16
_STOP_WAIT_S = 25.0
SUB_STATUSES = frozenset(
    {"MAPPING", "OPTIMIZING_HARDWARE", "WAITING_QPU", "EXECUTING_QPU", "POST_PROCESSING"}
)
# The client's own status words (``Job.status()``), accepted as filters too.
_QISKIT_WORDS = {"INITIALIZING": "QUEUED", "QUEUED": "QUEUED", "RUNNING": "RUNNING",
                 "CANCELING": "STOPPING", "CANCELED": "STOPPED", "DONE": "SUCCEEDED",
                 "ERROR": "FAILED", "PENDING": "QUEUED"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _render(exc: GatewayError) -> web.Response:
    response = web.json_response({"message": str(exc)}, status=exc.status)
    retry = getattr(exc, "retry_after", None)
    if retry:
        response.headers["Retry-After"] = str(int(retry))
    return response


def _renders_errors(handler: Handler) -> Handler:
    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except GatewayError as exc:
            return _render(exc)

    return wrapped


def note_gateway_url(request: web.Request, service: GatewayService) -> None:
    """Learn where jobs reach this gateway from the socket a request came in on, when the
    configuration could not tell (``port=0``). The socket's local address, not a header."""
    if service.gateway_url is not None or request.transport is None:
        return
    sockname = request.transport.get_extra_info("sockname")
    if isinstance(sockname, tuple) and len(sockname) >= 2:
        host, port = str(sockname[0]), int(sockname[1])
        service.gateway_url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


# -- helpers ----------------------------------------------------------------------------------


def _service(request: web.Request) -> GatewayService:
    return request.app[_SERVICE]


def _token(request: web.Request) -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _user(request: web.Request) -> User:
    return _service(request).authenticate(_token(request))


def _no_provider(value: Any) -> None:
    if value not in (None, ""):
        raise InvalidRequestError(
            f"provider {value!r}: this qsrv gateway has no providers; use your own functions"
        )


def _query_int(request: web.Request, name: str, default: int) -> int:
    raw = request.query.get(name, "")
    try:
        return int(raw) if raw else default
    except ValueError:
        raise InvalidRequestError(f"query parameter {name} must be an integer") from None


def _timestamp(raw: str) -> float:
    try:
        when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        try:
            return float(raw)
        except ValueError:
            raise InvalidRequestError(f"bad time {raw!r}: use ISO 8601") from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


async def _json_object(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        async with reading_body():
            body = await request.json()
    except InvalidRequestError:
        raise InvalidRequestError("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise InvalidRequestError("the body must be a JSON object")
    return body


async def _form_or_json(request: web.Request) -> dict[str, Any]:
    if request.content_type == "application/json":
        return await _json_object(request)
    async with reading_body():
        form = await request.post()
    return {k: v for k, v in form.items() if isinstance(v, str)}


def _program_json(program: ProgramVersion) -> dict[str, Any]:
    return {
        "id": program.program_id,
        "title": program.title,
        "provider": None,
        "entrypoint": program.entrypoint,
        "description": program.description,
        "version": str(program.version),
        "dependencies": [],
        "type": "GENERIC",
        "created": isoformat(program.created_at),
    }


def _job_json(job: JobRecord) -> dict[str, Any]:
    return {
        "id": job.job_id,
        "status": str(job.status),
        "sub_status": job.sub_status,
        "program": {"title": job.title, "provider": None, "version": str(job.version)},
        "created": isoformat(job.created_at),
        "result": None,
    }


def _event_json(event: JobEvent) -> dict[str, Any]:
    if event.kind == "error":
        return {"event_type": "ERROR", "origin": "FUNCTION", "context": "SEND_ERROR",
                "created": isoformat(event.created_at), "data": event.data}
    return {"event_type": "STATUS_CHANGE", "origin": "GATEWAY", "context": "SET_STATUS",
            "created": isoformat(event.created_at), "data": event.data}


def _failure_event(job: JobRecord) -> dict[str, Any]:
    """The ERROR event of a job that failed without reporting one: its traceback."""
    text = (job.error or "the job failed").rstrip()
    lines = [line for line in text.splitlines() if line.strip()]
    message = lines[-1]
    if len(lines) > 1 and message.startswith("the job's process"):
        message = lines[-2]  # the exception line, above the runner's exit-code line
    return {"event_type": "ERROR", "origin": "GATEWAY", "context": "JOB_FAILED",
            "created": isoformat(job.finished_at or job.created_at),
            "data": {"code": job.exit_code if job.exit_code is not None else "FAILED",
                     "message": message.strip(), "exception": text}}


def _page_url(request: web.Request, offset: int, limit: int) -> str:
    return str(request.url.update_query({"offset": str(offset), "limit": str(limit)}))


async def _read_part(part: BodyPartReader, limit: int) -> bytes:
    data = bytearray()
    while chunk := await part.read_chunk(_CHUNK):
        data += chunk
        if len(data) > limit:
            raise PayloadTooLargeError(f"form field {part.name!r} over its limit of {limit} bytes")
    return bytes(data)


def _json_field(fields: dict[str, str], name: str, default: Any) -> Any:
    raw = fields.get(name)
    if raw in (None, ""):
        return default
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise InvalidRequestError(f"{name} must be JSON") from None


# -- programs ---------------------------------------------------------------------------------


@_renders_errors
async def _list_programs(request: web.Request) -> web.Response:
    service = _service(request)
    _no_provider(request.query.get("provider"))
    programs = service.programs(_user(request))
    return web.json_response([_program_json(p) for p in programs])


@_renders_errors
async def _program_by_title(request: web.Request) -> web.Response:
    service = _service(request)
    _no_provider(request.query.get("provider"))
    versions = service.program_versions(_user(request), request.match_info["title"])
    return web.json_response(_program_json(versions[-1]))


@_renders_errors
async def _upload_program(request: web.Request) -> web.Response:
    service = _service(request)
    user = _user(request)
    check_length(request, _upload_limit(request))
    if not request.content_type.startswith("multipart/"):
        raise InvalidRequestError("upload a function as multipart/form-data")
    limit = service.config.archive_limits.max_archive_bytes
    fields: dict[str, str] = {}
    artifact: bytes | None = None
    async with reading_body():
        reader = await request.multipart()
        for _ in range(_MAX_PARTS):
            part = await reader.next()
            if part is None:
                break
            if not isinstance(part, BodyPartReader):
                raise InvalidRequestError("nested multipart is not supported")
            name = part.name or ""
            if name in fields or (name == "artifact" and artifact is not None):
                raise InvalidRequestError(f"repeated form field {name!r}")
            if name == "artifact":
                artifact = await _read_part(part, limit)
            else:
                fields[name] = (await _read_part(part, _FIELD_LIMIT)).decode("utf-8",
                                                                              "replace")
        else:
            raise InvalidRequestError(f"more than {_MAX_PARTS} form fields")
    _no_provider(fields.get("provider"))
    if fields.get("image"):
        raise InvalidRequestError("custom images are not supported by qsrv: upload the "
                                  "function's working directory with an entrypoint")
    dependencies = _json_field(fields, "dependencies", [])
    if not isinstance(dependencies, list) or not all(isinstance(d, str) for d in dependencies):
        raise InvalidRequestError("dependencies must be a JSON list of requirement strings")
    missing = missing_requirements(dependencies)
    if missing:
        raise InvalidRequestError(
            "qsrv installs no dependencies; these are not installed where jobs run, ask the "
            f"operator to install them: {', '.join(missing)}"
        )
    env_vars = _json_field(fields, "env_vars", {})
    if not isinstance(env_vars, dict):
        raise InvalidRequestError("env_vars must be a JSON object")
    if artifact is None or not fields.get("entrypoint"):
        raise InvalidRequestError("upload an 'artifact' (tar of the working directory) and "
                                  "an 'entrypoint'")
    program = await service.upload_program(
        user, title=fields.get("title", ""), entrypoint=fields["entrypoint"], archive=artifact,
        env_vars=env_vars, description=fields.get("description", ""),
    )
    return web.json_response(_program_json(program))


@_renders_errors
async def _run_program(request: web.Request) -> web.Response:
    service = _service(request)
    user = _user(request)
    body = await _json_object(request)
    _no_provider(body.get("provider"))
    title = body.get("title")
    arguments = body.get("arguments") or "{}"
    if isinstance(arguments, dict):
        arguments = json.dumps(arguments)
    if not isinstance(title, str) or not isinstance(arguments, str):
        raise InvalidRequestError("'title' must be a string and 'arguments' JSON text")
    job = service.submit_job(user, title, arguments.encode(), arguments_format="json")
    return web.json_response(_job_json(job))


# -- jobs -------------------------------------------------------------------------------------


@_renders_errors
async def _list_jobs(request: web.Request) -> web.Response:
    service = _service(request)
    user = _user(request)
    _no_provider(request.query.get("provider"))
    limit = _query_int(request, "limit", 10)
    offset = _query_int(request, "offset", 0)
    statuses = []
    for word in filter(None, request.query.get("status", "").upper().split(",")):
        try:
            statuses.append(JobStatus(_QISKIT_WORDS.get(word, word)))
        except ValueError:
            raise InvalidRequestError(f"unknown status {word!r}") from None
    created_after = request.query.get("created_after")
    jobs, count = service.jobs(
        user, limit=limit, offset=offset, statuses=statuses,
        created_after=_timestamp(created_after) if created_after else None,
        title=request.query.get("function") or None,
    )
    return web.json_response({
        "count": count,
        "next": _page_url(request, offset + limit, limit) if offset + limit < count else None,
        "previous": _page_url(request, max(offset - limit, 0), limit) if offset > 0 else None,
        "results": [_job_json(j) for j in jobs],
    })


@_renders_errors
async def _get_job(request: web.Request) -> web.Response:
    job = _service(request).job(_user(request), request.match_info["job_id"])
    return web.json_response(_job_json(job))


@_renders_errors
async def _job_result(request: web.Request) -> web.Response:
    service = _service(request)
    user = _user(request)
    job = service.job(user, request.match_info["job_id"])
    if job.status is JobStatus.FAILED:  # what the client shows when there is no error event
        return web.json_response({"result": json.dumps(job.error or "the job failed")})
    if job.status is not JobStatus.SUCCEEDED:
        return web.json_response({"result": None})
    return web.json_response({"result": service.result_json(user, job.job_id)})


@_renders_errors
async def _job_logs(request: web.Request) -> web.Response:
    logs = _service(request).logs(_user(request), request.match_info["job_id"])
    return web.json_response({"logs": logs.decode("utf-8", "replace")})


@_renders_errors
async def _stop_job(request: web.Request) -> web.Response:
    service = _service(request)
    user = _user(request)
    job_id = request.match_info["job_id"]
    before = service.job(user, job_id).status  # the body's "service" is not used
    if before.terminal:
        return web.json_response({"message": f"Job was already {before}."})
    job = await service.stop(user, job_id, min(service.config.stop_grace_s + 5, _STOP_WAIT_S))
    return web.json_response({"message": f"Job has been stopped: {job.status}."})


@_renders_errors
async def _job_events(request: web.Request) -> web.Response:
    service = _service(request)
    user = _user(request)
    job = service.job(user, request.match_info["job_id"])
    events = [_event_json(e) for e in service.events(user, job.job_id)]
    if job.status is JobStatus.FAILED and not any(e["event_type"] == "ERROR" for e in events):
        events.append(_failure_event(job))
    wanted = request.query.get("type", "").upper()
    return web.json_response([e for e in events if not wanted or e["event_type"] == wanted])


@_renders_errors
async def _add_job_event(request: web.Request) -> web.Response:
    """From a running job (``qiskit_serverless.send_error``)."""
    service = _service(request)
    job = service.authenticate_job(_token(request), request.match_info["job_id"])
    body = await _json_object(request)
    if str(body.get("type", "")).upper() != "ERROR":
        raise InvalidRequestError("only events of type ERROR can be reported")
    data: dict[str, Any] = {k: body[k] for k in ("code", "message", "exception", "args")
                            if k in body}
    service.add_event(job, "error", data)
    return web.json_response({"message": "Event recorded."})


@_renders_errors
async def _set_sub_status(request: web.Request) -> web.Response:
    """From a running job (``qiskit_serverless.update_status``)."""
    service = _service(request)
    job = service.authenticate_job(_token(request), request.match_info["job_id"])
    sub_status = str((await _form_or_json(request)).get("sub_status", ""))
    if sub_status not in SUB_STATUSES:
        raise InvalidRequestError(
            f"sub_status must be one of {', '.join(sorted(SUB_STATUSES))}, not {sub_status!r}"
        )
    service.set_sub_status(job, sub_status)
    return web.json_response({"message": f"sub_status set to {sub_status}."})


# -- files ------------------------------------------------------------------------------------


def _function(request: web.Request, user: User) -> str:
    """The function (program title) a files request is about; it must be one of the user's."""
    _no_provider(request.query.get("provider"))
    title = request.query.get("function", "")
    if not title:
        raise InvalidRequestError("query parameter 'function' (a function's title) is required")
    _service(request).program_versions(user, title)  # NotFoundError unless it is theirs
    return title


@_renders_errors
async def _list_files(request: web.Request) -> web.Response:
    user = _user(request)
    title = _function(request, user)
    return web.json_response({"results": _service(request).files.list(user.user_id, title)})


@_renders_errors
async def _upload_file(request: web.Request) -> web.Response:
    service = _service(request)
    user = _user(request)
    title = _function(request, user)
    check_length(request, _upload_limit(request))
    if not request.content_type.startswith("multipart/"):
        raise InvalidRequestError("upload a file as multipart/form-data (field 'file')")
    async with reading_body():
        reader = await request.multipart()
        part = await reader.next()
        if not isinstance(part, BodyPartReader) or part.name != "file" or not part.filename:
            raise InvalidRequestError("the upload needs one form field 'file' with a file name")
        name = part.filename.replace("\\", "/").rsplit("/", 1)[-1]

        async def chunks() -> AsyncIterator[bytes]:
            while chunk := await part.read_chunk(_CHUNK):
                yield chunk

        size = await service.save_file(user, title, name, chunks())
    return web.json_response({"message": "File uploaded.", "file": name, "size": size})


@_renders_errors
async def _download_file(request: web.Request) -> web.StreamResponse:
    user = _user(request)
    title = _function(request, user)
    path = _service(request).files.path(user.user_id, title, request.query.get("file", ""))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        raise NotFoundError(f"no file {path.name!r} for {title!r}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotFoundError(f"no file {path.name!r} for {title!r}")
        response = web.StreamResponse(headers={
            "Content-Disposition": f'attachment; filename="{path.name}"',
            "Content-Type": "application/octet-stream"})
        response.content_length = st.st_size
        await response.prepare(request)
        offset = 0
        while offset < st.st_size:
            chunk = await asyncio.to_thread(os.pread, fd, min(_CHUNK * 16, st.st_size - offset),
                                            offset)
            if not chunk:
                break
            await response.write(chunk)
            offset += len(chunk)
        await response.write_eof()
        return response
    finally:
        os.close(fd)


@_renders_errors
async def _delete_file(request: web.Request) -> web.Response:
    user = _user(request)
    title = _function(request, user)
    _service(request).files.delete(user.user_id, title, request.query.get("file", ""))
    return web.json_response({"message": "Requested file was deleted."})


# -- login ------------------------------------------------------------------------------------


@_renders_errors
async def _login(request: web.Request) -> web.Response:
    """Password login (the classic ``GatewayProvider(username=..., password=...)``)."""
    form = await _form_or_json(request)
    token = await _service(request).login(str(form.get("username", "")),
                                          str(form.get("password", "")),
                                          request.remote or "")
    return web.json_response({"access": token})


_ROUTES: tuple[tuple[str, str, Handler, str], ...] = (
    ("GET", "/api/v1/programs", _list_programs, "The latest version of each of your functions"),
    ("POST", "/api/v1/programs/upload", _upload_program,
     "Upload a function (multipart: title, entrypoint, artifact = tar of the working dir, "
     "dependencies, env_vars, description)"),
    ("GET", "/api/v1/programs/get_by_title/{title}", _program_by_title,
     "One of your functions, by title"),
    ("POST", "/api/v1/programs/run", _run_program,
     "Run a function: JSON with title and arguments (JSON text); answers the job"),
    ("GET", "/api/v1/jobs", _list_jobs,
     "A page of your jobs: limit, offset, status, created_after, function"),
    ("GET", "/api/v1/jobs/{job_id}", _get_job, "A job: id, status, sub_status, program, created"),
    ("GET", "/api/v1/jobs/{job_id}/result", _job_result, "The job's result, as JSON text"),
    ("GET", "/api/v1/jobs/{job_id}/logs", _job_logs, "The job's output"),
    ("POST", "/api/v1/jobs/{job_id}/stop", _stop_job, "Stop the job"),
    ("GET", "/api/v1/jobs/{job_id}/events", _job_events, "The job's events (type=ERROR, ...)"),
    ("POST", "/api/v1/jobs/{job_id}/event", _add_job_event,
     "A running job reports an error (its own token or its owner's)"),
    ("PATCH", "/api/v1/jobs/{job_id}/sub_status", _set_sub_status,
     "A running job sets its sub-status (its own token or its owner's)"),
    ("GET", "/api/v1/files", _list_files, "Your files of a function"),
    ("POST", "/api/v1/files/upload", _upload_file, "Upload a file for a function"),
    ("GET", "/api/v1/files/download", _download_file, "Download one of your files"),
    ("DELETE", "/api/v1/files/delete", _delete_file, "Delete one of your files"),
    ("POST", "/dj-rest-auth/keycloak/login", _login,
     "Password login: form username, password; answers {\"access\": token}"),
)


def _upload_limit(request: web.Request) -> int:
    return int(_service(request).config.archive_limits.max_archive_bytes + _FIELD_LIMIT * 2)


_UPLOADS = frozenset({"/api/v1/programs/upload", "/api/v1/files/upload"})


def add_upstream_routes(app: web.Application, service: GatewayService,
                        body_limit: int = 1 << 20) -> None:
    """Mount the Quantum Serverless routes, each with and without its trailing slash; every
    route with a body refuses an oversize one before ``100 Continue`` (uploads after checking
    the token too)."""
    app[_SERVICE] = service
    for method, path, handler, _ in _ROUTES:
        if path in _UPLOADS:
            expect = expect_within(_upload_limit, _user, _render)
        else:
            expect = expect_within(lambda request: body_limit, render=_render)
        for variant in (path, path + "/"):
            app.router.add_route(method, variant, handler, expect_handler=expect)


def openapi_paths() -> dict[str, Any]:
    """The OpenAPI description of these routes, for ``_openapi``."""
    paths: dict[str, Any] = {}
    for method, path, _, summary in _ROUTES:
        params = [{"name": segment[1:-1], "in": "path", "required": True,
                   "schema": {"type": "string"}}
                  for segment in path.split("/") if segment.startswith("{")]
        operation: dict[str, Any] = {
            "summary": f"{summary} (Quantum Serverless client)",
            "tags": ["quantum-serverless"],
            "responses": {"200": {"description": "JSON"},
                          "default": {"description": "Error: {\"message\": text}"}},
        }
        if params:
            operation["parameters"] = params
        if path.startswith("/dj-rest-auth/"):
            operation["security"] = []
        for variant in (path, path + "/"):
            paths.setdefault(variant, {})[method.lower()] = operation
    return paths
