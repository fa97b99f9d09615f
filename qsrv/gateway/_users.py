"""Users and their tokens, managed on the database directly (no gateway needs to run).

A token is ``qsrv_`` plus 32 random bytes (URL-safe base64). Only its SHA-256 is stored: a
token has 256 bits of entropy, so a fast hash is as safe as a slow one and keeps each request's
check to one indexed lookup. The clear token is shown once, when it is created.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from pathlib import Path

from qsrv.errors import ConfigError
from qsrv.gateway._errors import ConflictError
from qsrv.gateway._models import User
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
    "list_users",
    "new_token",
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


def issue_token(store: Store, user: User) -> str:
    """A new token for ``user`` (earlier tokens stay valid)."""
    token = new_token()
    store.add_token(user.user_id, hash_token(token), time.time())
    return token


def add_user(data_dir: str | os.PathLike[str], name: str) -> tuple[User, str]:
    """Create a user and its first token; ConflictError when the name is taken."""
    _check_name(name)
    store = Store.open(db_path(data_dir))
    try:
        user = store.create_user(name, time.time())
        return user, issue_token(store, user)
    finally:
        store.close()


def list_users(data_dir: str | os.PathLike[str]) -> list[User]:
    store = Store.open(db_path(data_dir))
    try:
        return store.list_users()
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
        token = issue_token(store, user)
    finally:
        store.close()
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    return token
