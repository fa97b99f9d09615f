"""The cluster's doors: a job's scoped credential (a driver only, revoked when the job ends,
even across a scheduler restart, on the scheduler and on every worker's store ports, which
serve it only the objects whose location it was given), and floods of idle or slow sockets
on every port while a driver keeps working (limits per address settable on the command
line)."""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

import qsrv
from qsrv.errors import ConnectionLostError
from qsrv.gateway import Client, Program, add_user, start_gateway_process
from qsrv.transport import SyncConnection
from tests._support import GATE_CLIENT, Gate, stop_process, wait_for
from tests._support.cluster import TOKEN, Cluster, cli_env, free_port
from tests.security._cluster import (
    alices_gateway,
    closed,
    closed_by_peer,
    flood,
    refusal,
    run_script,
)

JOB = """
import os
import qsrv
from qsrv.gateway import save_result

@qsrv.distribute_task
def plus_one(x):
    return x + 1

qsrv.init()  # QSRV_ADDRESS, and QSRV_TOKEN: the job's own credential
save_result({"token": os.environ["QSRV_TOKEN"], "value": qsrv.get(plus_one(41))})
"""


def test_a_jobs_credential_is_a_driver_until_the_job_ends(cluster: Cluster,
                                                          tmp_path: Path) -> None:
    data_dir = tmp_path / "gateway"
    token = add_user(data_dir, "alice")[1]
    gateway, url = start_gateway_process(cluster.address, TOKEN, data_dir)
    try:
        folder = tmp_path / "job"
        folder.mkdir()
        (folder / "main.py").write_text(textwrap.dedent(JOB))
        result = Client(url, token).run(Program("p", "main.py", folder)).result(timeout=120)
        assert result["value"] == 42  # it ran a task on the cluster as a driver
        credential = result["token"]
        assert credential.startswith("qsrvcred:") and TOKEN not in credential
        assert "never as 'worker'" in refusal(cluster.address, credential, "worker")
        # the job ended: its credential is revoked (the gateway told the scheduler)
        assert "revoked" in wait_for(lambda: refusal(cluster.address, credential),
                                     what="the credential's revocation")
        # a restarted scheduler forgets what it was told: the gateway tells it again
        port = int(cluster.address.rsplit(":", 1)[1])
        cluster.start_scheduler(port)
        assert "revoked" in wait_for(lambda: refusal(cluster.address, credential),
                                     timeout=60, what="the revocation, sent again")
    finally:
        stop_process(gateway, 30)


# -- floods -------------------------------------------------------------------------------------


@qsrv.distribute_task
def double(x: int) -> int:
    return 2 * x


def test_idle_sockets_from_one_address_leave_others_their_slots(cluster: Cluster) -> None:
    """500 idle sockets from one address: only its share of the waiting slots is taken; a
    connected driver keeps working and a new one connects."""
    qsrv.init(address=cluster.address, token=TOKEN)
    idle = flood(cluster.address, 500)
    try:
        assert qsrv.get([double(i) for i in range(20)], timeout=60) == [
            2 * i for i in range(20)]
        assert refusal(cluster.address, TOKEN) == ""  # a new driver from another address
        wait_for(lambda: closed(idle) >= len(idle) - 16,
                 what="the connections over this address's share to be closed")
    finally:
        for sock in idle:
            sock.close()


def test_slow_sockets_on_a_workers_transfer_port_hold_few_threads(cluster: Cluster) -> None:
    qsrv.init(address=cluster.address, token=TOKEN)
    [worker] = cluster.status()["workers"]
    address = worker["info"]["store"]["address"]
    agent = psutil.Process(cluster.workers["w"].pid)
    before = agent.num_threads()
    idle = flood(address, 300)
    try:
        wait_for(lambda: closed(idle) >= 300 - 8,
                 what="the connections over the limit to be closed")
        assert agent.num_threads() <= before + 8 + 2
        assert qsrv.get([double(i) for i in range(10)], timeout=60) == [
            2 * i for i in range(10)]
    finally:
        for sock in idle:
            sock.close()


def _trickle(sock: socket.socket, stop: threading.Event, sent: list[int]) -> None:
    """A frame prefix announcing a small header, then its bytes one at a time."""
    try:
        sock.sendall(struct.pack("!II", 60, 0))
        while not stop.is_set() and sent[0] < 200:
            sock.sendall(b"\x90")
            sent[0] += 1
            stop.wait(0.05)
    except OSError:
        return


def test_the_handshake_deadline_is_total_not_per_byte() -> None:
    """A peer that sends a byte every 50 ms never completes a handshake; it is dropped at the
    deadline, long before it runs out of bytes (a per-read timeout would wait for ever)."""
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    stop, sent = threading.Event(), [0]
    trickler = threading.Thread(target=_trickle, args=(client, stop, sent), daemon=True)
    trickler.start()
    try:
        with pytest.raises(ConnectionLostError):
            SyncConnection.accept(server, TOKEN, {}, roles=frozenset({"transfer"}),
                                  timeout=1.0)
        assert sent[0] < 200  # it was still trickling when it was dropped
    finally:
        stop.set()
        trickler.join(10)
        client.close()
        listener.close()


def test_the_schedulers_handshake_deadline_is_total() -> None:
    with Cluster(0, "--handshake-timeout", "1") as c:
        host, port = c.address.rsplit(":", 1)
        client = socket.create_connection((host, int(port)))
        stop, sent = threading.Event(), [0]
        trickler = threading.Thread(target=_trickle, args=(client, stop, sent), daemon=True)
        trickler.start()
        try:
            wait_for(lambda: not trickler.is_alive() or closed_by_peer(client), timeout=30,
                     what="the scheduler to drop the slow peer")
            assert sent[0] < 200
        finally:
            stop.set()
            trickler.join(10)
            client.close()


STEAL = """
import os
import qsrv
from qsrv.gateway import save_result

@qsrv.distribute_task
def steal():
    raw = open("/proc/self/environ", "rb").read().split(b"\\0")
    env = dict(kv.decode().split("=", 1) for kv in raw if b"=" in kv)
    return env.get("QSRV_TOKEN", "")

qsrv.init()
save_result(qsrv.get(steal()))
"""


def test_a_jobs_task_cannot_take_the_cluster_token_from_its_executor(
        cluster: Cluster, tmp_path: Path) -> None:
    with alices_gateway(cluster.address, tmp_path) as alice:
        stolen = run_script(alice, tmp_path, STEAL)
    assert refusal(cluster.address, stolen or "none", "worker") != ""


def test_credentials_of_jobs_killed_with_the_gateway_are_revoked(cluster: Cluster,
                                                                 tmp_path: Path) -> None:
    data_dir = tmp_path / "gateway"
    token = add_user(data_dir, "alice")[1]
    gateway, url = start_gateway_process(cluster.address, TOKEN, data_dir)
    folder = tmp_path / "job"
    folder.mkdir()
    with Gate(timeout=60) as gate:
        (folder / "main.py").write_text(
            GATE_CLIENT + f"import os\ngate({gate.port}, os.environ['QSRV_TOKEN'].encode())\n")
        try:
            Client(url, token).run(Program("p", "main.py", folder))
            conn = gate.accept()
            credential = conn.makefile().readline().strip()
            assert refusal(cluster.address, credential) == ""  # valid while it runs
        finally:
            stop_process(gateway, 30)  # ends the job with the gateway
    assert "revoked" in wait_for(lambda: refusal(cluster.address, credential),
                                 what="the credential's revocation at shutdown")


def test_a_jobs_credential_opens_a_workers_store_ports_only_while_the_job_runs(
        cluster: Cluster, tmp_path: Path) -> None:
    """The worker agent's store ports (local ``store``, TCP ``transfer``) accept a running
    job's credential; once the job ended they refuse it, and a connection it opened while
    the job ran is closed: the scheduler passes the gateway's revocation on to the agents."""
    [worker] = cluster.status()["workers"]
    store = worker["info"]["store"]
    ports = [(f"unix:{store['socket']}", "store"), (store["address"], "transfer")]
    data_dir = tmp_path / "gateway"
    token = add_user(data_dir, "alice")[1]
    gateway, url = start_gateway_process(cluster.address, TOKEN, data_dir)
    folder = tmp_path / "job"
    folder.mkdir()
    held: list[SyncConnection] = []
    try:
        with Gate(timeout=60) as gate:
            (folder / "main.py").write_text(
                GATE_CLIENT + f"import os\ngate({gate.port}, os.environ['QSRV_TOKEN'].encode())\n")
            job = Client(url, token).run(Program("p", "main.py", folder))
            conn = gate.accept()
            credential = conn.makefile().readline().strip()
            assert credential.startswith("qsrvcred:job/")
            for address, role in ports:  # while the job runs
                assert refusal(address, credential, role) == ""
                held.append(SyncConnection(address, credential, role, timeout=10))
            conn.sendall(b"x")  # released: the job ends
            job.result(timeout=120)
        for address, role in ports:
            assert "revoked" in wait_for(lambda a=address, r=role: refusal(a, credential, r),
                                         what=f"the {role} port to refuse the ended job's")
        for sc in held:
            sc.sock.settimeout(30)
            assert sc.sock.recv(1) == b""  # closed by the agent, not by its own deadline
        assert refusal(ports[1][0], TOKEN, "transfer") == ""  # the cluster token still opens it
    finally:
        for sc in held:
            sc.close()
        stop_process(gateway, 30)


def test_the_per_address_limits_are_options_of_the_scheduler_and_the_worker() -> None:
    """``--max-pending-per-address`` on ``qsrv scheduler`` and ``qsrv worker``: idle sockets
    from one address keep only that many slots on the scheduler's port and on the agent's
    transfer port; a driver from another address keeps working."""
    qsrv.shutdown()
    with Cluster(free_port(), "--max-pending-per-address", "3") as c:
        c.worker("w", "--cpus", "2", "--max-pending-per-address", "2")
        wait_for(lambda: c.ready({"w"}), what="the worker")
        [worker] = c.status()["workers"]
        transfer = worker["info"]["store"]["address"]
        qsrv.init(address=c.address, token=TOKEN)
        try:
            on_scheduler, on_transfer = flood(c.address, 40), flood(transfer, 40)
            try:
                wait_for(lambda: closed(on_scheduler) >= len(on_scheduler) - 3,
                         what="the scheduler to keep only 3 of the address's sockets")
                wait_for(lambda: closed(on_transfer) >= len(on_transfer) - 2,
                         what="the transfer port to keep only 2 of the address's sockets")
                assert qsrv.get([double(i) for i in range(10)], timeout=60) == [
                    2 * i for i in range(10)]
                assert refusal(c.address, TOKEN) == ""
                assert refusal(transfer, TOKEN, "transfer") == ""
            finally:
                for sock in on_scheduler + on_transfer:
                    sock.close()
        finally:
            qsrv.shutdown()


@pytest.mark.parametrize("command", ["scheduler", "worker"])
def test_a_per_address_limit_below_one_is_refused(command: str) -> None:
    out = subprocess.run([sys.executable, "-m", "qsrv", command, "--max-pending-per-address",
                          "0"], env=cli_env(), capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "--max-pending-per-address must be at least 1" in out.stderr


GUESS = """
import os
from qsrv.errors import QsrvError
from qsrv.gateway import get_arguments, save_result
from qsrv.store import NodeStore, fetch

args = get_arguments()
oid = int(args["oid"], 16)
out = {}
for name in ("guessed", "given"):  # the id alone, and the location the scheduler would give
    where = bytes.fromhex(args[name])
    try:
        out[name] = str(fetch(oid, where, os.environ["QSRV_TOKEN"])[1][0].nbytes)
    except QsrvError as exc:
        out[name] = f"denied: {exc}"
    try:
        NodeStore(args["socket"], os.environ["QSRV_TOKEN"]).load(oid, where)
        out[name + " locally"] = "read"
    except QsrvError as exc:
        out[name + " locally"] = f"denied: {exc}"
save_result(out)
"""


def test_a_jobs_credential_cannot_read_a_guessed_object_from_a_workers_store(
        cluster: Cluster, tmp_path: Path) -> None:
    """Object ids are guessable (a client number and a counter). A job that knows another
    driver's object id, the worker and its store's addresses, holds a credential both store
    ports accept, and asks for the object: without the ticket of its location it gets
    nothing; with the location it would have been given, the same request reads it (so the
    ticket is all that stands in the way)."""
    import numpy as np

    from qsrv.protocol import encode_location, object_ticket

    qsrv.init(address=cluster.address, token=TOKEN)
    secret = qsrv.put(np.arange(1 << 16, dtype=np.float64))  # stored: 512 kB
    oid = int(secret.id, 16)
    [worker] = cluster.status()["workers"]
    store = worker["info"]["store"]
    size = (1 << 16) * 8
    guessed = encode_location(worker["id"], size, store["address"])
    given = encode_location(worker["id"], size, store["address"], object_ticket(TOKEN, oid))
    with alices_gateway(cluster.address, tmp_path) as alice:
        out = run_script(alice, tmp_path, GUESS, {
            "oid": secret.id, "guessed": guessed.hex(), "given": given.hex(),
            "socket": store["socket"]})
    assert out["guessed"].startswith("denied") and "no object" in out["guessed"], out
    assert out["guessed locally"].startswith("denied"), out
    assert out["given"] == str(size), out  # the same credential, with the ticket: read
    assert out["given locally"] == "read", out


def test_a_worker_that_joins_later_hears_of_earlier_revocations(cluster: Cluster) -> None:
    """Revocations told to the scheduler before a worker joined reach that worker when it
    registers: its store ports refuse them from the start; the others still open them."""
    from qsrv.protocol import RevokeCredentials, job_credential

    ended = job_credential(TOKEN, "alice", "ended", time.time() + 600)
    running = job_credential(TOKEN, "alice", "running", time.time() + 600)
    link = SyncConnection(cluster.address, TOKEN, "gateway", timeout=10)
    try:
        link.send([RevokeCredentials([ended.split(":", 2)[1]])])
        assert "revoked" in wait_for(lambda: refusal(cluster.address, ended),
                                     what="the scheduler to take the revocation")
    finally:
        link.close()
    cluster.worker("late", "--cpus", "1")
    wait_for(lambda: cluster.ready({"late"}), what="the late worker")
    [late] = [w for w in cluster.status()["workers"] if w["name"] == "late"]
    store = late["info"]["store"]
    for address, role in ((f"unix:{store['socket']}", "store"), (store["address"], "transfer")):
        assert "revoked" in refusal(address, ended, role)
        assert refusal(address, running, role) == ""
