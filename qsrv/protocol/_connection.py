"""One end of a qsrv connection: handshake, then framed messages. No IO here.

Handshake (mutual challenge-response; the token never crosses the wire)::

    client                                   server
      Hello(version, role, nonce_c)     ->
                                        <-   Challenge(version, nonce_s, proof_s)
      Auth(proof_c)                     ->
                                        <-   Welcome(client_no, info)  or  Reject(reason)

    proof_s = HMAC-SHA256(token, "s" | nonce_c | nonce_s)
    proof_c = HMAC-SHA256(token, "c" | nonce_s | nonce_c)

State table (anything else received is a RemoteProtocolError):

    side    state        receives     -> state
    client  HELLO_SENT   Challenge    -> AUTH_SENT   (the server's proof checked)
    client  AUTH_SENT    Welcome      -> OPEN
    client  any          Reject       -> CLOSED      (AuthenticationError)
    server  WAIT_HELLO   Hello        -> WAIT_AUTH   (version and role checked)
    server  WAIT_AUTH    Auth         -> ACCEPTING   (client proof checked; app calls welcome())
    either  OPEN         messages     -> OPEN

Invariants: until the peer is authenticated only tiny frames are accepted (HANDSHAKE_LIMITS) and
nothing but handshake messages is decoded; `receive()` raises only ProtocolError subclasses.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
from typing import Any

from qsrv.errors import AuthenticationError, LocalProtocolError, RemoteProtocolError
from qsrv.protocol._framing import (
    DEFAULT_LIMITS,
    HANDSHAKE_LIMITS,
    Buffer,
    FrameDecoder,
    Limits,
)
from qsrv.protocol._messages import (
    Auth,
    Challenge,
    Hello,
    Reject,
    Welcome,
    decode_frame,
    encode_frame_of,
)

PROTOCOL_VERSION = 1
ROLES = frozenset({"driver", "worker", "executor", "store", "transfer"})
_HANDSHAKE_TAGS = frozenset(cls.TAG for cls in (Hello, Challenge, Auth, Welcome, Reject))


class State(enum.Enum):
    HELLO_SENT = "hello-sent"
    AUTH_SENT = "auth-sent"
    WAIT_HELLO = "wait-hello"
    WAIT_AUTH = "wait-auth"
    ACCEPTING = "accepting"
    OPEN = "open"
    CLOSED = "closed"


def _proof(token: bytes, label: bytes, first: bytes, second: bytes) -> bytes:
    return hmac.new(token, label + first + second, hashlib.sha256).digest()


class Connection:
    """Sans-IO connection: bytes in via `get_buffer`/`buffer_updated` (or `receive_data`),
    messages out via `receive()`; messages in via `send()`, bytes out as returned pieces."""

    def __init__(self, *, server: bool, token: str, role: str = "",
                 limits: Limits = DEFAULT_LIMITS) -> None:
        if not server and role not in ROLES:
            raise LocalProtocolError(f"unknown role {role!r}")
        self.server = server
        self.role = role  # for a server: the peer's role, once known
        self._token = token.encode()
        self._limits = limits
        self._decoder = FrameDecoder(HANDSHAKE_LIMITS)
        self._decoder.one_at_a_time = True
        self._nonce = secrets.token_bytes(32)
        self._peer_nonce = b""
        self.state = State.WAIT_HELLO if server else State.HELLO_SENT
        self.client_no = 0
        self.info: dict[str, Any] = {}
        self._outgoing: list[Buffer] = []

    # -- handshake ---------------------------------------------------------------------------
    def initiate(self) -> list[Buffer]:
        """A client's first bytes."""
        assert not self.server and self.state is State.HELLO_SENT
        return encode_frame_of([Hello(PROTOCOL_VERSION, self.role, self._nonce)])

    def welcome(self, client_no: int, info: dict[str, Any]) -> list[Buffer]:
        """A server accepts the authenticated peer."""
        if self.state is not State.ACCEPTING:
            raise LocalProtocolError(f"welcome() in state {self.state.value}")
        self.state = State.OPEN
        self.client_no = client_no
        self._open_decoder()
        return encode_frame_of([Welcome(client_no, info)])

    def reject(self, reason: str) -> list[Buffer]:
        self.state = State.CLOSED
        return encode_frame_of([Reject(reason)])

    def data_to_send(self) -> list[Buffer]:
        """Handshake replies produced while receiving."""
        out, self._outgoing = self._outgoing, []
        return out

    def is_open(self) -> bool:
        return self.state is State.OPEN

    @property
    def authenticated(self) -> bool:
        return self.state in (State.ACCEPTING, State.OPEN)

    # -- bytes in ----------------------------------------------------------------------------
    def get_buffer(self, sizehint: int = -1) -> memoryview:
        return self._decoder.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        self._decoder.buffer_updated(nbytes)

    def receive_data(self, data: Buffer) -> None:
        self._decoder.feed(data)

    def receive(self) -> list[Any]:
        """Messages received since the last call (OPEN state only ever returns messages).

        During the handshake this advances the state machine; replies appear in
        `data_to_send()`. A server's handshake ends in ACCEPTING: the caller decides and calls
        `welcome()` or `reject()`.
        """
        out: list[Any] = []
        decoder = self._decoder
        # Handshake: one frame at a time, each judged by the limits and state it arrives in;
        # only a client that has checked the server's proof decodes non-handshake messages
        # (the server may batch them behind Welcome).
        while self.state is not State.OPEN:
            frame = decoder.next_frame()
            if frame is None:
                return out
            trusted = not self.server and self.state is State.AUTH_SENT
            messages = decode_frame(*frame, allowed=None if trusted else _HANDSHAKE_TAGS,
                                    max_messages=decoder.limits.max_messages)
            for i, msg in enumerate(messages):
                self._handshake(msg)
                if self.is_open():  # messages batched after Welcome
                    out.extend(messages[i + 1 :])
                    break
        limit = decoder.limits.max_messages
        for header, buffers in decoder.frames():
            out.extend(decode_frame(header, buffers, max_messages=limit))
        return out

    def _open_decoder(self) -> None:
        self._decoder.limits = self._limits
        self._decoder.one_at_a_time = False

    def _handshake(self, msg: Any) -> None:
        state = self.state
        if isinstance(msg, Reject) and not self.server:
            self.state = State.CLOSED
            raise AuthenticationError(f"the scheduler refused the connection: {msg.reason}")
        if state is State.WAIT_HELLO and isinstance(msg, Hello):
            if msg.version != PROTOCOL_VERSION:
                self._outgoing += self.reject(
                    f"protocol version {msg.version} not supported (this is {PROTOCOL_VERSION})"
                )
                raise AuthenticationError(f"peer speaks protocol version {msg.version}")
            if msg.role not in ROLES or len(msg.nonce) != 32:
                raise RemoteProtocolError(f"malformed hello (role {msg.role!r})")
            self.role, self._peer_nonce = msg.role, msg.nonce
            proof = _proof(self._token, b"s", msg.nonce, self._nonce)
            self._outgoing += encode_frame_of([Challenge(PROTOCOL_VERSION, self._nonce, proof)])
            self.state = State.WAIT_AUTH
        elif state is State.WAIT_AUTH and isinstance(msg, Auth):
            expected = _proof(self._token, b"c", self._nonce, self._peer_nonce)
            if not hmac.compare_digest(expected, msg.proof):
                self._outgoing += self.reject("authentication failed: wrong cluster token")
                raise AuthenticationError("peer failed the token challenge")
            self.state = State.ACCEPTING
        elif state is State.HELLO_SENT and isinstance(msg, Challenge):
            if msg.version != PROTOCOL_VERSION:
                raise AuthenticationError(f"scheduler speaks protocol version {msg.version}")
            expected = _proof(self._token, b"s", self._nonce, msg.nonce)
            if not hmac.compare_digest(expected, msg.proof):
                raise AuthenticationError(
                    "the scheduler could not prove it holds the cluster token (wrong token?)"
                )
            self._outgoing += encode_frame_of([Auth(_proof(self._token, b"c", msg.nonce,
                                                              self._nonce))])
            self.state = State.AUTH_SENT
        elif state is State.AUTH_SENT and isinstance(msg, Welcome):
            self.client_no, self.info = msg.client_no, msg.info
            self._open_decoder()
            self.state = State.OPEN
        else:
            raise RemoteProtocolError(
                f"unexpected {type(msg).__name__} during the handshake ({state.value})"
            )

    # -- messages out ------------------------------------------------------------------------
    def send(self, messages: list[Any]) -> list[Buffer]:
        if self.state is not State.OPEN:
            raise LocalProtocolError(f"cannot send messages in state {self.state.value}")
        return encode_frame_of(messages)
