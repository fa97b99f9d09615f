"""Password login, for clients that sign in with a user name and password (the classic
Quantum Serverless ``GatewayProvider(username=..., password=...)``).

A password is stored only as a salted scrypt hash (``scrypt$n$r$p$salt$hash``). Unlike tokens
(256 random bits, hashed with SHA-256: see ``_users``) a password may be guessable, so its hash
is deliberately slow, and checked off the event loop. Logging in (``GatewayService.login``)
issues an ordinary token; every other request uses tokens.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time

from qsrv.errors import ConfigError
from qsrv.gateway._store import Store
from qsrv.gateway._users import db_path

__all__ = ["MAX_LENGTH", "dummy_hash", "hash_password", "set_password", "verify_password"]

_N, _R, _P = 1 << 14, 8, 1
_MIN_LENGTH = 8
MAX_LENGTH = 1024
_DUMMY = ""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = _unb64(digest)
        actual = hashlib.scrypt(password.encode(), salt=_unb64(salt),
                                n=int(n), r=int(r), p=int(p), dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def set_password(data_dir: str | os.PathLike[str], name: str, password: str) -> None:
    """Set (or replace) the password of an existing user."""
    if not _MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise ConfigError(f"a password has {_MIN_LENGTH} to {MAX_LENGTH} characters")
    store = Store.open(db_path(data_dir))
    try:
        user = store.user_by_name(name)
        if user is None:
            raise ConfigError(f"no user {name!r}")
        store.set_password_hash(user.user_id, hash_password(password), time.time())
    finally:
        store.close()


def dummy_hash() -> str:
    """A hash to check when the user or their password does not exist, so that a login for an
    unknown name takes as long as one with a wrong password."""
    global _DUMMY
    if not _DUMMY:
        _DUMMY = hash_password(secrets.token_urlsafe(16))
    return _DUMMY
