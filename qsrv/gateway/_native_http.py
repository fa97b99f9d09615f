"""qsrv's own door, mounted at ``/v1``: programs and jobs (this module) and the quantum
service (``_native_quantum``), over ``GatewayService``.

Each handler parses the request, calls one service method and renders its answer; no state or
rule lives here. Authentication, error rendering and body limits are the door's (``_web``):

- Every route needs ``Authorization: Bearer TOKEN``; handlers read the caller with
  ``current_user``.
- Every error leaves as JSON ``{"error": kind, "message": text}`` with the status of its
  ``GatewayError`` class (``_errors``), which the client maps back to the same class.
- Bodies are bounded before they are read: uploads by ``max_archive_bytes``, JSON by
  ``max_arguments_bytes``; a malformed one is a 4xx (``_web.reading_body``).
- Arguments travel as base64 of their pickle (``arguments``) or as plain JSON
  (``arguments_json``, stored as JSON text, so programs of either runtime read them); results
  come back as the pickled bytes (``application/octet-stream``), 204 when the job saved none.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from aiohttp import BodyPartReader, web

from qsrv.gateway._errors import InvalidRequestError, PayloadTooLargeError
from qsrv.gateway._models import JobStatus
from qsrv.gateway._native_quantum import QUANTUM_ROUTES, QUANTUM_SCHEMAS
from qsrv.gateway._openapi import errors, json_content, path_param, query, ref
from qsrv.gateway._service import GatewayService
from qsrv.gateway._web import (
    Route,
    check_length,
    current_user,
    door,
    int_query,
    json_body,
    reading_body,
    service_of,
    timeout_query,
    timestamp,
)

__all__ = ["MAX_WAIT_S", "build_app"]

MAX_WAIT_S = 60.0
_CHUNK = 1 << 16
_MULTIPART_SLACK = 64 << 10  # room for the metadata part and multipart framing


def build_app(service: GatewayService) -> web.Application:
    """The ``/v1`` door."""
    return door(service, (*ROUTES, *QUANTUM_ROUTES), schemas={**SCHEMAS, **QUANTUM_SCHEMAS})


def _upload_limit(request: web.Request) -> int:
    return int(service_of(request).config.archive_limits.max_archive_bytes + _MULTIPART_SLACK)


# -- routes -----------------------------------------------------------------------------------


async def _me(request: web.Request) -> web.Response:
    return web.json_response({"name": current_user(request).name})


async def _upload_program(request: web.Request) -> web.Response:
    service = service_of(request)
    limit = service.config.archive_limits.max_archive_bytes
    check_length(request, _upload_limit(request))
    if not request.content_type.startswith("multipart/"):
        raise InvalidRequestError("upload a program as multipart/form-data")
    parts: dict[str, bytes] = {}
    async with reading_body():
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise InvalidRequestError("nested multipart is not supported")
            name = part.name or ""
            if name not in ("metadata", "archive") or name in parts:
                raise InvalidRequestError(f"unexpected or repeated form field {name!r}")
            parts[name] = await _read_part(part,
                                           limit if name == "archive" else _MULTIPART_SLACK)
    try:
        metadata = json.loads(parts["metadata"]) if "metadata" in parts else None
    except (ValueError, RecursionError):
        raise InvalidRequestError("metadata must be JSON") from None
    archive = parts.get("archive")
    if not isinstance(metadata, dict) or archive is None:
        raise InvalidRequestError("the upload needs a 'metadata' JSON part and an 'archive'")
    env_vars = metadata.get("env_vars") or {}
    if not isinstance(env_vars, dict):
        raise InvalidRequestError("env_vars must be an object")
    program = await service.upload_program(
        current_user(request),
        title=str(metadata.get("title", "")),
        entrypoint=str(metadata.get("entrypoint", "")),
        archive=archive,
        env_vars=env_vars,
        description=str(metadata.get("description", "")),
    )
    return web.json_response(program.to_json(), status=201)


async def _read_part(part: BodyPartReader, limit: int) -> bytes:
    data = bytearray()
    while chunk := await part.read_chunk(_CHUNK):
        data += chunk
        if len(data) > limit:
            raise PayloadTooLargeError(f"form field {part.name!r} over its limit of {limit} bytes")
    return bytes(data)


async def _list_programs(request: web.Request) -> web.Response:
    programs = service_of(request).programs(current_user(request))
    return web.json_response({"programs": [p.to_json() for p in programs]})


async def _program_versions(request: web.Request) -> web.Response:
    versions = service_of(request).program_versions(current_user(request),
                                                    request.match_info["title"])
    return web.json_response({"versions": [p.to_json() for p in versions]})


async def _submit_job(request: web.Request) -> web.Response:
    body = await json_body(request)
    title = body.get("program")
    version = body.get("version")
    if not isinstance(title, str) or not (version is None or isinstance(version, int)):
        raise InvalidRequestError("'program' must be a title and 'version' an integer or null")
    arguments_format = "pickle"
    if "arguments" in body:
        try:
            arguments = base64.b64decode(str(body["arguments"]), validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequestError("'arguments' must be base64 (of a pickle)") from None
    else:
        plain = body.get("arguments_json") or {}
        if not isinstance(plain, dict):
            raise InvalidRequestError("'arguments_json' must be an object")
        arguments, arguments_format = json.dumps(plain).encode(), "json"
    job = service_of(request).submit_job(current_user(request), title, arguments, version,
                                         arguments_format=arguments_format)
    return web.json_response(job.to_json(), status=201)


async def _list_jobs(request: web.Request) -> web.Response:
    statuses = []
    for raw in request.query.getall("status", []):
        for word in filter(None, raw.split(",")):
            try:
                statuses.append(JobStatus(word.upper()))
            except ValueError:
                raise InvalidRequestError(f"unknown status {word!r}") from None
    created_after = request.query.get("created_after")
    limit = int_query(request, "limit", 10)
    offset = int_query(request, "offset", 0)
    jobs, total = service_of(request).jobs(
        current_user(request), limit=limit, offset=offset, statuses=statuses,
        created_after=timestamp(created_after) if created_after else None,
    )
    return web.json_response({"jobs": [j.to_json() for j in jobs], "total": total,
                              "limit": limit, "offset": offset})


async def _get_job(request: web.Request) -> web.Response:
    job = service_of(request).job(current_user(request), request.match_info["job_id"])
    return web.json_response(job.to_json())


async def _wait_job(request: web.Request) -> web.Response:
    job = await service_of(request).wait(
        current_user(request), request.match_info["job_id"], timeout_query(request, 30.0)
    )
    return web.json_response(job.to_json())


async def _job_logs(request: web.Request) -> web.Response:
    logs = service_of(request).logs(current_user(request), request.match_info["job_id"])
    return web.Response(body=logs, content_type="text/plain", charset="utf-8")


async def _job_result(request: web.Request) -> web.Response:
    result = service_of(request).result(current_user(request), request.match_info["job_id"])
    if result is None:
        return web.Response(status=204)
    return web.Response(body=result, content_type="application/octet-stream")


async def _job_events(request: web.Request) -> web.Response:
    events = service_of(request).events(
        current_user(request), request.match_info["job_id"], int_query(request, "after", 0)
    )
    return web.json_response({"events": [e.to_json() for e in events]})


async def _stop_job(request: web.Request) -> web.Response:
    job = await service_of(request).stop(
        current_user(request), request.match_info["job_id"], timeout_query(request, MAX_WAIT_S)
    )
    return web.json_response(job.to_json())


# -- the table --------------------------------------------------------------------------------

_JOB_ID = path_param("job_id", "The job's id")
_TIMEOUT = query("timeout", {"type": "number", "minimum": 0, "maximum": 60},
                 "Seconds to wait at most (capped at 60)")
_JOB = json_content(ref("Job"), "The job")

SCHEMAS: dict[str, Any] = {
    "Program": {
        "type": "object",
        "properties": {
            "title": {"type": "string"}, "version": {"type": "integer"},
            "entrypoint": {"type": "string"}, "description": {"type": "string"},
            "env_var_names": {"type": "array", "items": {"type": "string"}},
            "archive_size": {"type": "integer"}, "archive_sha256": {"type": "string"},
            "created_at": {"type": "string", "format": "date-time"},
        },
    },
    "Job": {
        "type": "object",
        "properties": {
            "job_id": {"type": "string"}, "program": {"type": "string"},
            "version": {"type": "integer"},
            "status": {"type": "string", "enum": ["QUEUED", "RUNNING", "STOPPING", "STOPPED",
                                                  "SUCCEEDED", "FAILED"]},
            "sub_status": {"type": "string", "nullable": True},
            "created_at": {"type": "string", "format": "date-time"},
            "started_at": {"type": "string", "format": "date-time", "nullable": True},
            "finished_at": {"type": "string", "format": "date-time", "nullable": True},
            "exit_code": {"type": "integer", "nullable": True,
                          "description": "Negative: the signal that killed the process"},
            "error": {"type": "string", "nullable": True,
                      "description": "For FAILED: the traceback (tail of stderr)"},
            "has_result": {"type": "boolean"},
        },
    },
    "JobEvent": {
        "type": "object",
        "properties": {"event_id": {"type": "integer"}, "kind": {"type": "string"},
                       "data": {"type": "object"},
                       "created_at": {"type": "string", "format": "date-time"}},
    },
    "RunRequest": {
        "type": "object", "required": ["program"],
        "properties": {
            "program": {"type": "string", "description": "The program's title"},
            "version": {"type": "integer", "nullable": True,
                        "description": "Default: the latest version"},
            "arguments": {"type": "string", "format": "byte",
                          "description": "Base64 of the arguments pickled with cloudpickle"},
            "arguments_json": {"type": "object",
                               "description": "Arguments as JSON (used when no 'arguments')"},
        },
    },
}

ROUTES: tuple[Route, ...] = (
    Route("GET", "/me", _me, {
        "summary": "The user the token belongs to",
        "responses": {"200": json_content({"type": "object", "properties": {
            "name": {"type": "string"}}}, "The user"), **errors(401)}}),
    Route("POST", "/programs", _upload_program, {
        "summary": "Upload a program; the same title again makes a new version",
        "requestBody": {"required": True, "content": {"multipart/form-data": {
            "schema": {"type": "object", "required": ["metadata", "archive"],
                       "properties": {
                           "metadata": {"type": "string", "description":
                                        "JSON: title, entrypoint, description, env_vars"},
                           "archive": {"type": "string", "format": "binary",
                                       "description": "tar(.gz) of the working directory: "
                                       "regular files and directories only, relative "
                                       "paths"}}}}}},
        "responses": {"201": json_content(ref("Program"), "The new version"),
                      **errors(400, 401, 413)}}, body_limit=_upload_limit),
    Route("GET", "/programs", _list_programs, {
        "summary": "The user's programs (latest version of each)",
        "responses": {"200": json_content({"type": "object", "properties": {
            "programs": {"type": "array", "items": ref("Program")}}}, "Programs"),
            **errors(401)}}),
    Route("GET", "/programs/{title}/versions", _program_versions, {
        "summary": "Every version of a program",
        "parameters": [path_param("title", "The program's title")],
        "responses": {"200": json_content({"type": "object", "properties": {
            "versions": {"type": "array", "items": ref("Program")}}}, "Versions"),
            **errors(401, 404)}}),
    Route("POST", "/jobs", _submit_job, {
        "summary": "Run a program: the job is QUEUED, then RUNNING",
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": ref("RunRequest")}}},
        "responses": {"201": _JOB, **errors(400, 401, 404, 413)}}),
    Route("GET", "/jobs", _list_jobs, {
        "summary": "The user's jobs, newest first",
        "parameters": [
            query("limit", {"type": "integer", "default": 10}, "Page size"),
            query("offset", {"type": "integer", "default": 0}, "Skip this many"),
            query("status", {"type": "string"}, "Only these statuses "
                  "(comma-separated or repeated)"),
            query("created_after", {"type": "string"}, "ISO 8601 or epoch seconds")],
        "responses": {"200": json_content({"type": "object", "properties": {
            "jobs": {"type": "array", "items": ref("Job")},
            "total": {"type": "integer", "description": "All matching jobs"},
            "limit": {"type": "integer"}, "offset": {"type": "integer"}}},
            "A page of jobs"), **errors(400, 401)}}),
    Route("GET", "/jobs/{job_id}", _get_job, {
        "summary": "A job", "parameters": [_JOB_ID],
        "responses": {"200": _JOB, **errors(401, 404)}}),
    Route("GET", "/jobs/{job_id}/wait", _wait_job, {
        "summary": "Long-poll: answers once the job is terminal, or after timeout",
        "parameters": [_JOB_ID, _TIMEOUT],
        "responses": {"200": _JOB, **errors(400, 401, 404)}}),
    Route("GET", "/jobs/{job_id}/logs", _job_logs, {
        "summary": "The job's stdout and stderr so far (capped: head and tail kept)",
        "parameters": [_JOB_ID],
        "responses": {"200": {"description": "Output", "content": {
            "text/plain": {"schema": {"type": "string"}}}}, **errors(401, 404)}}),
    Route("GET", "/jobs/{job_id}/result", _job_result, {
        "summary": "The result a SUCCEEDED job saved, as its pickle",
        "parameters": [_JOB_ID],
        "responses": {"200": {"description": "The pickled result", "content": {
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
            "204": {"description": "The job saved no result"}, **errors(401, 404, 409)}}),
    Route("GET", "/jobs/{job_id}/events", _job_events, {
        "summary": "What happened to the job (status changes), oldest first",
        "parameters": [_JOB_ID, query("after", {"type": "integer"},
                                      "Only events with a larger event_id")],
        "responses": {"200": json_content({"type": "object", "properties": {
            "events": {"type": "array", "items": ref("JobEvent")}}}, "Events"),
            **errors(401, 404)}}),
    Route("POST", "/jobs/{job_id}/stop", _stop_job, {
        "summary": "Stop the job (a queued one never starts; a running one's process tree is "
                   "killed) and wait until it is terminal or timeout",
        "parameters": [_JOB_ID, _TIMEOUT],
        "responses": {"200": _JOB, **errors(401, 404)}}),
)
