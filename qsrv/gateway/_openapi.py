"""The OpenAPI 3 description of the gateway's HTTP API, served at ``/openapi.json``.

Hand-written next to the routes (``_http.build_app``); the Quantum Serverless door describes
its own (``_upstream_http.openapi_paths``). A test checks that every route is described here
and every path here is a route.
"""

from __future__ import annotations

from typing import Any

from qsrv.gateway._upstream_http import openapi_paths

__all__ = ["openapi_spec"]

_JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    text = {400: "Malformed request", 401: "Missing or unknown token",
            404: "No such object for this user", 409: "Not allowed in the object's state",
            413: "Over a size limit"}
    return {str(s): _json(_ref("Error"), text[s]) for s in statuses}


def _path_param(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": {"type": "string"}}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema}


_JOB_ID = _path_param("job_id", "The job's id")
_TIMEOUT = _query("timeout", {"type": "number", "minimum": 0, "maximum": 60},
                  "Seconds to wait at most (capped at 60)")

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object", "required": ["error", "message"],
        "properties": {"error": {"type": "string", "description": "Kind, e.g. not_found"},
                       "message": {"type": "string"}},
    },
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


def openapi_spec() -> dict[str, Any]:
    """The whole description, a fresh dict each call."""
    job = _json(_ref("Job"), "The job")
    paths: dict[str, Any] = {
        "/health": {"get": {"summary": "Liveness check (no token needed)", "security": [],
                            "responses": {"200": _json({"type": "object"}, "Alive")}}},
        "/openapi.json": {"get": {"summary": "This description (no token needed)",
                                  "security": [],
                                  "responses": {"200": _json({"type": "object"}, "OpenAPI 3")}}},
        "/v1/me": {"get": {"summary": "The user the token belongs to",
                           "responses": {"200": _json({"type": "object", "properties": {
                               "name": {"type": "string"}}}, "The user"), **_errors(401)}}},
        "/v1/programs": {
            "post": {
                "summary": "Upload a program; the same title again makes a new version",
                "requestBody": {"required": True, "content": {"multipart/form-data": {
                    "schema": {"type": "object", "required": ["metadata", "archive"],
                               "properties": {
                                   "metadata": {"type": "string", "description":
                                                "JSON: title, entrypoint, description, "
                                                "env_vars"},
                                   "archive": {"type": "string", "format": "binary",
                                               "description": "tar(.gz) of the working "
                                               "directory: regular files and directories "
                                               "only, relative paths"}}}}}},
                "responses": {"201": _json(_ref("Program"), "The new version"),
                              **_errors(400, 401, 413)},
            },
            "get": {"summary": "The user's programs (latest version of each)",
                    "responses": {"200": _json({"type": "object", "properties": {
                        "programs": {"type": "array", "items": _ref("Program")}}},
                        "Programs"), **_errors(401)}},
        },
        "/v1/programs/{title}/versions": {"get": {
            "summary": "Every version of a program",
            "parameters": [_path_param("title", "The program's title")],
            "responses": {"200": _json({"type": "object", "properties": {
                "versions": {"type": "array", "items": _ref("Program")}}}, "Versions"),
                **_errors(401, 404)}}},
        "/v1/jobs": {
            "post": {"summary": "Run a program: the job is QUEUED, then RUNNING",
                     "requestBody": {"required": True, "content": {
                         _JSON: {"schema": _ref("RunRequest")}}},
                     "responses": {"201": job, **_errors(400, 401, 404, 413)}},
            "get": {"summary": "The user's jobs, newest first",
                    "parameters": [
                        _query("limit", {"type": "integer", "default": 10}, "Page size"),
                        _query("offset", {"type": "integer", "default": 0}, "Skip this many"),
                        _query("status", {"type": "string"}, "Only these statuses "
                               "(comma-separated or repeated)"),
                        _query("created_after", {"type": "string"},
                               "ISO 8601 or epoch seconds")],
                    "responses": {"200": _json({"type": "object", "properties": {
                        "jobs": {"type": "array", "items": _ref("Job")},
                        "total": {"type": "integer", "description": "All matching jobs"},
                        "limit": {"type": "integer"}, "offset": {"type": "integer"}}},
                        "A page of jobs"), **_errors(400, 401)}},
        },
        "/v1/jobs/{job_id}": {"get": {"summary": "A job", "parameters": [_JOB_ID],
                                      "responses": {"200": job, **_errors(401, 404)}}},
        "/v1/jobs/{job_id}/wait": {"get": {
            "summary": "Long-poll: answers once the job is terminal, or after timeout",
            "parameters": [_JOB_ID, _TIMEOUT],
            "responses": {"200": job, **_errors(400, 401, 404)}}},
        "/v1/jobs/{job_id}/logs": {"get": {
            "summary": "The job's stdout and stderr so far (capped: head and tail kept)",
            "parameters": [_JOB_ID],
            "responses": {"200": {"description": "Output", "content": {
                "text/plain": {"schema": {"type": "string"}}}}, **_errors(401, 404)}}},
        "/v1/jobs/{job_id}/result": {"get": {
            "summary": "The result a SUCCEEDED job saved, as its pickle",
            "parameters": [_JOB_ID],
            "responses": {"200": {"description": "The pickled result", "content": {
                "application/octet-stream": {"schema": {"type": "string",
                                                        "format": "binary"}}}},
                          "204": {"description": "The job saved no result"},
                          **_errors(401, 404, 409)}}},
        "/v1/jobs/{job_id}/events": {"get": {
            "summary": "What happened to the job (status changes), oldest first",
            "parameters": [_JOB_ID, _query("after", {"type": "integer"},
                                           "Only events with a larger event_id")],
            "responses": {"200": _json({"type": "object", "properties": {
                "events": {"type": "array", "items": _ref("JobEvent")}}}, "Events"),
                **_errors(401, 404)}}},
        "/v1/jobs/{job_id}/stop": {"post": {
            "summary": "Stop the job (a queued one never starts; a running one's process "
                       "tree is killed) and wait until it is terminal or timeout",
            "parameters": [_JOB_ID, _TIMEOUT],
            "responses": {"200": job, **_errors(401, 404)}}},
    }
    paths.update(openapi_paths())
    return {
        "openapi": "3.0.3",
        "info": {"title": "qsrv gateway", "version": "1",
                 "description": "Programs and jobs on a qsrv cluster."},
        "paths": paths,
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }
