"""Working-directory archives: packing, and refusing everything unsafe or oversize."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from qsrv.errors import ConfigError
from qsrv.gateway import ArchiveError, ArchiveLimits, InvalidRequestError, PayloadTooLargeError
from qsrv.gateway._archive import (
    check_entrypoint,
    inspect_archive,
    pack_directory,
    unpack_archive,
)

LIMITS = ArchiveLimits(max_archive_bytes=1 << 20, max_unpacked_bytes=1 << 20, max_members=50)


def make_tar(*members: tuple[tarfile.TarInfo, bytes | None], mode: str = "w:gz") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:  # type: ignore[call-overload]
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def file_member(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def special_member(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, None


def test_pack_and_unpack_round_trip(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "pkg" / "__pycache__").mkdir(parents=True)
    (src / "main.py").write_text("print('hi')\n")
    (src / "pkg" / "mod.py").write_text("X = 1\n")
    (src / "pkg" / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"junk")
    (src / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(src / "run.sh", 0o755)
    data = pack_directory(src)
    members = inspect_archive(data, LIMITS)
    assert members == {"main.py": True, "pkg": False, "pkg/mod.py": True, "run.sh": True}
    assert check_entrypoint("./main.py", members) == "main.py"
    dest = tmp_path / "dest"
    unpack_archive(data, dest, LIMITS)
    assert (dest / "pkg" / "mod.py").read_text() == "X = 1\n"
    assert not (dest / "pkg" / "__pycache__").exists()
    assert os.stat(dest / "run.sh").st_mode & 0o111
    assert not os.stat(dest / "main.py").st_mode & 0o111


def test_pack_refuses_symlinks(tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text("")
    (tmp_path / "link").symlink_to("/etc/passwd")
    with pytest.raises(ConfigError, match=r"symbolic link.*: link"):
        pack_directory(tmp_path)


def test_pack_refuses_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a directory"):
        pack_directory(tmp_path / "nope")


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (file_member("/etc/evil"), "absolute path"),
        (file_member("../evil"), r"'\.\.' component"),
        (file_member("a/../../evil"), r"'\.\.' component"),
        (special_member("link", tarfile.SYMTYPE, "/etc/passwd"), "link"),
        (special_member("hard", tarfile.LNKTYPE, "main.py"), "link"),
        (special_member("dev", tarfile.CHRTYPE), "device"),
        (special_member("blk", tarfile.BLKTYPE), "device"),
        (special_member("fifo", tarfile.FIFOTYPE), "FIFO"),
    ],
)
def test_unsafe_members_are_refused(member: tuple[tarfile.TarInfo, bytes | None],
                                    message: str, tmp_path: Path) -> None:
    data = make_tar(file_member("main.py"), member)
    with pytest.raises(ArchiveError, match=message):
        inspect_archive(data, LIMITS)
    with pytest.raises(ArchiveError, match=message):
        unpack_archive(data, tmp_path / "dest", LIMITS)
    assert not (tmp_path / "evil").exists()


def test_duplicate_file_names_are_refused() -> None:
    data = make_tar(file_member("main.py", b"a"), file_member("./main.py", b"b"))
    with pytest.raises(ArchiveError, match="twice"):
        inspect_archive(data, LIMITS)


def test_garbage_is_not_an_archive() -> None:
    with pytest.raises(ArchiveError, match="not a valid tar"):
        inspect_archive(b"this is not a tarball" * 40, LIMITS)


def test_plain_uncompressed_tar_is_accepted() -> None:
    data = make_tar(file_member("main.py"), mode="w")
    assert inspect_archive(data, LIMITS) == {"main.py": True}


def test_size_and_count_limits() -> None:
    big = make_tar(file_member("main.py", b"\0" * (2 << 20)))
    assert len(big) < LIMITS.max_archive_bytes  # compresses well: a small "bomb"
    with pytest.raises(PayloadTooLargeError, match="unpacks to more than"):
        inspect_archive(big, LIMITS)
    many = make_tar(*(file_member(f"f{i}") for i in range(51)))
    with pytest.raises(PayloadTooLargeError, match="more than 50 members"):
        inspect_archive(many, LIMITS)
    small = ArchiveLimits(max_archive_bytes=100)
    with pytest.raises(PayloadTooLargeError, match="over the limit"):
        inspect_archive(make_tar(file_member("main.py", os.urandom(500))), small)


@pytest.mark.parametrize("entrypoint", ["missing.py", "../main.py", "/main.py", "pkg"])
def test_entrypoint_must_be_a_file_of_the_archive(entrypoint: str) -> None:
    members = {"main.py": True, "pkg": False}
    with pytest.raises(InvalidRequestError):
        check_entrypoint(entrypoint, members)
