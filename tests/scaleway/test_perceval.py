"""Perceval's own Scaleway session (perceval-quandela, unmodified) against the door: the
documented flow, a session shared through a deduplication id, start()/stop(), and the error
bodies Perceval raises (unknown platform, a stopped session, shots above the maximum; a
malformed payload, which Perceval never sends, with plain requests)."""

from __future__ import annotations

import json

import perceval as pcvl
import perceval.providers.scaleway as scw
import pytest
import requests
from requests import HTTPError

from tests.scaleway.conftest import PERCEVAL, Door, get, platform, sessions


def _toy_sampler(session: scw.Session, max_shots: int = 10_000) -> pcvl.algorithm.Sampler:
    processor = session.build_remote_processor()
    processor.set_circuit(pcvl.Circuit(m=2, name="a-toy-circuit") // pcvl.BS.H())
    processor.with_input(pcvl.BasicState("|0,1>"))
    processor.min_detected_photons_filter(1)  # Perceval >= 1.3 asks it of remote processors
    return pcvl.algorithm.Sampler(processor, max_shots_per_call=max_shots)


def test_the_documented_flow_samples_in_a_session_ended_by_the_with_block(
        door: Door, project: str) -> None:
    with scw.Session(platform_name=PERCEVAL, project_id=project, token=door.token,
                     deduplication_id="my-workshop", url=door.url) as session:
        sampler = _toy_sampler(session)
        job = sampler.samples(100)
        counts = sampler.sample_count(200)
        [running] = sessions(door, project)
        assert running["status"] == "running"
        assert running["deduplication_id"] == "my-workshop"
    samples = job["results"]
    assert len(samples) == 100
    # A beam splitter fed one photon: it leaves by one mode or the other, never both.
    assert {str(s) for s in samples} <= {"|1,0>", "|0,1>"}
    assert {str(s) for s in samples} == {"|1,0>", "|0,1>"}  # 2^-99 to fail by chance
    assert sum(counts["results"].values()) == 200
    assert {str(s) for s in counts["results"]} <= {"|1,0>", "|0,1>"}
    [ended] = sessions(door, project)
    assert ended["status"] == "stopped"
    assert ended["finished_job_count"] == 2
    assert ended["progress_message"].startswith("terminated")


def test_two_sessions_with_one_deduplication_id_share_one_session(
        door: Door, project: str) -> None:
    first = scw.Session(platform_name=PERCEVAL, project_id=project, token=door.token,
                        deduplication_id="shared", url=door.url)
    second = scw.Session(platform_name=PERCEVAL, project_id=project, token=door.token,
                         deduplication_id="shared", url=door.url)
    first.start()
    second.start()
    try:
        [shared] = sessions(door, project)
        assert shared["status"] in ("starting", "running")
        one = _toy_sampler(first).sample_count(50)
        two = _toy_sampler(second).sample_count(60)
        assert sum(one["results"].values()) == 50
        assert sum(two["results"].values()) == 60
        [shared] = sessions(door, project)
        assert shared["finished_job_count"] == 2
    finally:
        first.stop()
        second.stop()  # the session is already stopped: terminating it again is no error
    [ended] = sessions(door, project)
    assert ended["status"] == "stopped"


def test_start_and_stop_and_a_job_after_stop_is_refused(door: Door, project: str) -> None:
    session = scw.Session(platform_name=PERCEVAL, project_id=project, token=door.token,
                          url=door.url, max_idle_duration_s=600, max_duration_s=1200)
    session.start()
    sampler = _toy_sampler(session)
    counts = sampler.sample_count(20)
    assert sum(counts["results"].values()) == 20
    session.stop()
    [stopped] = sessions(door, project)
    assert stopped["status"] == "stopped"
    with pytest.raises(HTTPError) as refused:
        sampler.sample_count(20)
    body = refused.value.args[0]  # Perceval raises the error body it was answered
    assert body["type"] == "precondition_failed"
    assert stopped["id"] in body["message"]


def test_an_unknown_platform_is_refused_by_perceval_before_any_session(
        door: Door, project: str) -> None:
    with pytest.raises(HTTPError, match="Empty platform list"):
        scw.Session(platform_name="no.such.platform", project_id=project, token=door.token,
                    url=door.url)
    assert sessions(door, project) == []


def test_shots_above_the_platforms_maximum_are_refused_and_harm_nothing(
        door: Door, project: str) -> None:
    most = platform(door, PERCEVAL)["max_shot_count"]
    with scw.Session(platform_name=PERCEVAL, project_id=project, token=door.token,
                     url=door.url) as session:
        greedy = _toy_sampler(session, max_shots=most + 1)
        with pytest.raises(HTTPError) as refused:
            greedy.sample_count(10)
        body = refused.value.args[0]
        assert body["type"] == "invalid_arguments"
        assert "over" in body["message"] and "maximum" in body["message"]
        assert sum(_toy_sampler(session).sample_count(10)["results"].values()) == 10


@pytest.mark.parametrize("payload", [
    "{not json",
    json.dumps({"command": "samples", "max_shots": 10}),
    json.dumps({"command": "samples", "experiment": ":PCVL:zip:garbage", "max_shots": 10}),
    json.dumps({"command": "samples", "experiment": "x", "max_shots": -1}),
])
def test_a_malformed_perceval_payload_gets_invalid_arguments(
        door: Door, project: str, payload: str) -> None:
    headers = {"X-Auth-Token": door.token}
    session = requests.post(f"{door.api}/sessions", headers=headers, timeout=30, json={
        "project_id": project, "platform_id": platform(door, PERCEVAL)["id"]}).json()
    try:
        response = requests.post(f"{door.api}/jobs", headers=headers, timeout=30, json={
            "session_id": session["id"], "circuit": {"percevalCircuit": payload}})
        assert response.status_code == 400, response.text
        assert response.json()["type"] == "invalid_arguments"
        assert get(door, "/jobs", session_id=session["id"])["total_count"] == 0
    finally:
        requests.post(f"{door.api}/sessions/{session['id']}/terminate", headers=headers,
                      timeout=30)


def test_a_wrong_token_is_refused(door: Door, project: str) -> None:
    with pytest.raises(HTTPError, match="401"):
        scw.Session(platform_name=PERCEVAL, project_id=project, token="not-a-token",
                    url=door.url)


def test_parameters_iterations_probs_and_heralds(door: Door, project: str) -> None:
    with scw.Session(platform_name=PERCEVAL, project_id=project, token=door.token,
                     url=door.url) as session:
        processor = session.build_remote_processor()
        phi = pcvl.P("phi")
        # A Mach-Zehnder interferometer: the phase sends the photon to one output or the other.
        processor.set_circuit(pcvl.Circuit(2) // pcvl.BS() // (0, pcvl.PS(phi)) // pcvl.BS())
        phi.set_value(0.0)
        processor.with_input(pcvl.BasicState("|1,0>"))
        processor.min_detected_photons_filter(1)
        sampler = pcvl.algorithm.Sampler(processor, max_shots_per_call=1000)
        assert {str(k): v for k, v in sampler.sample_count(100)["results"].items()} == {
            "|0,1>": 100}
        probs = sampler.probs()["results"]
        assert {str(k) for k, p in probs.items() if p > 1e-9} == {"|0,1>"}
        sampler.add_iteration(circuit_params={"phi": 0.0})
        sampler.add_iteration(circuit_params={"phi": 3.141592653589793})
        iterations = sampler.sample_count(100)["results_list"]
        assert [{str(k): v for k, v in it["results"].items()} for it in iterations] == [
            {"|0,1>": 100}, {"|1,0>": 100}]
        heralded = session.build_remote_processor()
        heralded.set_circuit(pcvl.Circuit(3) // pcvl.BS() // (1, pcvl.BS()))
        heralded.add_herald(2, 0)
        heralded.with_input(pcvl.BasicState("|1,0>"))
        heralded.min_detected_photons_filter(1)
        counts = pcvl.algorithm.Sampler(heralded, max_shots_per_call=1000).sample_count(100)
        assert {str(k) for k in counts["results"]} <= {"|1,0>", "|0,1>"}
