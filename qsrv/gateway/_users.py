"""Users and their tokens, managed on the database directly (no gateway needs to run).

A token is ``qsrv_`` plus 32 random bytes (URL-safe base64). Only its SHA-256 is stored: a
token has 256 bits of entropy, so a fast hash is as safe as a slow one and keeps each request's
check to one indexed lookup. The clear token is shown once, when it is created.

A token may expire (``expires_in``, e.g. ``parse_duration("30d")``) and can be revoked; a
user's tokens are listed by id and kind, with the first digits of their hash, never shown.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import time
from pathlib import Path
from typing import Any

from qsrv.errors import ConfigError
from qsrv.gateway._errors import ConflictError
from qsrv.gateway._models import TokenInfo, User, UserUsage
from qsrv.gateway._store import Store

__all__ = [
    "DB_FILENAME",
    "LOCAL_TOKEN_FILENAME",
    "add_user",
    "db_path",
    "default_data_dir",
    "ensure_local_user",
    "hash_token",
    "issue_token",
    "list_tokens",
    "list_users",
    "new_token",
    "parse_duration",
    "revoke_tokens",
    "user_token",
    "users_overview",
]

DB_FILENAME = "gateway.sqlite3"
LOCAL_TOKEN_FILENAME = "local-token"
_NAME_MAX = 64


def default_data_dir() -> Path:
    """``$QSRV_DATA_DIR``, else ``~/.qsrv``."""
    return Path(os.environ.get("QSRV_DATA_DIR") or Path.home() / ".qsrv")


def db_path(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir) / DB_FILENAME


def new_token() -> str:
    return "qsrv_" + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _check_name(name: str) -> None:
    if not name or len(name) > _NAME_MAX or not name.isprintable() or name.strip() != name:
        raise ConfigError(f"bad user name {name!r}: 1 to {_NAME_MAX} printable characters")


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """Seconds in ``30d``, ``12h``, ``90m``, ``45s``, ``2w`` (a bare number is seconds)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text.lower())
    if match is None or float(match.group(1)) <= 0:
        raise ConfigError(f"bad duration {text!r}: use e.g. 30d, 12h, 90m, 45s")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def issue_token(store: Store, user: User, *, expires_in: float | None = None,
                kind: str = "user") -> str:
    """A new token for ``user`` (earlier tokens stay valid), expiring ``expires_in`` seconds
    from now when given."""
    token = new_token()
    now = time.time()
    store.add_token(user.user_id, hash_token(token), now,
                    expires_at=None if expires_in is None else now + expires_in, kind=kind)
    return token


def add_user(data_dir: str | os.PathLike[str], name: str, *,
             expires_in: float | None = None) -> tuple[User, str]:
    """Create a user and its first token; ConflictError when the name is taken."""
    _check_name(name)
    store = Store.open(db_path(data_dir))
    try:
        user = store.create_user(name, time.time())
        return user, issue_token(store, user, expires_in=expires_in)
    finally:
        store.close()


def _existing(store: Store, name: str) -> User:
    user = store.user_by_name(name)
    if user is None:
        raise ConfigError(f"no user {name!r}")
    return user


def user_token(data_dir: str | os.PathLike[str], name: str, *,
               expires_in: float | None = None) -> str:
    """Another token for an existing user."""
    store = Store.open(db_path(data_dir))
    try:
        return issue_token(store, _existing(store, name), expires_in=expires_in)
    finally:
        store.close()


def list_tokens(data_dir: str | os.PathLike[str], name: str) -> list[TokenInfo]:
    """The user's tokens (valid, expired, revoked), without the tokens themselves."""
    store = Store.open(db_path(data_dir))
    try:
        return store.tokens(_existing(store, name).user_id)
    finally:
        store.close()


def revoke_tokens(data_dir: str | os.PathLike[str], name: str,
                  token_id: int | None = None) -> int:
    """Revoke one token of the user (its id, from ``list_tokens``) or all of them; returns how
    many valid tokens were revoked. A running gateway refuses them from its next request."""
    store = Store.open(db_path(data_dir))
    try:
        user = _existing(store, name)
        if token_id is not None and token_id not in {t.token_id for t in store.tokens(
                user.user_id)}:
            raise ConfigError(f"user {name!r} has no token with id {token_id}")
        return store.revoke_tokens(user.user_id, token_id, time.time())
    finally:
        store.close()


def list_users(data_dir: str | os.PathLike[str]) -> list[User]:
    store = Store.open(db_path(data_dir))
    try:
        return store.list_users()
    finally:
        store.close()


def users_overview(data_dir: str | os.PathLike[str]
                   ) -> tuple[list[tuple[User, UserUsage, int]], dict[str, Any]]:
    """Every user with what they hold and their count of valid tokens, and the quotas the
    gateway last started with (empty before it first ran)."""
    store = Store.open(db_path(data_dir))
    try:
        now = time.time()
        rows = [(user, store.usage(user.user_id),
                 sum(t.state(now) == "valid" for t in store.tokens(user.user_id)))
                for user in store.list_users()]
        return rows, store.setting("quotas") or {}
    finally:
        store.close()


def ensure_local_user(data_dir: str | os.PathLike[str], name: str | None = None) -> str:
    """A token for the machine's local user, for an embedded local cluster's gateway.

    The token is kept in ``<data_dir>/local-token`` (mode 0600) and reused while the database
    still knows it; otherwise the user is created if missing and a new token issued and saved.
    """
    name = name or os.environ.get("USER") or "local"
    _check_name(name)
    token_file = Path(data_dir) / LOCAL_TOKEN_FILENAME
    store = Store.open(db_path(data_dir))
    try:
        try:
            saved = token_file.read_text().strip()
        except FileNotFoundError:
            saved = ""
        if saved:
            owner = store.user_for_token(hash_token(saved))
            if owner is not None and owner.name == name:
                return saved
        user = store.user_by_name(name)
        if user is None:
            try:
                user = store.create_user(name, time.time())
            except ConflictError:  # created concurrently
                user = store.user_by_name(name)
                assert user is not None
        token = issue_token(store, user, kind="local")
    finally:
        store.close()
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    return token
