"""Scoped credentials: a secret derived from the cluster token for one holder (a gateway job,
or an executor that runs one tenant's tasks), proven by the same challenge-response as the
token. Pure functions, no IO.

A credential is the text ``qsrvcred:<id>:<secret>``, held where a token would be (QSRV_TOKEN)::

    id      <kind>/<tenant>/<name>/<expires>   kind: "job" (a gateway job's driver) or
                                               "executor" (an executor of the tenant's tasks);
                                               tenant: whose work it is (no '/' or ':');
                                               name: the job / the executor's worker;
                                               expires: Unix seconds
    secret  hex HMAC-SHA256(cluster token, "qsrv credential\\0" + id)

The holder names its id in the handshake (``HelloAs``) and proves the secret instead of the
token; whoever holds the cluster token derives the secret from the id alone, so nothing is
stored to accept one, and nothing but the id crosses the wire. A derived credential is accepted
only where a server says so, only for the roles the server allows (``DERIVED_ROLES`` at the
scheduler) that its kind allows (``KIND_ROLES``: a job's is a driver, an executor's an
executor; never ``worker`` or ``gateway``), before its expiry and while not revoked (the
scheduler keeps the revocations a gateway sends it).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from dataclasses import dataclass

__all__ = [
    "CREDENTIAL_PREFIX",
    "DERIVED_ROLES",
    "KIND_ROLES",
    "CredentialId",
    "derive_secret",
    "executor_credential",
    "job_credential",
    "object_ticket",
    "parse_credential_id",
    "split_credential",
    "valid_ticket",
]

CREDENTIAL_PREFIX = "qsrvcred:"
DERIVED_ROLES = frozenset({"driver", "executor"})
# The roles each kind of credential may take (where a server accepts derived credentials for
# that role): a job's driver, or an executor of its tenant; each may pull objects from nodes.
KIND_ROLES: dict[str, frozenset[str]] = {
    "job": frozenset({"driver", "store", "transfer"}),
    "executor": frozenset({"executor", "store", "transfer"}),
}
MAX_ID = 200
_PART = re.compile(r"[A-Za-z0-9._-]{1,64}")


@dataclass(frozen=True, slots=True)
class CredentialId:
    kind: str  # "job" or "executor" (a key of KIND_ROLES)
    tenant: str
    name: str
    expires: int

    def text(self) -> str:
        return f"{self.kind}/{self.tenant}/{self.name}/{self.expires}"


def derive_secret(cluster_token: str, credential_id: str) -> str:
    return hmac.new(cluster_token.encode(), b"qsrv credential\x00" + credential_id.encode(),
                    hashlib.sha256).hexdigest()


def job_credential(cluster_token: str, tenant: str, name: str, expires: float) -> str:
    """The credential of one job of ``tenant``, valid until ``expires`` unless revoked."""
    cid = CredentialId("job", tenant, name, int(expires))
    parse_credential_id(cid.text())  # the parts must be well formed
    text = cid.text()
    return f"{CREDENTIAL_PREFIX}{text}:{derive_secret(cluster_token, text)}"


def executor_credential(cluster_token: str, tenant: str, name: str, expires: float) -> str:
    """The credential of an executor that runs only ``tenant``'s tasks (a worker agent makes
    it for the executors it starts for that tenant: they never hold the cluster token)."""
    cid = CredentialId("executor", tenant, name, int(expires))
    parse_credential_id(cid.text())
    text = cid.text()
    return f"{CREDENTIAL_PREFIX}{text}:{derive_secret(cluster_token, text)}"


TICKET_BYTES = 16


def object_ticket(cluster_token: str, object_id: int) -> bytes:
    """The ticket that opens ``object_id`` on a node store to a scoped credential's holder:
    an HMAC of the id under the cluster token. Every node store (each holds the token) makes
    and checks it alone; a tenant, who never holds the token, can only be given it (inside
    the location of a value the scheduler let it read), never derive it from a guessed id."""
    return hmac.new(cluster_token.encode(), b"qsrv object\x00" + object_id.to_bytes(8, "little"),
                    hashlib.sha256).digest()[:TICKET_BYTES]


def valid_ticket(cluster_token: str, object_id: int, ticket: bytes) -> bool:
    return len(ticket) == TICKET_BYTES and hmac.compare_digest(
        ticket, object_ticket(cluster_token, object_id))


def split_credential(token: str) -> tuple[str, str] | None:
    """``(id, secret)`` of a derived credential, None for a plain cluster token."""
    if not token.startswith(CREDENTIAL_PREFIX):
        return None
    cid, sep, secret = token[len(CREDENTIAL_PREFIX):].rpartition(":")
    if not sep or not cid or not secret:
        return None
    return cid, secret


def parse_credential_id(text: str) -> CredentialId:
    """The parts of a credential id; ValueError when it is malformed."""
    if len(text) > MAX_ID:
        raise ValueError("credential id too long")
    parts = text.split("/")
    if len(parts) != 4 or parts[0] not in KIND_ROLES \
            or not all(_PART.fullmatch(p) for p in parts[1:3]) or not parts[3].isdigit():
        raise ValueError(f"malformed credential id {text[:80]!r}")
    return CredentialId(parts[0], parts[1], parts[2], int(parts[3]))


def credential_refusal(text: str, revoked: bool, now: float | None = None) -> str | None:
    """Why the credential ``text`` is not accepted now, None when it is."""
    try:
        cid = parse_credential_id(text)
    except ValueError as exc:
        return str(exc)
    if revoked:
        return f"credential {text} was revoked (its job ended)"
    if cid.expires <= (time.time() if now is None else now):
        return f"credential {text} expired"
    return None
