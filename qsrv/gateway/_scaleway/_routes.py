"""The Scaleway QaaS ``v1alpha1`` routes, each mapped onto the quantum service.

A Scaleway *job* is a batch of the quantum service in the job's session, one quantum job per
program of its model (qiskit-scaleway sends several circuits in one job; CUDA-Q and Perceval
one): its status is read from those jobs, its results are theirs, in order. Sessions,
platforms, statuses and results are the service's; the door's own file keeps only models and
the names/tags/parameters clients gave (``_store``).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from qsrv.errors import InvalidRequestError, NotFoundError, UnauthorizedError
from qsrv.gateway._models import User
from qsrv.gateway._quantum import (
    TERMINAL,
    BatchFilters,
    BatchRecord,
    JobSpec,
    Pagination,
    QStatus,
    SessionRecord,
    SessionStatus,
)
from qsrv.gateway._scaleway import _payloads, _shapes
from qsrv.gateway._scaleway._store import JobNote, ScalewayStore, SessionNote
from qsrv.gateway._web import (
    INT_QUERY_MAX,
    Route,
    bearer_token,
    current_user,
    int_query,
    json_body,
    service_of,
)
from qsrv.quantum.engines import Platform, Program

__all__ = ["ROUTES", "SCHEMAS", "STORE", "authenticate"]

STORE = web.AppKey("qsrv_scaleway_store", ScalewayStore)
_API = "/qaas/v1alpha1"
_MAX_PAGE_SIZE = 100
_DEFAULT_PAGE_SIZE = 50
_ACTIVE = (QStatus.PENDING, QStatus.RUNNING)


def authenticate(request: web.Request) -> User:
    """The user of the qsrv gateway token in ``X-Auth-Token`` (where Scaleway's clients put
    their secret key)."""
    token = bearer_token(request, "X-Auth-Token")
    if not token:
        raise UnauthorizedError("this request needs a qsrv gateway token in X-Auth-Token")
    return service_of(request).authenticate(token)


# -- helpers -------------------------------------------------------------------------------------


def _store(request: web.Request) -> ScalewayStore:
    return request.app[STORE]


def _page(request: web.Request) -> tuple[int, int]:
    """``page`` (from 1) and ``page_size`` (1..100) as (offset, limit)."""
    page = int_query(request, "page", 1)
    size = int_query(request, "page_size", _DEFAULT_PAGE_SIZE)
    if page < 1:
        raise InvalidRequestError(f"page must be 1 or more, got {page}")
    if not 1 <= size <= _MAX_PAGE_SIZE:
        raise InvalidRequestError(f"page_size must be from 1 to {_MAX_PAGE_SIZE}, got {size}")
    if (page - 1) * size > INT_QUERY_MAX:
        raise InvalidRequestError(f"page {page} is past any listing")
    return (page - 1) * size, size


def _text_field(body: dict[str, Any], name: str, *, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None or value == "":
        if required:
            raise InvalidRequestError(f"{name} is required")
        return None
    if not isinstance(value, str):
        raise InvalidRequestError(f"{name} must be a string")
    return value


def _tags(body: dict[str, Any]) -> tuple[str, ...]:
    tags = body.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise InvalidRequestError("tags must be a list of strings")
    return tuple(tags)


async def _platforms(request: web.Request) -> list[Platform]:
    """The platforms this door runs (Aer and Perceval), as the service sees them now."""
    found = await service_of(request).quantum.platforms()
    return [p for p in found if p.engine in _shapes.ENGINES]


async def _platform(request: web.Request, key: str) -> Platform:
    for platform in await _platforms(request):
        if key in (platform.name, _shapes.platform_id(platform.name)):
            return platform
    raise NotFoundError(f"no platform {key!r} (GET {_API}/platforms lists them)")


def _session_json(request: web.Request, user: User, session: SessionRecord) -> dict[str, Any]:
    quantum = service_of(request).quantum
    one = Pagination(limit=1)
    waiting = quantum.batches(user, BatchFilters(session_id=session.id, status=_ACTIVE),
                              one).total
    finished = quantum.batches(user, BatchFilters(session_id=session.id,
                                                  status=tuple(TERMINAL)), one).total
    return _shapes.session_shape(session, _store(request).session_note(session.id),
                                 waiting=waiting, finished=finished)


def _job_json(request: web.Request, batch: BatchRecord) -> dict[str, Any]:
    return _shapes.job_shape(batch.id, batch.session_id, batch.jobs,
                             _store(request).job_note(batch.id))


def _listing(key: str, items: list[dict[str, Any]], total: int) -> web.Response:
    return web.json_response({key: items, "total_count": total})


# -- platforms -----------------------------------------------------------------------------------


async def list_platforms(request: web.Request) -> web.Response:
    query = request.query
    # Perceval asks with ``providerName``; the others with ``provider_name``.
    wanted = {
        "name": query.get("name"),
        "provider_name": query.get("provider_name") or query.get("providerName"),
        "backend_name": query.get("backend_name") or query.get("backendName"),
        "type": query.get("platform_type"),
        "technology": query.get("platform_technology"),
    }
    offset, limit = _page(request)
    shapes = [_shapes.platform_shape(p) for p in await _platforms(request)]
    chosen = [s for s in shapes
              if all(not want or want in ("unknown_type", "unknown_technology")
                     or str(s[key]).lower() == want.lower()
                     for key, want in wanted.items())]
    chosen.sort(key=lambda s: str(s["name"]))
    return _listing("platforms", chosen[offset:offset + limit], len(chosen))


async def get_platform(request: web.Request) -> web.Response:
    platform = await _platform(request, request.match_info["platform_id"])
    return web.json_response(_shapes.platform_shape(platform))


# -- sessions ------------------------------------------------------------------------------------


async def create_session(request: web.Request) -> web.Response:
    user = current_user(request)
    body = await json_body(request)
    key = _text_field(body, "platform_id", required=True)
    assert key is not None
    platform = await _platform(request, key)
    if body.get("booking_demand"):
        raise InvalidRequestError(f"platform {platform.name} is not bookable")
    model_id = _text_field(body, "model_id")
    if model_id is not None:
        _store(request).model(user.user_id, model_id)  # 404 if unknown
    parameters = body.get("parameters")
    if parameters is not None and not isinstance(parameters, str):
        raise InvalidRequestError("parameters must be a JSON text")
    tags = _tags(body)
    options: dict[str, Any] = {}
    for name in ("max_duration", "max_idle_duration"):
        value = body.get(name)
        if value not in (None, ""):
            if not isinstance(value, str | int | float) or isinstance(value, bool):
                raise InvalidRequestError(f"{name} must be a duration such as '1200s'")
            options[name] = value
    session, created = await service_of(request).quantum.open_session(
        user, platform.name, deduplication_id=_text_field(body, "deduplication_id"),
        name=_text_field(body, "name"), project=_text_field(body, "project_id"), **options)
    if created and (model_id or parameters or tags):
        _store(request).note_session(user.user_id, session.id,
                                     SessionNote(model_id, parameters, tags))
    return web.json_response(_session_json(request, user, session))


async def list_sessions(request: web.Request) -> web.Response:
    user = current_user(request)
    offset, limit = _page(request)
    platform = None
    if request.query.get("platform_id"):
        platform = (await _platform(request, request.query["platform_id"])).name
    page = service_of(request).quantum.sessions(
        user, platform=platform, project=request.query.get("project_id") or None,
        page=Pagination(offset=offset, limit=limit))
    return _listing("sessions", [_session_json(request, user, s) for s in page.results],
                    page.total)


async def get_session(request: web.Request) -> web.Response:
    user = current_user(request)
    session = service_of(request).quantum.session(user, request.match_info["session_id"])
    return web.json_response(_session_json(request, user, session))


async def terminate_session(request: web.Request) -> web.Response:
    user = current_user(request)
    quantum = service_of(request).quantum
    session = quantum.session(user, request.match_info["session_id"])
    if session.status != SessionStatus.STOPPED:  # terminating an ended session changes nothing
        session = await quantum.terminate_session(user, session.id)
    return web.json_response(_session_json(request, user, session))


async def delete_session(request: web.Request) -> web.Response:
    user = current_user(request)
    session_id = request.match_info["session_id"]
    await service_of(request).quantum.delete_session(user, session_id)
    _store(request).forget_session(session_id)
    return web.Response(status=204)


async def list_session_acls(request: web.Request) -> web.Response:
    service_of(request).quantum.session(current_user(request), request.match_info["session_id"])
    return _listing("acls", [], 0)


# -- models --------------------------------------------------------------------------------------


async def create_model(request: web.Request) -> web.Response:
    user = current_user(request)
    body = await json_body(request)
    payload = body.get("payload")
    if payload is None or payload == "":
        raise InvalidRequestError("payload is required")
    if not isinstance(payload, str):
        raise InvalidRequestError("payload must be a JSON text")
    _payloads.computation_from_model(payload)  # refuse what no job could run
    model = _store(request).add_model(user.user_id, _text_field(body, "project_id"), payload)
    return web.json_response(_shapes.model_shape(model))


async def get_model(request: web.Request) -> web.Response:
    model = _store(request).model(current_user(request).user_id, request.match_info["model_id"])
    return web.json_response(_shapes.model_shape(model))


async def list_models(request: web.Request) -> web.Response:
    offset, limit = _page(request)
    models, total = _store(request).models(current_user(request).user_id,
                                           request.query.get("project_id") or None,
                                           offset, limit)
    return _listing("models", [_shapes.model_shape(m) for m in models], total)


# -- jobs ----------------------------------------------------------------------------------------


def _job_specs(request: web.Request, user: User, body: dict[str, Any], session: SessionRecord,
               ) -> tuple[list[JobSpec], dict[str, Any], str | None, str | None]:
    """The quantum jobs of a Scaleway job, the engine options they run with, and the model id
    and parameters it named.

    Of the backend options qiskit-scaleway sends (all of its AerBackend's defaults, every
    time), only ``seed_simulator`` is taken (as each job's seed); of the run options, ``memory``
    (each shot's outcome, which qiskit's Sampler reads); the model's noise model, if any, is
    the Aer engine's ``noise_model``."""
    circuit = body.get("circuit") or {}
    if not isinstance(circuit, dict):
        raise InvalidRequestError("circuit must be an object")
    perceval = circuit.get("percevalCircuit") or circuit.get("perceval_circuit")
    if perceval:
        program, shots, _ = _payloads.perceval_job(perceval)
        return [JobSpec(shots=shots, program=program)], {}, None, None
    note = _store(request).session_note(session.id)
    model_id = _text_field(body, "model_id") or (note.model_id if note else None)
    payload: Any
    if model_id is not None:
        payload = _store(request).model(user.user_id, model_id).payload
    elif circuit.get("qiskit_circuit"):
        payload = circuit["qiskit_circuit"]
    else:
        raise InvalidRequestError("a job needs a model_id (POST /models) or a circuit")
    parameters = body.get("parameters") or (note.parameters if note else None)
    computation = _payloads.computation_from_model(payload)
    params = _payloads.parameters_from(parameters)
    if params.shots is None:
        raise InvalidRequestError("the job's parameters must give shots "
                                  "(qio QuantumComputationParameters)")
    seed = computation.options.get("seed_simulator")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise InvalidRequestError(f"seed_simulator must be an integer, got {seed!r}")
    specs = [JobSpec(shots=params.shots, program=p, seed=seed) for p in computation.programs]
    options: dict[str, Any] = {"memory": True} if params.options.get("memory") is True else {}
    if computation.noise_model is not None:
        options["noise_model"] = computation.noise_model
    return specs, options, model_id, parameters if isinstance(parameters, str) else None


async def create_job(request: web.Request) -> web.Response:
    user = current_user(request)
    body = await json_body(request)
    session_id = _text_field(body, "session_id", required=True)
    assert session_id is not None
    quantum = service_of(request).quantum
    session = quantum.session(user, session_id)
    name, tags = _text_field(body, "name"), _tags(body)  # checked before anything is queued
    specs, options, model_id, parameters = _job_specs(request, user, body, session)
    program: Program | None = specs[0].program
    batch = await quantum.create_batch(user, program, specs, session_id=session.id,
                                       project=session.project,
                                       configuration={"options": options} if options else None)
    _store(request).note_job(user.user_id, batch.id, JobNote(
        name or f"qj-{batch.id[:8]}", model_id, parameters, tags))
    return web.json_response(_job_json(request, batch))


async def list_jobs(request: web.Request) -> web.Response:
    user = current_user(request)
    offset, limit = _page(request)
    session_id = request.query.get("session_id") or None
    quantum = service_of(request).quantum
    if session_id is not None:
        quantum.session(user, session_id)  # 404 for an unknown session
    page = quantum.batches(user, BatchFilters(session_id=session_id),
                           Pagination(offset=offset, limit=limit))
    return _listing("jobs", [_job_json(request, b) for b in page.results], page.total)


async def get_job(request: web.Request) -> web.Response:
    batch = service_of(request).quantum.batch(current_user(request), request.match_info["job_id"])
    return web.json_response(_job_json(request, batch))


async def cancel_job(request: web.Request) -> web.Response:
    user = current_user(request)
    quantum = service_of(request).quantum
    batch = quantum.batch(user, request.match_info["job_id"])
    if any(not QStatus(j.status).terminal for j in batch.jobs):
        batch = await quantum.cancel_batch(user, batch.id)
    return web.json_response(_job_json(request, batch))


async def list_job_results(request: web.Request) -> web.Response:
    user = current_user(request)
    quantum = service_of(request).quantum
    batch = quantum.batch(user, request.match_info["job_id"])
    results = []
    for job in batch.jobs:
        if QStatus(job.status) != QStatus.DONE or not job.has_result:
            continue
        native = quantum.result(user, job.id).native
        if native is None:
            continue
        text = (_payloads.perceval_result(native, job.program)
                if job.program.engine == "perceval" else _payloads.qio_result(
                    native, cudaq_order=_payloads.from_cudaq(job.program)))
        results.append({"job_id": batch.id, "result": text,
                        "created_at": _shapes.rfc3339(job.ended_at)})
    return _listing("job_results", results, len(results))


# -- what qsrv does not offer (bookings, applications, processes): empty listings ----------


async def list_nothing(request: web.Request) -> web.Response:
    key = request.path.rstrip("/").rsplit("/", 1)[-1]
    return _listing(key, [], 0)


#: Scaleway's error body, what every route answers a refusal with.
SCHEMAS: dict[str, Any] = {"ScalewayError": {
    "type": "object", "required": ["message", "type"],
    "properties": {"message": {"type": "string"},
                   "type": {"type": "string", "description": "e.g. invalid_arguments, "
                            "denied_authentication, not_found, precondition_failed"}}}}
_ERRORS = {"4XX": {"description": "Refused (Scaleway's error body)",
                   "content": {"application/json": {
                       "schema": {"$ref": "#/components/schemas/ScalewayError"}}}}}


def _op(summary: str, *params: str) -> dict[str, Any]:
    """An operation of the door's OpenAPI description (token: the X-Auth-Token header)."""
    return {"summary": summary, "tags": ["scaleway"],
            "description": "Authenticated by a qsrv gateway token in X-Auth-Token.",
            "parameters": [{"name": p, "in": "query", "schema": {"type": "string"}}
                           for p in params],
            "responses": {"200": {"description": "OK (Scaleway QaaS v1alpha1 shape)"},
                          **_ERRORS}}


_PAGE = ("page", "page_size", "order_by")

ROUTES: tuple[Route, ...] = (
    Route("GET", f"{_API}/platforms", list_platforms, _op(
        "List platforms", "name", "provider_name", "backend_name", "platform_type",
        "platform_technology", *_PAGE)),
    Route("GET", f"{_API}/platforms/{{platform_id}}", get_platform, _op("Get a platform")),
    Route("POST", f"{_API}/sessions", create_session,
          _op("Create (or join, by deduplication_id) a session")),
    Route("GET", f"{_API}/sessions", list_sessions,
          _op("List sessions", "project_id", "platform_id", *_PAGE)),
    Route("GET", f"{_API}/sessions/{{session_id}}", get_session, _op("Get a session")),
    Route("POST", f"{_API}/sessions/{{session_id}}/terminate", terminate_session,
          _op("Terminate a session")),
    Route("DELETE", f"{_API}/sessions/{{session_id}}", delete_session,
          {**_op("Delete a session"), "responses": {"204": {"description": "Deleted"},
                                                    **_ERRORS}}),
    Route("GET", f"{_API}/sessions/{{session_id}}/acls", list_session_acls,
          _op("List a session's access rules (none)")),
    Route("POST", f"{_API}/models", create_model, _op("Create a model")),
    Route("GET", f"{_API}/models", list_models, _op("List models", "project_id", *_PAGE)),
    Route("GET", f"{_API}/models/{{model_id}}", get_model, _op("Get a model")),
    Route("POST", f"{_API}/jobs", create_job, _op("Create a job in a session")),
    Route("GET", f"{_API}/jobs", list_jobs, _op("List jobs", "session_id", *_PAGE)),
    Route("GET", f"{_API}/jobs/{{job_id}}", get_job, _op("Get a job")),
    Route("POST", f"{_API}/jobs/{{job_id}}/cancel", cancel_job, _op("Cancel a job")),
    Route("GET", f"{_API}/jobs/{{job_id}}/results", list_job_results,
          _op("List a job's results", *_PAGE)),
    Route("GET", f"{_API}/bookings", list_nothing, _op("List bookings (none)")),
    Route("GET", f"{_API}/applications", list_nothing, _op("List applications (none)")),
    Route("GET", f"{_API}/processes", list_nothing, _op("List processes (none)")),
)
