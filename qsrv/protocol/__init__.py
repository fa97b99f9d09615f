"""The wire protocol, sans-IO: framing, typed messages, handshake. No sockets, no asyncio."""

from qsrv.protocol._connection import PROTOCOL_VERSION, ROLES, Connection, State
from qsrv.protocol._framing import HANDSHAKE_LIMITS, Buffer, FrameDecoder, Limits, encode_frame
from qsrv.protocol._messages import (
    OK,
    SYSTEM_ERROR,
    TASK_ERROR,
    Auth,
    Bufs,
    Cancel,
    Challenge,
    FunctionDef,
    Heartbeat,
    Hello,
    KillExecutor,
    Message,
    Notice,
    ObjectValue,
    PutObject,
    RefUpdate,
    RegisterExecutor,
    RegisterFunction,
    RegisterWorker,
    Reject,
    RunTask,
    SpawnExecutor,
    StatusReply,
    StatusRequest,
    SubmitTask,
    Subscribe,
    TaskBlocked,
    TaskDone,
    TaskUnblocked,
    Welcome,
    WorkerAccepted,
    decode_frame,
    encode_frame_of,
)

__all__ = [
    "HANDSHAKE_LIMITS", "OK", "PROTOCOL_VERSION", "ROLES", "SYSTEM_ERROR", "TASK_ERROR",
    "Auth", "Buffer", "Bufs", "Cancel", "Challenge", "Connection", "FrameDecoder",
    "FunctionDef", "Heartbeat", "Hello", "KillExecutor", "Limits", "Message", "Notice",
    "ObjectValue", "PutObject", "RefUpdate", "RegisterExecutor", "RegisterFunction",
    "RegisterWorker", "Reject", "RunTask", "SpawnExecutor", "State", "StatusReply",
    "StatusRequest", "SubmitTask", "Subscribe", "TaskBlocked", "TaskDone", "TaskUnblocked",
    "Welcome", "WorkerAccepted", "decode_frame", "encode_frame", "encode_frame_of",
]
