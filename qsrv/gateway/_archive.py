"""Working-directory archives: packed by the client, checked and unpacked by the gateway.

An archive is a tar (gzip-compressed by the client) holding only regular files and directories
under relative paths. The gateway checks every archive twice -- when it is uploaded
(``inspect_archive``) and when a job unpacks it (``unpack_archive``) -- and refuses, rather
than repairs, anything unsafe: absolute paths, ``..`` components, symbolic and hard links,
device files, FIFOs, duplicate names, more members or more unpacked bytes than the limits.
Sizes are checked from the headers before any byte of a member is written, so a decompression
bomb costs at most ``max_unpacked_bytes`` of disk.

Hostile archives cost bounded memory and time:

- The archive is decompressed by this module (gzip, bzip2, xz or none), a bounded chunk at a
  time, and never past ``max_unpacked_bytes`` plus the room its headers may take: a bomb stops
  there. tarfile reads the plain tar stream forwards only (``r|``), so nothing is re-decompressed.
- Every extension header (GNU long names and links, pax headers, global or not) is refused when
  its declared size is over ``MAX_EXTENSION_BYTES``, *before* tarfile reads it; at most
  ``_MAX_CHAIN`` extension headers may precede one member; GNU sparse members are refused
  before their extension blocks are read; a name (from any header) is at most ``MAX_NAME``
  bytes.
- Zip is not accepted (the clients upload tar): an archive that starts like one (a local
  file header, or the end record of an empty one) is refused with a 400 saying so, before
  any of it is read; nothing of a zip's central directory, names or sizes is ever parsed.
- Checking and unpacking are plain blocking functions: the gateway runs them off its event
  loop, a bounded number at once (``_service``).
"""

from __future__ import annotations

import bz2
import io
import lzma
import os
import stat
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from qsrv.errors import ConfigError
from qsrv.gateway._errors import ArchiveError, InvalidRequestError, PayloadTooLargeError

__all__ = ["ArchiveLimits", "check_entrypoint", "inspect_archive", "pack_directory",
           "unpack_archive"]

# Never packed: caches and VCS data that a job does not need.
_SKIP_NAMES = frozenset({"__pycache__", ".git", ".hg", ".svn", ".mypy_cache", ".pytest_cache",
                         ".ruff_cache"})
_CHUNK = 1 << 16
MAX_EXTENSION_BYTES = 64 << 10  # a GNU long name/link or pax header, declared size
MAX_NAME = 4096  # bytes of a member's name, however it was given
_MAX_CHAIN = 8  # extension headers in a row before one member
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")  # a member, empty, spanned
_HEADER_ROOM = 3 * 512  # per member: its header, and room for a short extension header


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
        raise ArchiveError(f"archive member with a bad name: {name[:200]!r}")
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME:
        raise ArchiveError(f"archive member name over {MAX_NAME} bytes: {name[:100]!r}...")
    path = PurePosixPath(name)
    if path.is_absolute() or (len(name) > 1 and name[1] == ":"):
        raise ArchiveError(f"archive member with an absolute path: {name!r}")
    parts = [p for p in path.parts if p not in ("", ".")]
    if ".." in parts:
        raise ArchiveError(f"archive member with a '..' component: {name!r}")
    return PurePosixPath(*parts) if parts else PurePosixPath(".")


def _check_member(info: tarfile.TarInfo) -> None:
    if info.issym() or info.islnk():
        raise ArchiveError(f"archive member is a link, not allowed: {info.name[:200]!r}")
    if info.isdev() or info.isfifo():
        raise ArchiveError(
            f"archive member is a device or FIFO, not allowed: {info.name[:200]!r}")
    if not (info.isreg() or info.isdir()):
        raise ArchiveError(f"archive member of unsupported type: {info.name[:200]!r}")


class _Refused(tarfile.TarError):
    """An extension header refused before it was read (carries the ArchiveError to raise)."""

    def __init__(self, error: ArchiveError) -> None:
        super().__init__(str(error))
        self.error = error


_EXTENSIONS = frozenset({tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE,
                         tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE})


class _CappedTarInfo(tarfile.TarInfo):
    """A TarInfo whose extension headers are judged by their declared size before tarfile
    reads them (tarfile itself reads a GNU long name of any declared size into memory)."""

    def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        chain = getattr(tarfile_, "_qsrv_chain", 0)
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise _Refused(ArchiveError("archive member is a GNU sparse file, not allowed"))
        if self.type in _EXTENSIONS:
            if self.size > MAX_EXTENSION_BYTES or self.size < 0:
                raise _Refused(ArchiveError(
                    f"archive extension header of {self.size} bytes, over the limit of "
                    f"{MAX_EXTENSION_BYTES}"))
            if chain >= _MAX_CHAIN:
                raise _Refused(ArchiveError(
                    f"more than {_MAX_CHAIN} extension headers before one archive member"))
            tarfile_._qsrv_chain = chain + 1  # type: ignore[attr-defined]
        else:
            tarfile_._qsrv_chain = 0  # type: ignore[attr-defined]
        processed: tarfile.TarInfo = super()._proc_member(tarfile_)  # type: ignore[misc]
        return processed


class _Decompressed(io.RawIOBase):
    """The plain tar stream of ``data`` (gzip, bzip2, xz or none), produced a bounded chunk at
    a time, and never more than ``cap`` bytes of it (then PayloadTooLargeError)."""

    def __init__(self, data: bytes, cap: int) -> None:
        self._view = memoryview(data)
        self._cap = cap
        self._produced = 0
        self._pending = b""
        kind = _compression(data)
        self._kind = kind
        self._decoder: Any = None if kind == "none" else _new_decoder(kind)
        self._pos = 0  # of the next compressed byte to feed

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        out = memoryview(buffer).cast("B")
        want = len(out)
        if want == 0:
            return 0
        if not self._pending:
            self._pending = self._next(min(max(want, _CHUNK), 1 << 20))
        n = min(want, len(self._pending))
        out[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def _next(self, size: int) -> bytes:
        """Up to ``size`` more plain bytes; b"" at the end (or where the input ran out)."""
        if self._decoder is None:
            return self._count(self._take(size))
        while True:
            decoder = self._decoder
            if decoder.eof:
                if not self._restart(decoder.unused_data):
                    return b""
                continue
            if self._kind == "gzip" and decoder.unconsumed_tail:
                feed = decoder.unconsumed_tail
            elif self._kind == "gzip" or decoder.needs_input:
                feed = self._take(_CHUNK)
                if not feed:
                    return b""  # truncated: tarfile reports the short read
            else:
                feed = b""
            chunk = decoder.decompress(feed, size)
            if chunk:
                return self._count(bytes(chunk))

    def _take(self, size: int) -> bytes:
        chunk = bytes(self._view[self._pos:self._pos + size])
        self._pos += len(chunk)
        return chunk

    def _restart(self, unused: bytes) -> bool:
        """Another compressed stream may follow the one that ended (concatenated members):
        start decoding it; False when only zero padding (or nothing) is left."""
        self._pos -= len(unused)
        if not bytes(self._view[self._pos:]).strip(b"\x00"):
            self._pos = len(self._view)
            return False
        self._decoder = _new_decoder(self._kind)
        return True

    def _count(self, chunk: bytes) -> bytes:
        self._produced += len(chunk)
        if self._produced > self._cap:
            raise PayloadTooLargeError(
                f"archive unpacks to more than {self._cap} bytes of tar stream"
            )
        return chunk


def _compression(data: bytes) -> str:
    if data[:2] == b"\x1f\x8b":
        return "gzip"
    if data[:3] == b"BZh":
        return "bz2"
    if data[:6] == b"\xfd7zXZ\x00":
        return "xz"
    return "none"


def _new_decoder(kind: str) -> Any:
    if kind == "gzip":
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if kind == "bz2":
        return bz2.BZ2Decompressor()
    return lzma.LZMADecompressor(format=lzma.FORMAT_XZ)


def _stream_cap(limits: ArchiveLimits) -> int:
    """The most plain tar bytes an archive within the limits can take."""
    return limits.max_unpacked_bytes + (limits.max_members + 2) * (
        _HEADER_ROOM + MAX_EXTENSION_BYTES // 16) + 20 * 512


def _open(data: bytes, limits: ArchiveLimits) -> tarfile.TarFile:
    if len(data) > limits.max_archive_bytes:
        raise PayloadTooLargeError(
            f"archive is {len(data)} bytes, over the limit of {limits.max_archive_bytes}"
        )
    if data[:4] in _ZIP_MAGIC:
        raise ArchiveError("zip archives are not accepted: upload a tar archive (gzip, bzip2, "
                           "xz or uncompressed), as the clients do")
    stream = io.BufferedReader(_Decompressed(data, _stream_cap(limits)), _CHUNK)
    try:
        return tarfile.open(fileobj=stream, mode="r|", tarinfo=_CappedTarInfo)
    except _Refused as exc:
        raise exc.error from None
    except (tarfile.TarError, EOFError, OSError, zlib.error, ValueError) as exc:
        raise ArchiveError(f"not a valid tar archive: {exc}") from exc


def _members(tar: tarfile.TarFile, limits: ArchiveLimits
             ) -> Iterator[tuple[PurePosixPath, tarfile.TarInfo]]:
    """Every member, checked, in archive order, as tarfile reaches it (a member's content can
    be read before the next one is asked for); raises on the first one that breaks a rule."""
    seen: set[PurePosixPath] = set()
    total = 0
    count = 0
    iterator = iter(tar)
    while True:
        try:
            info = next(iterator, None)
        except _Refused as exc:
            raise exc.error from None
        except InvalidRequestError:
            raise
        except (tarfile.TarError, EOFError, OSError, zlib.error, ValueError) as exc:
            raise ArchiveError(f"not a valid tar archive: {exc}") from exc
        if info is None:
            return
        count += 1
        if count > limits.max_members:
            raise PayloadTooLargeError(f"archive has more than {limits.max_members} members")
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
        yield path, info


def inspect_archive(data: bytes, limits: ArchiveLimits) -> dict[str, bool]:
    """Check the archive; return its members' normalised paths, mapped to "is a regular file".

    Blocking, and CPU-bound for a large archive: call it off the event loop."""
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


def unpack_archive(data: bytes, dest: Path, limits: ArchiveLimits,
                   owner: tuple[int, int] | None = None) -> None:
    """Unpack into ``dest`` (created 0700, must not exist yet), re-checking every rule.

    Files are created with O_EXCL|O_NOFOLLOW, private (0600, 0700 when executable), with no
    set-id bits; since no member is a link and none has '..', every write lands inside
    ``dest``. With ``owner`` (uid, gid) every directory and file made is given to it. On an
    error what was unpacked stays: the caller removes ``dest``.
    """
    dest.mkdir(mode=0o700, parents=False, exist_ok=False)
    os.chmod(dest, 0o700)
    if owner is not None:
        os.chown(dest, *owner)
    with _open(data, limits) as tar:
        for path, info in _members(tar, limits):
            target = dest / path
            if info.isdir():
                _make_dirs(dest, path, owner)
                continue
            if path.parent != PurePosixPath("."):
                _make_dirs(dest, path.parent, owner)
            mode = 0o700 if info.mode & stat.S_IXUSR else 0o600
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
            try:
                if owner is not None:
                    os.fchown(fd, *owner)
                source = tar.extractfile(info)
                assert source is not None  # a regular file always has content
                with source:
                    while chunk := source.read(_CHUNK):
                        os.write(fd, chunk)
            except _Refused as exc:
                raise exc.error from None
            except (tarfile.TarError, EOFError, zlib.error) as exc:
                raise ArchiveError(f"not a valid tar archive: {exc}") from exc
            finally:
                os.close(fd)


def _make_dirs(dest: Path, rel: PurePosixPath, owner: tuple[int, int] | None) -> None:
    """Make ``dest/rel`` and its missing parents, each 0700 (and given to ``owner``)."""
    current = dest
    for part in rel.parts:
        current = current / part
        try:
            os.mkdir(current, 0o700)
        except FileExistsError:
            if not stat.S_ISDIR(os.lstat(current).st_mode):
                raise ArchiveError(f"archive member {rel.as_posix()!r} is under a file") from None
            continue
        if owner is not None:
            os.chown(current, *owner, follow_symlinks=False)
