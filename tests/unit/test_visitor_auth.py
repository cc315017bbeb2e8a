"""Secret proxies without sockets: the visitor proof, the nonce table, datagram framing."""

from __future__ import annotations

import pytest

from protocol.dgramframe import MAX_DATAGRAM_BYTES, DatagramDecoder, frame_datagram
from protocol.errors import RemoteProtocolError
from protocol.visitorauth import (
    MAX_CLOCK_SKEW_S,
    proof_ok,
    secret_verifier,
    target_name,
    visitor_proof,
)
from tunnel_server.visitorgate import RecentNonces

NONCE = bytes(range(16))
NOW = 1_700_000_000


def proof(secret: str = "s3cret", *, kind: str = "stcp", user: str = "bob", **kw: object) -> bytes:
    target = str(kw.get("target", "alice.vault"))
    verifier = secret_verifier(secret, target.split(".")[-1])
    return visitor_proof(verifier, kind, user, target, int(str(kw.get("ts", NOW))), NONCE)


def test_visitor_proof_matches_only_the_same_secret_user_target_time_and_type() -> None:
    """Changing any one input (secret, visitor user, target, timestamp, type) breaks the proof."""
    good = proof()
    assert proof_ok(proof(), good)
    for other in (
        proof("s3creT"),
        proof(user="mallory"),
        proof(target="carol.vault"),
        proof(ts=NOW + 1),
        proof(kind="sudp"),
    ):
        assert not proof_ok(other, good)


def test_visitor_verifier_is_not_the_secret_and_differs_per_proxy_name() -> None:
    """The owner registers an HMAC that names its proxy, never the key itself."""
    first = secret_verifier("s3cret", "vault")
    assert b"s3cret" not in first and len(first) == 32
    assert first != secret_verifier("s3cret", "vault2")
    assert target_name("", "vault") == "vault" and target_name("alice", "vault") == "alice.vault"


def test_recent_nonces_refuse_a_replay_inside_the_window_only() -> None:
    """A nonce seen once is refused until a proof carrying it could no longer be valid."""
    nonces = RecentNonces()
    assert nonces.remember(NONCE, NOW) == ""
    assert "replay" in nonces.remember(NONCE, NOW + 2 * MAX_CLOCK_SKEW_S - 1)
    assert nonces.remember(NONCE, NOW + 2 * MAX_CLOCK_SKEW_S + 1) == ""


def test_recent_nonces_full_table_refuses_rather_than_forgets() -> None:
    """A full table of live nonces refuses a new visitor instead of dropping a live nonce."""
    nonces = RecentNonces(limit=3)
    for i in range(3):
        assert nonces.remember(bytes([i]) * 16, NOW) == ""
    assert "retry later" in nonces.remember(b"\xff" * 16, NOW + 1)
    assert len(nonces) == 3
    assert nonces.remember(b"\xff" * 16, NOW + 2 * MAX_CLOCK_SKEW_S + 1) == ""  # expired
    assert len(nonces) == 1


def test_datagram_framing_survives_any_split_of_the_stream() -> None:
    """Datagrams framed on a stream come out whole and in order, fed byte by byte."""
    datagrams = [b"", b"a", bytes(range(256)) * 4, b"\x00" * MAX_DATAGRAM_BYTES]
    stream = b"".join(frame_datagram(d) for d in datagrams)
    decoder = DatagramDecoder()
    out = []
    for index in range(0, len(stream), 7):
        out.extend(decoder.feed(stream[index : index + 7]))
    decoder.finish()
    assert out == datagrams


def test_datagram_framing_rejects_oversize_and_a_truncated_end() -> None:
    """A datagram over 65,535 bytes cannot be framed; a stream ending mid-datagram is an error."""
    with pytest.raises(ValueError):
        frame_datagram(b"x" * (MAX_DATAGRAM_BYTES + 1))
    decoder = DatagramDecoder()
    assert decoder.feed(frame_datagram(b"hello")[:-1]) == []
    with pytest.raises(RemoteProtocolError):
        decoder.finish()
