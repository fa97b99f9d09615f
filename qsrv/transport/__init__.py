"""Carriers of the sans-IO protocol: asyncio (scheduler, agent, driver) and blocking sockets."""

from qsrv.transport._asyncio import FramedProtocol
from qsrv.transport._sync import SyncConnection, parse_address, unix_path
from qsrv.transport._tls import client_context, server_context

__all__ = ["FramedProtocol", "SyncConnection", "client_context", "parse_address",
           "server_context", "unix_path"]
