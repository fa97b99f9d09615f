"""Programs and jobs over HTTP: the gateway server, its client, and the in-job runtime.

Public names (everything else in this package is private)::

    Client, Program, ProgramInfo, Job, JobList, JobStatus     the client
    GatewayClient (= Client), Session, Batch, QuantumJob,    the quantum service's client
    JobFilters, BatchFilters, Pagination, Page, JobSpec,
    QStatus, SessionStatus, StopReason
    GATEWAY_ENV, GATEWAY_TOKEN_ENV                           its default URL and token
    get_arguments, save_result                               inside a job
    ARGUMENTS_FORMAT_ENV, UPSTREAM_ARGUMENTS_PATH,           a job's environment, as
    UPSTREAM_RESULTS_PATH                                    Quantum Serverless sees it
    missing_requirements                                     a program's unmet ``pip`` needs
    GatewayConfig, GatewayServer, GatewayService,            running a gateway
    run_gateway, start_gateway_process, JOB_SANDBOXES        (see --job-sandbox)
    add_user, list_users, ensure_local_user,                 users, tokens, passwords
    default_data_dir, set_password, user_token,
    list_tokens, revoke_tokens, users_overview,
    parse_duration
    ArchiveLimits
    isoformat                                                timestamps as every door shows
    GatewayError and subclasses, JobError and subclasses     errors (see _errors)

Names are loaded on first use, so a job that only calls ``get_arguments`` does not import the
HTTP server.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the same names, eagerly, for type checkers
    from qsrv.gateway._archive import ArchiveLimits
    from qsrv.gateway._client import (
        GATEWAY_ENV,
        GATEWAY_TOKEN_ENV,
        Client,
        GatewayClient,
        Job,
        JobList,
        Program,
        ProgramInfo,
    )
    from qsrv.gateway._config import GatewayConfig
    from qsrv.gateway._errors import (
        ArchiveError,
        ConflictError,
        ForbiddenError,
        GatewayError,
        GatewayUnavailableError,
        InvalidRequestError,
        JobError,
        JobFailedError,
        JobStoppedError,
        NotFoundError,
        PayloadTooLargeError,
        TooManyRequestsError,
        UnauthorizedError,
    )
    from qsrv.gateway._models import JobStatus, isoformat
    from qsrv.gateway._passwords import set_password
    from qsrv.gateway._quantum._models import (
        BatchFilters,
        JobFilters,
        JobSpec,
        Page,
        Pagination,
        QStatus,
        SessionStatus,
        StopReason,
    )
    from qsrv.gateway._quantum_client import Batch, QuantumJob, Session
    from qsrv.gateway._requirements import missing_requirements
    from qsrv.gateway._runtime import (
        ARGUMENTS_FORMAT_ENV,
        UPSTREAM_ARGUMENTS_PATH,
        UPSTREAM_RESULTS_PATH,
        get_arguments,
        save_result,
    )
    from qsrv.gateway._sandbox import JOB_SANDBOXES
    from qsrv.gateway._server import GatewayServer, run_gateway, start_gateway_process
    from qsrv.gateway._service import GatewayService
    from qsrv.gateway._users import (
        add_user,
        default_data_dir,
        ensure_local_user,
        list_tokens,
        list_users,
        parse_duration,
        revoke_tokens,
        user_token,
        users_overview,
    )

_WHERE: dict[str, str] = {
    "ArchiveLimits": "_archive",
    "Client": "_client",
    "GatewayClient": "_client",
    "Batch": "_quantum_client",
    "QuantumJob": "_quantum_client",
    "Session": "_quantum_client",
    "BatchFilters": "_quantum._models",
    "JobFilters": "_quantum._models",
    "JobSpec": "_quantum._models",
    "Page": "_quantum._models",
    "Pagination": "_quantum._models",
    "QStatus": "_quantum._models",
    "SessionStatus": "_quantum._models",
    "StopReason": "_quantum._models",
    "GATEWAY_ENV": "_client",
    "GATEWAY_TOKEN_ENV": "_client",
    "Job": "_client",
    "JobList": "_client",
    "Program": "_client",
    "ProgramInfo": "_client",
    "ArchiveError": "_errors",
    "ConflictError": "_errors",
    "ForbiddenError": "_errors",
    "GatewayError": "_errors",
    "GatewayUnavailableError": "_errors",
    "InvalidRequestError": "_errors",
    "JobError": "_errors",
    "JobFailedError": "_errors",
    "JobStoppedError": "_errors",
    "NotFoundError": "_errors",
    "PayloadTooLargeError": "_errors",
    "TooManyRequestsError": "_errors",
    "UnauthorizedError": "_errors",
    "JobStatus": "_models",
    "isoformat": "_models",
    "set_password": "_passwords",
    "missing_requirements": "_requirements",
    "ARGUMENTS_FORMAT_ENV": "_runtime",
    "UPSTREAM_ARGUMENTS_PATH": "_runtime",
    "UPSTREAM_RESULTS_PATH": "_runtime",
    "get_arguments": "_runtime",
    "save_result": "_runtime",
    "GatewayServer": "_server",
    "JOB_SANDBOXES": "_sandbox",
    "run_gateway": "_server",
    "start_gateway_process": "_server",
    "GatewayConfig": "_config",
    "GatewayService": "_service",
    "add_user": "_users",
    "default_data_dir": "_users",
    "ensure_local_user": "_users",
    "list_users": "_users",
    "list_tokens": "_users",
    "parse_duration": "_users",
    "revoke_tokens": "_users",
    "user_token": "_users",
    "users_overview": "_users",
}

__all__ = [
    "ARGUMENTS_FORMAT_ENV",
    "GATEWAY_ENV",
    "GATEWAY_TOKEN_ENV",
    "JOB_SANDBOXES",
    "UPSTREAM_ARGUMENTS_PATH",
    "UPSTREAM_RESULTS_PATH",
    "ArchiveError",
    "ArchiveLimits",
    "Batch",
    "BatchFilters",
    "Client",
    "ConflictError",
    "ForbiddenError",
    "GatewayClient",
    "GatewayConfig",
    "GatewayError",
    "GatewayServer",
    "GatewayService",
    "GatewayUnavailableError",
    "InvalidRequestError",
    "Job",
    "JobError",
    "JobFailedError",
    "JobFilters",
    "JobList",
    "JobSpec",
    "JobStatus",
    "JobStoppedError",
    "NotFoundError",
    "Page",
    "Pagination",
    "PayloadTooLargeError",
    "Program",
    "ProgramInfo",
    "QStatus",
    "QuantumJob",
    "Session",
    "SessionStatus",
    "StopReason",
    "TooManyRequestsError",
    "UnauthorizedError",
    "add_user",
    "default_data_dir",
    "ensure_local_user",
    "get_arguments",
    "isoformat",
    "list_tokens",
    "list_users",
    "missing_requirements",
    "parse_duration",
    "revoke_tokens",
    "run_gateway",
    "save_result",
    "set_password",
    "start_gateway_process",
    "user_token",
    "users_overview",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'qsrv.gateway' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"qsrv.gateway.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
