"""The handshake between two sans-IO Connections: success, refusal, and what may cross when.

Rules under test (see qsrv/protocol/_connection.py): mutual challenge-response on a shared
token that never crosses the wire; version checked first; until the peer is authenticated only
tiny handshake frames are accepted and nothing but handshake messages is decoded; bytes that
follow the handshake in the same read are delivered once the connection is OPEN.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
from typing import Any

import msgpack
import pytest

from qsrv.errors import AuthenticationError, LocalProtocolError, RemoteProtocolError
from qsrv.protocol import (
    PROTOCOL_VERSION,
    ROLES,
    Auth,
    Challenge,
    Connection,
    Hello,
    Notice,
    ObjectValue,
    Reject,
    State,
    StatusReply,
    StatusRequest,
    SubmitTask,
    Welcome,
    decode_frame,
    encode_frame,
    encode_frame_of,
)

from ._helpers import TOKEN, handshake, join, pump

HANDSHAKE_CLASSES = (Hello, Challenge, Auth, Welcome, Reject)


def frame(*messages: Any) -> bytes:
    return join(encode_frame_of(list(messages)))


def messages_in(data: bytes) -> list[Any]:
    """Decode the frames in `data` (for inspecting what a side sent)."""
    from qsrv.protocol import FrameDecoder

    dec = FrameDecoder()
    dec.feed(data)
    return [m for hdr, bufs in dec.frames() for m in decode_frame(hdr, bufs)]


def submit(task_id: int = (7 << 40) | 1) -> SubmitTask:
    return SubmitTask(task_id, b"fn", b"args", (), [], {"cpu": 10000}, 0, 0.0, False, "t")


def server_after_hello(token: str = TOKEN) -> tuple[Connection, Challenge, bytes]:
    """A server that received a valid Hello; its Challenge; the client nonce used."""
    server = Connection(server=True, token=token)
    nonce = bytes(range(32))
    server.receive_data(frame(Hello(PROTOCOL_VERSION, "driver", nonce)))
    assert server.receive() == []
    [challenge] = messages_in(join(server.data_to_send()))
    assert isinstance(challenge, Challenge)
    return server, challenge, nonce


def proof(token: str, label: bytes, first: bytes, second: bytes) -> bytes:
    return hmac.new(token.encode(), label + first + second, hashlib.sha256).digest()


# -- success ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("role", sorted(ROLES))
def test_full_handshake_opens_both_sides(role: str) -> None:
    info = {"conn": 3, "cluster": "test", "nested": [1, {"a": None}]}
    client, server = handshake(role=role, client_no=41, info=info)
    assert client.state is State.OPEN and server.state is State.OPEN
    assert client.authenticated and server.authenticated
    assert client.client_no == 41 and client.info == info
    assert server.client_no == 41
    assert server.role == role
    # and messages flow both ways
    server.receive_data(join(client.send([StatusRequest(5)])))
    assert server.receive() == [StatusRequest(5)]
    client.receive_data(join(server.send([StatusReply(5, {"tasks": {}})])))
    assert client.receive() == [StatusReply(5, {"tasks": {}})]


def test_handshake_fed_byte_by_byte() -> None:
    client = Connection(server=False, token=TOKEN, role="worker")
    server = Connection(server=True, token=TOKEN)

    def trickle(data: bytes, dst: Connection) -> list[Any]:
        out = []
        for i in range(len(data)):
            dst.receive_data(data[i : i + 1])
            out += dst.receive()
        return out

    assert trickle(join(client.initiate()), server) == []
    assert trickle(join(server.data_to_send()), client) == []
    assert trickle(join(client.data_to_send()), server) == []
    assert server.state is State.ACCEPTING
    assert trickle(join(server.welcome(2, {})), client) == []
    assert client.state is State.OPEN and client.client_no == 2


def test_every_handshake_uses_fresh_nonces() -> None:
    a = Connection(server=False, token=TOKEN, role="driver")
    b = Connection(server=False, token=TOKEN, role="driver")
    assert join(a.initiate()) != join(b.initiate())


# -- refusal ---------------------------------------------------------------------------------------
def test_client_with_wrong_token_refuses_the_server_and_sends_nothing_more() -> None:
    client = Connection(server=False, token="not-the-token", role="driver")
    server = Connection(server=True, token=TOKEN)
    server.receive_data(join(client.initiate()))
    server.receive()
    challenge = join(server.data_to_send())
    client.receive_data(challenge + frame(Welcome(1, {})))
    with pytest.raises(AuthenticationError, match="token"):
        client.receive()
    assert client.data_to_send() == []  # no Auth: nothing derived from its token leaves
    assert client.state is not State.OPEN
    with pytest.raises(LocalProtocolError):
        client.send([StatusRequest(1)])


def test_server_refuses_a_client_that_cannot_prove_the_token() -> None:
    server, challenge, nonce = server_after_hello()
    bad = Auth(proof("wrong-token", b"c", challenge.nonce, nonce))
    # the bad Auth, and a task riding right behind it in the same read
    server.receive_data(frame(bad) + frame(submit()))
    with pytest.raises(AuthenticationError):
        server.receive()
    assert server.state is State.CLOSED
    assert not server.authenticated
    [reject] = messages_in(join(server.data_to_send()))
    assert isinstance(reject, Reject) and "token" in reject.reason
    # the task riding behind, and any sent later, is never delivered
    server.receive_data(frame(submit()))
    for _ in range(3):
        with contextlib.suppress(RemoteProtocolError):
            assert server.receive() == []
    assert server.state is State.CLOSED


@pytest.mark.parametrize("forged", ["reflected", "empty", "zeros", "server-label"])
def test_server_refuses_forged_proofs(forged: str) -> None:
    server, challenge, nonce = server_after_hello()
    value = {
        "reflected": challenge.proof,  # the server's own proof sent back
        "empty": b"",
        "zeros": bytes(32),
        "server-label": proof(TOKEN, b"s", challenge.nonce, nonce),
    }[forged]
    server.receive_data(frame(Auth(value)))
    with pytest.raises(AuthenticationError):
        server.receive()
    assert server.state is State.CLOSED


def test_recorded_client_transcript_cannot_be_replayed() -> None:
    wire: list[bytes] = []
    handshake(wire=wire)
    hello, _challenge, auth, _welcome = wire
    server = Connection(server=True, token=TOKEN)
    server.receive_data(hello)
    server.receive()
    server.data_to_send()
    server.receive_data(auth)
    with pytest.raises(AuthenticationError):
        server.receive()


def test_client_refuses_a_server_that_cannot_prove_the_token() -> None:
    client = Connection(server=False, token=TOKEN, role="driver")
    client.initiate()
    client.receive_data(frame(Challenge(PROTOCOL_VERSION, bytes(32), bytes(32))))
    with pytest.raises(AuthenticationError):
        client.receive()
    assert client.data_to_send() == []


def test_reject_reaches_the_client_as_authentication_error() -> None:
    client = Connection(server=False, token=TOKEN, role="driver")
    client.initiate()
    client.receive_data(frame(Reject("go away")))
    with pytest.raises(AuthenticationError, match="go away"):
        client.receive()
    assert client.state is State.CLOSED


@pytest.mark.parametrize("version", [0, PROTOCOL_VERSION + 1, 2**32])
def test_version_mismatch_is_refused_clearly_by_the_server(version: int) -> None:
    server = Connection(server=True, token=TOKEN)
    server.receive_data(frame(Hello(version, "driver", bytes(32))))
    with pytest.raises(AuthenticationError, match=f"version {version}"):
        server.receive()
    assert server.state is State.CLOSED
    reply = join(server.data_to_send())
    [reject] = messages_in(reply)
    assert isinstance(reject, Reject)
    assert f"{version}" in reject.reason and f"{PROTOCOL_VERSION}" in reject.reason
    # a client that spoke that version learns why
    client = Connection(server=False, token=TOKEN, role="driver")
    client.initiate()
    client.receive_data(reply)
    with pytest.raises(AuthenticationError, match="version"):
        client.receive()


def test_version_mismatch_is_refused_clearly_by_the_client() -> None:
    client = Connection(server=False, token=TOKEN, role="driver")
    client.initiate()
    client.receive_data(frame(Challenge(PROTOCOL_VERSION + 1, bytes(32), bytes(32))))
    with pytest.raises(AuthenticationError, match=f"version {PROTOCOL_VERSION + 1}"):
        client.receive()


@pytest.mark.parametrize("hello", [
    Hello(PROTOCOL_VERSION, "scheduler", bytes(32)),
    Hello(PROTOCOL_VERSION, "", bytes(32)),
    Hello(PROTOCOL_VERSION, "driver", bytes(31)),
    Hello(PROTOCOL_VERSION, "driver", b""),
    Hello(PROTOCOL_VERSION, "driver", bytes(33)),
], ids=["role", "no-role", "short-nonce", "no-nonce", "long-nonce"])
def test_malformed_hello_is_refused(hello: Hello) -> None:
    server = Connection(server=True, token=TOKEN)
    server.receive_data(frame(hello))
    with pytest.raises(RemoteProtocolError):
        server.receive()
    assert not server.authenticated


def test_unknown_role_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        Connection(server=False, token=TOKEN, role="scheduler")


def test_api_misuse_is_a_local_error() -> None:
    server = Connection(server=True, token=TOKEN)
    with pytest.raises(LocalProtocolError):
        server.welcome(1, {})
    with pytest.raises(LocalProtocolError):
        server.send([StatusRequest(1)])
    client = Connection(server=False, token=TOKEN, role="driver")
    with pytest.raises(LocalProtocolError):
        client.send([StatusRequest(1)])


# -- nothing but the handshake before authentication -----------------------------------------------
def _server_in(state: str) -> Connection:
    if state == "wait-hello":
        return Connection(server=True, token=TOKEN)
    if state == "wait-auth":
        return server_after_hello()[0]
    server, challenge, nonce = server_after_hello()
    server.receive_data(frame(Auth(proof(TOKEN, b"c", challenge.nonce, nonce))))
    assert server.receive() == []
    assert server.state is State.ACCEPTING  # authenticated, but welcome() not yet called
    return server


PRE_AUTH_STATES = ["wait-hello", "wait-auth", "accepting"]
OUT_OF_TURN = [submit(), StatusRequest(1), Welcome(1, {}), Challenge(1, bytes(32), bytes(32)),
               Reject("x")]


@pytest.mark.parametrize("state", PRE_AUTH_STATES)
@pytest.mark.parametrize("msg", OUT_OF_TURN, ids=lambda m: type(m).__name__)
def test_server_refuses_other_messages_before_it_opens(state: str, msg: Any) -> None:
    server = _server_in(state)
    server.receive_data(frame(msg))
    with pytest.raises(RemoteProtocolError):
        server.receive()
    assert server.state is not State.OPEN


@pytest.mark.parametrize("state", ["wait-hello", "wait-auth"])
def test_task_batched_with_a_handshake_message_is_refused(state: str) -> None:
    server = Connection(server=True, token=TOKEN)
    if state == "wait-hello":
        data = frame(Hello(PROTOCOL_VERSION, "driver", bytes(32)), submit())
    else:
        server, challenge, nonce = server_after_hello()
        data = frame(Auth(proof(TOKEN, b"c", challenge.nonce, nonce)), submit())
    server.receive_data(data)
    with pytest.raises(RemoteProtocolError):
        server.receive()
    assert server.state is not State.OPEN


@pytest.mark.parametrize("state", PRE_AUTH_STATES)
def test_frames_with_buffers_or_big_headers_are_refused_before_authentication(state: str) -> None:
    server = _server_in(state)
    with pytest.raises(RemoteProtocolError, match="limit"):
        server.receive_data(frame(ObjectValue(1, 0, b"", (b"x",), [])))
    server = _server_in(state)
    with pytest.raises(RemoteProtocolError, match="limit"):
        server.receive_data(frame(Notice("info", "x" * 5000)))


@pytest.mark.parametrize("state", PRE_AUTH_STATES)
def test_server_does_not_decode_other_messages_before_authentication(
    state: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before the peer is authenticated, no non-handshake message object is even built: the
    frame is decoded (by msgspec) into the handshake messages' types only."""
    from qsrv.protocol import _connection, _messages

    server = _server_in(state)
    data = frame(submit(), StatusRequest(1))
    handshake_tags = _connection._HANDSHAKE_TAGS
    asked: list[frozenset[int]] = []
    real = _messages._decoder

    def spy(tags: frozenset[int]) -> Any:
        asked.append(tags)
        return real(tags)

    monkeypatch.setattr(_messages, "_decoder", spy)
    server.receive_data(data)
    with pytest.raises(RemoteProtocolError):
        server.receive()
    assert asked and all(tags <= handshake_tags for tags in asked), \
        f"decoded with {asked} from an unauthenticated peer"


def test_client_refuses_messages_before_the_server_proved_itself() -> None:
    client = Connection(server=False, token=TOKEN, role="driver")
    client.initiate()
    client.receive_data(frame(ObjectValue(1, 0, b"v", (), [])))
    with pytest.raises(RemoteProtocolError):
        client.receive()
    assert client.state is not State.OPEN


# -- bytes after the handshake in the same read ----------------------------------------------------
def _client_awaiting_welcome() -> tuple[Connection, Connection]:
    client = Connection(server=False, token=TOKEN, role="driver")
    server = Connection(server=True, token=TOKEN)
    server.receive_data(join(client.initiate()))
    server.receive()
    pump(server, client)
    pump(client, server)
    assert client.state is State.AUTH_SENT and server.state is State.ACCEPTING
    return client, server


def test_messages_in_the_welcome_frame_are_delivered() -> None:
    client, _ = _client_awaiting_welcome()
    client.receive_data(frame(Welcome(9, {"a": 1}), Notice("info", "hi"), StatusReply(1, {})))
    assert client.receive() == [Notice("info", "hi"), StatusReply(1, {})]
    assert client.client_no == 9


def test_small_frames_after_welcome_in_the_same_read_are_delivered() -> None:
    client, server = _client_awaiting_welcome()
    data = join(server.welcome(3, {})) + join(server.send([Notice("info", "a")]))
    data += join(server.send([Notice("info", "b")]))
    client.receive_data(data)
    assert client.receive() == [Notice("info", "a"), Notice("info", "b")]


@pytest.mark.parametrize("after", [
    ObjectValue(5, 0, b"value", (b"out-of-band",), []),
    StatusReply(2, {"big": "x" * 10_000}),
    ObjectValue(6, 0, b"", (bytes(300_000),), []),
], ids=["with-buffer", "big-header", "big-buffer"])
def test_large_frames_after_welcome_in_the_same_read_are_delivered(after: Any) -> None:
    """Limits rise to the connection's own once it is OPEN, for bytes already received too.

    The decoder parses every frame of a read as the bytes arrive, so a frame that follows
    Welcome in the same read is still judged by the handshake limits (no buffers, 4 KiB).
    """
    client, server = _client_awaiting_welcome()
    client.receive_data(join(server.welcome(3, {})) + join(server.send([after])))
    [got] = client.receive()
    assert type(got) is type(after)
    assert [bytes(b) for b in getattr(got, "bufs", ())] == list(getattr(after, "bufs", ()))
    assert client.state is State.OPEN


def test_server_receives_large_frames_right_after_welcome() -> None:
    client, server = _client_awaiting_welcome()
    client.receive_data(join(server.welcome(3, {})))
    client.receive()
    big = ObjectValue(5, 0, b"v", (bytes(300_000), b"x"), [1])
    server.receive_data(join(client.send([big, StatusRequest(1)])) + join(client.send([big])))
    got = server.receive()
    assert [type(m) for m in got] == [ObjectValue, StatusRequest, ObjectValue]


# -- the token never crosses the wire --------------------------------------------------------------
@pytest.mark.parametrize("outcome", ["success", "wrong-client-token", "wrong-server-proof"])
def test_token_never_appears_in_any_byte_sent(outcome: str) -> None:
    token = "tok-\u00e9-8fe3c1d2a9b74e55"
    forms = [token.encode(), token.encode("utf-16-le"), token.encode().hex().encode(),
             msgpack.packb(token)]
    wire: list[bytes] = []
    errors: list[str] = []
    if outcome == "success":
        client, server = handshake(client_token=token, server_token=token, wire=wire)
        wire.append(join(client.send([StatusRequest(1)])))
        wire.append(join(server.send([StatusReply(1, {})])))
    else:
        server, challenge, nonce = server_after_hello(token)
        wire.append(frame(Hello(PROTOCOL_VERSION, "driver", nonce)))
        wire.append(frame(challenge))
        bad = Auth(proof("x" + token, b"c", challenge.nonce, nonce))
        server.receive_data(frame(bad))
        try:
            server.receive()
        except AuthenticationError as exc:
            errors.append(str(exc))
        wire.append(join(server.data_to_send()))
        client = Connection(server=False, token=token, role="executor")
        wire.append(join(client.initiate()))
        client.receive_data(frame(Challenge(PROTOCOL_VERSION, bytes(32), bytes(32))))
        try:
            client.receive()
        except AuthenticationError as exc:
            errors.append(str(exc))
        wire.append(join(client.data_to_send()))
        assert len(errors) == 2
    everything = b"".join(wire)
    assert len(everything) > 100
    for form in forms:
        assert form not in everything
    for text in errors:
        assert token not in text


def test_a_message_encoding_the_token_is_detectable() -> None:
    """The scan above would notice a leak: the token written as a message field is found."""
    token = "tok-\u00e9-8fe3c1d2a9b74e55"
    assert token.encode() in frame(Notice("info", token))
    assert token.encode() in join(encode_frame(msgpack.packb([[5, token]])))
