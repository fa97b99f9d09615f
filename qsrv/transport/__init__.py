"""Carriers of the sans-IO protocol: asyncio (scheduler, agent, driver) and blocking sockets.

``FramedProtocol`` carries a ``Connection`` over an asyncio transport (``open_client`` opens
one to a scheduler; ``RateLimitedLog`` keeps floods of one warning short);
``SyncConnection`` over a blocking socket. ``parse_address`` and
``unix_path`` read ``HOST:PORT``/``unix:PATH`` addresses. TLS: ``server_context`` and
``client_context``, configured through the environment variables named ``ENV_CA``,
``ENV_CERT`` and ``ENV_KEY``; when only one end uses TLS, the errors say which, and what
sets it.

Everything else in this package is private to it.
"""

from qsrv.transport._asyncio import FramedProtocol, RateLimitedLog, open_client
from qsrv.transport._sync import SyncConnection, parse_address, unix_path
from qsrv.transport._tls import ENV_CA, ENV_CERT, ENV_KEY, client_context, server_context

__all__ = ["ENV_CA", "ENV_CERT", "ENV_KEY", "FramedProtocol", "RateLimitedLog", "SyncConnection",
           "client_context", "open_client", "parse_address", "server_context", "unix_path"]
