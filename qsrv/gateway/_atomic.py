"""Replacing a file whole: write a temporary file beside it, then rename it over the target.

Readers see the old content or the new one, never half of one; a failure (a full disk, an
exception of the writer, a limit exceeded) removes the temporary file and leaves the target as
it was. The temporary file is created 0600 with O_EXCL and O_NOFOLLOW (``tempfile.mkstemp``), in
the target's directory so the rename stays on one file system.

This module imports nothing heavy: a job's ``save_result`` uses it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import BinaryIO

__all__ = ["replaced"]


@contextlib.contextmanager
def replaced(path: str | os.PathLike[str], *, prefix: str = ".tmp-",
             durable: bool = False) -> Iterator[BinaryIO]:
    """A binary file to write ``path``'s new content to; ``path`` is replaced by it when the
    block ends without an exception (after an fsync when ``durable``), and untouched otherwise.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=prefix)
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
            if durable:
                out.flush()
                os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
