"""Carriers of the sans-IO protocol: asyncio (scheduler, agent, driver) and blocking sockets."""

from qsrv.transport._asyncio import FramedProtocol
from qsrv.transport._sync import SyncConnection, parse_address

__all__ = ["FramedProtocol", "SyncConnection", "parse_address"]
