"""The Quantum Serverless front door: the routes the ``qiskit-serverless`` 0.37 client calls.

``qiskit_serverless.ServerlessClient(host=URL, token=TOKEN, channel="local")`` works against a
qsrv gateway unmodified: these routes answer under ``/api/v1/`` what its gateway answers. Like
``_http`` (qsrv's own door) every handler parses, calls one ``GatewayService`` method and
renders; users, programs, jobs, logs, results and isolation are the same records for both
doors. Invariants:

- Every path is served with and without its trailing slash (the client uses both).
- Two sub-applications (``_web.door``): ``build_app`` at ``/api/v1`` and ``build_login_app``
  at ``/dj-rest-auth``. Their middleware authenticates every route with a user token
  (``Authorization: Bearer``), except the login route (public) and the two calls a running
  job makes about itself (sub-status, error event), which also accept that job's own token.
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
- Bodies are read through ``_web``: malformed ones are a 400, oversize ones a 413, refused
  before ``100 Continue`` on every route with a body.
- A user's file is served from a descriptor opened without following links, and only when it
  is a regular file: a job that replaced it by a link cannot make the gateway serve anything
  else.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import BodyPartReader, web

from qsrv.gateway._errors import InvalidRequestError, NotFoundError, PayloadTooLargeError
from qsrv.gateway._models import JobEvent, JobRecord, JobStatus, ProgramVersion, User, isoformat
from qsrv.gateway._requirements import missing_requirements
from qsrv.gateway._service import GatewayService
from qsrv.gateway._web import (
    Route,
    check_length,
    current_job,
    current_user,
    door,
    int_query,
    json_body,
    reading_body,
    service_of,
    timestamp,
)

__all__ = ["build_app", "build_login_app", "note_gateway_url"]

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


def _render(status: int, kind: str, message: str) -> web.Response:
    """The client shows the values of an error body as its exception text."""
    return web.json_response({"message": message}, status=status)


def build_app(service: GatewayService) -> web.Application:
    """The door at ``/api/v1``."""
    return door(service, _ROUTES, render=_render)


def build_login_app(service: GatewayService) -> web.Application:
    """The password login at ``/dj-rest-auth``."""
    return door(service, _LOGIN_ROUTES, render=_render)


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


def _no_provider(value: Any) -> None:
    if value not in (None, ""):
        raise InvalidRequestError(
            f"provider {value!r}: this qsrv gateway has no providers; use your own functions"
        )


async def _form_or_json(request: web.Request) -> dict[str, Any]:
    if request.content_type == "application/json":
        return await json_body(request, empty=True)
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


async def _list_programs(request: web.Request) -> web.Response:
    service = service_of(request)
    _no_provider(request.query.get("provider"))
    programs = service.programs(current_user(request))
    return web.json_response([_program_json(p) for p in programs])


async def _program_by_title(request: web.Request) -> web.Response:
    service = service_of(request)
    _no_provider(request.query.get("provider"))
    versions = service.program_versions(current_user(request), request.match_info["title"])
    return web.json_response(_program_json(versions[-1]))


async def _upload_program(request: web.Request) -> web.Response:
    service = service_of(request)
    user = current_user(request)
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


async def _run_program(request: web.Request) -> web.Response:
    service = service_of(request)
    user = current_user(request)
    body = await json_body(request, empty=True)
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


async def _list_jobs(request: web.Request) -> web.Response:
    service = service_of(request)
    user = current_user(request)
    _no_provider(request.query.get("provider"))
    limit = int_query(request, "limit", 10)
    offset = int_query(request, "offset", 0)
    statuses = []
    for word in filter(None, request.query.get("status", "").upper().split(",")):
        try:
            statuses.append(JobStatus(_QISKIT_WORDS.get(word, word)))
        except ValueError:
            raise InvalidRequestError(f"unknown status {word!r}") from None
    created_after = request.query.get("created_after")
    jobs, count = service.jobs(
        user, limit=limit, offset=offset, statuses=statuses,
        created_after=timestamp(created_after) if created_after else None,
        title=request.query.get("function") or None,
    )
    return web.json_response({
        "count": count,
        "next": _page_url(request, offset + limit, limit) if offset + limit < count else None,
        "previous": _page_url(request, max(offset - limit, 0), limit) if offset > 0 else None,
        "results": [_job_json(j) for j in jobs],
    })


async def _get_job(request: web.Request) -> web.Response:
    job = service_of(request).job(current_user(request), request.match_info["job_id"])
    return web.json_response(_job_json(job))


async def _job_result(request: web.Request) -> web.Response:
    service = service_of(request)
    user = current_user(request)
    job = service.job(user, request.match_info["job_id"])
    if job.status is JobStatus.FAILED:  # what the client shows when there is no error event
        return web.json_response({"result": json.dumps(job.error or "the job failed")})
    if job.status is not JobStatus.SUCCEEDED:
        return web.json_response({"result": None})
    return web.json_response({"result": service.result_json(user, job.job_id)})


async def _job_logs(request: web.Request) -> web.Response:
    logs = service_of(request).logs(current_user(request), request.match_info["job_id"])
    return web.json_response({"logs": logs.decode("utf-8", "replace")})


async def _stop_job(request: web.Request) -> web.Response:
    service = service_of(request)
    user = current_user(request)
    job_id = request.match_info["job_id"]
    before = service.job(user, job_id).status  # the body's "service" is not used
    if before.terminal:
        return web.json_response({"message": f"Job was already {before}."})
    job = await service.stop(user, job_id, min(service.config.stop_grace_s + 5, _STOP_WAIT_S))
    return web.json_response({"message": f"Job has been stopped: {job.status}."})


async def _job_events(request: web.Request) -> web.Response:
    service = service_of(request)
    user = current_user(request)
    job = service.job(user, request.match_info["job_id"])
    events = [_event_json(e) for e in service.events(user, job.job_id)]
    if job.status is JobStatus.FAILED and not any(e["event_type"] == "ERROR" for e in events):
        events.append(_failure_event(job))
    wanted = request.query.get("type", "").upper()
    return web.json_response([e for e in events if not wanted or e["event_type"] == wanted])


async def _add_job_event(request: web.Request) -> web.Response:
    """From a running job (``qiskit_serverless.send_error``)."""
    service = service_of(request)
    job = current_job(request)
    body = await json_body(request, empty=True)
    if str(body.get("type", "")).upper() != "ERROR":
        raise InvalidRequestError("only events of type ERROR can be reported")
    data: dict[str, Any] = {k: body[k] for k in ("code", "message", "exception", "args")
                            if k in body}
    service.add_event(job, "error", data)
    return web.json_response({"message": "Event recorded."})


async def _set_sub_status(request: web.Request) -> web.Response:
    """From a running job (``qiskit_serverless.update_status``)."""
    service = service_of(request)
    job = current_job(request)
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
    service_of(request).program_versions(user, title)  # NotFoundError unless it is theirs
    return title


async def _list_files(request: web.Request) -> web.Response:
    user = current_user(request)
    title = _function(request, user)
    return web.json_response({"results": service_of(request).files.list(user.user_id, title)})


async def _upload_file(request: web.Request) -> web.Response:
    service = service_of(request)
    user = current_user(request)
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


async def _download_file(request: web.Request) -> web.StreamResponse:
    user = current_user(request)
    title = _function(request, user)
    path = service_of(request).files.path(user.user_id, title, request.query.get("file", ""))
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


async def _delete_file(request: web.Request) -> web.Response:
    user = current_user(request)
    title = _function(request, user)
    service_of(request).files.delete(user.user_id, title, request.query.get("file", ""))
    return web.json_response({"message": "Requested file was deleted."})


# -- login ------------------------------------------------------------------------------------


async def _login(request: web.Request) -> web.Response:
    """Password login (the classic ``GatewayProvider(username=..., password=...)``)."""
    form = await _form_or_json(request)
    token = await service_of(request).login(str(form.get("username", "")),
                                          str(form.get("password", "")),
                                          request.remote or "")
    return web.json_response({"access": token})


def _upload_limit(request: web.Request) -> int:
    return int(service_of(request).config.archive_limits.max_archive_bytes + _FIELD_LIMIT * 2)


def _route(method: str, path: str, handler: Any, summary: str, **extra: Any) -> Route:
    """Every path is served with and without its trailing slash."""
    operation = {"summary": f"{summary} (Quantum Serverless client)",
                 "tags": ["quantum-serverless"],
                 "responses": {"200": {"description": "JSON"},
                               "default": {"description": "Error: {\"message\": text}"}}}
    return Route(method, path, handler, operation, slash=True, **extra)


_ROUTES: tuple[Route, ...] = (
    _route("GET", "/programs", _list_programs, "The latest version of each of your functions"),
    _route("POST", "/programs/upload", _upload_program,
           "Upload a function (multipart: title, entrypoint, artifact = tar of the working "
           "dir, dependencies, env_vars, description)", body_limit=_upload_limit),
    _route("GET", "/programs/get_by_title/{title}", _program_by_title,
           "One of your functions, by title"),
    _route("POST", "/programs/run", _run_program,
           "Run a function: JSON with title and arguments (JSON text); answers the job"),
    _route("GET", "/jobs", _list_jobs,
           "A page of your jobs: limit, offset, status, created_after, function"),
    _route("GET", "/jobs/{job_id}", _get_job,
           "A job: id, status, sub_status, program, created"),
    _route("GET", "/jobs/{job_id}/result", _job_result, "The job's result, as JSON text"),
    _route("GET", "/jobs/{job_id}/logs", _job_logs, "The job's output"),
    _route("POST", "/jobs/{job_id}/stop", _stop_job, "Stop the job"),
    _route("GET", "/jobs/{job_id}/events", _job_events, "The job's events (type=ERROR, ...)"),
    _route("POST", "/jobs/{job_id}/event", _add_job_event,
           "A running job reports an error (its own token or its owner's)", auth="job"),
    _route("PATCH", "/jobs/{job_id}/sub_status", _set_sub_status,
           "A running job sets its sub-status (its own token or its owner's)", auth="job"),
    _route("GET", "/files", _list_files, "Your files of a function"),
    _route("POST", "/files/upload", _upload_file, "Upload a file for a function",
           body_limit=_upload_limit),
    _route("GET", "/files/download", _download_file, "Download one of your files"),
    _route("DELETE", "/files/delete", _delete_file, "Delete one of your files"),
)

_LOGIN_ROUTES: tuple[Route, ...] = (
    _route("POST", "/keycloak/login", _login,
           "Password login: form username, password; answers {\"access\": token}",
           auth="public"),
)
