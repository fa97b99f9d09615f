"""An open batch left idle past its timeout ends TIMED_OUT, and pasqal-cloud sees it (this
module's gateway gives open batches a timeout of one second)."""

from __future__ import annotations

import warnings
from typing import Any

import pytest

from tests._support import wait_for

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from pasqal_cloud import SDK
    from pasqal_cloud.errors import JobCreationError
    from pasqal_cloud.utils.constants import BatchStatus

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def gateway_config() -> dict[str, Any]:
    return {"quantum_batch_timeout_s": 1.0}


def test_an_idle_open_batch_times_out(sdk: SDK, serialized: str) -> None:
    batch = sdk.create_batch(serialized, [{"runs": 10, "variables": {"omega_max": 3.0}}],
                             open=True)
    wait_for(lambda: sdk.get_batch_status(batch.id) is BatchStatus.TIMED_OUT, timeout=60,
             what="the idle open batch times out")
    batch.refresh()
    assert batch.status == "TIMED_OUT"
    assert [j.status for j in batch.ordered_jobs] == ["DONE"]  # its job ran first
    with pytest.raises(JobCreationError):
        batch.add_jobs([{"runs": 1, "variables": {"omega_max": 1.0}}])
