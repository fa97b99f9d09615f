"""The second script of ``shared_session.py``: it joins the session through its
deduplication id, runs a job on it and detaches (its ``with`` does not end a session it did
not create). QSRV_GATEWAY and QSRV_GATEWAY_TOKEN say which gateway and user."""

from __future__ import annotations

from qsrv.gateway import GatewayClient

PLATFORM = "aer.statevector.cpu"
DEDUPLICATION_ID = "shared-demo"
GHZ = ('OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[3];\ncreg c[3];\nh q[0];\n'
       'cx q[0],q[1];\ncx q[1],q[2];\nmeasure q -> c;\n')


def main() -> None:
    client = GatewayClient()
    with client.session(PLATFORM, deduplication_id=DEDUPLICATION_ID) as session:
        print(f"second script: session {session.id} (created: {session.created})")
        job = session.run(GHZ, shots=300)
        print(f"second script: job {job.id} -> {job.wait().result}")
    print(f"second script: detached; the session is {session.refresh().status}")


if __name__ == "__main__":
    main()
