"""The gateway's Python client: ``Client`` (``GatewayClient``), ``Program``, ``Job``; the
quantum service's part is ``_quantum_client``.

Every method has a synchronous form and an ``*_async`` form doing the same request. The async
forms work under asyncio and trio alike (HTTP is aiohttp's, on asyncio: under trio it runs on
qsrv's private loop, and cancelling the caller cancels the request); the sync forms run the
async ones on that private loop, so they also work in a thread that runs a loop (Jupyter).
Each call opens its own HTTP session, so a ``Client`` and its ``Job``s hold no connection,
can be shared between threads and need no closing.

Waiting (``Job.result``, ``Job.wait``) is a chain of long-polls on ``/v1/jobs/{id}/wait``: the
gateway answers as soon as the job is terminal; no call sleeps.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import aiohttp
import anyio.to_thread

from qsrv import _bridge
from qsrv.errors import ConfigError, GetTimeoutError, InvalidProgramError
from qsrv.gateway._archive import pack_directory
from qsrv.gateway._errors import (
    GatewayError,
    GatewayUnavailableError,
    JobFailedError,
    JobStoppedError,
    error_for,
)
from qsrv.gateway._models import JobStatus
from qsrv.gateway._quantum_client import QuantumClient
from qsrv.gateway._runtime import dumps

__all__ = ["Client", "GatewayClient", "Job", "JobList", "Program", "ProgramInfo"]

T = TypeVar("T")
GATEWAY_ENV = "QSRV_GATEWAY"
GATEWAY_TOKEN_ENV = "QSRV_GATEWAY_TOKEN"
_POLL_S = 30.0  # the longest single long-poll; the server caps it at 60
_SLACK_S = 15.0  # HTTP timeout beyond the time the server may legitimately take


@dataclass
class Program:
    """A program to upload: ``entrypoint`` is a Python file inside ``working_dir``."""

    title: str
    entrypoint: str
    working_dir: str | os.PathLike[str] = "."
    env_vars: dict[str, str] | None = None
    description: str = ""


@dataclass(frozen=True, slots=True)
class ProgramInfo:
    """An uploaded version of a program, as the gateway describes it."""

    title: str
    version: int
    entrypoint: str
    description: str
    env_var_names: tuple[str, ...]
    created_at: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProgramInfo:
        return cls(data["title"], data["version"], data["entrypoint"], data["description"],
                   tuple(data.get("env_var_names", ())), data["created_at"])


class JobList(list["Job"]):
    """A page of jobs; ``total`` counts every job that matched, on all pages."""

    total: int = 0


class Job:
    """A job on the gateway. ``info`` is the job as last fetched (a dict of its JSON)."""

    def __init__(self, client: Client, info: Mapping[str, Any]) -> None:
        self._client = client
        self.job_id: str = info["job_id"]
        self.info: dict[str, Any] = dict(info)

    def __repr__(self) -> str:
        return f"<Job {self.job_id} {self.info.get('status')}>"

    def _update(self, info: Mapping[str, Any]) -> JobStatus:
        self.info = dict(info)
        return JobStatus(info["status"])

    async def status_async(self) -> JobStatus:
        return self._update(await self._client._get_json(f"/v1/jobs/{self.job_id}"))

    def status(self) -> JobStatus:
        return _bridge.call(self.status_async)

    async def logs_async(self) -> str:
        body = await self._client._request("GET", f"/v1/jobs/{self.job_id}/logs")
        return body[1].decode("utf-8", "replace")

    def logs(self) -> str:
        """Everything the job printed so far (stdout and stderr; head and tail when capped)."""
        return _bridge.call(self.logs_async)

    async def wait_async(self, timeout: float | None = None) -> JobStatus:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            poll = _POLL_S if deadline is None else max(0.0, min(_POLL_S,
                                                                 deadline - time.monotonic()))
            status = self._update(await self._client._get_json(
                f"/v1/jobs/{self.job_id}/wait", params={"timeout": f"{poll:.3f}"},
                timeout=poll + _SLACK_S,
            ))
            if status.terminal or (deadline is not None and time.monotonic() >= deadline):
                return status

    def wait(self, timeout: float | None = None) -> JobStatus:
        """Wait until the job is terminal or ``timeout`` seconds passed; return its status."""
        return _bridge.call(self.wait_async, timeout)

    async def result_async(self, timeout: float | None = None) -> Any:
        status = await self.wait_async(timeout)
        if not status.terminal:
            raise GetTimeoutError(f"job {self.job_id} is still {status} after {timeout} s")
        if status is JobStatus.FAILED:
            raise JobFailedError(self.job_id, status, self.info.get("error"),
                                 self.info.get("exit_code"))
        if status is JobStatus.STOPPED:
            raise JobStoppedError(self.job_id, status, self.info.get("error"),
                                  self.info.get("exit_code"))
        code, body = await self._client._request("GET", f"/v1/jobs/{self.job_id}/result")
        return None if code == 204 else pickle.loads(body)

    def result(self, timeout: float | None = None, progress: bool = False) -> Any:
        """Wait for the job to end; return what it passed to ``save_result`` (None if nothing).

        Raises JobFailedError (with the traceback) or JobStoppedError when it ended otherwise,
        GetTimeoutError when ``timeout`` seconds pass first. ``progress=True`` shows the time
        it has taken and its status (and sub-status) until it ends.
        """
        if progress:
            from qsrv.client import ProgressBar

            deadline = None if timeout is None else time.monotonic() + timeout
            start = time.monotonic()
            with ProgressBar(None, desc=f"job {self.job_id[:8]}", unit="s") as bar:
                while True:
                    left = None if deadline is None else max(0.0, deadline - time.monotonic())
                    status = self.wait(1.0 if left is None else min(1.0, left))
                    sub = self.info.get("sub_status")
                    bar.set(int(time.monotonic() - start),
                            note=str(status) + (f" ({sub})" if sub else ""))
                    if status.terminal or (left is not None and left <= 1.0):
                        break
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        return _bridge.call(self.result_async, timeout)

    async def stop_async(self, timeout: float | None = None) -> JobStatus:
        deadline = None if timeout is None else time.monotonic() + timeout
        poll = _POLL_S if timeout is None else min(_POLL_S, timeout)
        status = self._update(await self._client._request_json(
            "POST", f"/v1/jobs/{self.job_id}/stop", params={"timeout": f"{poll:.3f}"},
            timeout=poll + _SLACK_S,
        ))
        if status.terminal:
            return status
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        return await self.wait_async(left)

    def stop(self, timeout: float | None = None) -> JobStatus:
        """Stop the job; return once it is terminal (STOPPED, or the status it reached first)."""
        return _bridge.call(self.stop_async, timeout)

    async def events_async(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = (
            await self._client._get_json(f"/v1/jobs/{self.job_id}/events")
        )["events"]
        return events

    def events(self) -> list[dict[str, Any]]:
        """What happened to the job so far (status changes), oldest first."""
        return _bridge.call(self.events_async)


class Client(QuantumClient):
    """A connection to a gateway: ``Client("http://HOST:7421", token)`` (also named
    ``GatewayClient``): programs and jobs here, the quantum service's platforms, sessions,
    batches and quantum jobs from ``QuantumClient``.

    Without arguments, ``$QSRV_GATEWAY`` and ``$QSRV_GATEWAY_TOKEN`` are used.
    """

    def __init__(self, url: str | None = None, token: str | None = None, *,
                 timeout: float = 60.0) -> None:
        url = url or os.environ.get(GATEWAY_ENV)
        token = token or os.environ.get(GATEWAY_TOKEN_ENV)
        if not url:
            raise ConfigError(f"no gateway URL: pass one or set ${GATEWAY_ENV}")
        if not token:
            raise ConfigError(f"no gateway token: pass one or set ${GATEWAY_TOKEN_ENV}")
        if not url.startswith(("http://", "https://")):
            url = "http://" + url
        self.url = url.rstrip("/")
        self._token = token
        self._timeout = timeout

    def __repr__(self) -> str:
        return f"<Client {self.url}>"

    # -- HTTP -----------------------------------------------------------------------------------

    async def _request(self, method: str, path: str, **kwargs: Any) -> tuple[int, bytes]:
        """One HTTP request, from any async library (aiohttp runs on asyncio)."""
        return await _bridge.call_async(self._aiohttp_request, method, path, **kwargs)

    async def _aiohttp_request(self, method: str, path: str, *,
                               params: Any = None, json_body: Any = None,
                               data: Any = None, expect100: bool = False,
                               timeout: float | None = None) -> tuple[int, bytes]:
        headers = {"Authorization": f"Bearer {self._token}"}
        client_timeout = aiohttp.ClientTimeout(total=timeout or self._timeout)
        try:
            async with aiohttp.ClientSession(timeout=client_timeout) as session, \
                    session.request(method, self.url + path, params=params, json=json_body,
                                    data=data, headers=headers, expect100=expect100) as resp:
                body = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise GatewayUnavailableError(f"cannot reach the gateway at {self.url}: "
                                          f"{exc or type(exc).__name__}") from exc
        if status >= 400:
            raise _error_from(status, body)
        return status, body

    async def _request_json(self, method: str, path: str, **kwargs: Any) -> Any:
        _, body = await self._request(method, path, **kwargs)
        try:
            return json.loads(body)
        except ValueError as exc:
            raise GatewayUnavailableError(f"{self.url} answered something not JSON") from exc

    async def _get_json(self, path: str, **kwargs: Any) -> Any:
        return await self._request_json("GET", path, **kwargs)

    # -- programs -------------------------------------------------------------------------------

    async def upload_async(self, program: Program) -> ProgramInfo:
        archive = await anyio.to_thread.run_sync(pack_directory, program.working_dir)
        form = aiohttp.FormData()
        form.add_field("metadata", json.dumps({
            "title": program.title, "entrypoint": program.entrypoint,
            "description": program.description, "env_vars": program.env_vars or {},
        }), content_type="application/json")
        form.add_field("archive", archive, filename="working_dir.tar.gz",
                       content_type="application/gzip")
        info = await self._request_json("POST", "/v1/programs", data=form, expect100=True)
        return ProgramInfo.from_json(info)

    def upload(self, program: Program) -> ProgramInfo:
        """Upload the program's working directory; the same title again is a new version."""
        return _bridge.call(self.upload_async, program)

    async def programs_async(self) -> list[ProgramInfo]:
        data = await self._get_json("/v1/programs")
        return [ProgramInfo.from_json(p) for p in data["programs"]]

    def programs(self) -> list[ProgramInfo]:
        """The latest version of each of your programs."""
        return _bridge.call(self.programs_async)

    # -- jobs -----------------------------------------------------------------------------------

    async def run_async(self, program: Program | str, arguments: Any = None, *,
                        version: int | None = None) -> Job:
        if isinstance(program, Program):
            uploaded = await self.upload_async(program)
            title, version = uploaded.title, uploaded.version
        else:
            title = program
        body = {"program": title, "version": version,
                "arguments": base64.b64encode(dumps({} if arguments is None else arguments))
                .decode()}
        return Job(self, await self._request_json("POST", "/v1/jobs", json_body=body))

    def run(self, program: Program | str, arguments: Any = None, *,
            version: int | None = None) -> Job:
        """Run a program (uploading it first when given a ``Program``) with ``arguments``,
        which the program reads with ``get_arguments()``. Default version: the latest."""
        return _bridge.call(self.run_async, program, arguments, version=version)

    async def job_async(self, job_id: str) -> Job:
        return Job(self, await self._get_json(f"/v1/jobs/{job_id}"))

    def job(self, job_id: str) -> Job:
        """One of your jobs, by id (NotFoundError if it is not yours or does not exist)."""
        return _bridge.call(self.job_async, job_id)

    async def jobs_async(self, limit: int = 10, offset: int = 0,
                         status: str | JobStatus | list[str | JobStatus] | None = None,
                         created_after: datetime | float | None = None) -> JobList:
        params = {"limit": str(limit), "offset": str(offset)}
        if status:
            words = [status] if isinstance(status, str) else status
            params["status"] = ",".join(str(s) for s in words)
        if isinstance(created_after, datetime):
            params["created_after"] = str(created_after.timestamp())
        elif created_after is not None:
            params["created_after"] = str(float(created_after))
        data = await self._get_json("/v1/jobs", params=params)
        page = JobList(Job(self, info) for info in data["jobs"])
        page.total = int(data["total"])
        return page

    def jobs(self, limit: int = 10, offset: int = 0,
             status: str | JobStatus | list[str | JobStatus] | None = None,
             created_after: datetime | float | None = None) -> JobList:
        """A page of your jobs, newest first; ``.total`` counts all that match the filters."""
        return _bridge.call(self.jobs_async, limit, offset, status, created_after)


GatewayClient = Client


def _error_from(status: int, body: bytes) -> GatewayError:
    try:
        data = json.loads(body)
        kind, message = str(data["error"]), str(data["message"])
        if kind == InvalidProgramError.kind:
            err: GatewayError = InvalidProgramError(message)
            err.status = status
            return err
        return error_for(kind, message, status)
    except (ValueError, KeyError, TypeError):
        text = body[:200].decode("utf-8", "replace")
        err = GatewayError(f"HTTP {status} from the gateway: {text}")
        err.status = status
        return err
