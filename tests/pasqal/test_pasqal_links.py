"""Signed result links on their own: a link opens for its job and user until it expires, and
a forged, altered, expired or foreign one reads as a missing result."""

from __future__ import annotations

import time

import pytest

from qsrv.errors import NotFoundError
from qsrv.gateway._models import User
from qsrv.gateway._pasqal._links import LINK_TTL_S, LinkSigner

ALICE = User(user_id=3, name="alice", created_at=1_700_000_000.5)


def test_a_link_opens_for_its_job_and_user() -> None:
    signer = LinkSigner()
    token = signer.sign(ALICE, "job-1")
    assert signer.open(token, "job-1") == ALICE


@pytest.mark.parametrize("case", ["other job", "expired", "altered", "no mac", "other key"])
def test_a_bad_link_is_a_missing_result(case: str) -> None:
    signer = LinkSigner()
    token = signer.sign(ALICE, "job-1")
    job = "job-1"
    if case == "other job":
        job = "job-2"
    elif case == "expired":
        token = signer.sign(ALICE, "job-1", now=time.time() - 2 * LINK_TTL_S)
    elif case == "altered":
        payload, _, mac = token.partition(".")
        token = payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB") + "." + mac
    elif case == "no mac":
        token = token.partition(".")[0]
    elif case == "other key":
        signer = LinkSigner()
    with pytest.raises(NotFoundError):
        signer.open(token, job)
