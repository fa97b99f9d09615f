"""The gateway's own link to its cluster: job credentials, and their revocation.

A job never gets the cluster token. It gets a credential derived for it
(``qsrv.protocol.job_credential``): accepted by the scheduler only as a driver, only for this
job's tenant (its gateway user), until it expires or is revoked. The gateway holds the token,
so it derives credentials itself; revoking one means telling the scheduler, over a connection
of role ``gateway`` (accepted only with the token itself), that the credential ended.

Invariants:

- Revocations are sent in order and kept until a connection took them; while the scheduler
  cannot be reached they wait (the credential also expires by itself).
- On every new connection (first, or after the scheduler restarted and forgot what it was
  told) the credentials of every job that ended within a credential's lifetime are sent again
  (``recent``): a restarted scheduler never accepts a credential of an ended job.
- The link runs in the gateway's event loop; the blocking connection lives in threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from qsrv.errors import AuthenticationError, QsrvError
from qsrv.protocol import RevokeCredentials, job_credential
from qsrv.transport import SyncConnection

__all__ = ["ClusterLink"]

_log = logging.getLogger("qsrv.gateway")
_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
_BATCH = 1000


class ClusterLink:
    def __init__(self, address: str, token: str, recent: Callable[[], list[str]],
                 *, connect_timeout: float = 10.0) -> None:
        self.address = address
        self._token = token
        self._recent = recent
        self._connect_timeout = connect_timeout
        self._pending: list[str] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._sc: SyncConnection | None = None
        self._closing = False
        self._sending = 0
        # Set whenever what ``flush`` waits for may have changed: a send ended, the connection
        # came or went. ``flush`` clears it before looking again.
        self._progress = asyncio.Event()
        self.connected = asyncio.Event()  # set while a connection is up (tests wait on it)

    def credential(self, tenant: str, name: str, expires: float) -> tuple[str, str]:
        """(the credential to hand to the job, its id to revoke later)."""
        text = job_credential(self._token, tenant, name, expires)
        return text, text.split(":", 2)[1]

    def revoke(self, credential_id: str) -> None:
        self._pending.append(credential_id)
        self._wake.set()
        if self._task is None and not self._closing:
            self._task = asyncio.create_task(self._run(), name="qsrv-cluster-link")

    def start(self) -> None:
        """Connect now (and keep connecting): revocations the scheduler forgot go again."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="qsrv-cluster-link")

    async def flush(self, timeout: float) -> None:
        """Wait (at most ``timeout`` s) until what was revoked has gone out; return at once
        while no connection is up (what waits goes on the next one)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while (self._pending or self._sending) and self.connected.is_set():
                    self._progress.clear()
                    await self._progress.wait()

    async def close(self) -> None:
        self._closing = True
        if self._sc is not None:
            self._sc.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        failures = 0
        while not self._closing:
            try:
                sc = await asyncio.to_thread(
                    SyncConnection, self.address, self._token, "gateway",
                    timeout=self._connect_timeout)
            except AuthenticationError as exc:
                _log.error("the cluster refused the gateway's token (%s): job credentials "
                           "cannot be revoked early; they still expire", exc)
                return
            except (QsrvError, OSError) as exc:
                delay = _BACKOFF_S[min(failures, len(_BACKOFF_S) - 1)]
                failures += 1
                _log.info("cannot reach the cluster at %s (%s); retrying in %g s",
                          self.address, exc, delay)
                await asyncio.sleep(delay)
                continue
            failures = 0
            self._sc = sc
            self.connected.set()
            self._progress.set()
            try:
                await self._serve(sc)
            except (QsrvError, OSError) as exc:
                if not self._closing:
                    _log.info("the gateway's link to the cluster broke (%s); reconnecting", exc)
            finally:
                self.connected.clear()
                self._progress.set()
                self._sc = None
                sc.close()

    async def _serve(self, sc: SyncConnection) -> None:
        """Send what the scheduler must know, then what comes, until the connection ends."""
        again = list(dict.fromkeys([*self._recent(), *self._pending]))
        await self._send(sc, again)
        watcher = asyncio.ensure_future(asyncio.to_thread(_wait_closed, sc))
        waiter: asyncio.Task[bool] | None = None
        try:
            while True:
                if self._pending:
                    batch, self._pending = self._pending[:_BATCH], self._pending[_BATCH:]
                    try:
                        await self._send(sc, batch)
                    except BaseException:
                        self._pending[:0] = batch
                        raise
                    continue
                self._wake.clear()
                waiter = asyncio.ensure_future(self._wake.wait())
                done, _ = await asyncio.wait({waiter, watcher},
                                             return_when=asyncio.FIRST_COMPLETED)
                if watcher in done:
                    watcher.result()  # raises why it closed
                    return
        finally:
            if waiter is not None and not waiter.done():
                waiter.cancel()  # a pending wait left behind is logged when the loop goes
            if not watcher.done():
                sc.close()
                with contextlib.suppress(Exception):
                    await watcher

    async def _send(self, sc: SyncConnection, ids: list[str]) -> None:
        self._sending += 1
        try:
            for start in range(0, len(ids), _BATCH):
                await asyncio.to_thread(sc.send, [RevokeCredentials(ids[start:start + _BATCH])])
        finally:
            self._sending -= 1
            self._progress.set()


def _wait_closed(sc: SyncConnection) -> None:
    """Block until the scheduler closes the connection (it sends the gateway nothing)."""
    while True:
        sc.receive()
