"""Signed result links: what ``GET /api/v1/jobs/{id}/results_link`` hands out.

pasqal-cloud downloads a job's result from the link without its token (Pasqal Cloud hands
out a pre-signed storage URL). qsrv signs the link itself: the job, its owner and an expiry,
with an HMAC-SHA256 key the door draws when it starts. A link works for ``LINK_TTL_S`` and
for that job of that user only; a gateway restart voids the links it gave (the SDK asks for
a fresh one each time it reads a result). The key never leaves the process.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time

from qsrv.gateway._errors import NotFoundError
from qsrv.gateway._models import User

__all__ = ["LINK_TTL_S", "LinkSigner"]

LINK_TTL_S = 3600.0


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class LinkSigner:
    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or secrets.token_bytes(32)

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())

    def sign(self, user: User, job_id: str, now: float | None = None) -> str:
        """A token naming ``job_id`` of ``user``, valid for ``LINK_TTL_S``."""
        expires = (time.time() if now is None else now) + LINK_TTL_S
        payload = _b64(json.dumps([user.user_id, user.name, user.created_at, job_id,
                                   round(expires)]).encode())
        return f"{payload}.{self._mac(payload)}"

    def open(self, token: str, job_id: str) -> User:
        """The user a valid token for ``job_id`` was given to (NotFoundError otherwise: a
        forged, altered or expired link says no more than a missing job)."""
        payload, _, mac = token.partition(".")
        if not mac or not hmac.compare_digest(mac, self._mac(payload)):
            raise NotFoundError("no such result (a bad or expired link)")
        try:
            user_id, name, created_at, signed_job, expires = json.loads(_unb64(payload))
        except (ValueError, TypeError):
            raise NotFoundError("no such result (a bad or expired link)") from None
        if signed_job != job_id or expires < time.time():
            raise NotFoundError("no such result (a bad or expired link)")
        return User(user_id=int(user_id), name=str(name), created_at=float(created_at))
