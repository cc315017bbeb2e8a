"""The tcpmux listener's CONNECT head parser and Proxy-Authorization reader (pure)."""

from __future__ import annotations

import base64

import pytest

from tunnel_server.vhost.tcpmux import HeadError, basic_credentials, connect_host, parse_connect


def test_tcpmux_head_parsing_takes_connect_only_and_finds_the_rest() -> None:
    """A CONNECT head gives its host and the offset of the bytes after it; others are refused."""
    head, offset = parse_connect(b"CONNECT Box.Example:22 HTTP/1.1\r\nHost: x\r\n\r\nSSH-2.0") or (
        None,
        0,
    )
    assert head is not None and connect_host(head.target) == "box.example"
    assert offset == len(b"CONNECT Box.Example:22 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert parse_connect(b"CONNECT a:1 HTTP/1.1\r\nHo") is None  # incomplete: read more
    with pytest.raises(HeadError, match="only CONNECT"):
        parse_connect(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    with pytest.raises(HeadError):
        parse_connect(b"\x16\x03\x01\x00\x05hello\r\n\r\n")
    assert connect_host(b"[::1]:22") == "[::1]"


def test_tcpmux_proxy_authorization_is_parsed_strictly() -> None:
    """Basic credentials decode; other schemes and broken base64 count as none."""
    assert basic_credentials(b"Basic " + base64.b64encode(b"alice:pw:x")) == ("alice", "pw:x")
    assert basic_credentials(b"Bearer abc") is None
    assert basic_credentials(b"Basic !!notbase64") is None
    assert basic_credentials(b"Basic " + base64.b64encode(b"nocolon")) is None
    assert basic_credentials(b"") is None
