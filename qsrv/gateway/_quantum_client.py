"""The quantum service from Python: sessions, batches and quantum jobs of a gateway.

``Client`` (``_client``) mixes in ``QuantumClient``; ``Session``, ``Batch`` and ``QuantumJob``
are snapshots of the gateway's records with methods that act on them. As everywhere in the
client, each method has a synchronous form and an ``*_async`` form doing the same requests;
the objects hold no connection.

Programs are converted here, on the caller's side, by ``qsrv.quantum.engines.program_from``
(a qiskit ``QuantumCircuit``, a Pulser ``Sequence``, a Perceval circuit, OpenQASM text or a
``Program``) and travel as ``{"kind", "data"}``. Waiting (``wait``, ``wait=True``) is a chain
of long-polls on the gateway, which answers as soon as the object reaches its state: no call
sleeps.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from qsrv import _bridge
from qsrv.errors import InvalidRequestError
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

if TYPE_CHECKING:
    from qsrv.quantum.engines import Platform

__all__ = ["Batch", "QuantumClient", "QuantumJob", "Session"]

T = TypeVar("T")
_POLL_S = 30.0  # the longest single long-poll; the server caps it at 60
_SLACK_S = 15.0  # HTTP timeout beyond the time the server may hold the request
JobLike = Mapping[str, Any] | JobSpec


def _when(raw: str | None) -> datetime | None:
    return None if raw is None else datetime.fromisoformat(raw)


def _program(obj: Any) -> dict[str, str]:
    from qsrv.quantum.engines import program_from

    program = program_from(obj)
    return {"kind": program.kind, "data": program.data}


def _job_body(job: JobLike, where: str) -> dict[str, Any]:
    """A job to submit as the gateway reads it; its program (if any) converted here."""
    if isinstance(job, JobSpec):
        job = {"shots": job.shots, "variables": job.variables, "program": job.program,
               "seed": job.seed}
    if not isinstance(job, Mapping):
        raise InvalidRequestError(f"{where} must be a dict such as "
                                  "{'shots': 1000, 'variables': {'theta': 0.3}}")
    body = {k: v for k, v in job.items() if v is not None}
    if "program" in body:
        body["program"] = _program(body["program"])
    return body


def _filter_value(value: Any) -> list[str] | str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return str(value.timestamp())
    if isinstance(value, str | int | float):
        return str(value)
    return [str(v) for v in value]


def _filters_json(filters: JobFilters | BatchFilters | Mapping[str, Any] | None,
                  ) -> dict[str, Any]:
    if filters is None:
        return {}
    items = (filters.items() if isinstance(filters, Mapping) else
             ((f.name, getattr(filters, f.name)) for f in dataclasses.fields(filters)))
    out: dict[str, Any] = {}
    for name, value in items:
        plain = _filter_value(value)
        if plain is not None:
            out[name] = plain
    return out


def _query(filters: JobFilters | BatchFilters | Mapping[str, Any] | None,
           pagination: Pagination | None) -> list[tuple[str, str]]:
    params: list[tuple[str, str]] = []
    for name, value in _filters_json(filters).items():
        for one in value if isinstance(value, list) else [value]:
            params.append((name, one))
    page = pagination or Pagination()
    params += [("offset", str(page.offset)), ("limit", str(page.limit))]
    if page.snapshot is not None:
        params.append(("snapshot", str(page.snapshot)))
    return params


def _platform(data: Mapping[str, Any]) -> Platform:
    from qsrv.quantum.engines import Hardware, Platform

    names = {f.name for f in dataclasses.fields(Platform)}
    fields = {k: v for k, v in data.items() if k in names}
    if isinstance(fields.get("hardware"), Mapping):
        fields["hardware"] = Hardware(**fields["hardware"])
    return Platform(**fields)


async def _long_poll(client: QuantumClient, path: str, done: Callable[[dict[str, Any]], bool],
                     timeout: float | None, params: Sequence[tuple[str, str]] = ()
                     ) -> dict[str, Any]:
    """Chain long-polls of ``path`` (a ``.../wait`` route) until ``done(info)`` or
    ``timeout``; the last answer."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        poll = _POLL_S if left is None else min(_POLL_S, left)
        info: dict[str, Any] = await client._get_json(
            path, params=[("timeout", f"{poll:.3f}"), *params], timeout=poll + _SLACK_S)
        if done(info) or (deadline is not None and time.monotonic() >= deadline):
            return info


def _ended(info: Mapping[str, Any]) -> bool:
    return QStatus(info["status"]).terminal


# -- quantum jobs -----------------------------------------------------------------------------


class QuantumJob:
    """A quantum job: ``shots`` runs of a program with ``variables`` bound, in a session (and
    maybe a batch). ``result`` is its counts once DONE (None before, or when it failed: see
    ``errors``); ``result_object()`` the engine's own result."""

    def __init__(self, client: QuantumClient, info: Mapping[str, Any]) -> None:
        self._client = client
        self._counts: dict[str, int] | None = None
        self._native: str | None = None
        self._update(info)

    def _update(self, info: Mapping[str, Any]) -> QuantumJob:
        self.info = dict(info)
        self.id: str = info["id"]
        self.batch_id: str | None = info.get("batch_id")
        self.session_id: str = info["session_id"]
        self.seq: int = info.get("seq", 0)
        self.platform: str = info.get("platform", "")
        self.status = QStatus(info["status"])
        self.shots: int = info["shots"]
        self.variables: dict[str, Any] = dict(info.get("variables") or {})
        self.errors: list[str] = list(info.get("errors") or [])
        self.parent_id: str | None = info.get("parent_id")
        self.created_at = _when(info.get("created_at"))
        self.started_at = _when(info.get("started_at"))
        self.ended_at = _when(info.get("ended_at"))
        return self

    def __repr__(self) -> str:
        return f"<QuantumJob {self.id} {self.status}>"

    async def refresh_async(self) -> QuantumJob:
        return self._update(await self._client._get_json(f"/v1/quantum-jobs/{self.id}"))

    def refresh(self) -> QuantumJob:
        """Read the job again from the gateway."""
        return _bridge.call(self.refresh_async)

    async def wait_async(self, timeout: float | None = None) -> QuantumJob:
        return self._update(await _long_poll(
            self._client, f"/v1/quantum-jobs/{self.id}/wait", _ended, timeout))

    def wait(self, timeout: float | None = None) -> QuantumJob:
        """Wait until the job has ended (or ``timeout`` seconds passed); return it."""
        return _bridge.call(self.wait_async, timeout)

    async def _fetch_result(self) -> None:
        if self._counts is None and self.status is QStatus.DONE:
            data = await self._client._get_json(f"/v1/quantum-jobs/{self.id}/result")
            self._counts = {str(k): int(v) for k, v in data["counts"].items()}
            self._native = data.get("native")

    async def result_async(self, timeout: float | None = 0.0) -> dict[str, int] | None:
        """The counts; waits up to ``timeout`` seconds (None: until it ends) first."""
        if not self.status.terminal and timeout != 0.0:
            await self.wait_async(timeout)
        await self._fetch_result()
        return self._counts

    @property
    def result(self) -> dict[str, int] | None:
        """The counts (bitstring, Fock state... -> occurrences) of a DONE job, else None."""
        if self._counts is None and self.status is QStatus.DONE:
            _bridge.call(self._fetch_result)
        return self._counts

    def result_object(self) -> Any:
        """The engine's own result: a qiskit ``Result`` (Aer), Perceval's result dict
        (``{"results": BSCount, ...}``, as a Perceval remote job gives it), the counts (Pulser,
        which has no other)."""
        if self.result is None:
            return None
        engine = self.platform.split(".", 1)[0]
        if self._native is None:
            return self._counts
        if engine == "aer":
            from qiskit.result import Result  # type: ignore[import-untyped]

            return Result.from_dict(json.loads(self._native))
        if engine == "perceval":
            from perceval.serialization import deserialize  # type: ignore[import-untyped]

            try:
                return deserialize(json.loads(self._native))
            except ValueError:
                return deserialize(self._native)
        return self._native

    async def cancel_async(self) -> QuantumJob:
        return self._update(await self._client._request_json(
            "POST", f"/v1/quantum-jobs/{self.id}/cancel"))

    def cancel(self) -> QuantumJob:
        """Cancel the job (PENDING or RUNNING: it becomes CANCELED)."""
        return _bridge.call(self.cancel_async)


# -- batches ----------------------------------------------------------------------------------


class Batch:
    """A batch: ordered jobs of one program on one reserved platform, open or closed."""

    def __init__(self, client: QuantumClient, info: Mapping[str, Any]) -> None:
        self._client = client
        self._update(info)

    def _update(self, info: Mapping[str, Any]) -> Batch:
        self.info = dict(info)
        self.id: str = info["id"]
        self.status = QStatus(info["status"])
        self.open: bool = info["open"]
        self.parent_id: str | None = info.get("parent_id")
        self.session_id: str = info["session_id"]
        self.platform: str = info.get("platform", "")
        self.tags: list[str] = list(info.get("tags") or [])
        self.created_at = _when(info.get("created_at"))
        self.updated_at = _when(info.get("updated_at"))
        self.ended_at = _when(info.get("ended_at"))
        old = getattr(self, "_jobs", {})
        jobs = []
        for data in info.get("jobs", ()):
            job = old.get(data["id"])
            jobs.append(job._update(data) if job is not None else QuantumJob(self._client, data))
        self._jobs: dict[str, QuantumJob] = {j.id: j for j in jobs}
        self.ordered_jobs: list[QuantumJob] = jobs
        return self

    @property
    def jobs(self) -> dict[str, QuantumJob]:
        """The jobs by id."""
        return dict(self._jobs)

    def __repr__(self) -> str:
        return f"<Batch {self.id} {self.status}{' open' if self.open else ''}>"

    async def refresh_async(self) -> Batch:
        return self._update(await self._client._get_json(f"/v1/batches/{self.id}"))

    def refresh(self) -> Batch:
        return _bridge.call(self.refresh_async)

    async def wait_async(self, timeout: float | None = None) -> Batch:
        return self._update(await _long_poll(
            self._client, f"/v1/batches/{self.id}/wait", _ended, timeout))

    def wait(self, timeout: float | None = None, progress: bool = False) -> Batch:
        """Wait until the batch has ended (closed and every job ended, cancelled or timed
        out), or ``timeout`` seconds passed; return it. ``progress=True`` shows a bar of its
        jobs ended (and failed) of all (a widget in Jupyter)."""
        if not progress:
            return _bridge.call(self.wait_async, timeout)
        from qsrv.client import ProgressBar

        deadline = None if timeout is None else time.monotonic() + timeout
        with ProgressBar(len(self.ordered_jobs), desc=f"batch {self.id[:8]}",
                         unit="job") as bar:
            while True:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                _bridge.call(self.wait_async, 1.0 if left is None else min(1.0, left))
                jobs = self.ordered_jobs
                bar.set(sum(1 for j in jobs if j.status.terminal),
                        sum(1 for j in jobs if j.status is QStatus.ERROR), total=len(jobs),
                        note=str(self.status) + (" open" if self.open else ""))
                if self.status.terminal or (left is not None and left <= 1.0):
                    return self

    async def _wait_jobs(self, ids: Iterable[str], timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        for job_id in ids:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            await self._jobs[job_id].wait_async(left)

    async def add_jobs_async(self, jobs: Sequence[JobLike], wait: bool = False,
                             idempotency_key: str | None = None) -> Batch:
        before = set(self._jobs)
        body: dict[str, Any] = {"jobs": [_job_body(j, f"jobs[{i}]") for i, j in enumerate(jobs)]}
        if idempotency_key is not None:
            body["idempotency_key"] = idempotency_key
        self._update(await self._client._request_json("POST", f"/v1/batches/{self.id}/jobs",
                                                      json_body=body))
        if wait:
            await self._wait_jobs([j for j in self._jobs if j not in before], None)
        return self

    def add_jobs(self, jobs: Sequence[JobLike], wait: bool = False,
                 idempotency_key: str | None = None) -> Batch:
        """Add jobs to an open batch; with ``wait``, return once they have ended."""
        return _bridge.call(self.add_jobs_async, jobs, wait, idempotency_key)

    async def close_async(self, wait: bool = False) -> Batch:
        self._update(await self._client._request_json("POST", f"/v1/batches/{self.id}/close"))
        return await self.wait_async() if wait else self

    def close(self, wait: bool = False) -> Batch:
        """Close an open batch (no more jobs); with ``wait``, return once it has ended."""
        return _bridge.call(self.close_async, wait)

    async def retry_async(self, job: QuantumJob | str, wait: bool = False) -> QuantumJob:
        job_id = job if isinstance(job, str) else job.id
        new = QuantumJob(self._client, await self._client._request_json(
            "POST", f"/v1/quantum-jobs/{job_id}/retry"))
        if wait:
            await new.wait_async()
        await self.refresh_async()
        return self._jobs.get(new.id, new)

    def retry(self, job: QuantumJob | str, wait: bool = False) -> QuantumJob:
        """Run a job of this (open) batch again: a new job with ``parent_id`` set."""
        return _bridge.call(self.retry_async, job, wait)

    async def cancel_async(self) -> Batch:
        return self._update(await self._client._request_json(
            "POST", f"/v1/batches/{self.id}/cancel"))

    def cancel(self) -> Batch:
        """Cancel the batch and its jobs that have not ended."""
        return _bridge.call(self.cancel_async)

    async def cancel_jobs_async(self, filters: JobFilters | Mapping[str, Any] | None = None,
                                ) -> list[QuantumJob]:
        body = _filters_json(filters)
        body["batch_id"] = self.id
        cancelled = await self._client._request_json(
            "POST", "/v1/quantum-jobs/cancel", json_body={"filters": body})
        await self.refresh_async()
        return [self._jobs.get(j["id"]) or QuantumJob(self._client, j)
                for j in cancelled["jobs"]]

    def cancel_jobs(self, filters: JobFilters | Mapping[str, Any] | None = None,
                    ) -> list[QuantumJob]:
        """Cancel this batch's jobs matching ``filters`` (all when None); the jobs cancelled."""
        return _bridge.call(self.cancel_jobs_async, filters)


# -- sessions ---------------------------------------------------------------------------------


class Session:
    """A session: a platform reserved for a while. ``with client.session(...) as s:``
    terminates at exit a session this call created, and only detaches from one it joined
    through a deduplication id. ``created`` says which."""

    def __init__(self, client: QuantumClient, info: Mapping[str, Any],
                 created: bool = False) -> None:
        self._client = client
        self.created = created
        self._update(info)

    def _update(self, info: Mapping[str, Any]) -> Session:
        self.info = dict(info)
        self.id: str = info["id"]
        self.status = SessionStatus(info["status"])
        self.platform: str = info["platform"]
        self.deduplication_id: str | None = info.get("deduplication_id")
        self.name: str = info.get("name") or ""
        self.reason = None if info.get("reason") is None else StopReason(info["reason"])
        self.message: str | None = info.get("message")
        self.max_duration_s: float = info.get("max_duration_s", 0.0)
        self.max_idle_duration_s: float = info.get("max_idle_duration_s", 0.0)
        self.created_at = _when(info.get("created_at"))
        self.started_at = _when(info.get("started_at"))
        self.terminated_at = _when(info.get("terminated_at"))
        return self

    def __repr__(self) -> str:
        return f"<Session {self.id} {self.platform} {self.status}>"

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.created:
            self.terminate(wait=True)

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self.created:
            await self.terminate_async(wait=True)

    async def refresh_async(self) -> Session:
        return self._update(await self._client._get_json(f"/v1/sessions/{self.id}"))

    def refresh(self) -> Session:
        return _bridge.call(self.refresh_async)

    async def wait_async(self, timeout: float | None = None,
                         status: Iterable[SessionStatus | str] = (SessionStatus.STOPPED,),
                         ) -> Session:
        wanted = [str(SessionStatus(s)) for s in status]
        return self._update(await _long_poll(
            self._client, f"/v1/sessions/{self.id}/wait", lambda i: i["status"] in wanted,
            timeout, [("status", w) for w in wanted]))

    def wait(self, timeout: float | None = None,
             status: Iterable[SessionStatus | str] = (SessionStatus.STOPPED,)) -> Session:
        """Wait until the session reaches one of ``status`` (default: stopped)."""
        return _bridge.call(self.wait_async, timeout, status)

    async def terminate_async(self, wait: bool = False) -> Session:
        self._update(await self._client._request_json(
            "POST", f"/v1/sessions/{self.id}/terminate"))
        if wait and self.status is not SessionStatus.STOPPED:
            await self.wait_async()
        return self

    def terminate(self, wait: bool = False) -> Session:
        """End the session now (reason ``terminated``): its queued jobs are cancelled; it is
        ``stopping`` while a running job's task is cancelled, then ``stopped``, its
        reservation released. ``wait``: return once it is stopped (leaving a ``with`` block
        that created it waits so)."""
        return _bridge.call(self.terminate_async, wait)

    async def run_async(self, circuits: Any, shots: int = 1000,
                        variables: Mapping[str, Any] | None = None,
                        seed: int | None = None) -> QuantumJob:
        body: dict[str, Any] = {"shots": shots, "variables": dict(variables or {}),
                                "program": _program(circuits)}
        if seed is not None:
            body["seed"] = seed
        return QuantumJob(self._client, await self._client._request_json(
            "POST", f"/v1/sessions/{self.id}/jobs", json_body=body))

    def run(self, circuits: Any, shots: int = 1000, variables: Mapping[str, Any] | None = None,
            seed: int | None = None) -> QuantumJob:
        """Run a program (a circuit or a list of circuits, a Pulser sequence, a Perceval
        circuit...) on the session's reservation, after the session's earlier jobs."""
        return _bridge.call(self.run_async, circuits, shots, variables, seed)

    async def jobs_async(self) -> list[QuantumJob]:
        jobs: list[QuantumJob] = []
        page = Pagination()
        while True:
            data = await self._client._get_json(f"/v1/sessions/{self.id}/jobs",
                                                params=_query(None, page))
            jobs += [QuantumJob(self._client, j) for j in data["jobs"]]
            if page.offset + len(data["jobs"]) >= data["total"] or not data["jobs"]:
                return sorted(jobs, key=lambda j: j.seq)
            page = Pagination(page.offset + page.limit, page.limit, data["snapshot"])

    def jobs(self) -> list[QuantumJob]:
        """The session's jobs (its batches' too), in the order they run."""
        return _bridge.call(self.jobs_async)

    def sampler(self, default_shots: int | None = None,
                max_shots_per_call: int | None = None) -> Any:
        """A qiskit ``BaseSamplerV2`` whose PUBs run as jobs of this session."""
        from qsrv.gateway._session_primitives import SessionSampler

        return SessionSampler(self, default_shots=default_shots,
                              max_shots_per_call=max_shots_per_call)

    def estimator(self, default_precision: float = 0.015625) -> Any:
        """A qiskit ``BaseEstimatorV2`` whose PUBs run as jobs of this session (expectation
        values estimated from counts in each Pauli term's basis)."""
        from qsrv.gateway._session_primitives import SessionEstimator

        return SessionEstimator(self, default_precision=default_precision)


# -- the client's methods ---------------------------------------------------------------------


class QuantumClient(abc.ABC):
    """The quantum service's methods of ``Client``, over one request primitive a subclass
    provides (``_request_json``: ``Client`` sends it to its gateway)."""

    @abc.abstractmethod
    async def _request_json(self, method: str, path: str, **kwargs: Any) -> Any:
        """The JSON answer to ``method path`` (``json_body=``, ``params=``, ``timeout=``);
        an error answer raises the matching ``qsrv.errors`` exception."""

    async def _get_json(self, path: str, **kwargs: Any) -> Any:
        return await self._request_json("GET", path, **kwargs)

    async def platforms_async(self) -> list[Platform]:
        data = await self._get_json("/v1/platforms")
        return [_platform(p) for p in data["platforms"]]

    def platforms(self) -> list[Platform]:
        """The platforms the cluster's workers offer, with limits and availability."""
        return _bridge.call(self.platforms_async)

    async def session_async(self, platform: str, deduplication_id: str | None = None,
                            max_duration: str | int = "1h", max_idle_duration: str | int = "20m",
                            name: str | None = None, project: str | None = None) -> Session:
        body = {"platform": platform, "deduplication_id": deduplication_id,
                "max_duration": max_duration, "max_idle_duration": max_idle_duration,
                "name": name, "project": project}
        data = await self._request_json(
            "POST", "/v1/sessions", json_body={k: v for k, v in body.items() if v is not None})
        return Session(self, data["session"], created=bool(data["created"]))

    def session(self, platform: str, deduplication_id: str | None = None,
                max_duration: str | int = "1h", max_idle_duration: str | int = "20m",
                name: str | None = None, project: str | None = None) -> Session:
        """Get-or-create a session on ``platform``: your running or starting session with the
        same deduplication id if there is one, else a new one (``starting`` until its
        reservation is held, then ``running``). Durations: ``"30m"``, ``"5min"``, ``"1h"``,
        ``"3600s"`` or seconds."""
        return _bridge.call(self.session_async, platform, deduplication_id, max_duration,
                            max_idle_duration, name, project)

    async def get_session_async(self, session_id: str) -> Session:
        return Session(self, await self._get_json(f"/v1/sessions/{session_id}"))

    def get_session(self, session_id: str) -> Session:
        return _bridge.call(self.get_session_async, session_id)

    async def sessions_async(self, status: SessionStatus | str | Iterable[str] | None = None,
                             platform: str | None = None) -> list[Session]:
        filters = {"status": status, "platform": platform}
        sessions: list[Session] = []
        page = Pagination()
        while True:
            data = await self._get_json("/v1/sessions", params=_query(filters, page))
            sessions += [Session(self, s) for s in data["sessions"]]
            if page.offset + len(data["sessions"]) >= data["total"] or not data["sessions"]:
                return sessions
            page = Pagination(page.offset + page.limit, page.limit, data["snapshot"])

    def sessions(self, status: SessionStatus | str | Iterable[str] | None = None,
                 platform: str | None = None) -> list[Session]:
        """Your sessions, newest first (``status``: one or several statuses)."""
        return _bridge.call(self.sessions_async, status, platform)

    async def create_batch_async(
        self, program: Any, jobs: Sequence[JobLike], platform: str | None = None,
        session: Session | str | None = None, open: bool = False, wait: bool = False,
        idempotency_key: str | None = None, tags: Iterable[str] | None = None,
        project: str | None = None, configuration: Mapping[str, Any] | None = None,
    ) -> Batch:
        body: dict[str, Any] = {
            "program": _program(program),
            "jobs": [_job_body(j, f"jobs[{i}]") for i, j in enumerate(jobs)],
            "open": open, "platform": platform,
            "session_id": session.id if isinstance(session, Session) else session,
            "idempotency_key": idempotency_key, "tags": None if tags is None else list(tags),
            "project": project,
            "configuration": None if configuration is None else dict(configuration)}
        batch = Batch(self, await self._request_json(
            "POST", "/v1/batches", json_body={k: v for k, v in body.items() if v is not None}))
        if wait:
            if open:
                await batch._wait_jobs(list(batch.jobs), None)
                await batch.refresh_async()
            else:
                await batch.wait_async()
        return batch

    def create_batch(
        self, program: Any, jobs: Sequence[JobLike], platform: str | None = None,
        session: Session | str | None = None, open: bool = False, wait: bool = False,
        idempotency_key: str | None = None, tags: Iterable[str] | None = None,
        project: str | None = None, configuration: Mapping[str, Any] | None = None,
    ) -> Batch:
        """A batch of ``jobs`` (``{"shots": 1000, "variables": {"theta": 0.3}}`` each) of
        ``program`` on ``platform`` (its own session) or on ``session``. ``open``: more jobs
        may be added until ``close()``. ``wait``: return once it has ended (open: once these
        jobs have). The same ``idempotency_key`` again returns the first batch."""
        return _bridge.call(self.create_batch_async, program, jobs, platform, session, open,
                            wait, idempotency_key, tags, project, configuration)

    async def get_batch_async(self, batch_id: str) -> Batch:
        return Batch(self, await self._get_json(f"/v1/batches/{batch_id}"))

    def get_batch(self, batch_id: str) -> Batch:
        return _bridge.call(self.get_batch_async, batch_id)

    async def rebatch_async(self, batch_id: str | Batch,
                            filters: JobFilters | Mapping[str, Any] | None = None) -> Batch:
        ident = batch_id.id if isinstance(batch_id, Batch) else batch_id
        body = {} if filters is None else {"filters": _filters_json(filters)}
        return Batch(self, await self._request_json(
            "POST", f"/v1/batches/{ident}/rebatch", json_body=body))

    def rebatch(self, batch_id: str | Batch,
                filters: JobFilters | Mapping[str, Any] | None = None) -> Batch:
        """A new batch of the closed batch's jobs that match ``filters`` (all when None), its
        ``parent_id`` set."""
        return _bridge.call(self.rebatch_async, batch_id, filters)

    async def get_quantum_job_async(self, job_id: str) -> QuantumJob:
        return QuantumJob(self, await self._get_json(f"/v1/quantum-jobs/{job_id}"))

    def get_quantum_job(self, job_id: str) -> QuantumJob:
        return _bridge.call(self.get_quantum_job_async, job_id)

    async def get_jobs_async(self, filters: JobFilters | Mapping[str, Any] | None = None,
                             pagination: Pagination | None = None) -> Page[QuantumJob]:
        data = await self._get_json("/v1/quantum-jobs", params=_query(filters, pagination))
        return Page([QuantumJob(self, j) for j in data["jobs"]], data["total"],
                    data["snapshot"], data["offset"], data["limit"])

    def get_jobs(self, filters: JobFilters | Mapping[str, Any] | None = None,
                 pagination: Pagination | None = None) -> Page[QuantumJob]:
        """A page of your quantum jobs, newest first: ``.results`` and ``.total``. Pass
        ``Pagination(offset, limit, snapshot=page.snapshot)`` for the next page of the same
        listing, unchanged by inserts meanwhile."""
        return _bridge.call(self.get_jobs_async, filters, pagination)

    async def get_batches_async(self, filters: BatchFilters | Mapping[str, Any] | None = None,
                                pagination: Pagination | None = None) -> Page[Batch]:
        data = await self._get_json("/v1/batches", params=_query(filters, pagination))
        return Page([Batch(self, b) for b in data["batches"]], data["total"],
                    data["snapshot"], data["offset"], data["limit"])

    def get_batches(self, filters: BatchFilters | Mapping[str, Any] | None = None,
                    pagination: Pagination | None = None) -> Page[Batch]:
        """A page of your batches, newest first (as ``get_jobs``)."""
        return _bridge.call(self.get_batches_async, filters, pagination)

    async def cancel_jobs_async(self, filters: JobFilters | Mapping[str, Any],
                                ) -> list[QuantumJob]:
        data = await self._request_json("POST", "/v1/quantum-jobs/cancel",
                                        json_body={"filters": _filters_json(filters)})
        return [QuantumJob(self, j) for j in data["jobs"]]

    def cancel_jobs(self, filters: JobFilters | Mapping[str, Any]) -> list[QuantumJob]:
        """Cancel every job of yours matching ``filters`` that has not ended."""
        return _bridge.call(self.cancel_jobs_async, filters)

