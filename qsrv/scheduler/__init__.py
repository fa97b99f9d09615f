"""The scheduler: a pure state machine (`SchedulerState`) and its TCP server."""

from qsrv.scheduler._server import SchedulerServer, install_uvloop, is_loopback, new_token
from qsrv.scheduler._state import SchedulerState

__all__ = ["SchedulerServer", "SchedulerState", "install_uvloop", "is_loopback", "new_token"]
