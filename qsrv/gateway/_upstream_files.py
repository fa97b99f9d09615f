"""Users' files: what the Quantum Serverless client uploads, lists, downloads and deletes.

Files live on disk, one folder per user and program title:
``<data_dir>/files/<user_id>/<title>/<name>``. The same folder is the ``DATA_PATH`` of every
job of that program (``_runner``), so a job reads the files its user uploaded and what it
writes there can be downloaded afterwards. Invariants:

- A file name is one path component: no ``/``, ``\\``, NUL, ``.`` or ``..``, at most
  ``NAME_MAX`` bytes; a title is checked the same way. Nothing outside the user's own folders is
  ever named, so isolation between users is the folder layout itself.
- An upload is written to a temporary file in the same folder and renamed into place, so a
  reader never sees half a file, and it is bounded by ``max_bytes`` while it streams.
- Only regular files are listed or served; a symbolic link a job left there is ignored.
- Folders are private: the root ``root_mode`` (0700; 0711 when jobs run as OS accounts, which
  own their user's folders), every user's and title's folder 0700; files 0600.
- What a user stores here counts against their storage quota (``usage``); an upload is
  refused once it would pass ``limit``.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path

from qsrv.gateway._atomic import replaced
from qsrv.gateway._errors import (
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    TooManyRequestsError,
)

__all__ = ["NAME_MAX", "UserFiles", "check_name"]

NAME_MAX = 255


def check_name(name: str, what: str = "file name") -> str:
    """``name`` if it is a safe single path component; InvalidRequestError otherwise."""
    if (not name or name in (".", "..") or len(name.encode()) > NAME_MAX
            or any(c in name for c in "/\\\x00") or not name.isprintable()):
        raise InvalidRequestError(f"bad {what} {name!r}")
    return name


class UserFiles:
    """The files of every user, under ``root``."""

    def __init__(self, root: Path, max_bytes: int, root_mode: int = 0o700) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.root_mode = root_mode

    def folder(self, user_id: int, title: str, *, create: bool = False) -> Path:
        path = self.root / str(int(user_id)) / check_name(title, "function title")
        if create:
            for each, mode in ((self.root, self.root_mode), (path.parent, self.root_mode),
                               (path, 0o700)):
                if not each.is_dir():
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(each, mode)
                        os.chmod(each, mode)
        return path

    def usage(self, user_id: int) -> int:
        """Bytes of every regular file the user holds here (all titles). Blocking."""
        total = 0
        base = self.root / str(int(user_id))
        try:
            titles = list(os.scandir(base))
        except FileNotFoundError:
            return 0
        for title in titles:
            if not title.is_dir(follow_symlinks=False):
                continue
            with contextlib.suppress(OSError), os.scandir(title.path) as entries:
                for entry in entries:
                    with contextlib.suppress(OSError):
                        if entry.is_file(follow_symlinks=False):
                            total += entry.stat(follow_symlinks=False).st_size
        return total

    def list(self, user_id: int, title: str) -> list[str]:
        folder = self.folder(user_id, title)
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            return []
        return sorted(e.name for e in entries
                      if e.is_file(follow_symlinks=False) and not e.name.startswith(".upload-"))

    def path(self, user_id: int, title: str, name: str) -> Path:
        """The path of an existing regular file; NotFoundError otherwise."""
        path = self.folder(user_id, title) / check_name(name)
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:
            raise NotFoundError(f"no file {name!r} for {title!r}") from None
        if not stat.S_ISREG(mode):
            raise NotFoundError(f"no file {name!r} for {title!r}")
        return path

    async def save(self, user_id: int, title: str, name: str,
                   chunks: AsyncIterator[bytes], limit: int | None = None,
                   limit_text: str = "") -> int:
        """Write the streamed content as ``name`` (replacing it); return its size. ``limit``
        (bytes left in the user's quota, ``limit_text`` saying so) bounds it further."""
        check_name(name)
        folder = self.folder(user_id, title, create=True)
        size = 0
        cap = self.max_bytes if limit is None else min(self.max_bytes, limit)
        with replaced(folder / name, prefix=".upload-") as out:
            async for chunk in chunks:
                size += len(chunk)
                if size > cap:
                    if cap < self.max_bytes and limit_text:
                        raise TooManyRequestsError(limit_text)
                    raise PayloadTooLargeError(
                        f"file {name!r} is over the limit of {self.max_bytes} bytes"
                    )
                out.write(chunk)
        return size

    def delete(self, user_id: int, title: str, name: str) -> None:
        self.path(user_id, title, name).unlink()
