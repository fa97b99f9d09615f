"""A program version's fields checked, and its archive and row written (blocking: the service
runs ``store_program`` in its pool, through a connection of its own).

Archives are content-addressed files (their SHA-256, mode 0600) next to the database, written
whole (a temporary name, fsync, rename) before the row that names them; the row is added within
the user's quota (``Store.add_program_version``).
"""

from __future__ import annotations

import time
from pathlib import Path

from qsrv.gateway._atomic import replaced
from qsrv.gateway._errors import InvalidRequestError
from qsrv.gateway._models import ProgramVersion
from qsrv.gateway._store import ARCHIVES, Quota, Store
from qsrv.gateway._upstream_files import UserFiles

__all__ = ["check_env_vars", "check_title", "store_program"]

_TITLE_MAX = 200
_ENV_NAME_MAX = 256


def check_title(title: str) -> str:
    if not title or len(title) > _TITLE_MAX or not title.isprintable() or "/" in title:
        raise InvalidRequestError(
            f"bad title {title!r}: 1 to {_TITLE_MAX} printable characters, no '/'"
        )
    return title


def check_env_vars(env_vars: dict[str, str]) -> dict[str, str]:
    for name, value in env_vars.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise InvalidRequestError("env_vars must map strings to strings")
        if not name or len(name) > _ENV_NAME_MAX or "=" in name or "\x00" in name + value:
            raise InvalidRequestError(f"bad environment variable name {name!r}")
    return dict(env_vars)


def store_program(db: Path, files: UserFiles, user_id: int, title: str, entrypoint: str,
                  description: str, env: dict[str, str], archive: bytes, digest: str,
                  quota: Quota) -> ProgramVersion:
    """Write the archive and its row, within the user's quota (counting their files too)."""
    folder = db.parent / ARCHIVES
    path = folder / digest
    if not path.exists():
        with replaced(path, prefix=f".{digest}.", durable=True) as out:
            out.write(archive)
    quota = Quota(quota.max_programs, quota.max_versions, quota.max_bytes, files.usage(user_id))
    store = Store.open(db)
    try:
        return store.add_program_version(
            user_id, title, entrypoint, description, env, b"", digest, time.time(),
            archive_file=digest, archive_size=len(archive), quota=quota)
    finally:
        store.close()
