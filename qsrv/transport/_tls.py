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

from qsrv.errors import AuthenticationError, ConfigError, ConnectionLostError

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


# ---- what a client says when TLS is on at one end only -------------------------------------
def closed_in_handshake(address: str, tls: bool) -> str:
    """Why the scheduler may have closed a connection before the handshake completed.

    A scheduler that serves TLS drops a plain client without a word (and a plain one drops a
    TLS client's first bytes as a malformed frame): say which side uses TLS, and what sets it.
    """
    if tls:
        return (f"the scheduler at {address} closed the connection during the handshake; this "
                f"client uses TLS ({ENV_CA}/{ENV_CERT} or --tls-ca/--tls-cert are set): if the "
                f"scheduler was started without --tls-cert, unset them")
    return (f"the scheduler at {address} closed the connection during the handshake; this "
            f"client does not use TLS: if the scheduler was started with --tls-cert, set "
            f"{ENV_CA} (or --tls-ca) to the CA that signed its certificate (and "
            f"{ENV_CERT}/{ENV_KEY}, or --tls-cert/--tls-key, when it requires client "
            f"certificates)")


def tls_failure(address: str, exc: BaseException) -> AuthenticationError | ConnectionLostError:
    """The error for a TLS handshake with the scheduler that failed with ``exc``.

    A certificate that does not verify, or a client certificate the scheduler refuses, is
    final (AuthenticationError); a handshake the
    scheduler broke off -- most often a scheduler that does not serve TLS -- may be retried
    (ConnectionLostError). Both say which option or variable sets TLS here.
    """
    if isinstance(exc, ssl.SSLCertVerificationError):
        return AuthenticationError(
            f"TLS with the scheduler at {address} failed: its certificate was not accepted "
            f"({exc.verify_message or exc}); {ENV_CA} (or --tls-ca) must name the CA that "
            f"signed it")
    reason = str(getattr(exc, "reason", "") or "")
    if "ALERT" in reason and ("CERTIFICATE" in reason or "UNKNOWN_CA" in reason):
        return AuthenticationError(
            f"TLS with the scheduler at {address} failed: it refused this client's certificate "
            f"or its absence ({reason}); set {ENV_CERT} and {ENV_KEY} (or --tls-cert/--tls-key) "
            f"to a certificate signed by the CA its --tls-ca names")
    return ConnectionLostError(
        f"TLS with the scheduler at {address} failed ({exc}): does it serve TLS? This client "
        f"uses TLS because {ENV_CA}/{ENV_CERT} (or --tls-ca/--tls-cert) are set; unset them "
        f"to join a scheduler started without --tls-cert")
