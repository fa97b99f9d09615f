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

Frames sent respect the peer's limits: `send()` splits a batch into as many frames as it takes
(by message count, header bytes, buffer count and bytes), aiming below the limits at
FRAME_MESSAGES and FRAME_HEADER per frame. The peer's limits are DEFAULT_LIMITS unless given
(`peer_limits`); a server advertises its own in Welcome (``info["limits"]``, taken out of
`info` by the client). A single message that no frame within the limits can carry is a
LocalProtocolError, raised before anything of the batch is returned.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import math
import secrets
import struct
from collections.abc import Callable
from typing import Any

from qsrv.errors import AuthenticationError, LocalProtocolError, RemoteProtocolError
from qsrv.protocol._credentials import (
    DERIVED_ROLES,
    KIND_ROLES,
    derive_secret,
    parse_credential_id,
    split_credential,
)
from qsrv.protocol._framing import (
    DEFAULT_LIMITS,
    FRAME_HEADER,
    FRAME_MESSAGES,
    HANDSHAKE_LIMITS,
    Buffer,
    FrameDecoder,
    Limits,
)
from qsrv.protocol._messages import (
    Auth,
    Challenge,
    Hello,
    HelloAs,
    Reject,
    Welcome,
    decode_frame,
    encode_frame_of,
)

PROTOCOL_VERSION = 1
ROLES = frozenset({"driver", "worker", "executor", "store", "transfer", "gateway", "monitor"})
_HANDSHAKE_TAGS = frozenset(cls.TAG for cls in (Hello, HelloAs, Challenge, Auth, Welcome,
                                                Reject))
_LIMIT_FIELDS = ("max_header", "max_buffers", "max_buffer", "max_frame", "max_messages")
_PREFIX = struct.Struct("!II")  # header length, buffer count: how every frame starts


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
                 limits: Limits = DEFAULT_LIMITS, peer_limits: Limits | None = None,
                 credentials: Callable[[str], str | None] | None = None,
                 derived_roles: frozenset[str] = DERIVED_ROLES) -> None:
        """``token``: the cluster token, or (a client's) a derived credential (see
        _credentials.py). A server accepts derived credentials only with ``credentials``:
        called with a proven credential's id, it returns why it is refused (None: accepted);
        and only for ``derived_roles``."""
        if not server and role not in ROLES:
            raise LocalProtocolError(f"unknown role {role!r}")
        self.server = server
        self.role = role  # for a server: the peer's role, once known
        derived = None if server else split_credential(token)
        self.credential: str | None = derived[0] if derived else None  # the peer's, on a server
        self.tenant = ""  # a server's peer with a derived credential: whose work it carries
        self._credentials = credentials
        self._derived_roles = derived_roles
        self._token = (derived[1] if derived else token).encode()
        self._limits = limits  # what this side accepts
        self._peer_given = peer_limits is not None
        self._set_peer_limits(peer_limits or DEFAULT_LIMITS)
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
        if self.credential is not None:
            return encode_frame_of([HelloAs(PROTOCOL_VERSION, self.role, self._nonce,
                                            self.credential)])
        return encode_frame_of([Hello(PROTOCOL_VERSION, self.role, self._nonce)])

    def welcome(self, client_no: int, info: dict[str, Any]) -> list[Buffer]:
        """A server accepts the authenticated peer."""
        if self.state is not State.ACCEPTING:
            raise LocalProtocolError(f"welcome() in state {self.state.value}")
        self.state = State.OPEN
        self.client_no = client_no
        self._open_decoder()
        limits = [getattr(self._limits, name) for name in _LIMIT_FIELDS]
        return encode_frame_of([Welcome(client_no, {**info, "limits": limits})])

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
        if state is State.WAIT_HELLO and isinstance(msg, Hello | HelloAs):
            if msg.version != PROTOCOL_VERSION:
                self._outgoing += self.reject(
                    f"protocol version {msg.version} not supported (this is {PROTOCOL_VERSION})"
                )
                raise AuthenticationError(f"peer speaks protocol version {msg.version}")
            if msg.role not in ROLES or len(msg.nonce) != 32:
                raise RemoteProtocolError(f"malformed hello (role {msg.role!r})")
            self.role, self._peer_nonce = msg.role, msg.nonce
            if isinstance(msg, HelloAs):
                self._derived_hello(msg)
            proof = _proof(self._token, b"s", msg.nonce, self._nonce)
            self._outgoing += encode_frame_of([Challenge(PROTOCOL_VERSION, self._nonce, proof)])
            self.state = State.WAIT_AUTH
        elif state is State.WAIT_AUTH and isinstance(msg, Auth):
            expected = _proof(self._token, b"c", self._nonce, self._peer_nonce)
            if not hmac.compare_digest(expected, msg.proof):
                self._outgoing += self.reject("authentication failed: wrong cluster token"
                                              if self.credential is None else
                                              "authentication failed: wrong credential")
                raise AuthenticationError("peer failed the token challenge")
            if self.credential is not None and self._credentials is not None:
                refused = self._credentials(self.credential)  # proven: now say why not
                if refused:
                    self._outgoing += self.reject(refused)
                    raise AuthenticationError(f"refused a credential: {refused}")
            self.state = State.ACCEPTING
        elif state is State.HELLO_SENT and isinstance(msg, Challenge):
            if msg.version != PROTOCOL_VERSION:
                raise AuthenticationError(f"scheduler speaks protocol version {msg.version}")
            expected = _proof(self._token, b"s", self._nonce, msg.nonce)
            if not hmac.compare_digest(expected, msg.proof):
                raise AuthenticationError(
                    "the scheduler could not prove it holds the cluster token (wrong token?)"
                    if self.credential is None else "the scheduler refused the credential "
                    "(one for another cluster?)"
                )
            self._outgoing += encode_frame_of([Auth(_proof(self._token, b"c", msg.nonce,
                                                              self._nonce))])
            self.state = State.AUTH_SENT
        elif state is State.AUTH_SENT and isinstance(msg, Welcome):
            info = dict(msg.info)
            advertised = info.pop("limits", None)
            if not self._peer_given:
                self._set_peer_limits(_advertised_limits(advertised))
            self.client_no, self.info = msg.client_no, info
            self._open_decoder()
            self.state = State.OPEN
        else:
            raise RemoteProtocolError(
                f"unexpected {type(msg).__name__} during the handshake ({state.value})"
            )

    def _derived_hello(self, msg: HelloAs) -> None:
        """A peer names a derived credential: key the challenge with its secret, after the
        checks that need no proof (a port that takes none, a role it may not take)."""
        refused = ""
        if self._credentials is None:
            refused = "this port accepts only the cluster token, not a scoped credential"
        elif msg.role not in self._derived_roles:
            refused = (f"a scoped credential connects here only as "
                       f"{' or '.join(sorted(self._derived_roles))}, never as {msg.role!r}")
        else:
            try:
                cid = parse_credential_id(msg.credential)
            except ValueError as exc:
                refused = str(exc)
            else:
                self.tenant = cid.tenant
                if msg.role not in KIND_ROLES[cid.kind]:
                    refused = (f"a credential of kind {cid.kind!r} connects only as "
                               f"{' or '.join(sorted(KIND_ROLES[cid.kind]))}, never as "
                               f"{msg.role!r}")
        if refused:
            self._outgoing += self.reject(refused)
            raise AuthenticationError(f"refused a credential: {refused}")
        self.credential = msg.credential
        self._token = derive_secret(self._token.decode(), msg.credential).encode()

    # -- messages out ------------------------------------------------------------------------
    @property
    def peer_limits(self) -> Limits:
        """What the peer accepts: every frame `send()` returns stays within these."""
        return self._peer

    def _set_peer_limits(self, peer: Limits) -> None:
        self._peer = peer
        # A batch of at most this many messages is encoded as one frame, kept if its header
        # stays within `_plain` bytes (frame without buffers) -- one length comparison.
        self._batch = max(1, min(peer.max_messages, FRAME_MESSAGES))
        self._plain = _PREFIX.size + max(1, min(peer.max_header, peer.max_frame, FRAME_HEADER))

    def send(self, messages: list[Any]) -> list[Buffer]:
        """The frames carrying ``messages`` in order, as pieces to write in order: one frame
        when they fit the peer's limits (and the per-frame aims), else as many as needed."""
        if self.state is not State.OPEN:
            raise LocalProtocolError(f"cannot send messages in state {self.state.value}")
        if len(messages) > self._batch:
            out: list[Buffer] = []
            self._split(messages, out)
            return out
        pieces = encode_frame_of(messages)
        if len(pieces) == 1 and len(pieces[0]) <= self._plain:
            return pieces  # the common case: no buffers, a header well within the limits
        excess = self._excess(pieces, len(messages) == 1)
        if excess <= 1.0:
            return pieces
        if len(messages) == 1:
            self._refuse(messages[0], pieces)
        out = []
        self._cut(messages, excess, out)
        return out

    def _split(self, messages: list[Any], out: list[Buffer]) -> None:
        """Append the frames of ``messages`` to ``out``: chunks of at most `_batch` messages,
        cut further while a chunk's frame exceeds the limits."""
        step = self._batch
        for start in range(0, len(messages), step):
            chunk = messages[start : start + step]
            pieces = encode_frame_of(chunk)
            excess = self._excess(pieces, len(chunk) == 1)
            if excess <= 1.0:
                out += pieces
            elif len(chunk) == 1:
                self._refuse(chunk[0], pieces)
            else:
                self._cut(chunk, excess, out)

    def _cut(self, chunk: list[Any], excess: float, out: list[Buffer]) -> None:
        """``chunk``'s frame is ``excess`` times too large: split it in that many parts."""
        parts = min(len(chunk), max(2, math.ceil(excess)))
        size = math.ceil(len(chunk) / parts)
        for i in range(0, len(chunk), size):
            self._split(chunk[i : i + size], out)

    def _excess(self, pieces: list[Buffer], single: bool) -> float:
        """How many times over the limits this frame is (<= 1.0: it fits). A frame of one
        message is held to the peer's limits only; a larger one also to the per-frame aims."""
        peer = self._peer
        header_len, nbuf = _PREFIX.unpack_from(pieces[0])
        cap = peer.max_header if single else min(peer.max_header, FRAME_HEADER)
        excess: float = header_len / max(cap, 1)
        if nbuf:
            lens = struct.unpack_from(f"!{nbuf}Q", pieces[0], _PREFIX.size)
            total = header_len + sum(lens)
            excess = max(excess, nbuf / max(peer.max_buffers, 1e-9),
                         total / max(peer.max_frame, 1),
                         max(lens) / max(peer.max_buffer, 1e-9))
        else:
            excess = max(excess, header_len / max(peer.max_frame, 1))
        return excess

    def _refuse(self, msg: Any, pieces: list[Buffer]) -> None:
        """A message that no frame within the peer's limits can carry."""
        peer = self._peer
        header_len, nbuf = _PREFIX.unpack_from(pieces[0])
        lens = struct.unpack_from(f"!{nbuf}Q", pieces[0], _PREFIX.size) if nbuf else ()
        name = type(msg).__name__
        if header_len > peer.max_header:
            why = f"its header is {header_len} bytes, the peer accepts {peer.max_header}"
        elif nbuf > peer.max_buffers:
            why = f"it has {nbuf} buffers, the peer accepts {peer.max_buffers}"
        elif lens and max(lens) > peer.max_buffer:
            why = f"a buffer of {max(lens)} bytes, the peer accepts {peer.max_buffer}"
        else:
            why = (f"it is {header_len + sum(lens)} bytes, the peer accepts frames of "
                   f"{peer.max_frame}")
        raise LocalProtocolError(f"cannot send a {name}: {why} (one message is never split)")


def _advertised_limits(raw: Any) -> Limits:
    """The limits a server advertised in Welcome; the defaults when absent or malformed."""
    if type(raw) is list and len(raw) == len(_LIMIT_FIELDS) \
            and all(type(v) is int and v >= 0 for v in raw):
        return Limits(**dict(zip(_LIMIT_FIELDS, raw, strict=True)))
    return DEFAULT_LIMITS
