"""The classic Quantum Serverless API, on qsrv: change only the import line.

    from qsrv.compat.quantum_serverless import QuantumServerless, distribute_task, get, put

    @distribute_task(target={"cpu": 2, "mem": 8})     # "mem" in GiB, as before
    def expectation(circuit, observable): ...

    serverless = QuantumServerless()                  # the local provider
    with serverless.context():                        # the embedded local cluster (or, inside a
        obs = put(observable)                         # job, the cluster the gateway runs on)
        values = get([expectation(c, obs) for c in circuits])

    job = serverless.run_program(Program("title", "program.py", "./src"), arguments={...})
    job.status(); job.logs(); job.result()

How each piece maps onto qsrv:

- ``distribute_task``, ``put``, ``get`` are qsrv's tasks (``pip=`` requirements are checked,
  not installed: qsrv runs tasks in the workers' environment).
- The local provider's ``context()`` starts (or joins) the cluster with ``qsrv.init()``: the
  embedded local cluster, or ``QSRV_ADDRESS`` inside a job. The cluster stays up until the
  process exits (or ``qsrv.shutdown()``), so later contexts reuse it.
- ``run_program`` uploads the program and runs it as a job of a qsrv gateway: for the local
  provider, the local cluster's own gateway (state under ``$QSRV_DATA_DIR`` or ``~/.qsrv``),
  in either order: started with the cluster (``qsrv.init(gateway=True)``) when it is the
  first call, or for the cluster that ``context()`` or a task started
  (``qsrv.client.local_gateway``); for ``GatewayProvider(host=..., token=...)`` (or
  ``username=..., password=...``, which logs in for a token) that gateway.
- ``QuantumServerless(config)`` and ``QuantumServerless.load_configuration(path)`` read the
  classic configuration ``{"providers": [{"name": ..., "compute_resource": {...}}]}``;
  ``with serverless:`` is ``with serverless.context():``. What qsrv does not read is refused
  when the object is made, naming what it reads.
- qiskit's V1 ``Sampler`` and ``Estimator`` (``from qiskit.primitives import ...`` before
  qiskit 2) are in ``qsrv.compat.qiskit_primitives``.
- Inside a program, ``get_arguments()`` and ``save_result()`` speak the format of the door the
  job came through: pickles for qsrv's client (hence ``run_program``), JSON (Qiskit objects
  encoded as the ``qiskit-serverless`` client does) for the Quantum Serverless client.
- ``QuantumServerlessException`` is ``qsrv.QsrvError``: every error qsrv raises.
"""

from __future__ import annotations

import importlib
import json
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import qsrv
from qsrv.client import RemoteFunction, local_gateway
from qsrv.errors import ConfigError, GatewayUnavailableError, QsrvError, UnauthorizedError
from qsrv.gateway import (
    ARGUMENTS_FORMAT_ENV,
    GATEWAY_ENV,
    GATEWAY_TOKEN_ENV,
    UPSTREAM_ARGUMENTS_PATH,
    UPSTREAM_RESULTS_PATH,
    Client,
    missing_requirements,
)
from qsrv.gateway import Job as GatewayJob
from qsrv.gateway import Program as GatewayProgram
from qsrv.gateway import get_arguments as _qsrv_get_arguments
from qsrv.gateway import save_result as _qsrv_save_result

__all__ = [
    "BaseProvider",
    "ComputeResource",
    "GatewayProvider",
    "Job",
    "Program",
    "Provider",
    "QuantumServerless",
    "QuantumServerlessException",
    "ServerlessProvider",
    "distribute_task",
    "get",
    "get_arguments",
    "put",
    "run_qiskit_remote",
    "save_result",
]

QuantumServerlessException = QsrvError
get = qsrv.get
put = qsrv.put
_HOST_ENV = "ENV_GATEWAY_PROVIDER_HOST"
_TOKEN_ENV = "ENV_GATEWAY_PROVIDER_TOKEN"
_LOGIN_PATH = "/dj-rest-auth/keycloak/login/"
_LOGIN_TIMEOUT_S = 30.0


# -- tasks ------------------------------------------------------------------------------------


def distribute_task(target: dict[str, Any] | Callable[..., Any] | None = None,
                    pip: list[str] | None = None,
                    **options: Any) -> Any:
    """``@distribute_task(target={"cpu": 2, "mem": 8})``: make a qsrv task of a function.

    ``target`` takes qsrv's resource names plus ``mem`` in GiB; ``pip`` lists requirements
    that must already be installed where tasks run (ConfigError names the missing ones).
    Other keyword options go to ``qsrv.distribute_task`` (``max_retries``, ``timeout``, ...).
    Used bare (``@distribute_task``) it makes a task with the default target.
    """
    if callable(target):
        return qsrv.distribute_task(target)
    missing = missing_requirements(list(pip or []))
    if missing:
        raise ConfigError("qsrv installs nothing for tasks; these requirements are not "
                          f"installed: {', '.join(missing)}")

    def decorate(fn: Callable[..., Any]) -> RemoteFunction[Any, Any]:
        return qsrv.distribute_task(target=target, **options)(fn)

    return decorate


run_qiskit_remote = distribute_task  # the API's earliest name for it


# -- inside a program -------------------------------------------------------------------------


def _codec(name: str) -> Any:
    """The Qiskit-aware JSON encoder or decoder the Quantum Serverless client uses, when it is
    installed (loaded on first use: importing it takes seconds)."""
    for module, prefix in (("qiskit_serverless.serializers.program_serializers", "QiskitObjects"),
                           ("qiskit_ibm_runtime.utils.json", "Runtime")):
        try:
            cls: Any = getattr(importlib.import_module(module), prefix + name)
        except (ImportError, AttributeError):
            continue
        return cls
    return None


class _PlainEncoder(json.JSONEncoder):
    """Without qiskit: numpy arrays and scalars become lists and numbers."""

    def default(self, o: Any) -> Any:
        if hasattr(o, "tolist"):
            return o.tolist()
        return super().default(o)


def _from_json_door() -> bool:
    return os.environ.get(ARGUMENTS_FORMAT_ENV) == "json"


def get_arguments() -> dict[str, Any]:
    """The arguments the program was run with; ``{}`` outside a job.

    Through the Quantum Serverless client they are JSON, decoded with its Qiskit decoder
    (circuits, arrays, ...); through qsrv's client they are the pickled values.
    """
    path = os.environ.get(UPSTREAM_ARGUMENTS_PATH)
    if _from_json_door() and path:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        decoder = _codec("Decoder")
        value = json.loads(text, cls=decoder) if decoder is not None else json.loads(text)
    else:
        value = _qsrv_get_arguments()
    if not isinstance(value, dict):
        raise ConfigError(f"the job's arguments are a {type(value).__name__}, not a dict")
    return value


def save_result(result: Any) -> bool:
    """Store ``result`` as the job's result, in the format its client reads: JSON (Qiskit
    objects encoded) for the Quantum Serverless client, a pickle for qsrv's. Outside a job the
    result is serialised, a warning says nothing was stored, and False is returned."""
    path = os.environ.get(UPSTREAM_RESULTS_PATH)
    if not (_from_json_door() and path):
        _qsrv_save_result(result)
        return bool(os.environ.get("QSRV_JOB_RESULT_PATH"))
    encoder = _codec("Encoder") or _PlainEncoder
    text = json.dumps(result if result is not None else {}, cls=encoder)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".result-")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)
    return True


# -- programs and jobs ------------------------------------------------------------------------


@dataclass
class Program(GatewayProgram):
    """``Program(title, entrypoint, working_dir, description=...)``: a program to run as a job.

    ``dependencies`` must already be installed where jobs run (checked when it is run);
    ``version`` and ``tags`` are kept for compatibility (the gateway numbers versions itself).
    """

    dependencies: list[str] | None = None
    version: str | None = None
    tags: list[str] | None = field(default=None)


class Job:
    """A job of a program: ``status()``, ``logs()``, ``result()``, ``stop()``."""

    def __init__(self, job: GatewayJob) -> None:
        self._job = job
        self.job_id = job.job_id

    def __repr__(self) -> str:
        return f"<Job | {self.job_id}>"

    def status(self) -> str:
        """QUEUED, RUNNING, STOPPING, STOPPED, SUCCEEDED or FAILED."""
        return str(self._job.status())

    def logs(self) -> str:
        return self._job.logs()

    def result(self, wait: bool = True, cadence: float = 5, verbose: bool = False) -> Any:
        """What the program saved with ``save_result``, once the job has ended (None when
        ``wait=False`` and it is still running). A failed job raises JobFailedError with its
        traceback, a stopped one JobStoppedError."""
        if not wait and not self._job.status().terminal:
            return None
        return self._job.result()

    def stop(self) -> bool:
        """Stop the job; True if it ended stopped."""
        return str(self._job.stop()) == "STOPPED"

    cancel = stop


class Provider:
    """Where tasks and programs run.

    ``Provider("local")`` (the default of ``QuantumServerless()``) is this machine: tasks on the
    embedded local cluster, programs on its gateway. With ``host`` and ``token`` it is a qsrv
    gateway; with a ``compute_resource`` that has a ``host``, tasks join that cluster.
    """

    def __init__(self, name: str = "local", host: str | None = None, token: str | None = None,
                 compute_resource: ComputeResource | None = None,
                 available_compute_resources: list[ComputeResource] | None = None) -> None:
        self.name = name
        self.host = host
        self.token = token
        self.compute_resource = compute_resource
        self.available_compute_resources = available_compute_resources or (
            [compute_resource] if compute_resource is not None else [])

    def __repr__(self) -> str:
        return f"<Provider: {self.name}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Provider) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    # tasks

    def context(self, **kwargs: Any) -> _Context:
        """Connect this process to the provider's cluster (if not already connected); usable as
        ``with provider.context(): ...``. ``kwargs`` go to ``qsrv.init``."""
        resource = self.compute_resource
        if resource is not None and resource.host:
            kwargs.setdefault("address", f"{resource.host}:{resource.port_interactive}")
        elif resource is not None and resource.resources:
            kwargs.setdefault("resources", dict(resource.resources))
        if not qsrv.is_initialized():
            qsrv.init(**kwargs)
        return _Context(self)

    # programs

    def _client(self) -> Client:
        if self.host:
            if not self.token:
                raise ConfigError(f"provider {self.name!r} has a host but no token")
            return Client(self.host, self.token)
        # The local cluster's gateway, in either order: started with the cluster when this is
        # the first call, else started now for the cluster that context() or a task started.
        try:
            gateway = local_gateway()
        except ConfigError as exc:  # this process joined a cluster (QSRV_ADDRESS)
            if os.environ.get(GATEWAY_ENV) and os.environ.get(GATEWAY_TOKEN_ENV):
                return Client()
            raise ConfigError(f"provider {self.name!r} cannot run programs here: {exc}; in "
                              "this API: GatewayProvider(host=URL, token=TOKEN)") from None
        return Client(gateway["gateway"], gateway["gateway_token"])

    def upload(self, program: Program) -> str:
        """Upload the program (a new version of its title); return its title."""
        return self._client().upload(_checked(program)).title

    def run_program(self, program: Program | str,
                    arguments: dict[str, Any] | None = None) -> Job:
        """Upload (given a ``Program``) and run it with ``arguments`` as a job."""
        target: GatewayProgram | str = _checked(program) if isinstance(program, Program) \
            else program
        return Job(self._client().run(target, arguments or {}))

    run = run_program

    def get_job_by_id(self, job_id: str) -> Job:
        return Job(self._client().job(job_id))

    def get_jobs(self, **kwargs: Any) -> list[Job]:
        """Your jobs, newest first (``limit``, ``offset``, ``status`` as in qsrv's client)."""
        return [Job(job) for job in self._client().jobs(**kwargs)]

    def get_programs(self) -> list[str]:
        return [p.title for p in self._client().programs()]


BaseProvider = Provider


@dataclass
class ComputeResource:
    """A cluster: ``host``/``port_interactive`` is a qsrv scheduler to join (token from
    ``QSRV_TOKEN``); ``resources`` sizes the local cluster when there is no host."""

    name: str
    host: str | None = None
    port_interactive: int = 7420
    port_job_server: int = 7421
    resources: dict[str, float] | None = None


class GatewayProvider(Provider):
    """A qsrv gateway: ``GatewayProvider(host=URL, token=TOKEN)`` or
    ``GatewayProvider(host=URL, username=NAME, password=PASSWORD)`` (logs in for a token).

    ``host`` and ``token`` default to ``$ENV_GATEWAY_PROVIDER_HOST`` and
    ``$ENV_GATEWAY_PROVIDER_TOKEN``. The credentials are checked at once.
    """

    def __init__(self, name: str | None = None, host: str | None = None,
                 version: str | None = None, username: str | None = None,
                 password: str | None = None, token: str | None = None,
                 verbose: bool = False) -> None:
        host = host or os.environ.get(_HOST_ENV)
        token = token or os.environ.get(_TOKEN_ENV)
        if not host:
            raise ConfigError(f"GatewayProvider needs a host (or ${_HOST_ENV})")
        if token is None:
            if username is None or password is None:
                raise ConfigError("GatewayProvider needs a token, or a username and password")
            token = _login(host, username, password)
        super().__init__(name or "gateway-provider", host=host, token=token)
        self.version = version
        self.verbose = verbose
        self._client().programs()  # UnauthorizedError now rather than at the first run

    def context(self, **kwargs: Any) -> _Context:
        raise ConfigError(
            "a GatewayProvider runs programs (run_program); tasks run on the cluster this "
            "process is connected to: use the local provider's context(), which inside a "
            "program joins the gateway's cluster"
        )


ServerlessProvider = GatewayProvider


class _Context:
    """What ``context()`` returns: the connection is made already; ``with`` just scopes it (the
    cluster outlives the block, so later blocks reuse it)."""

    def __init__(self, provider: Provider) -> None:
        self.provider = provider

    def __enter__(self) -> _Context:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        return None


class QuantumServerless:
    """Chooses the provider that ``context()`` and ``run_program()`` use (the last one given,
    or ``set_provider``)."""

    def __init__(self, providers: Provider | list[Provider] | dict[str, Any] | None = None
                 ) -> None:
        if providers is None:
            providers = [Provider("local")]
        elif isinstance(providers, Provider):
            providers = [providers]
        elif isinstance(providers, dict):
            providers = _providers_from_config(providers)
        elif not isinstance(providers, list | tuple):
            raise ConfigError(_ACCEPTED + f"; got a {type(providers).__name__}")
        for provider in providers:
            if not isinstance(provider, Provider):
                raise ConfigError(_ACCEPTED + f"; got {provider!r} (a {type(provider).__name__})"
                                  " in the list")
        if not providers:
            raise ConfigError("QuantumServerless needs at least one provider")
        self._providers: list[Provider] = list(providers)
        self._selected: Provider = self._providers[-1]

    @classmethod
    def load_configuration(cls, path: str | os.PathLike[str]) -> QuantumServerless:
        """``QuantumServerless`` from a JSON file holding a configuration
        ``{"providers": [...]}`` (see ``QuantumServerless(config)``)."""
        with open(path, encoding="utf-8") as fh:
            try:
                config = json.load(fh)
            except ValueError as exc:
                raise ConfigError(f"{path}: not a JSON configuration: {exc}") from None
        if not isinstance(config, dict):
            raise ConfigError(f"{path}: a configuration is a JSON object {{\"providers\": "
                              f"[...]}}, not a {type(config).__name__}")
        return cls(config)

    def __enter__(self) -> QuantumServerless:
        """``with serverless:``, the earliest form of ``with serverless.context():``."""
        self.context()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        return None

    def __repr__(self) -> str:
        names = ", ".join(p.name for p in self._providers)
        return f"<QuantumServerless | providers [{names}]>"

    def _find(self, provider: str | int | Provider) -> Provider:
        if isinstance(provider, Provider):
            return provider
        if isinstance(provider, int):
            if not 0 <= provider < len(self._providers):
                raise ConfigError(f"no provider at index {provider}: there are "
                                  f"{len(self._providers)}")
            return self._providers[provider]
        by_name = {p.name: p for p in self._providers}
        if provider not in by_name:
            raise ConfigError(f"provider {provider!r} is not one of {sorted(by_name)}")
        return by_name[provider]

    def providers(self) -> list[Provider]:
        return list(self._providers)

    def add_provider(self, provider: Provider) -> QuantumServerless:
        if not isinstance(provider, Provider):
            raise ConfigError(f"add_provider takes a Provider, got a {type(provider).__name__}")
        self._providers.append(provider)
        return self

    def set_provider(self, provider: str | int | Provider) -> QuantumServerless:
        self._selected = self._find(provider)
        return self

    def context(self, provider: str | Provider | None = None, **kwargs: Any) -> _Context:
        """Connect to the cluster of ``provider`` (a name or a Provider; default: the selected
        one) for tasks; usable as ``with serverless.context(): ...``."""
        return (self._selected if provider is None else self._find(provider)).context(**kwargs)

    def provider(self, provider: str | Provider, **kwargs: Any) -> _Context:
        return self.context(provider, **kwargs)

    def run_program(self, program: Program | str,
                    arguments: dict[str, Any] | None = None) -> Job:
        return self._selected.run_program(program, arguments)

    run = run_program

    def upload(self, program: Program) -> str:
        return self._selected.upload(program)

    def get_job_by_id(self, job_id: str) -> Job:
        return self._selected.get_job_by_id(job_id)

    def get_jobs(self, **kwargs: Any) -> list[Job]:
        return self._selected.get_jobs(**kwargs)

    def get_programs(self) -> list[str]:
        return self._selected.get_programs()


_ACCEPTED = ("QuantumServerless takes a Provider (Provider('local'), GatewayProvider(host=..., "
             "token=...)), a list of them, or a configuration {'providers': [{'name': ..., "
             "'compute_resource': {...}}]}")
_PROVIDER_KEYS = ("name", "host", "token", "compute_resource", "available_compute_resources")
_RESOURCE_KEYS = ("name", "host", "port_interactive", "port_job_server", "resources")


def _providers_from_config(config: dict[str, Any]) -> list[Provider]:
    """The providers of a classic configuration, after the local one (which a provider named
    ``local`` replaces), as the classic API loaded them:

        {"providers": [{"name": "cluster",
                        "compute_resource": {"name": "c", "host": "10.0.0.5",
                                             "port_interactive": 7420}},
                       {"name": "gateway", "host": "http://HOST:7421", "token": "..."}]}

    ``compute_resource`` with a ``host``: ``context()`` joins the qsrv scheduler at
    ``host:port_interactive`` (token from ``QSRV_TOKEN``); with ``resources``: the local
    cluster's. ``host`` and ``token`` of a provider: a qsrv gateway that runs its programs.
    Anything else is refused, naming what is read.
    """
    _only("the configuration", config, ("providers",))
    entries = config.get("providers", [])
    if not isinstance(entries, list):
        raise ConfigError("the configuration's 'providers' is a list of providers, not a "
                          f"{type(entries).__name__}")
    providers = [Provider("local")]
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ConfigError(f"a configured provider is an object with a 'name', got {entry!r}")
        _only(f"provider {entry['name']!r}", entry, _PROVIDER_KEYS)
        resources = [_compute_resource(entry["name"], r)
                     for r in entry.get("available_compute_resources") or []]
        resource = entry.get("compute_resource")
        provider = Provider(entry["name"], host=entry.get("host"), token=entry.get("token"),
                            compute_resource=None if resource is None
                            else _compute_resource(entry["name"], resource),
                            available_compute_resources=resources or None)
        providers = [p for p in providers if p.name != provider.name] + [provider]
    return providers


def _compute_resource(provider: str, value: Any) -> ComputeResource:
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        raise ConfigError(f"provider {provider!r}: a compute resource is an object with a "
                          f"'name', got {value!r}")
    _only(f"provider {provider!r}'s compute resource", value, _RESOURCE_KEYS)
    return ComputeResource(**value)


def _only(what: str, value: dict[str, Any], known: tuple[str, ...]) -> None:
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise ConfigError(f"{what}: qsrv reads {', '.join(known)}; not {', '.join(unknown)}")


def _checked(program: Program) -> Program:
    missing = missing_requirements(list(program.dependencies or []))
    if missing:
        raise ConfigError("qsrv installs no dependencies; these are not installed where jobs "
                          f"run: {', '.join(missing)}")
    if program.description is None:  # the classic API allowed None
        program.description = ""
    return program


def _login(host: str, username: str, password: str) -> str:
    """A token for ``username`` from the gateway's password login."""
    url = host.rstrip("/")
    if not url.startswith(("http://", "https://")):
        url = "http://" + url
    body = urllib.parse.urlencode({"username": username, "password": password}).encode()
    request = urllib.request.Request(url + _LOGIN_PATH, data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=_LOGIN_TIMEOUT_S) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            raise UnauthorizedError("login refused: unknown user name or wrong password") \
                from None
        raise GatewayUnavailableError(f"login at {url} failed: HTTP {exc.code}") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise GatewayUnavailableError(f"cannot log in at {url}: {exc}") from exc
    token = answer.get("access") if isinstance(answer, dict) else None
    if not isinstance(token, str) or not token:
        raise GatewayUnavailableError(f"{url} answered the login without a token")
    return token
