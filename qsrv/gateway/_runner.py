"""Job processes: start one per job in its sandbox, capture its output, stop its whole tree.

A job is ``python -u ENTRYPOINT`` started in ``<root>/<job_id>/work`` (its unpacked working
directory) through its ``Sandbox`` (``_sandbox``: bubblewrap, an OS account, or none), in a
new session, hence a new process group, whose leader (bubblewrap, ``_job_init`` or the job's
own process) gives the group its id. Invariants:

- Everything of a job is private: its directory is 0700, its files 0600 (0700 if executable),
  owned by the account the sandbox runs it as; ``<job_id>/tmp`` is its scratch area.
- Files the job wrote (its result) are read with O_NOFOLLOW, only when they are regular files
  within the size limit: a job cannot make the gateway read, or block on, anything else.
- The job's archive and arguments are read from the database in a thread (``load_inputs``),
  unpacked there too: large blobs never cross the event loop.

- Nothing of a job outlives it, as far as its sandbox can see to it. With ``bwrap`` the job
  runs in a PID namespace of its own: when its first process exits, the kernel kills every
  process of the namespace, wherever it went (``setsid``, a double fork). With ``none`` and
  ``users`` on Linux the job's session is led by ``_job_init``, a child subreaper that starts
  the job (as its account) and, once the job's process exits, kills and reaps every process
  the job left (``_job_init`` says what it cannot find). Elsewhere (not Linux) only the job's
  process group is killed: a process that called ``setsid`` survives its job.
- Stopping a job signals its process group (SIGTERM, passed on by ``_job_init`` to what left
  the group), then after ``stop_grace_s`` kills it all (through ``_job_init``: SIGUSR1; else
  SIGKILL to the group); ``run`` returns only once no live process is left in the group. The
  job ends when its first process exits; its output is read for at most
  ``_GROUP_EXIT_TIMEOUT_S`` more (only a process outside the job, handed the job's pipes,
  can hold them open that long; process groups: ``_process_groups``). Killing the driver
  process is what cancels the job's cluster tasks (the scheduler cancels the tasks of a driver
  whose connection closes).
- Output (stdout and stderr, interleaved as read) goes into a ``LogBuffer`` capped at
  ``max_log_bytes``: it keeps the head and the tail, and says how much it dropped between them.
  The last ``_STDERR_TAIL`` bytes of stderr are kept apart: they are the error of a failed job.
- The runner holds no database: it returns a ``JobOutcome`` and the lifecycle (``_jobs``)
  stores it.
- The cluster token never reaches a job: it gets ``QSRV_TOKEN`` only when the service derived
  a credential for it (``JobSpec.cluster_token``), valid for this job as a driver only.
- Every job gets both runtimes' environment: qsrv's (``QSRV_JOB_*``: pickled arguments and
  result) and Quantum Serverless's (``ARGUMENTS_PATH``/``RESULTS_PATH`` JSON files,
  ``DATA_PATH``, and ``ENV_JOB_GATEWAY_HOST``/``_TOKEN``/``ENV_JOB_ID_GATEWAY`` for calling
  back), so programs written for either run unchanged. JSON arguments (``arguments_format ==
  "json"``) are also handed to qsrv's ``get_arguments`` as the pickle of their plain JSON value;
  pickled arguments cannot be turned into JSON without unpickling them, so such jobs have no
  ``ARGUMENTS_PATH``. Whichever result file the job wrote last is its result, with its format.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pickle
import shutil
import signal
import stat
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

from qsrv.gateway._archive import ArchiveLimits, unpack_archive
from qsrv.gateway._process_groups import kill_orphans, killpg, wait_group_gone
from qsrv.gateway._runtime import (
    ARGUMENTS_FORMAT_ENV,
    ARGUMENTS_PATH_ENV,
    JOB_ID_ENV,
    RESULT_PATH_ENV,
    UPSTREAM_ARGUMENTS_PATH,
    UPSTREAM_DATA_PATH,
    UPSTREAM_GATEWAY_HOST,
    UPSTREAM_GATEWAY_TOKEN,
    UPSTREAM_JOB_ID,
    UPSTREAM_RESULTS_PATH,
)
from qsrv.gateway._sandbox import Launch, Sandbox

__all__ = ["JobOutcome", "JobRunner", "JobSpec", "LogBuffer", "RunnerConfig", "kill_orphans"]

_UPSTREAM_ENV = frozenset({
    UPSTREAM_ARGUMENTS_PATH, UPSTREAM_RESULTS_PATH, UPSTREAM_DATA_PATH, UPSTREAM_GATEWAY_HOST,
    UPSTREAM_GATEWAY_TOKEN, UPSTREAM_JOB_ID, "ENV_JOB_GATEWAY_INSTANCE", "ENV_JOB_ARGUMENTS",
})

_STDERR_TAIL = 16 << 10
_READ_CHUNK = 1 << 16
_GROUP_EXIT_TIMEOUT_S = 5.0
_JOB_INIT = Path(__file__).resolve().with_name("_job_init.py")


_NO_SANDBOX = Sandbox()


@dataclass(frozen=True, slots=True)
class RunnerConfig:
    root: Path
    cluster_address: str | None = None
    max_log_bytes: int = 1 << 20
    max_result_bytes: int = 64 << 20
    stop_grace_s: float = 5.0
    keep_sandboxes: bool = False
    archive_limits: ArchiveLimits = field(default_factory=ArchiveLimits)
    python: str = sys.executable  # the interpreter jobs run with


@dataclass(frozen=True, slots=True)
class JobSpec:
    job_id: str
    entrypoint: str
    archive: bytes  # empty when ``load_inputs`` provides it
    env_vars: dict[str, str]
    arguments: bytes
    arguments_format: str = "pickle"  # or "json": UTF-8 JSON text
    token: str = ""  # the job's own gateway token, for calling back
    data_path: Path | None = None  # the user's files of this program
    user_name: str = ""
    sandbox: Sandbox = _NO_SANDBOX
    cluster_token: str | None = None  # the job's own cluster credential (never the token)
    # (archive, arguments), read in a thread when the job starts (large blobs off the loop)
    load_inputs: Callable[[], tuple[bytes, bytes]] | None = None


@dataclass(frozen=True, slots=True)
class JobOutcome:
    """How a job ended. ``exit_code`` is negative when a signal killed the process."""

    kind: Literal["succeeded", "failed", "stopped"]
    exit_code: int | None
    error: str | None
    result: bytes | None
    logs: bytes
    result_format: str | None = None  # "pickle" or "json" when there is a result


class LogBuffer:
    """Captured output with a size cap: the first half and the last half of the cap are kept."""

    def __init__(self, cap: int) -> None:
        self._half = max(cap // 2, 1)
        self._head = bytearray()
        self._tail = bytearray()
        self._dropped = 0
        self.generation = 0  # bumped on every write; lets a flusher skip unchanged buffers

    def write(self, data: bytes) -> None:
        self.generation += 1
        room = self._half - len(self._head)
        if room > 0:
            self._head += data[:room]
            data = data[room:]
        if not data:
            return
        self._tail += data
        excess = len(self._tail) - self._half
        if excess > 0:
            del self._tail[:excess]
            self._dropped += excess

    def getvalue(self) -> bytes:
        if not self._dropped:
            return bytes(self._head + self._tail)
        marker = f"\n[... qsrv: {self._dropped} bytes of output dropped ...]\n".encode()
        return bytes(self._head) + marker + bytes(self._tail)


class _Live:
    """A job between ``run`` starting and returning. Mutated only by JobRunner."""

    def __init__(self, cap: int) -> None:
        self.logs = LogBuffer(cap)
        self.stderr_tail = bytearray()
        self.process: asyncio.subprocess.Process | None = None
        self.stop_requested = False
        self.kill_timer: asyncio.TimerHandle | None = None
        self.reaper = False  # whether the process is _job_init, which kills what the job left


class JobRunner:
    """Runs job processes. One instance per gateway; every method runs on its event loop."""

    def __init__(self, config: RunnerConfig) -> None:
        self.config = config
        self._live: dict[str, _Live] = {}
        # Where a job reaches this gateway (ENV_JOB_GATEWAY_HOST); set by the service once known.
        self.gateway_url: str | None = None

    def live_logs(self, job_id: str) -> LogBuffer | None:
        """The job's output so far, while ``run`` is supervising it."""
        live = self._live.get(job_id)
        return live.logs if live else None

    def running(self) -> list[str]:
        return list(self._live)

    def run(self, spec: JobSpec,
            on_started: Callable[[int], None]) -> Coroutine[Any, Any, JobOutcome]:
        """The coroutine that runs the job to its end; await it at once (in a task).

        The job is registered before this returns, so ``stop`` reaches it from this moment on,
        even before the coroutine first runs. ``on_started(pid)`` is called once its process
        exists.
        """
        live = self._live[spec.job_id] = _Live(self.config.max_log_bytes)
        return self._run_to_end(spec, live, on_started)

    async def _run_to_end(self, spec: JobSpec, live: _Live,
                          on_started: Callable[[int], None]) -> JobOutcome:
        job_dir = self.config.root / spec.job_id
        try:
            return await self._run(spec, live, job_dir, on_started)
        finally:
            del self._live[spec.job_id]
            if live.kill_timer is not None:
                live.kill_timer.cancel()
            if live.process is not None and live.process.returncode is None:
                _kill_job(live)  # cancelled: leave no orphan
            if not self.config.keep_sandboxes:
                await asyncio.to_thread(shutil.rmtree, job_dir, True)

    async def _run(self, spec: JobSpec, live: _Live, job_dir: Path,
                   on_started: Callable[[int], None]) -> JobOutcome:
        work = job_dir / "work"
        arguments_path = job_dir / "arguments.pkl"
        result_path = job_dir / "result.pkl"
        try:
            await asyncio.to_thread(self._prepare, spec, job_dir, work, arguments_path)
            env = self._environment(spec, arguments_path, result_path)
            launch = spec.sandbox.launch(self.config.python, spec.entrypoint, job_dir,
                                         spec.data_path, env, spec.user_name)
        except Exception as exc:  # any failure to build the sandbox fails this job only
            return JobOutcome("failed", None, f"could not prepare the job's sandbox: {exc}",
                              None, b"")
        if live.stop_requested:
            return JobOutcome("stopped", None, None, None, b"")
        # The job's output goes through pipes of our own, not asyncio's: asyncio's wait() also
        # waits for its pipes to close, which a process the job left behind can delay for ever.
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        init = _init_spec(launch) if _reaps_leftovers(spec.sandbox) else None
        try:
            if init is None:
                proc = await asyncio.create_subprocess_exec(
                    *launch.argv, cwd=launch.cwd, env=launch.env, user=launch.user,
                    group=launch.group, extra_groups=launch.extra_groups, umask=0o077,
                    stdin=asyncio.subprocess.DEVNULL, stdout=out_w, stderr=err_w,
                    start_new_session=True,
                )
            else:  # _job_init starts the job, as its user, and kills what the job leaves
                proc = await asyncio.create_subprocess_exec(
                    self.config.python, "-I", "-S", str(_JOB_INIT), cwd=launch.cwd,
                    env={}, umask=0o077, stdin=asyncio.subprocess.PIPE, stdout=out_w,
                    stderr=err_w, start_new_session=True,
                )
        except OSError as exc:
            os.close(out_r)
            os.close(err_r)
            hint = ""
            if launch.user is not None:
                hint = (f" (the job runs as the OS account {spec.user_name!r}: the interpreter "
                        f"{self.config.python} must be readable by it; see --job-python)")
            return JobOutcome("failed", None, f"could not start the job: {exc}{hint}", None,
                              b"")
        finally:
            os.close(out_w)
            os.close(err_w)
        live.reaper = init is not None
        if init is not None:
            await _hand_over(proc, init)
        live.process = proc
        on_started(proc.pid)
        if live.stop_requested:  # stop() came while the process was being created
            self._signal_stop(live)
        out, err = (open(fd, "rb", buffering=0) for fd in (out_r, err_r))  # noqa: SIM115
        pumps = asyncio.gather(_pump(out, live.logs, None),
                               _pump(err, live.logs, live.stderr_tail))
        try:
            returncode = await proc.wait()  # the job's process exited (its output may not end)
            # A stop asked after the job exited did not end it: its own outcome stands.
            stopped = live.stop_requested
            killpg(proc.pid, signal.SIGKILL)  # whatever the leader left behind
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(pumps), _GROUP_EXIT_TIMEOUT_S)
            await wait_group_gone(proc.pid, _GROUP_EXIT_TIMEOUT_S)
        finally:
            pumps.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pumps
            out.close()  # (closed already, unless a pump was cancelled before it began)
            err.close()
        return self._outcome(live, returncode, stopped, result_path, job_dir / "results.json")

    def _prepare(self, spec: JobSpec, job_dir: Path, work: Path, arguments_path: Path) -> None:
        """Build the job's directory (blocking: run it in a thread)."""
        owner = spec.sandbox.owner(spec.user_name)
        if job_dir.exists():  # left from a gateway that died mid-job
            shutil.rmtree(job_dir)
        job_dir.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        job_dir.mkdir(mode=0o700)
        os.chmod(job_dir, 0o700)
        archive, arguments = spec.archive, spec.arguments
        if spec.load_inputs is not None:
            archive, arguments = spec.load_inputs()
        unpack_archive(archive, work, self.config.archive_limits, owner)
        _private_dir(job_dir / "tmp", owner)
        if spec.arguments_format == "json":
            _private_file(job_dir / "arguments.json", arguments, owner)
            # Plain JSON values only (the service checked it parses): nothing is unpickled.
            plain = json.loads(arguments)
            _private_file(arguments_path, pickle.dumps(plain, protocol=5), owner)
        else:
            _private_file(arguments_path, arguments, owner)
        if spec.data_path is not None:
            # The user's folder stays the gateway's (a job cannot swap its title folder for a
            # link); the title folder, and what the gateway saved in it, are the job's.
            _private_dir(spec.data_path.parent, None, parents=True,
                         mode=spec.sandbox.data_dir_mode)
            _private_dir(spec.data_path, owner)
            if owner is not None:
                _give_entries(spec.data_path, owner)
        if owner is not None:
            os.chown(job_dir, *owner)

    def _environment(self, spec: JobSpec, arguments_path: Path,
                     result_path: Path) -> dict[str, str]:
        # The gateway's own QSRV_* settings (its token above all) do not leak into jobs, nor
        # job variables of a job the gateway itself might run in; in a sandbox, nothing of the
        # gateway's environment but locale and interpreter settings (see _sandbox).
        job_dir = result_path.parent
        view = spec.sandbox.view(job_dir, spec.data_path)
        env = {k: v for k, v in spec.sandbox.env(spec.user_name, view).items()
               if k not in _UPSTREAM_ENV}
        env.update(spec.env_vars)
        if self.config.cluster_address:
            env["QSRV_ADDRESS"] = self.config.cluster_address
        if spec.cluster_token:
            env["QSRV_TOKEN"] = spec.cluster_token
        inside = view.job_dir
        env[JOB_ID_ENV] = spec.job_id
        env[ARGUMENTS_PATH_ENV] = f"{inside}/{arguments_path.name}"
        env[RESULT_PATH_ENV] = f"{inside}/{result_path.name}"
        env[ARGUMENTS_FORMAT_ENV] = spec.arguments_format
        if spec.arguments_format == "json":
            env[UPSTREAM_ARGUMENTS_PATH] = f"{inside}/arguments.json"
        env[UPSTREAM_RESULTS_PATH] = f"{inside}/results.json"
        if view.data is not None:
            env[UPSTREAM_DATA_PATH] = view.data
        env[UPSTREAM_JOB_ID] = spec.job_id
        if spec.token:
            env[UPSTREAM_GATEWAY_TOKEN] = spec.token
        if self.gateway_url:
            env[UPSTREAM_GATEWAY_HOST] = self.gateway_url
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _outcome(self, live: _Live, returncode: int, stopped: bool, result_path: Path,
                 json_result_path: Path) -> JobOutcome:
        logs = live.logs.getvalue()
        if stopped:
            return JobOutcome("stopped", returncode, None, None, logs)
        if returncode != 0:
            return JobOutcome("failed", returncode, _failure_text(live.stderr_tail, returncode),
                              None, logs)
        written = []
        for path, fmt in ((result_path, "pickle"), (json_result_path, "json")):
            with contextlib.suppress(FileNotFoundError):
                st = path.lstat()
                written.append((st.st_mtime_ns, fmt, path, st.st_size))
        if not written:
            return JobOutcome("succeeded", 0, None, None, logs)
        _, fmt, path, size = max(written)  # the one saved last
        if size > self.config.max_result_bytes:
            return JobOutcome(
                "failed", 0,
                f"the saved result is {size} bytes, over the limit of "
                f"{self.config.max_result_bytes}", None, logs,
            )
        try:
            data = read_regular_file(path, self.config.max_result_bytes)
        except (OSError, ValueError) as exc:
            return JobOutcome("failed", 0, f"the saved result cannot be read: {exc}", None,
                              logs)
        return JobOutcome("succeeded", 0, None, data, logs, fmt)

    def stop(self, job_id: str) -> bool:
        """Begin stopping a job ``run`` supervises; False when it supervises no such job.

        ``run`` then returns a "stopped" outcome once the process tree is gone; or, when the
        job's process had exited already, the outcome it ended with.
        """
        live = self._live.get(job_id)
        if live is None:
            return False
        if not live.stop_requested:
            live.stop_requested = True
            if live.process is not None and live.process.returncode is None:
                self._signal_stop(live)  # (never to the group of a process reaped already)
        return True

    def _signal_stop(self, live: _Live) -> None:
        assert live.process is not None
        killpg(live.process.pid, signal.SIGTERM)
        loop = asyncio.get_running_loop()
        live.kill_timer = loop.call_later(self.config.stop_grace_s, _kill_job, live)

    def stop_all(self) -> None:
        """Begin stopping every job (the gateway is shutting down)."""
        for job_id in list(self._live):
            self.stop(job_id)


def _reaps_leftovers(sandbox: Sandbox) -> bool:
    """Whether the job needs _job_init to kill what it leaves: bubblewrap's PID namespace
    already takes every process of the job with its first one; elsewhere, on Linux, _job_init
    does (a child subreaper). Without one, only the job's process group is killed."""
    return sandbox.name != "bwrap" and sys.platform.startswith("linux")


def _init_spec(launch: Launch) -> bytes:
    """What _job_init reads on its standard input: the job's command, environment, account."""
    return json.dumps({"argv": launch.argv, "env": launch.env, "uid": launch.user,
                       "gid": launch.group, "groups": launch.extra_groups}).encode()


async def _hand_over(proc: asyncio.subprocess.Process, init: bytes) -> None:
    assert proc.stdin is not None
    with contextlib.suppress(ConnectionError):  # it died at once: its exit says why
        proc.stdin.write(init)
        await proc.stdin.drain()
    proc.stdin.close()


def _kill_job(live: _Live) -> None:
    """Kill the job's processes now: through _job_init, which kills every descendant and then
    exits, or by the process group."""
    if live.process is None or live.process.returncode is not None:
        return
    if live.reaper:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(live.process.pid, signal.SIGUSR1)
    else:
        killpg(live.process.pid, signal.SIGKILL)


async def _pump(pipe: BinaryIO, logs: LogBuffer, tail: bytearray | None) -> None:
    """Copy what comes out of ``pipe`` into ``logs`` until its end (or cancelled); the pipe is
    closed either way."""
    stream = asyncio.StreamReader(_READ_CHUNK)
    transport, _ = await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(stream), pipe)
    try:
        while chunk := await stream.read(_READ_CHUNK):
            logs.write(chunk)
            if tail is not None:
                tail += chunk
                if len(tail) > _STDERR_TAIL:
                    del tail[:len(tail) - _STDERR_TAIL]
    finally:
        transport.close()


def _failure_text(stderr_tail: bytes | bytearray, returncode: int) -> str:
    text = bytes(stderr_tail).decode("utf-8", "replace")
    start = text.find("Traceback (most recent call last)")
    if start > 0:
        text = text[start:]
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = str(-returncode)
        reason = f"the job's process was killed by signal {name}"
    else:
        reason = f"the job's process exited with code {returncode}"
    return f"{text.rstrip()}\n{reason}" if text.strip() else reason


def read_regular_file(path: Path, limit: int) -> bytes:
    """The content of ``path`` if it is a regular file of at most ``limit`` bytes (never
    following a link, never blocking on a FIFO); ValueError otherwise."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{path.name} is not a regular file")
        if st.st_size > limit:
            raise ValueError(f"{path.name} is over {limit} bytes")
        chunks = []
        left = limit + 1
        while left > 0 and (chunk := os.read(fd, min(left, 1 << 20))):
            chunks.append(chunk)
            left -= len(chunk)
        if left <= 0:
            raise ValueError(f"{path.name} is over {limit} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)


def _private_dir(path: Path, owner: tuple[int, int] | None, *, parents: bool = False,
                 mode: int = 0o700) -> None:
    path.mkdir(mode=mode, parents=parents, exist_ok=True)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise ValueError(f"{path.name} is not a directory")
    if owner is not None and (st.st_uid, st.st_gid) != owner:
        os.chown(path, *owner, follow_symlinks=False)
    if stat.S_IMODE(st.st_mode) != mode:
        os.chmod(path, mode)


def _private_file(path: Path, data: bytes, owner: tuple[int, int] | None) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        if owner is not None:
            os.fchown(fd, *owner)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def _give_entries(folder: Path, owner: tuple[int, int]) -> None:
    """Give the entries of a flat folder to ``owner`` (links themselves, never their targets)."""
    with os.scandir(folder) as entries:
        for entry in entries:
            with contextlib.suppress(FileNotFoundError):
                st = entry.stat(follow_symlinks=False)
                if (st.st_uid, st.st_gid) != owner:
                    os.chown(entry.path, *owner, follow_symlinks=False)
