"""The routes pasqal-cloud 0.24 calls, each mapped onto one or two calls of the quantum service.

Paths are relative to the door's prefix (``/pasqal``): the SDK's ``Endpoints(core=GATEWAY +
"/pasqal/core", account=GATEWAY + "/pasqal/account")``. No state and no rule lives here: the
service owns batches, jobs, validation and execution; this module reads the SDK's requests
(``_requests``), picks the platform (``_devices``) and renders what the SDK parses
(``_shapes``). Polls read no job but the one asked for: a batch's status is its row and
the per-status counts the service keeps as its jobs change; a job's status is its row.

Workloads are one-job closed batches: ``workload_type`` "pulser", ``backend`` EMU_FREE (or a
qsrv Pulser platform), ``config`` ``{"sequence", "runs", "variables", "seed"}``; the workload's
id is its batch's, its ``result`` the job's counter (inline), cancelling it cancels the batch.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from qsrv.gateway._errors import GatewayError, InvalidRequestError, NotFoundError
from qsrv.gateway._models import User
from qsrv.gateway._pasqal._devices import (
    EMU_FREE,
    check_backend_configuration,
    device_type_of,
    platform_filter,
    platform_for,
    split_configuration,
)
from qsrv.gateway._pasqal._links import LinkSigner
from qsrv.gateway._pasqal._requests import (
    batch_filters,
    job_filters,
    job_specs,
    page_params,
    pulser_program,
)
from qsrv.gateway._pasqal._shapes import (
    batch_shape,
    job_shape,
    job_status,
    jsend,
    jsend_page,
    status_shape,
    workload_shape,
)
from qsrv.gateway._quantum import (
    TERMINAL,
    BatchRecord,
    Pagination,
    QJobRecord,
    QuantumService,
)
from qsrv.gateway._web import Route, current_user, json_value, service_of

__all__ = ["LINKS", "RESULT_ROUTE", "ROUTES_TABLE"]

LINKS = web.AppKey("pasqal_links", LinkSigner)
RESULT_ROUTE = web.AppKey("pasqal_result_resource", web.AbstractResource)
_WORKLOAD_TYPES = ("pulser",)


def _quantum(request: web.Request) -> QuantumService:
    return service_of(request).quantum


async def _pulser_platforms(quantum: QuantumService) -> list[str]:
    return [p.name for p in await quantum.platforms() if p.engine == "pulser"]


async def _object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object (the SDK gzips the bodies of batches and jobs: one that
    does not inflate is a 400 too, by ``json_value``)."""
    body = await json_value(request)
    if not isinstance(body, dict):
        raise InvalidRequestError("the body must be a JSON object")
    return body


def _flag(body: Mapping[str, Any], name: str) -> bool:
    value = body.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidRequestError(f"{name} must be true or false")
    return value


def _tags(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise InvalidRequestError("tags must be a list of strings")
    return value


def _batch(batch: BatchRecord) -> dict[str, Any]:
    return batch_shape(batch, device_type_of(batch.platform))


def _own_sequence(quantum: QuantumService, user: User, job: QJobRecord) -> dict[str, Any]:
    """A job with its ``sequence`` (None when it runs its batch's)."""
    batch_program = (quantum.batch(user, job.batch_id, jobs=False).program.data
                     if job.batch_id else None)
    return job_shape(job, batch_program=batch_program, with_sequence=True)


# -- batches ----------------------------------------------------------------------------------


async def create_batch(request: web.Request) -> web.Response:
    user, quantum = current_user(request), _quantum(request)
    body = await _object(request)
    if body.get("webhook"):
        raise InvalidRequestError("webhook: qsrv calls no webhooks; poll the batch instead")
    if body.get("backend_configuration") not in (None, ""):
        # pulser's import and schema check take a while: off the event loop.
        await asyncio.to_thread(check_backend_configuration, body["backend_configuration"])
    configuration, seed = split_configuration(body.get("configuration"))
    platform = platform_for(body.get("device_type"), await _pulser_platforms(quantum))
    jobs = job_specs(body.get("jobs", []), seed)
    sequence = body.get("sequence_builder")
    if sequence is not None:
        program = pulser_program(sequence, "sequence_builder")
    elif jobs and all(job.program is not None for job in jobs) and jobs[0].program:
        program = jobs[0].program
    else:
        raise InvalidRequestError(
            "either the batch has a sequence (sequence_builder) or each job has its own")
    project = body.get("project_id")
    if project is not None and not isinstance(project, str):
        raise InvalidRequestError("project_id must be a string")
    batch = await quantum.create_batch(
        user, program, jobs, platform=platform, open=_flag(body, "open"),
        tags=_tags(body.get("tags")), project=project, configuration=configuration)
    return jsend(_batch(batch))


async def get_batch(request: web.Request) -> web.Response:
    batch = _quantum(request).batch(current_user(request), request.match_info["batch_id"])
    return jsend(_batch(batch))


async def poll_batch(request: web.Request) -> web.Response:
    """What the SDK polls while it waits: the batch's row and its stored per-status counts
    (no read of its jobs)."""
    user, quantum = current_user(request), _quantum(request)
    batch = quantum.batch(user, request.match_info["batch_id"], jobs=False)
    return jsend(status_shape(batch, quantum.job_counts(user, batch.id)))


async def close_batch(request: web.Request) -> web.Response:
    batch = await _quantum(request).close_batch(current_user(request),
                                                request.match_info["batch_id"])
    return jsend(_batch(batch))


async def cancel_batch(request: web.Request) -> web.Response:
    batch = await _quantum(request).cancel_batch(current_user(request),
                                                 request.match_info["batch_id"])
    return jsend(_batch(batch))


async def cancel_batches(request: web.Request) -> web.Response:
    user, quantum = current_user(request), _quantum(request)
    body = await _object(request)
    ids = body.get("batch_ids")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise InvalidRequestError("batch_ids must be a list of batch ids")
    batches: list[dict[str, Any]] = []
    errors: dict[str, str] = {}
    for batch_id in ids:
        try:
            batches.append(_batch(await quantum.cancel_batch(user, batch_id)))
        except GatewayError as exc:
            errors[batch_id] = str(exc)
    return jsend({"batches": batches, "errors": errors})


async def rebatch(request: web.Request) -> web.Response:
    user = current_user(request)
    filters = job_filters(request, user)
    batch = await _quantum(request).rebatch(user, request.match_info["batch_id"], filters)
    return jsend(_batch(batch))


async def list_batches(request: web.Request) -> web.Response:
    user = current_user(request)
    device_types = [v for v in request.query.getall("device_type", []) if v]
    filters = batch_filters(request, user, platform_filter(device_types) or None)
    page = _quantum(request).batches(user, filters, page_params(request))
    return jsend_page([_batch(b) for b in page.results], page.total, page.offset)


async def add_jobs(request: web.Request) -> web.Response:
    user, quantum = current_user(request), _quantum(request)
    batch_id = request.match_info["batch_id"]
    body = await json_value(request)
    seed = quantum.batch(user, batch_id, jobs=False).configuration.get("seed")
    jobs = job_specs(body, seed)
    batch = await quantum.add_jobs(user, batch_id, jobs)
    return jsend(_batch(batch))


async def set_tags(request: web.Request) -> web.Response:
    tags = _tags(await json_value(request))
    batch = await _quantum(request).set_tags(current_user(request),
                                             request.match_info["batch_id"], tags)
    return jsend(_batch(batch))


async def cancel_jobs(request: web.Request) -> web.Response:
    user, quantum = current_user(request), _quantum(request)
    batch_id = request.match_info["batch_id"]
    quantum.batch(user, batch_id, jobs=False)  # another user's batch is missing, not empty
    cancelled = await quantum.cancel_jobs(user, job_filters(request, user, batch_id=batch_id))
    done = {job.id for job in cancelled}
    errors = {job_id: _not_cancelled(quantum, user, batch_id, job_id)
              for job_id in dict.fromkeys(request.query.getall("id", [])) if job_id not in done}
    return jsend({"jobs": [job_shape(j) for j in cancelled], "errors": errors})


def _not_cancelled(quantum: QuantumService, user: User, batch_id: str, job_id: str) -> str:
    """Why a job the filters name by id was not cancelled (the SDK's ``errors``)."""
    try:
        job = quantum.job(user, job_id)
    except NotFoundError:
        return f"no job {job_id} in batch {batch_id}"
    if job.batch_id != batch_id:
        return f"no job {job_id} in batch {batch_id}"
    if job.status in TERMINAL:
        return f"job {job_id} is {job_status(job.status)}: it has already ended"
    return f"job {job_id} does not match the other filters"


# -- jobs -------------------------------------------------------------------------------------


def _ascending(request: web.Request) -> bool:
    direction = request.query.get("order_by_direction", "DESC").upper()
    if direction not in ("ASC", "DESC"):
        raise InvalidRequestError("order_by_direction must be ASC or DESC")
    order_by = request.query.get("order_by", "creation_order")
    if order_by not in ("creation_order", "created_at"):
        raise InvalidRequestError("order_by must be creation_order or created_at")
    return direction == "ASC"


async def list_jobs(request: web.Request) -> web.Response:
    """A page of jobs, newest first, or oldest first: the same window counted from the other
    end of one snapshot (two reads of the page's size, however many jobs match). Oldest first
    in one batch is what ``Batch.ordered_jobs`` asks: those jobs come with their own
    sequences (``Batch.retry`` resends them)."""
    user, quantum = current_user(request), _quantum(request)
    filters = job_filters(request, user)
    page = page_params(request)
    if not _ascending(request):
        found = quantum.jobs(user, filters, page)
        return jsend_page([job_shape(j) for j in found.results], found.total, page.offset)
    first = quantum.jobs(user, filters, Pagination(offset=0, limit=1))
    start = max(first.total - page.offset - page.limit, 0)
    count = first.total - page.offset - start
    if count <= 0:
        return jsend_page([], first.total, page.offset)
    window = quantum.jobs(user, filters,
                          Pagination(offset=start, limit=count, snapshot=first.snapshot))
    batch_ids = request.query.getall("batch_id", [])
    program = (quantum.batch(user, batch_ids[0], jobs=False).program.data
               if len(batch_ids) == 1 else None)
    return jsend_page([job_shape(j, batch_program=program, with_sequence=program is not None)
                       for j in reversed(window.results)], first.total, page.offset)


async def get_job(request: web.Request) -> web.Response:
    user, quantum = current_user(request), _quantum(request)
    job = quantum.job(user, request.match_info["job_id"])
    return jsend(_own_sequence(quantum, user, job))


async def poll_job(request: web.Request) -> web.Response:
    job = _quantum(request).job(current_user(request), request.match_info["job_id"])
    return jsend({"id": job.id, "status": job_status(job.status)})


async def cancel_job(request: web.Request) -> web.Response:
    job = await _quantum(request).cancel_job(current_user(request), request.match_info["job_id"])
    return jsend(job_shape(job))


async def results_link(request: web.Request) -> web.Response:
    user = current_user(request)
    job_id = request.match_info["job_id"]
    job = _quantum(request).job(user, job_id)
    if not job.has_result:
        return jsend({"results_link": None})
    token = request.app[LINKS].sign(user, job.id)
    path = request.app[RESULT_ROUTE].url_for(job_id=job.id).with_query(token=token)
    return jsend({"results_link": str(request.url.origin().join(path))})


async def download_result(request: web.Request) -> web.Response:
    """A signed link's result (no token: the link is the credential)."""
    job_id = request.match_info["job_id"]
    user = request.app[LINKS].open(request.query.get("token", ""), job_id)
    result = _quantum(request).result(user, job_id)
    return web.json_response({"counter": dict(result.counts), "raw": None,
                              "serialised_results": None})


# -- workloads --------------------------------------------------------------------------------


def _workload_of(batch: BatchRecord) -> dict[str, Any]:
    workload = batch.configuration.get("workload")
    if not isinstance(workload, Mapping):
        raise NotFoundError(f"no workload {batch.id}")
    return dict(workload)


def _workload(quantum: QuantumService, user: User, batch: BatchRecord) -> dict[str, Any]:
    workload = _workload_of(batch)
    job = batch.jobs[0] if batch.jobs else None
    result = None
    if job is not None and job.has_result:
        result = {"counter": dict(quantum.result(user, job.id).counts)}
    return workload_shape(batch, workload, result)


async def create_workload(request: web.Request) -> web.Response:
    user, quantum = current_user(request), _quantum(request)
    body = await _object(request)
    kind = body.get("workload_type")
    if kind not in _WORKLOAD_TYPES:
        raise InvalidRequestError(
            f"workload_type {kind!r} is not offered: qsrv runs {', '.join(_WORKLOAD_TYPES)} "
            f"workloads (config: sequence, runs, variables, seed) on {EMU_FREE}")
    backend = body.get("backend")
    if isinstance(backend, str) and backend.upper() == EMU_FREE:
        backend = EMU_FREE
    platform = platform_for(backend, await _pulser_platforms(quantum))
    config = body.get("config")
    if not isinstance(config, Mapping):
        raise InvalidRequestError("config must be an object: {sequence, runs, variables, seed}")
    unknown = sorted(set(config) - {"sequence", "runs", "variables", "seed",
                                    "strict_validation"})
    if unknown:
        raise InvalidRequestError(f"config: unknown key(s) {', '.join(unknown)}; qsrv takes "
                                  "sequence, runs, variables, seed, strict_validation")
    configuration, seed = split_configuration(
        {k: config[k] for k in ("seed", "strict_validation") if k in config})
    program = pulser_program(config.get("sequence"), "config.sequence")
    (spec,) = job_specs([{"runs": config.get("runs"),
                          "variables": config.get("variables") or {}}], seed)
    configuration["workload"] = {"workload_type": kind, "backend": backend or EMU_FREE}
    project = body.get("project_id")
    batch = await quantum.create_batch(
        user, program, [spec], platform=platform,
        project=project if isinstance(project, str) else None, configuration=configuration)
    return jsend(_workload(quantum, user, batch))


async def get_workload(request: web.Request) -> web.Response:
    user, quantum = current_user(request), _quantum(request)
    batch = quantum.batch(user, request.match_info["workload_id"])
    return jsend(_workload(quantum, user, batch))


async def cancel_workload(request: web.Request) -> web.Response:
    user, quantum = current_user(request), _quantum(request)
    batch = quantum.batch(user, request.match_info["workload_id"])
    _workload_of(batch)
    batch = await quantum.cancel_batch(user, batch.id)
    return jsend(_workload(quantum, user, batch))


# -- devices and projects ---------------------------------------------------------------------


async def _specs(quantum: QuantumService) -> dict[str, str]:
    return {device_type_of(p.name): p.device_specs for p in await quantum.platforms()
            if p.engine == "pulser" and p.device_specs}


async def device_specs(request: web.Request) -> web.Response:
    return jsend(await _specs(_quantum(request)))


async def public_device_specs(request: web.Request) -> web.Response:
    specs = await _specs(_quantum(request))
    return jsend([{"device_type": name, "specs": text} for name, text in specs.items()])


def default_project(user: User) -> str:
    """The project every user has (a UUID, as Pasqal's, derived from the user), so that a
    user with nothing yet still finds a project to ``switch_to_project`` to."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"qsrv:user:{user.user_id}:{user.name}"))


async def projects(request: web.Request) -> web.Response:
    """The user's projects: those their batches and sessions carry (qsrv has no project
    membership: a project id is a label each batch carries, and listings filter on it), and
    their default project (``default_project``), all ACTIVE."""
    user, quantum = current_user(request), _quantum(request)
    if request.query.get("project_status", "ACTIVE") != "ACTIVE":
        return jsend([])
    names = dict.fromkeys(quantum.projects(user))
    default = default_project(user)
    names[default] = None
    return jsend([{"id": name, "project_id": name, "project_status": "ACTIVE",
                   "name": f"{user.name} (default)" if name == default else name,
                   "allowed_device_types": [EMU_FREE]} for name in names])


def _op(summary: str) -> dict[str, Any]:
    return {"summary": summary, "tags": ["pasqal"]}


ROUTES_TABLE: tuple[Route, ...] = (
    Route("POST", "/core/api/v1/batches", create_batch, _op("Create a batch")),
    Route("GET", "/core/api/v1/batches", list_batches, _op("List batches (filters, page)")),
    Route("PATCH", "/core/api/v1/batches/cancel", cancel_batches, _op("Cancel batches")),
    Route("GET", "/core/api/v2/batches/{batch_id}", get_batch, _op("A batch and its jobs")),
    Route("GET", "/core/api/v1/batches/{batch_id}/status", poll_batch,
          _op("A batch's status and its jobs' counts per status")),
    Route("PATCH", "/core/api/v2/batches/{batch_id}/complete", close_batch,
          _op("Close an open batch")),
    Route("PATCH", "/core/api/v2/batches/{batch_id}/cancel", cancel_batch,
          _op("Cancel a batch")),
    Route("POST", "/core/api/v1/batches/{batch_id}/rebatch", rebatch,
          _op("A new batch of a closed batch's jobs (filters)")),
    Route("POST", "/core/api/v2/batches/{batch_id}/jobs", add_jobs,
          _op("Add jobs to an open batch")),
    Route("PATCH", "/core/api/v1/batches/{batch_id}/tags", set_tags, _op("Set a batch's tags")),
    Route("PATCH", "/core/api/v2/batches/{batch_id}/cancel/jobs", cancel_jobs,
          _op("Cancel a batch's jobs (filters)")),
    Route("GET", "/core/api/v2/jobs", list_jobs, _op("List jobs (filters, page)")),
    Route("GET", "/core/api/v2/jobs/{job_id}", get_job, _op("A job")),
    Route("GET", "/core/api/v1/jobs/{job_id}/status", poll_job, _op("A job's status")),
    Route("PATCH", "/core/api/v2/jobs/{job_id}/cancel", cancel_job, _op("Cancel a job")),
    Route("GET", "/core/api/v1/jobs/{job_id}/results_link", results_link,
          _op("A signed link to a job's result")),
    Route("GET", "/core/results/{job_id}", download_result,
          _op("A job's result, through a signed link"), auth="public"),
    Route("POST", "/core/api/v1/workloads", create_workload, _op("Create a workload")),
    Route("GET", "/core/api/v2/workloads/{workload_id}", get_workload, _op("A workload")),
    Route("PUT", "/core/api/v1/workloads/{workload_id}/cancel", cancel_workload,
          _op("Cancel a workload")),
    Route("GET", "/core/api/v1/devices/specs", device_specs,
          _op("Device specs (Pulser abstract representation) per device type")),
    Route("GET", "/core/api/v1/devices/public-specs", public_device_specs,
          _op("Device specs, without a token"), auth="public"),
    Route("GET", "/account/api/v1/projects", projects, _op("The user's projects")),
)
