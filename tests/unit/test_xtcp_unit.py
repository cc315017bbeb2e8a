"""xtcp: visitor keys, the rendezvous signal codec, the P2P proofs and the probe broker."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from protocol.errors import ConfigError, RemoteProtocolError
from protocol.frames import Flag, FrameType, encode_fast, encode_frame
from protocol.messages import (
    PunchGo,
    PunchProbe,
    PunchProof,
    PunchStart,
    VisitorOpen,
    decode_message,
    encode_message,
)
from protocol.punch import (
    MAX_SIGNAL_BYTES,
    OWNER_ROLE,
    VISITOR_ROLE,
    SignalDecoder,
    encode_signal,
    p2p_proof,
    proof_matches,
)
from protocol.visitorauth import secret_verifier
from tunnel_client.config import ClientConfig, parse_client_config
from tunnel_server.punchbroker import BrokerFull, PunchBroker

XTCP = (
    '[[visitors]]\nname = "p2p"\ntype = "xtcp"\nserverName = "ssh"\nsecretKey = "k"\n'
    "bindPort = 6000\n"
)
STCP = '[[visitors]]\nname = "relay"\ntype = "stcp"\nserverName = "ssh"\nsecretKey = "k"\n'


def parse(text: str) -> ClientConfig:
    return parse_client_config(text, "frpc.toml", base_dir=Path("/home/me"))


def test_xtcp_visitor_frp_keys_load() -> None:
    """frp's xtcp visitor keys load with their values; protocol and natTraversal are notes."""
    config = parse(
        STCP
        + "bindPort = -1\n"
        + XTCP
        + 'fallbackTo = "relay"\nfallbackTimeoutMs = 800\nkeepTunnelOpen = true\n'
        + 'maxRetriesAnHour = 3\nminRetryInterval = 5\nprotocol = "quic"\n'
        + "natTraversal.disableAssistedAddrs = true\n"
    )
    v = config.visitors[1]
    assert (v.type, v.fallback_to, v.fallback_timeout_ms) == ("xtcp", "relay", 800)
    assert (v.keep_tunnel_open, v.max_retries_an_hour, v.min_retry_interval) == (True, 3, 5)
    assert any("TCP (simultaneous open)" in note for note in config.notes)


def test_xtcp_visitor_defaults_are_frps() -> None:
    """Without the keys: no fallbackTo (relay through tunneld), 8 tries an hour, 90 s apart."""
    v = parse(XTCP).visitors[0]
    assert (v.fallback_to, v.fallback_timeout_ms, v.keep_tunnel_open) == (None, 0, False)
    assert (v.max_retries_an_hour, v.min_retry_interval) == (8, 90)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (XTCP + 'fallbackTo = "nope"\n', "'nope' is not a visitor here"),
        (
            XTCP
            + 'fallbackTo = "other"\n'
            + XTCP.replace('"p2p"', '"other"').replace("6000", "6001"),
            "'other' is an xtcp visitor here",
        ),
        (STCP + 'bindPort = 7000\nfallbackTo = "p2p"\n' + XTCP, "only for xtcp visitors"),
        (XTCP + "fallbackTimeoutMs = 600000\n", "from 0 to 60000"),
    ],
)
def test_xtcp_visitor_bad_fallback_is_one_line(text: str, reason: str) -> None:
    """fallbackTo must name an stcp visitor of the file; the wait is bounded."""
    with pytest.raises(ConfigError) as info:
        parse(text)
    assert reason in str(info.value)


def test_xtcp_proxy_needs_secret_key() -> None:
    """An xtcp proxy without secretKey is refused at load, naming the key."""
    with pytest.raises(ConfigError, match="secretKey: is required"):
        parse('[[proxies]]\nname = "ssh"\ntype = "xtcp"\nlocalPort = 22\n')


def test_punch_signals_round_trip_in_any_split() -> None:
    """Signals split at every byte boundary decode to the same messages."""
    data = encode_signal(PunchStart(b"t" * 16)) + encode_signal(
        PunchGo("198.51.100.4", 5000, b"f" * 32, b"i" * 16)
    )
    for cut in range(len(data) + 1):
        decoder = SignalDecoder()
        got = decoder.feed(data[:cut]) + decoder.feed(data[cut:])
        assert got == [PunchStart(b"t" * 16), PunchGo("198.51.100.4", 5000, b"f" * 32, b"i" * 16)]


@pytest.mark.parametrize(
    "data",
    [
        encode_signal(PunchProbe(b"t" * 16)),  # a real message, but not a signal
        encode_signal(PunchProof(b"p" * 32)),
        encode_fast(FrameType.DATA, 0, 1, b"x" * 10),
        encode_frame(FrameType.MESSAGE, Flag.NONE, 0, {"t": "punch_go", "host": "h"}),
        encode_frame(FrameType.MESSAGE, Flag.NONE, 0, {"t": "punch_go", "host": "h" * 2000}),
        encode_frame(FrameType.PING, Flag.NONE, 0, 1),
        b"\xc1" * 16,
    ],
    ids=["probe", "proof", "data", "missing-fields", "oversize", "ping", "garbage"],
)
def test_punch_signal_decoder_rejects_malformed(data: bytes) -> None:
    """Anything but a well-formed rendezvous signal is the peer's protocol error."""
    with pytest.raises(RemoteProtocolError):
        SignalDecoder().feed(data)


def test_punch_signal_decoder_bounds_a_frame() -> None:
    """A frame header announcing more than MAX_SIGNAL_BYTES is refused before it arrives."""
    big = encode_frame(FrameType.MESSAGE, Flag.NONE, 0, {"t": "x" * (MAX_SIGNAL_BYTES * 2)})
    with pytest.raises(RemoteProtocolError):
        SignalDecoder().feed(big[: MAX_SIGNAL_BYTES + 64])


def test_punch_visitor_open_purpose_is_checked() -> None:
    """visitor_open's purpose is "" or "punch" only."""
    sample = VisitorOpen("xtcp", "alice", "ssh", "p2p", 1, b"n" * 16, b"p" * 32, "punch")
    payload = encode_message(sample)
    assert decode_message(payload) == sample
    payload["purpose"] = "steal"
    with pytest.raises(RemoteProtocolError):
        decode_message(payload)


def test_p2p_proof_binds_role_secret_rendezvous_and_certificate() -> None:
    """A proof is good for one role, one secret, one punch id and one certificate only."""
    verifier = secret_verifier("k", "ssh")
    base = p2p_proof(verifier, VISITOR_ROLE, b"i" * 16, b"f" * 32)
    assert proof_matches(base, PunchProof(base))
    others = [
        p2p_proof(verifier, OWNER_ROLE, b"i" * 16, b"f" * 32),
        p2p_proof(secret_verifier("other", "ssh"), VISITOR_ROLE, b"i" * 16, b"f" * 32),
        p2p_proof(secret_verifier("k", "web"), VISITOR_ROLE, b"i" * 16, b"f" * 32),
        p2p_proof(verifier, VISITOR_ROLE, b"j" * 16, b"f" * 32),
        p2p_proof(verifier, VISITOR_ROLE, b"i" * 16, b"g" * 32),
    ]
    assert all(not proof_matches(base, PunchProof(other)) for other in others)
    assert not proof_matches(base, PunchStart(b"t" * 16))


async def test_punch_broker_answers_only_its_tokens() -> None:
    """A probe completes only the rendezvous that holds its token; unknown ones are counted."""
    broker = PunchBroker()
    token, seen = broker.expect()
    assert not broker.observed(b"x" * 16, ("203.0.113.9", 1))
    assert broker.observed(token, ("198.51.100.1", 4242))
    assert await seen == ("198.51.100.1", 4242)
    assert not broker.observed(token, ("203.0.113.9", 1))  # used once only
    assert broker.counters.unknown_probes == 2
    assert len(broker) == 0


async def test_punch_broker_is_bounded() -> None:
    """Past its limit the broker refuses new rendezvous; forgetting frees the room."""
    broker = PunchBroker(limit=2)
    first, fut = broker.expect()
    broker.expect()
    with pytest.raises(BrokerFull):
        broker.expect()
    broker.forget(first)
    assert fut.cancelled()
    broker.expect()
    await asyncio.sleep(0)
