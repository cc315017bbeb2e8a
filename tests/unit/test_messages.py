"""Control messages: wire tags, round-trips and strict validation of every field."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import pytest

from protocol.errors import RemoteProtocolError
from protocol.frames import Flag, FrameDecoder, FrameType, encode_frame
from protocol.messages import (
    MAX_LIST_ITEMS,
    MAX_NAME_CHARS,
    MAX_TEXT_CHARS,
    NONCE_BYTES,
    PROOF_BYTES,
    Busy,
    Challenge,
    CloseProxy,
    Hello,
    Login,
    LoginResult,
    Message,
    NewProxy,
    NewProxyResult,
    PunchDone,
    PunchGo,
    PunchProbe,
    PunchProof,
    PunchReady,
    PunchStart,
    ServerProof,
    StreamHeader,
    StreamResetInfo,
    UDPFlowClosed,
    UDPFlowOpened,
    VisitorOpen,
    decode_message,
    encode_message,
)
from protocol.proxytype import ProxyType

# One message of every kind, with its wire tag (the tags are the wire format: never change).
SAMPLES: dict[str, Message] = {
    "hello": Hello("0.1.0", 1, bytes(range(32))),
    "challenge": Challenge(2, "0.1.0", bytes(range(1, 33))),
    "server_proof": ServerProof(b"\xbb" * 32),
    "busy": Busy(500, "the server is busy with other logins"),
    "login": Login(1, "0.1.0", "laptop-7f3a", "alice", "laptop", b"\xaa" * 32),
    "login_result": LoginResult(True, "", "5e1f0c9a", "0.1.0", 1500),
    "new_proxy": NewProxy(
        name="web",
        type=ProxyType.HTTP,
        remote_port=0,
        custom_domains=("a.example.com", "b.example.com"),
        subdomain="web",
        locations=("/", "/api"),
        http_user="u",
        http_password="p",
        host_header_rewrite="localhost",
        request_headers={"X-From": "tunnel"},
        response_headers={"X-Served-By": "tunnelkit"},
        secret_verifier=b"v" * 32,
        allow_users=("bob", "*"),
    ),
    "new_proxy_result": NewProxyResult("web", True, "", ("http://a.example.com:8080",)),
    "close_proxy": CloseProxy("web", "removed from the config"),
    "udp_flow_opened": UDPFlowOpened(7, "dns", "203.0.113.5:5353"),
    "udp_flow_closed": UDPFlowClosed(7, "idle for 60s"),
    "stream_header": StreamHeader("ssh", "198.51.100.7", 51234),
    "stream_reset": StreamResetInfo(6, "dial 127.0.0.1:22: connection refused"),
    "visitor_open": VisitorOpen(
        "stcp", "alice", "vault", "to-vault", 1_700_000_000, b"n" * 16, b"p" * 32, "punch"
    ),
    "punch_probe": PunchProbe(b"t" * 16),
    "punch_start": PunchStart(b"t" * 16),
    "punch_ready": PunchReady(b"f" * 32),
    "punch_go": PunchGo("203.0.113.7", 40_000, b"f" * 32, b"i" * 16),
    "punch_proof": PunchProof(b"p" * 32),
    "punch_done": PunchDone(False, "no direct connection"),
}


def wire_map(message: Message) -> dict[str, Any]:
    """The map a peer would receive: encoded, framed, and decoded by the real frame codec."""
    frame_bytes = encode_frame(FrameType.MESSAGE, Flag.NONE, 0, encode_message(message))
    decoder = FrameDecoder(64 * 1024, 64 * 1024, 64 * 1024)
    decoder.feed(frame_bytes)
    (frame,) = list(decoder.frames())
    payload: dict[str, Any] = frame.payload
    return payload


def fields_of(message: Message) -> list[str]:
    return [f.name for f in dataclasses.fields(message)]


def test_message_samples_cover_every_message_type() -> None:
    """The sample table has one of every message class."""
    assert {type(m) for m in SAMPLES.values()} == set(typing.get_args(Message))


@pytest.mark.parametrize(("tag", "message"), SAMPLES.items(), ids=SAMPLES.keys())
def test_message_has_stable_wire_tag(tag: str, message: Message) -> None:
    """Each message carries its documented tag under "t" and exactly its fields."""
    encoded = encode_message(message)
    assert encoded["t"] == tag
    assert set(encoded) == {"t", *fields_of(message)}


@pytest.mark.parametrize("message", SAMPLES.values(), ids=SAMPLES.keys())
def test_message_round_trips(message: Message) -> None:
    """Encoding, framing and decoding gives back an equal message."""
    decoded = decode_message(wire_map(message))
    assert decoded == message
    assert type(decoded) is type(message)


def test_message_lists_decode_as_tuples() -> None:
    """List fields come back as tuples, so decoded messages stay immutable."""
    decoded = decode_message(wire_map(SAMPLES["new_proxy"]))
    assert isinstance(decoded, NewProxy)
    assert decoded.custom_domains == ("a.example.com", "b.example.com")
    assert decoded.type == ProxyType.HTTP


def test_message_defaults_still_go_on_the_wire() -> None:
    """Fields with defaults in Python are still sent, since the decoder requires all of them."""
    minimal = NewProxy("ssh", ProxyType.TCP, 6000)
    assert decode_message(wire_map(minimal)) == minimal


# -- invalid maps ---------------------------------------------------------------------------------
MISSING = [
    pytest.param(tag, name, id=f"{tag}.{name}")
    for tag, message in SAMPLES.items()
    for name in fields_of(message)
]


@pytest.mark.parametrize(("tag", "name"), MISSING)
def test_message_missing_field_is_rejected(tag: str, name: str) -> None:
    """Leaving out any field is the peer's protocol error."""
    payload = encode_message(SAMPLES[tag])
    del payload[name]
    with pytest.raises(RemoteProtocolError, match="missing field"):
        decode_message(payload)


@pytest.mark.parametrize("extra", ["bogus", "proxy", b"raw-key"])
@pytest.mark.parametrize("tag", SAMPLES.keys())
def test_message_extra_field_is_rejected(tag: str, extra: Any) -> None:
    """A field the message does not define is the peer's protocol error."""
    payload: dict[Any, Any] = encode_message(SAMPLES[tag])
    if extra in payload:
        extra = "unexpected_" + str(extra)
    payload[extra] = 1
    with pytest.raises(RemoteProtocolError, match="unexpected fields"):
        decode_message(payload)


# Values of the wrong type for a field, by the Python type of a valid value. Each list avoids
# values the field's checker legitimately accepts.
WRONG_BY_KIND: dict[type, list[Any]] = {
    str: [5, b"text", None, True, 1.5, ["x"], {"a": "b"}],
    bool: [1, 0, "true", None, b"\x01"],
    int: ["1", True, 1.5, None, -1, 2**64 - 1, b"\x01"],
    bytes: ["text", 1, None, [1], b"", bytes(31), bytes(33), bytes(1024)],
    tuple: ["a", [1], [b"a"], [None], None, {"a": "b"}, ["x"] * (MAX_LIST_ITEMS + 1)],
    dict: [["a"], {"a": 1}, {"a": None}, None, "a", {f"k{i}": "v" for i in range(65)}],
}
# The proxy type is a str field with its own checker; unhashable values are a separate case.
WRONG_PROXY_TYPES = ["ftp", "TCP", 5, None, True, b"tcp"]


def _mistyped_cases() -> list[Any]:
    cases = []
    for tag, message in SAMPLES.items():
        for name in fields_of(message):
            if tag == "new_proxy" and name == "type":
                wrong = WRONG_PROXY_TYPES
            else:
                value = getattr(message, name)
                wrong = WRONG_BY_KIND[bool if isinstance(value, bool) else type(value)]
                if name in ("secret_verifier", "fingerprint"):  # empty is valid here
                    wrong = [bad for bad in wrong if bad != b""]
            for i, bad in enumerate(wrong):
                cases.append(pytest.param(tag, name, bad, id=f"{tag}.{name}-{i}"))
    return cases


@pytest.mark.parametrize(("tag", "name", "bad"), _mistyped_cases())
def test_message_mistyped_field_is_rejected(tag: str, name: str, bad: Any) -> None:
    """A field of the wrong type or out of range is the peer's protocol error."""
    payload = encode_message(SAMPLES[tag])
    payload[name] = bad
    with pytest.raises(RemoteProtocolError):
        decode_message(payload)


@pytest.mark.parametrize("bad", [["tcp"], {"t": "tcp"}], ids=["list", "map"])
def test_message_unhashable_proxy_type_is_rejected(bad: Any) -> None:
    """A list or map where the proxy type belongs is the peer's protocol error."""
    payload = encode_message(SAMPLES["new_proxy"])
    payload["type"] = bad
    with pytest.raises(RemoteProtocolError):
        decode_message(payload)


@pytest.mark.parametrize(
    ("tag", "name", "limit"),
    [
        ("close_proxy", "name", MAX_NAME_CHARS),
        ("close_proxy", "reason", MAX_TEXT_CHARS),
        ("stream_header", "src_addr", MAX_NAME_CHARS),
        ("login", "client_id", MAX_NAME_CHARS),
    ],
)
def test_message_string_length_limits(tag: str, name: str, limit: int) -> None:
    """Strings up to their limit are accepted and one character more is rejected."""
    payload = encode_message(SAMPLES[tag])
    payload[name] = "x" * limit
    decode_message(payload)
    payload[name] = "x" * (limit + 1)
    with pytest.raises(RemoteProtocolError):
        decode_message(payload)


@pytest.mark.parametrize(
    ("tag", "name", "size"), [("hello", "nonce", NONCE_BYTES), ("login", "proof", PROOF_BYTES)]
)
def test_message_binary_fields_have_exact_sizes(tag: str, name: str, size: int) -> None:
    """The login nonce and proof must be exactly their documented size."""
    payload = encode_message(SAMPLES[tag])
    payload[name] = bytes(size)
    decode_message(payload)
    for wrong in (size - 1, size + 1):
        payload[name] = bytes(wrong)
        with pytest.raises(RemoteProtocolError, match="exactly"):
            decode_message(payload)


@pytest.mark.parametrize(
    ("tag", "name", "top"),
    [
        ("stream_header", "src_port", 65535),
        ("login_result", "udp_packet_size", 65535),
        ("udp_flow_opened", "flow_id", 0xFFFF_FFFF),
        ("stream_reset", "code", 0xFFFF_FFFF),
        ("hello", "protocol_version", 0xFFFF_FFFF),
    ],
)
def test_message_integer_ranges(tag: str, name: str, top: int) -> None:
    """Integers are accepted from 0 to their maximum and rejected just above."""
    payload = encode_message(SAMPLES[tag])
    for good in (0, top):
        payload[name] = good
        decode_message(payload)
    payload[name] = top + 1
    with pytest.raises(RemoteProtocolError):
        decode_message(payload)


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"t": "nope"},
        {"t": "Hello"},
        {"t": 5},
        {"t": None},
        {"t": b"hello"},
        {"t": ["hello"]},
        {"type": "hello"},
    ],
    ids=["empty", "unknown", "wrong-case", "int", "nil", "bytes", "list", "no-t"],
)
def test_message_unknown_tag_is_rejected(payload: dict[str, Any]) -> None:
    """A map without a known string tag is the peer's protocol error."""
    with pytest.raises(RemoteProtocolError, match="unknown message type"):
        decode_message(payload)
