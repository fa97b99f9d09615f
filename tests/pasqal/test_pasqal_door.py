"""The rest of what pasqal-cloud touches: strict validation errors as the SDK reports them,
device specs rebuilt with pulser, device types and configurations qsrv refuses, workloads,
result links, projects, a bad token and another user's objects."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import pytest
import requests

from tests.pasqal.conftest import PROJECT, Gateway, make_sdk, new_project, sequence, simulate

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from pasqal_cloud import SDK
    from pasqal_cloud.device import DeviceTypeName, EmuFreeConfig
    from pasqal_cloud.errors import (
        BatchCancellingError,
        BatchClosingError,
        BatchCreationError,
        BatchFetchingError,
        BatchSetTagsError,
        JobCancellingError,
        JobCreationError,
        JobFetchingError,
        RebatchError,
        WorkloadCreationError,
        WorkloadFetchingError,
    )
    from pasqal_cloud.utils.filters import BatchFilters, JobFilters

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
PROJECT_A = new_project()
PROJECT_B = new_project()


def _refused(sdk: SDK, serialized: str, jobs: list[dict[str, Any]], **kw: Any) -> str:
    before = sdk.get_batches(BatchFilters(project_id=PROJECT)).total
    with pytest.raises(BatchCreationError) as info:
        sdk.create_batch(serialized, jobs, **kw)
    assert sdk.get_batches(BatchFilters(project_id=PROJECT)).total == before  # none queued
    return str(info.value)


def test_strict_validation_reports_why(sdk: SDK) -> None:
    strict = {"configuration": EmuFreeConfig(strict_validation=True)}
    too_many = sequence(atoms=13).to_abstract_repr()
    text = _refused(sdk, too_many, [{"runs": 5, "variables": {"omega_max": 1.0}}], **strict)
    assert "Batch creation failed: 400" in text and "13 atoms" in text and "12" in text

    from pulser import Pulse, Register, Sequence
    from pulser.devices import DigitalAnalogDevice

    digital = Sequence(Register({"q0": (0.0, 0.0), "q1": (6.0, 0.0)}), DigitalAnalogDevice)
    digital.declare_channel("raman", "raman_local", initial_target="q0")
    digital.add(Pulse.ConstantPulse(100, 1.0, 0.0, 0.0), "raman")
    text = _refused(sdk, digital.to_abstract_repr(), [{"runs": 5}], **strict)
    assert "raman_local" in text

    text = _refused(sdk, sequence().to_abstract_repr(), [{"runs": 5, "variables": {}}],
                    **strict)
    assert "omega_max" in text
    text = _refused(sdk, sequence().to_abstract_repr(),
                    [{"runs": 5, "variables": {"omega_max": 1.0, "nope": 2}}], **strict)
    assert "nope" in text


def test_device_types_and_configurations_qsrv_cannot_honour(sdk: SDK,
                                                             serialized: str) -> None:
    jobs = [{"runs": 5, "variables": {"omega_max": 1.0}}]
    for device in (DeviceTypeName.EMU_MPS, DeviceTypeName.FRESNEL, DeviceTypeName.EMU_TN):
        text = _refused(sdk, serialized, jobs, device_type=device)
        assert str(device) in text and "EMU_FREE" in text and "pulser.qutip.cpu" in text
    text = _refused(sdk, serialized, jobs, configuration=EmuFreeConfig(with_noise=True))
    assert "noise" in text
    text = _refused(sdk, serialized, jobs,
                    configuration=EmuFreeConfig(extra_config={"dt": 5}))
    assert "'dt'" in text
    from pulser import NoiseModel
    from pulser.backend import BitStrings, EmulationConfig, Occupation

    noisy = EmulationConfig(observables=[BitStrings()],
                            noise_model=NoiseModel(dephasing_rate=0.1)).to_abstract_repr()
    assert "noise" in _refused(sdk, serialized, jobs, backend_configuration=noisy)
    occupation = EmulationConfig(observables=[Occupation()]).to_abstract_repr()
    assert "bitstrings" in _refused(sdk, serialized, jobs, backend_configuration=occupation)
    webhooked = make_sdk(sdk._client.endpoints.core.rsplit("/pasqal/", 1)[0],
                         sdk._client.user_token() or "")
    webhooked.webhook = "http://example.invalid/hook"
    assert "webhook" in _refused(webhooked, serialized, jobs)


def test_device_specs_are_rebuilt_by_pulser(pasqal: Gateway, sdk: SDK) -> None:
    from pulser.devices import AnalogDevice, Device
    from pulser.json.abstract_repr.deserializer import deserialize_device

    specs = sdk.get_device_specs_dict()
    assert set(specs) == {"EMU_FREE"}
    device = deserialize_device(specs["EMU_FREE"])
    assert isinstance(device, Device) and device.max_atom_num == 12
    assert set(device.channels) == set(AnalogDevice.channels)
    # The same without a token (the SDK's public specs).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from pasqal_cloud import SDK as Public
        from pasqal_cloud.endpoints import Endpoints
    anonymous = Public(endpoints=Endpoints(core=pasqal.url + "/pasqal/core",
                                           account=pasqal.url + "/pasqal/account"))
    public = anonymous.get_device_specs_dict()
    assert public == specs
    # A sequence made for that device runs on it.
    from pulser import Pulse, Register, Sequence

    seq = Sequence(Register({"a": (0.0, 0.0), "b": (7.0, 0.0)}), device)
    seq.declare_channel("g", "rydberg_global")
    seq.add(Pulse.ConstantPulse(100, 3.0, 0.0, 0.0), "g")
    batch = sdk.create_batch(seq.to_abstract_repr(), [{"runs": 9}],
                             configuration=EmuFreeConfig(strict_validation=True,
                                                         extra_config={"seed": 2}),
                             wait=True)
    assert batch.ordered_jobs[0].result == simulate(seq, 9, 2)


def test_pulsers_own_remote_emulator_backend(pasqal: Gateway) -> None:
    """Pulser's RemoteEmuFreeBackend over pasqal-cloud's PasqalCloudConnection: a batch, and
    an open batch used as a context."""
    from pasqal_cloud import PasqalCloudConnection, RemoteEmuFreeBackend
    from pasqal_cloud.endpoints import Endpoints

    from tests.pasqal.conftest import QsrvToken

    connection = PasqalCloudConnection(
        project_id=PROJECT, token_provider=QsrvToken(pasqal.alice_token),
        endpoints=Endpoints(core=pasqal.url + "/pasqal/core",
                            account=pasqal.url + "/pasqal/account"))
    assert set(connection.fetch_available_devices()) == {"EMU_FREE"}
    backend = RemoteEmuFreeBackend(sequence(), connection)
    results = backend.run(job_params=[{"runs": 30, "variables": {"omega_max": 5.0}}],
                          wait=True)
    (result,) = results.results
    assert sum(result.bitstring_counts.values()) == 30
    with backend.open_batch():
        first = backend.run([{"runs": 5, "variables": {"omega_max": 2.0}}], wait=True)
        second = backend.run([{"runs": 6, "variables": {"omega_max": 3.0}}], wait=True)
    assert first.batch_id == second.batch_id != results.batch_id
    assert [sum(r.bitstring_counts.values()) for r in second.results] == [6]


def test_workloads(sdk: SDK) -> None:
    seq = sequence(atoms=2)
    config = {"sequence": seq.to_abstract_repr(), "runs": 25,
              "variables": {"omega_max": 4.0}, "seed": 9}
    workload = sdk.create_workload("pulser", "EMU_FREE", config, wait=True)
    assert workload.status == "DONE" and workload.backend == "EMU_FREE"
    assert workload.result == {"counter": simulate(seq, 25, 9, omega_max=4.0)}
    again = sdk.get_workload(workload.id)
    assert again.result == workload.result and again.config["runs"] == 25
    slow = dict(config, sequence=sequence(atoms=12, duration=6000).to_abstract_repr(), runs=5)
    pending = sdk.create_workload("pulser", "EMU_FREE", slow)
    cancelled = sdk.cancel_workload(pending.id)
    assert cancelled.status == "CANCELED"
    assert sdk.get_workload(pending.id).status == "CANCELED"
    with pytest.raises(WorkloadCreationError, match="workload_type"):
        sdk.create_workload("qadence", "EMU_FREE", config)
    with pytest.raises(WorkloadCreationError, match="EMU_MPS"):
        sdk.create_workload("pulser", "EMU_MPS", config)
    batch = sdk.create_batch(seq.to_abstract_repr(), [], open=True)
    with pytest.raises(WorkloadFetchingError, match="404"):
        sdk.get_workload(batch.id)  # a batch is not a workload
    sdk.cancel_batch(batch.id)


def test_result_links_are_signed_for_their_job(sdk: SDK, serialized: str) -> None:
    batch = sdk.create_batch(serialized, [{"runs": 8, "variables": {"omega_max": 2.0}}],
                             wait=True)
    job = batch.ordered_jobs[0]
    link = sdk._client._authenticated_request(
        "GET", sdk._client._get_url("get_job_results_link", job_id=job.id))["data"][
        "results_link"]
    plain = requests.get(link, timeout=30)  # no token: the link is the credential
    assert plain.status_code == 200 and plain.json()["counter"] == job.result
    assert requests.get(link.replace("token=", "token=x"), timeout=30).status_code == 404
    other = sdk.create_batch(serialized, [{"runs": 3, "variables": {"omega_max": 2.0}}],
                             wait=True).ordered_jobs[0]
    swapped = link.replace(job.id, other.id)
    assert requests.get(swapped, timeout=30).status_code == 404


def test_projects(pasqal: Gateway, serialized: str) -> None:
    """Each user's projects: the labels their batches carry and their own default project;
    a user with nothing yet has the default, and can switch to it and use it."""
    from pasqal_cloud.errors import ProjectNotFoundError

    from qsrv.gateway import add_user

    sdk = pasqal.sdk(project=PROJECT_A)
    sdk.create_batch(serialized, [], open=True).cancel()
    pasqal.sdk(project=PROJECT_B).create_batch(serialized, [], open=True).cancel()
    alice = {p.id: p.name for p in sdk.get_all_projects()}
    assert list(alice)[:2] == [PROJECT_B, PROJECT_A]  # last used first
    assert list(alice.values()).count("alice (default)") == 1
    assert sdk.switch_to_project(PROJECT_B) == PROJECT_B
    assert sdk.project_id == PROJECT_B

    carol = make_sdk(pasqal.url, add_user(pasqal.data_dir, "carol")[1], new_project())
    (default,) = carol.get_all_projects()  # nothing yet: the default project alone
    assert default.name == "carol (default)" and default.id not in alice
    with pytest.raises(ProjectNotFoundError):
        carol.switch_to_project(PROJECT_A)  # alice's label is not carol's
    assert carol.switch_to_project(default.id) == default.id
    batch = carol.create_batch(serialized, [], open=True)
    assert batch.project_id == default.id
    batch.cancel()
    assert [p.id for p in carol.get_all_projects()] == [default.id]
    answer = requests.get(pasqal.url + "/pasqal/account/api/v1/projects?project_status=ARCHIVED",
                          headers={"Authorization": f"Bearer {pasqal.alice_token}"}, timeout=30)
    assert answer.status_code == 200 and answer.json()["data"] == []


def test_a_bad_token_is_refused(pasqal: Gateway, serialized: str) -> None:
    bad = make_sdk(pasqal.url, "qsrv_not-a-token")
    with pytest.raises(BatchCreationError, match="401"):
        bad.create_batch(serialized, [{"runs": 1, "variables": {"omega_max": 1.0}}])
    with pytest.raises(JobFetchingError, match="401"):
        bad.get_jobs()


def test_another_users_batch_is_missing(sdk: SDK, bob_sdk: SDK, serialized: str) -> None:
    batch = sdk.create_batch(serialized, [{"runs": 4, "variables": {"omega_max": 1.0}}],
                             wait=True)
    job = batch.ordered_jobs[0]
    link = bob_sdk._client._get_url("get_job_results_link", job_id=job.id)
    calls: list[tuple[type[BaseException], Callable[[], object]]] = [
        (BatchFetchingError, lambda: bob_sdk.get_batch(batch.id)),
        (BatchFetchingError, lambda: bob_sdk.get_batch_status(batch.id)),
        (JobFetchingError, lambda: bob_sdk.get_job(job.id)),
        (BatchCancellingError, lambda: bob_sdk.cancel_batch(batch.id)),
        (RebatchError, lambda: bob_sdk.rebatch(batch.id)),
        (JobCreationError,
         lambda: bob_sdk.add_jobs(batch.id, [{"runs": 1, "variables": {"omega_max": 1.0}}])),
        (BatchClosingError, lambda: bob_sdk.close_batch(batch.id)),
        (BatchSetTagsError, lambda: bob_sdk.set_batch_tags(batch.id, ["mine"])),
        (JobCancellingError, lambda: bob_sdk.cancel_job(job.id)),
        (JobCancellingError, lambda: bob_sdk.cancel_jobs(batch.id)),
        (WorkloadFetchingError, lambda: bob_sdk.get_workload(batch.id)),
        (requests.HTTPError, lambda: bob_sdk._client._authenticated_request("GET", link)),
    ]
    for error, call in calls:
        with pytest.raises(error, match="404"):
            call()
    assert bob_sdk.get_jobs(JobFilters(id=job.id)).total == 0
    assert bob_sdk.get_jobs(JobFilters(batch_id=batch.id)).total == 0
    assert bob_sdk.get_batches(BatchFilters(id=batch.id)).total == 0
    mine = sdk.get_batch(batch.id)
    assert mine.status == "DONE" and mine.tags == [] and len(mine.ordered_jobs) == 1
    assert bob_sdk.get_batches().total == 0  # bob made nothing (no rebatch of alice's)


def test_malformed_requests_are_400s_in_the_sdks_error_shape(pasqal: Gateway) -> None:
    import gzip
    import json

    core = pasqal.url + "/pasqal/core"
    headers = {"Authorization": f"Bearer {pasqal.alice_token}",
               "Content-Type": "application/json"}
    gzipped = dict(headers, **{"Content-Encoding": "gzip"})
    cases: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "/api/v1/batches", {"data": b"not gzip at all", "headers": gzipped}),
        ("POST", "/api/v1/batches", {"data": gzip.compress(b"[1, 2]"), "headers": gzipped}),
        ("POST", "/api/v1/batches", {"data": json.dumps(
            {"sequence_builder": "x", "jobs": [{"runs": 1}], "open": "yes"}),
            "headers": headers}),
        ("POST", "/api/v1/batches", {"data": json.dumps(
            {"sequence_builder": "x", "jobs": [{"runs": 0}]}), "headers": headers}),
        ("GET", "/api/v2/jobs?limit=500", {"headers": headers}),
        ("GET", "/api/v2/jobs?status=FOO", {"headers": headers}),
        ("GET", "/api/v2/jobs?start_date=yesterday", {"headers": headers}),
        ("GET", "/api/v1/batches?queue_priority=HIGH", {"headers": headers}),
        ("GET", "/api/v1/batches?open=maybe", {"headers": headers}),
    ]
    for method, path, kwargs in cases:
        answer = requests.request(method, core + path, timeout=30, **kwargs)
        body = answer.json()
        assert answer.status_code == 400, (path, body)
        assert body["code"] == 400 and body["status"] == "fail", body
        assert body["data"]["description"] == body["message"] != ""
    missing = requests.get(core + "/api/v2/batches/nope", headers=headers, timeout=30)
    assert missing.status_code == 404 and missing.json()["code"] == 404
