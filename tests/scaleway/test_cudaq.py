"""CUDA-Q's ``scaleway`` target (cudaq, unmodified, CPU only) against the door: a
deduplicated session, counts in CUDA-Q's bit order, an unknown machine, shots above the
maximum.

cudaq pulls about 2.5 GB of CUDA libraries, so it lives in a virtual environment of its own:
``QSRV_CUDAQ_PYTHON`` names its interpreter (``.ci/run`` makes one and runs this file with
``QSRV_REQUIRE_CUDAQ=1``, unless ``QSRV_CI_CUDAQ=0``). Without it these tests skip, unless
``QSRV_REQUIRE_CUDAQ=1``.
The kernel runs in that interpreter, as a user's script would, against this test's gateway.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.scaleway.conftest import AER, Door, platform, sessions

_PYTHON = os.environ.get("QSRV_CUDAQ_PYTHON", "")

pytestmark = pytest.mark.skipif(
    not _PYTHON and os.environ.get("QSRV_REQUIRE_CUDAQ") != "1",
    reason="QSRV_CUDAQ_PYTHON (an interpreter with cudaq) is not set")

_SCRIPT = textwrap.dedent("""
    import json, sys
    import cudaq

    url, token, machine, project, kernel_name, shots = sys.argv[1:7]
    cudaq.set_target("scaleway", url=url, machine=machine, project_id=project,
                     secret_key=token, deduplication_id="my-workshop", max_duration="30m",
                     max_idle_duration="5min")

    @cudaq.kernel
    def ghz():
        q = cudaq.qvector(3)
        h(q[0])
        x.ctrl(q[0], q[1])
        x.ctrl(q[1], q[2])
        mz(q)

    @cudaq.kernel
    def first_only():
        q = cudaq.qvector(3)
        x(q[0])
        mz(q)

    @cudaq.kernel
    def some_measured():
        q = cudaq.qvector(3)
        x(q[0])
        x(q[1])
        mz(q[0])
        mz(q[2])

    @cudaq.kernel
    def out_of_order():
        q = cudaq.qvector(4)
        x(q[3])
        mz(q[3])
        mz(q[1])
        mz(q[0])

    kernel = {"ghz": ghz, "first_only": first_only, "some_measured": some_measured,
              "out_of_order": out_of_order}[kernel_name]
    counts = cudaq.sample(kernel, shots_count=int(shots))
    print("COUNTS " + json.dumps(dict(counts.items())))
""")


@pytest.fixture(autouse=True)
def _terminate_the_projects_sessions(door: Door, project: str) -> Iterator[None]:
    """CUDA-Q leaves its session running (its idle duration ends it): each test's project has
    its own, which would hold the worker's capacity for the next test's session."""
    yield
    for session in sessions(door, project):
        if session["status"] in ("starting", "running"):
            requests.post(f"{door.api}/sessions/{session['id']}/terminate",
                          headers={"X-Auth-Token": door.token}, timeout=30).raise_for_status()


def _run(door: Door, project: str, kernel: str, tmp_path: Path, *, machine: str = AER,
         shots: int = 100) -> subprocess.CompletedProcess[str]:
    """The script, as a user runs it, in cudaq's interpreter."""
    script = tmp_path / "sample.py"  # cudaq reads its kernels' source: a file, not -c
    script.write_text(_SCRIPT)
    python = _PYTHON or sys.executable
    return subprocess.run([python, str(script), door.url, door.token, machine, project, kernel,
                           str(shots)], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)


def _sample(door: Door, project: str, kernel: str, tmp_path: Path) -> dict[str, int]:
    out = _run(door, project, kernel, tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    [line] = [x for x in out.stdout.splitlines() if x.startswith("COUNTS ")]
    return json.loads(line.removeprefix("COUNTS "))  # type: ignore[no-any-return]


def test_cudaq_samples_on_the_aer_platform_in_a_deduplicated_session(
        door: Door, project: str, tmp_path: Path) -> None:
    counts = _sample(door, project, "ghz", tmp_path)
    assert sum(counts.values()) == 100
    assert set(counts) == {"000", "111"}  # 2^-99 to fail by chance
    [session] = sessions(door, project)
    assert session["deduplication_id"] == "my-workshop"
    assert session["max_duration"] == "1800s"
    assert session["max_idle_duration"] == "300s"
    assert session["finished_job_count"] == 1
    again = _sample(door, project, "ghz", tmp_path)  # a second script joins the same session
    assert sum(again.values()) == 100
    [session] = sessions(door, project)
    assert session["finished_job_count"] == 2


@pytest.mark.parametrize(("kernel", "expected"), [
    ("first_only", {"100": 100}),  # qubit 0 first, as CUDA-Q's own simulator answers
    ("some_measured", {"10": 100}),  # q[0] and q[2] only, in that order
    ("out_of_order", {"001": 100}),  # measured q[3], q[1], q[0]: read by qubit, as CUDA-Q does
])
def test_cudaq_reads_its_own_bit_order(door: Door, project: str, tmp_path: Path, kernel: str,
                                       expected: dict[str, int]) -> None:
    assert _sample(door, project, kernel, tmp_path) == expected


def test_an_unknown_machine_is_refused_before_any_session(door: Door, project: str,
                                                         tmp_path: Path) -> None:
    out = _run(door, project, "ghz", tmp_path, machine="no.such.platform")
    assert out.returncode != 0
    assert "No platform found with name: no.such.platform" in out.stderr
    assert sessions(door, project) == []


def test_shots_above_the_platforms_maximum_are_refused(door: Door, project: str,
                                                      tmp_path: Path) -> None:
    most = platform(door, AER)["max_shot_count"]
    out = _run(door, project, "ghz", tmp_path, shots=most + 1)
    assert out.returncode != 0
    # CUDA-Q raises the error body it was answered.
    assert "status code 400" in out.stderr
    assert f"{most + 1} shots is over platform {AER}" in out.stderr
    assert '"type": "invalid_arguments"' in out.stderr
