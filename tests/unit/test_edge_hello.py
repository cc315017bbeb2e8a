"""The edge's ClientHello reader: SNI and ALPN from a growing prefix, within its bounds."""

from __future__ import annotations

import functools
import ssl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunnel_server.vhost.sni import (
    MAX_CLIENT_HELLO_BYTES,
    ClientHello,
    HelloError,
    HelloReader,
)


def client_hello(name: str | None, alpn: list[str] | None = None) -> bytes:
    """A real ClientHello from Python's TLS client."""
    ctx = ssl.create_default_context()
    if alpn:
        ctx.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def feed_prefixes(data: bytes, cuts: list[int]) -> tuple[ClientHello | None, int]:
    """Feed growing prefixes ending at each cut, then the whole; (result, feeds used)."""
    reader = HelloReader()
    feeds = 0
    for end in [*sorted(set(cuts)), len(data)]:
        feeds += 1
        hello = reader.feed(data[:end])
        if hello is not None:
            return hello, feeds
    return None, feeds


def test_edge_hello_reads_sni_and_alpn_from_a_real_client_hello() -> None:
    """Python's own ClientHello yields its server name and the ALPN list in order."""
    hello = HelloReader().feed(client_hello("WX.Example.Test", ["h2", "http/1.1"]))
    assert hello == ClientHello("wx.example.test", ("h2", "http/1.1"))


def test_edge_hello_without_sni_or_alpn_is_complete_with_none() -> None:
    """A ClientHello to an IP address has no SNI; it is still complete."""
    assert HelloReader().feed(client_hello(None)) == ClientHello(None, ())


def test_edge_hello_acme_alpn_is_seen() -> None:
    """A TLS-ALPN-01 validation offers only acme-tls/1."""
    hello = HelloReader().feed(client_hello("a.test", ["acme-tls/1"]))
    assert hello is not None and hello.alpn == ("acme-tls/1",)


@functools.cache
def split_hello() -> bytes:
    return client_hello("split.example.test", ["http/1.1"])


@settings(deadline=None)  # a loaded CI machine must not fail on time
@given(st.lists(st.integers(min_value=0, max_value=600), max_size=40))
def test_edge_hello_any_prefix_split_gives_the_same_answer(cuts: list[int]) -> None:
    """However the bytes trickle in, the answer is the same and only the whole hello gives it."""
    data = split_hello()
    hello, _ = feed_prefixes(data, [c for c in cuts if c < len(data)])
    assert hello == ClientHello("split.example.test", ("http/1.1",))


def test_edge_hello_want_points_at_the_end_of_the_record() -> None:
    """After the record header, `want` is the record's end, so the kernel wakes us once."""
    data = client_hello("want.test")
    reader = HelloReader()
    assert reader.feed(data[:3]) is None and reader.want == 5
    assert reader.feed(data[:5]) is None
    assert reader.want == 5 + int.from_bytes(data[3:5], "big") == len(data)


def test_edge_hello_fragmented_records_are_reassembled() -> None:
    """A ClientHello split over many one-byte-payload records is still read."""
    data = client_hello("frag.test", ["h2"])
    body = data[5:]
    records = b"".join(b"\x16\x03\x01\x00\x01" + body[i : i + 1] for i in range(len(body)))
    assert HelloReader().feed(records) == ClientHello("frag.test", ("h2",))


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\n",  # not TLS
        b"\x16\x02\x01\x00\x10" + bytes(16),  # unknown record version
        b"\x16\x03\x01\x00\x00",  # empty record
        b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00",  # ServerHello, not ClientHello
        b"\x16\x03\x01\x00\x08\x01\x00\x00\x04\x03\x03\x00\x00",  # truncated body
    ],
)
def test_edge_hello_garbage_is_refused(data: bytes) -> None:
    """Bytes that are not a ClientHello raise HelloError."""
    with pytest.raises(HelloError):
        HelloReader().feed(data)


def test_edge_hello_over_the_cap_is_refused() -> None:
    """A handshake claiming more than the cap fails as soon as its length is known."""
    huge = b"\x16\x03\x01\x00\x04\x01" + (MAX_CLIENT_HELLO_BYTES + 1).to_bytes(3, "big")
    with pytest.raises(HelloError, match="too large"):
        HelloReader().feed(huge)
    endless = b"".join(b"\x16\x03\x01\x40\x00" + bytes(0x4000) for _ in range(2))
    with pytest.raises(HelloError):
        HelloReader().feed(b"\x16\x03\x01\x00\x04\x01\x00\x30\x00" + endless)
