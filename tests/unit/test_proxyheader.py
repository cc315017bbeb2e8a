"""PROXY protocol headers the client writes before the visitor's bytes (HAProxy's spec)."""

from __future__ import annotations

import pytest

from tunnel_client.proxyheader import parse_peer, proxy_header

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def test_proxy_header_v1_is_the_spec_line() -> None:
    """v1 is one text line: family, source, destination, ports (spec section 2.1)."""
    header = proxy_header("v1", ("192.168.0.1", 56324), ("192.168.0.11", 443))
    assert header == b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
    header6 = proxy_header("v1", ("2001:db8::1", 1), ("2001:db8::2", 2))
    assert header6 == b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n"


def test_proxy_header_v2_has_the_spec_layout() -> None:
    """v2: signature, version 2 PROXY command, family/protocol byte, length, addresses."""
    header = proxy_header("v2", ("192.168.0.1", 56324), ("192.168.0.11", 443))
    assert header[:12] == V2_SIGNATURE
    assert header[12] == 0x21  # version 2, PROXY
    assert header[13] == 0x11  # AF_INET, STREAM
    assert int.from_bytes(header[14:16], "big") == 12 == len(header) - 16
    assert header[16:] == bytes([192, 168, 0, 1, 192, 168, 0, 11]) + (56324).to_bytes(2, "big") + (
        443
    ).to_bytes(2, "big")
    udp = proxy_header("v2", ("10.0.0.1", 53), ("10.0.0.2", 5353), datagram=True)
    assert udp[13] == 0x12  # AF_INET, DGRAM


def test_proxy_header_mixed_families_use_the_visitor_family() -> None:
    """An IPv6 visitor through an IPv4 server gets an unspecified IPv6 destination."""
    assert proxy_header("v1", ("2001:db8::1", 1), ("10.0.0.1", 2)) == (
        b"PROXY TCP6 2001:db8::1 :: 1 2\r\n"
    )
    assert proxy_header("v1", ("10.0.0.1", 1), ("", 2)) == b"PROXY TCP4 10.0.0.1 0.0.0.0 1 2\r\n"


def test_proxy_header_v1_has_no_udp_form() -> None:
    """Asking for a v1 datagram header is a bug the config rules prevent: it raises."""
    with pytest.raises(ValueError, match="v2"):
        proxy_header("v1", ("10.0.0.1", 1), ("10.0.0.2", 2), datagram=True)


@pytest.mark.parametrize(
    ("text", "peer"),
    [("1.2.3.4:5", ("1.2.3.4", 5)), ("[::1]:53", ("::1", 53)), ("nonsense", ("", 0))],
)
def test_proxy_header_parses_flow_peers(text: str, peer: tuple[str, int]) -> None:
    """A UDP flow's "ip:port" peer splits into host and port."""
    assert parse_peer(text) == peer
