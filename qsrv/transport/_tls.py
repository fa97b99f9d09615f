"""Optional TLS for clusters that span machines.

The scheduler serves TLS when given a certificate and key (and, with a CA, also requires client
certificates). Every client — driver, worker agent, executor, `qsrv status` — reads its TLS
settings from QSRV_TLS_CA (verify the scheduler), QSRV_TLS_CERT and QSRV_TLS_KEY (present a
client certificate); the CLI options set these, and executors inherit them from their agent.
The token challenge runs inside TLS as well: TLS protects the bytes, the token admits the peer.
"""

from __future__ import annotations

import os
import ssl

from qsrv.errors import ConfigError

ENV_CA, ENV_CERT, ENV_KEY = "QSRV_TLS_CA", "QSRV_TLS_CERT", "QSRV_TLS_KEY"


def server_context(cert: str, key: str, ca: str | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
        if ca:
            ctx.load_verify_locations(ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the TLS certificate/key/CA: {exc}") from exc
    return ctx


def client_context(ca: str | None = None, cert: str | None = None,
                   key: str | None = None) -> ssl.SSLContext | None:
    """A client context from the arguments or QSRV_TLS_*; None when TLS is not configured."""
    ca = ca or os.environ.get(ENV_CA) or None
    cert = cert or os.environ.get(ENV_CERT) or None
    key = key or os.environ.get(ENV_KEY) or None
    if not (ca or cert):
        return None
    try:
        ctx = ssl.create_default_context(cafile=ca)
        if cert:
            ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the TLS settings ({ENV_CA}/{ENV_CERT}/{ENV_KEY}): "
                          f"{exc}") from exc
    return ctx
