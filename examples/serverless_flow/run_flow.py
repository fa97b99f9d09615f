"""The classic serverless flow: upload a program, run it, read status, logs and result.

    python examples/serverless_flow/run_flow.py

With QSRV_GATEWAY and QSRV_GATEWAY_TOKEN set, it uses that gateway. Otherwise it starts a
throwaway deployment on loopback, as an operator would with the CLI: a scheduler
(`qsrv scheduler`), one worker (`qsrv worker`), a gateway (`qsrv gateway --cluster ...`) and a
user (`qsrv user add`); and stops it all at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from qsrv.gateway import Client, Program, add_user, start_gateway_process

HERE = Path(__file__).resolve().parent


@contextlib.contextmanager
def local_deployment() -> Iterator[tuple[str, str]]:
    """A scheduler, a worker and a gateway on loopback; yields (gateway URL, user token)."""
    with tempfile.TemporaryDirectory(prefix="qsrv-flow-") as tmp:
        cluster_token = secrets.token_hex(16)
        env = dict(os.environ, QSRV_TOKEN=cluster_token)
        env.pop("QSRV_ADDRESS", None)
        scheduler = subprocess.Popen(
            [sys.executable, "-m", "qsrv", "scheduler", "--port", "0"],
            env=env, stdout=subprocess.PIPE, text=True)
        procs: list[subprocess.Popen[str] | subprocess.Popen[bytes]] = [scheduler]
        try:
            assert scheduler.stdout is not None
            address = scheduler.stdout.readline().split()[-1]  # "... listening on HOST:PORT"
            procs.insert(0, subprocess.Popen(
                [sys.executable, "-m", "qsrv", "worker", "--address", address, "--cpus", "2"],
                env=env))
            data_dir = Path(tmp) / "gateway"
            gateway, url = start_gateway_process(address, cluster_token, data_dir)
            procs.insert(0, gateway)
            _, user_token = add_user(data_dir, "demo")
            yield url, user_token
        finally:
            for proc in procs:  # gateway first (it ends its jobs), then worker and scheduler
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def run(client: Client) -> dict[str, object]:
    program = Program(
        title="sample-random-circuits",
        entrypoint="sample_circuits.py",
        working_dir=HERE / "program",
        description="Samples random circuits in parallel with @qsrv.distribute_task",
    )
    uploaded = client.upload(program)
    print(f"uploaded {uploaded.title} version {uploaded.version}")

    job = client.run(uploaded.title, {"num_circuits": 6, "num_qubits": 5, "depth": 8,
                                      "shots": 2000, "seed": 7})
    print(f"job {job.job_id}: {job.status()}")

    result: dict[str, object] = job.result(timeout=300)  # long-polls until the job ends
    print(f"job {job.job_id}: {job.status()}")
    print("---- logs ----")
    print(job.logs().rstrip())
    print("---- result ----")
    counts = result["counts"]
    assert isinstance(counts, list)
    for i, circuit in enumerate(counts):
        print(f"circuit {i}: {sum(circuit.values())} shots over {len(circuit)} outcomes")
    return result


def main() -> None:
    if os.environ.get("QSRV_GATEWAY") and os.environ.get("QSRV_GATEWAY_TOKEN"):
        result = run(Client())
    else:
        with local_deployment() as (url, token):
            result = run(Client(url, token))
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
