"""What a sandbox test needs from the host (bubblewrap, root, OS accounts): skipped, with the
reason, where it is missing, but failed under ``QSRV_REQUIRE_SANDBOXES=1`` (CI), so that a
missing prerequisite never hides a sandbox that does not work."""

from __future__ import annotations

import os

import pytest

REQUIRED = os.environ.get("QSRV_REQUIRE_SANDBOXES") == "1"


def require(condition: bool, why: str) -> None:
    """Skip (with the reason) when a prerequisite is missing; fail instead under CI."""
    if not condition:
        if REQUIRED:
            pytest.fail(f"{why} (QSRV_REQUIRE_SANDBOXES=1: it may not be skipped)")
        pytest.skip(why)
