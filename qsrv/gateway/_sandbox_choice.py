"""Which sandbox a job runs in, given the gateway's ``--job-sandbox`` and how many users it has.

Invariants:

- A sandbox named in the config (``bwrap``, ``users``, ``none``) is checked once at start (a
  ConfigError if it cannot run) and used for every job; ``none`` with several users is allowed,
  with a warning.
- With ``auto``, a job runs without a sandbox while the gateway has one user, and in bubblewrap
  once it has more. Bubblewrap is probed once at start; when it cannot run, the gateway refuses
  to start with several users, and refuses jobs (ForbiddenError, saying how to choose) once a
  second user appears.
"""

from __future__ import annotations

import asyncio
import logging

from qsrv.errors import ConfigError
from qsrv.gateway._config import GatewayConfig
from qsrv.gateway._errors import ForbiddenError
from qsrv.gateway._sandbox import CHOICES, HOW_TO_CHOOSE, Sandbox, make_sandbox

__all__ = ["SandboxChoice"]

_log = logging.getLogger("qsrv.gateway")
_NONE = Sandbox()


class SandboxChoice:
    def __init__(self, config: GatewayConfig) -> None:
        if config.job_sandbox not in CHOICES:
            raise ConfigError(f"unknown job sandbox {config.job_sandbox!r}: one of "
                              f"{', '.join(CHOICES)}")
        self.config = config
        self._chosen: Sandbox | None = None  # the one named in the config (None: auto)
        self._bwrap: Sandbox | None = None  # auto's sandbox for several users
        self._bwrap_error = ""  # why auto cannot sandbox, if it cannot

    @property
    def data_dir_mode(self) -> int:
        """The mode of the data directory and of the folders jobs reach."""
        return self._chosen.data_dir_mode if self._chosen is not None else 0o700

    async def check(self, users: int) -> None:
        """Check (off the loop) that the sandbox jobs need can run; ConfigError if not."""
        config = self.config
        if config.job_sandbox != "auto":
            sandbox = self._make(config.job_sandbox)
            await asyncio.to_thread(sandbox.check)
            self._chosen = sandbox
            if not sandbox.isolates and users > 1:
                _log.warning("jobs run without a sandbox (--job-sandbox none) and this gateway "
                             "has %d users: a job can read every user's data", users)
            return
        bwrap = self._make("bwrap")
        try:
            await asyncio.to_thread(bwrap.check)
        except ConfigError as exc:
            self._bwrap_error = str(exc)
        else:
            self._bwrap = bwrap
        if users > 1 and self._bwrap is None:
            raise ConfigError(self._refusal(users))

    def for_job(self, users: int) -> Sandbox:
        """The sandbox a job starting now runs in; ForbiddenError when none may be used."""
        if self._chosen is not None:
            return self._chosen
        if users <= 1:
            return _NONE
        if self._bwrap is None:
            raise ForbiddenError(self._refusal(users))
        return self._bwrap

    def _make(self, choice: str) -> Sandbox:
        config = self.config
        return make_sandbox(choice, data_dir=config.data_dir,
                            cluster_address=config.cluster_address, python=config.job_python)

    def _refusal(self, users: int) -> str:
        return (f"this gateway has {users} users and no sandbox to keep their jobs apart "
                f"(bubblewrap: {self._bwrap_error.split(';')[0]}); " + HOW_TO_CHOOSE)
