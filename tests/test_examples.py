"""Every example runs, as a user would run it, and prints what it promises."""

from __future__ import annotations

from collections.abc import Callable


def test_quickstart(run_example: Callable[[str], str]) -> None:
    stdout = run_example("quickstart.py")
    assert "counts of run 0: {'00':" in stdout
    # only 00 and 11 are ever sampled, so every <ZZ> is exactly 1
    assert f"<ZZ> per run: {[1.0] * 8}" in stdout
    assert "awaited: [1.0, 1.0]" in stdout
