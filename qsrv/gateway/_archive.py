"""Working-directory archives: packed by the client, checked and unpacked by the gateway.

An archive is a tar (gzip-compressed by the client) holding only regular files and directories
under relative paths. The gateway checks every archive twice -- when it is uploaded
(``inspect_archive``) and when a job unpacks it (``unpack_archive``) -- and refuses, rather
than repairs, anything unsafe: absolute paths, ``..`` components, symbolic and hard links,
device files, FIFOs, duplicate names, more members or more unpacked bytes than the limits.
Sizes are checked from the headers before any byte of a member is written, so a decompression
bomb costs at most ``max_unpacked_bytes`` of disk.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from qsrv.errors import ConfigError
from qsrv.gateway._errors import ArchiveError, InvalidRequestError, PayloadTooLargeError

__all__ = ["ArchiveLimits", "check_entrypoint", "inspect_archive", "pack_directory",
           "unpack_archive"]

# Never packed: caches and VCS data that a job does not need.
_SKIP_NAMES = frozenset({"__pycache__", ".git", ".hg", ".svn", ".mypy_cache", ".pytest_cache",
                         ".ruff_cache"})
_CHUNK = 1 << 16


@dataclass(frozen=True, slots=True)
class ArchiveLimits:
    """How large an archive may be, packed and unpacked, and how many members it may hold."""

    max_archive_bytes: int = 64 << 20
    max_unpacked_bytes: int = 256 << 20
    max_members: int = 10_000


def pack_directory(working_dir: str | os.PathLike[str]) -> bytes:
    """A gzipped tar of ``working_dir``'s files, paths relative to it.

    Symbolic links are refused here already (the gateway would refuse them), with the path, so
    the user learns which file is the problem before uploading anything.
    """
    root = Path(working_dir)
    if not root.is_dir():
        raise ConfigError(f"working_dir {str(root)!r} is not a directory")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_NAMES)
            base = Path(dirpath)
            for name in [*dirnames, *sorted(filenames)]:
                path = base / name
                if name.endswith(".pyc"):
                    continue
                rel = path.relative_to(root).as_posix()
                st = path.lstat()
                if stat.S_ISLNK(st.st_mode):
                    raise ConfigError(f"working_dir holds a symbolic link, not allowed: {rel}")
                if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
                    raise ConfigError(f"working_dir holds a special file, not allowed: {rel}")
                info = tar.gettarinfo(str(path), arcname=rel)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                if info.isreg():
                    with open(path, "rb") as fh:
                        tar.addfile(info, fh)
                else:
                    tar.addfile(info)
    return buffer.getvalue()


def _member_path(name: str) -> PurePosixPath:
    """The member's normalised relative path, or ArchiveError when it could escape."""
    if not name or "\x00" in name or "\\" in name:
        raise ArchiveError(f"archive member with a bad name: {name!r}")
    path = PurePosixPath(name)
    if path.is_absolute() or (len(name) > 1 and name[1] == ":"):
        raise ArchiveError(f"archive member with an absolute path: {name!r}")
    parts = [p for p in path.parts if p not in ("", ".")]
    if ".." in parts:
        raise ArchiveError(f"archive member with a '..' component: {name!r}")
    return PurePosixPath(*parts) if parts else PurePosixPath(".")


def _check_member(info: tarfile.TarInfo) -> None:
    if info.issym() or info.islnk():
        raise ArchiveError(f"archive member is a link, not allowed: {info.name!r}")
    if info.isdev() or info.isfifo():
        raise ArchiveError(f"archive member is a device or FIFO, not allowed: {info.name!r}")
    if not (info.isreg() or info.isdir()):
        raise ArchiveError(f"archive member of unsupported type: {info.name!r}")


def _members(tar: tarfile.TarFile, limits: ArchiveLimits) -> list[tuple[PurePosixPath,
                                                                         tarfile.TarInfo]]:
    """Every member, checked, in archive order; raises on the first one that breaks a rule."""
    seen: set[PurePosixPath] = set()
    total = 0
    out: list[tuple[PurePosixPath, tarfile.TarInfo]] = []
    try:
        for info in tar:
            if len(out) >= limits.max_members:
                raise PayloadTooLargeError(
                    f"archive has more than {limits.max_members} members"
                )
            _check_member(info)
            path = _member_path(info.name)
            if path in seen and not info.isdir():
                raise ArchiveError(f"archive member appears twice: {info.name!r}")
            seen.add(path)
            total += info.size
            if total > limits.max_unpacked_bytes:
                raise PayloadTooLargeError(
                    f"archive unpacks to more than {limits.max_unpacked_bytes} bytes"
                )
            out.append((path, info))
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        if isinstance(exc, InvalidRequestError):
            raise
        raise ArchiveError(f"not a valid tar archive: {exc}") from exc
    return out


def _open(data: bytes, limits: ArchiveLimits) -> tarfile.TarFile:
    if len(data) > limits.max_archive_bytes:
        raise PayloadTooLargeError(
            f"archive is {len(data)} bytes, over the limit of {limits.max_archive_bytes}"
        )
    try:
        return tarfile.open(fileobj=io.BytesIO(data), mode="r:*")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ArchiveError(f"not a valid tar archive: {exc}") from exc


def inspect_archive(data: bytes, limits: ArchiveLimits) -> dict[str, bool]:
    """Check the archive; return its members' normalised paths, mapped to "is a regular file"."""
    with _open(data, limits) as tar:
        return {path.as_posix(): info.isreg() for path, info in _members(tar, limits)}


def check_entrypoint(entrypoint: str, members: dict[str, bool]) -> str:
    """The entrypoint's normalised path; it must be a regular file of the archive."""
    try:
        path = _member_path(entrypoint).as_posix()
    except ArchiveError as exc:
        raise InvalidRequestError(f"bad entrypoint {entrypoint!r}: {exc}") from None
    if not members.get(path, False):
        raise InvalidRequestError(f"entrypoint {entrypoint!r} is not a file in the working_dir")
    return path


def unpack_archive(data: bytes, dest: Path, limits: ArchiveLimits) -> None:
    """Unpack into ``dest`` (created, must not exist yet), re-checking every rule.

    Files are created with O_EXCL|O_NOFOLLOW and no set-id bits; since no member is a link and
    none has '..', every write lands inside ``dest``.
    """
    dest.mkdir(parents=True, exist_ok=False)
    with _open(data, limits) as tar:
        for path, info in _members(tar, limits):
            target = dest / path
            if info.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            mode = 0o755 if info.mode & stat.S_IXUSR else 0o644
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
            source = tar.extractfile(info)
            assert source is not None  # a regular file always has content
            with os.fdopen(fd, "wb") as out, source:
                while chunk := source.read(_CHUNK):
                    out.write(chunk)
