"""The public surface is deliberate: `qsrv.__all__` is pinned, and everything in it exists."""

from __future__ import annotations

import qsrv
import qsrv.errors

PUBLIC = {
    "Client", "Job", "Program", "get_arguments", "save_result", "GatewayProvider",
    "QuantumServerless", "backends",
    "ConfigError", "GetTimeoutError", "InfeasibleTaskError", "ObjectLostError", "ObjectRef",
    "QsrvError", "RemoteFunction", "TaskCancelledError", "TaskError", "TaskTimeoutError",
    "WorkerDiedError", "__version__", "cancel", "distribute_task", "get", "init",
    "is_initialized", "put", "runtime_context", "shutdown", "status", "wait",
    "timeline",
    "Reservation", "ReservationError", "reserve",
}


def test_public_names_are_pinned() -> None:
    assert set(qsrv.__all__) == PUBLIC
    for name in qsrv.__all__:
        assert hasattr(qsrv, name), name


def test_every_error_descends_from_qsrv_error() -> None:
    for name in qsrv.errors.__all__:
        cls = getattr(qsrv.errors, name)
        assert issubclass(cls, qsrv.errors.QsrvError), name
        assert name in (qsrv.errors.__doc__ or ""), f"{name} missing from the drawn tree"


def test_remote_errors_are_instances_of_their_cause() -> None:
    err = qsrv.errors.TaskError.wrap(KeyError("k"), "Traceback ...")
    assert isinstance(err, KeyError) and isinstance(err, qsrv.errors.TaskError)
    assert "Traceback" in str(err)


class _Described(Exception):
    """An error whose __str__ reads an attribute set in its __init__ (as qiskit-aer's do)."""

    def __init__(self, *words: str) -> None:
        super().__init__(*words)
        self.message = " ".join(words)

    def __str__(self) -> str:
        return repr(self.message)


def test_remote_errors_keep_their_attributes_and_text() -> None:
    err = qsrv.errors.TaskError.wrap(_Described("bad", "circuit"), "Traceback ...")
    assert isinstance(err, _Described) and err.message == "bad circuit"
    assert str(err).startswith("'bad circuit'") and "Traceback" in str(err)
