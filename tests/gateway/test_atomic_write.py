"""Files the gateway and its jobs replace (archives, uploads, results) are replaced whole: the
old content or the new one, never half, and no temporary file left behind by a failure."""

from __future__ import annotations

import os
import pickle
import stat
from pathlib import Path

import pytest

from qsrv.gateway._atomic import replaced
from qsrv.gateway._runtime import RESULT_PATH_ENV, save_result


def test_a_finished_write_replaces_the_file_with_private_modes(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_bytes(b"old")
    with replaced(target, prefix=".x-", durable=True) as out:
        out.write(b"new")
        assert target.read_bytes() == b"old"  # not before the block ends
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_bytes(b"old")
    with pytest.raises(OSError, match="No space left"), replaced(target) as out:
        out.write(b"half of the new")
        raise OSError(28, "No space left on device")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_save_result_replaces_the_result_whole(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    result = tmp_path / "result.pkl"
    monkeypatch.setenv(RESULT_PATH_ENV, str(result))
    save_result({"first": 1})
    save_result({"second": 2})
    assert pickle.loads(result.read_bytes()) == {"second": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.pkl"]
