"""What the scheduler's state machine takes in (events) and gives out (actions)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from qsrv.protocol import Message


# ---- events ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Connected:
    conn: int
    role: str  # "driver", "worker" or "executor"
    client_no: int
    tenant: str = ""  # a scoped credential's tenant (a gateway job's): its reads are checked


@dataclass(frozen=True, slots=True)
class Received:
    conn: int
    msg: Message


@dataclass(frozen=True, slots=True)
class ReceivedBatch:
    """Several messages from one connection (one frame): placement runs once, after all."""

    conn: int
    msgs: list[Message]


@dataclass(frozen=True, slots=True)
class Disconnected:
    conn: int
    reason: str


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passes. ``stalled``: seconds of the time since the last tick the scheduler's
    event loop ran late (busy, or not given the CPU), so could not read what peers sent;
    ``lag``: the longest single delay among them."""

    now: float
    stalled: float = 0.0
    lag: float = 0.0


Event = Connected | Received | ReceivedBatch | Disconnected | Tick


# ---- actions -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Send:
    conn: int
    msg: Message


@dataclass(frozen=True, slots=True)
class Close:
    conn: int
    reason: str


@dataclass(frozen=True, slots=True)
class Log:
    level: Literal["info", "warning", "error"]
    text: str


Action = Send | Close | Log
