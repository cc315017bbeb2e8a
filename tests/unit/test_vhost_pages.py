"""Unit tests for the vhost error pages."""

from __future__ import annotations

import pytest

from tunnel_server.vhost.pages import REASONS, error_response, render_page


@pytest.mark.parametrize("status", sorted(REASONS))
def test_pages_say_status_and_host(status: int) -> None:
    """Every page names its status, says what happened, and shows the host."""
    page = render_page(status, "web.example.test", None).decode()
    assert f"{status} {REASONS[status]}" in page
    assert "web.example.test" in page
    assert page.startswith("<!doctype html>")
    assert len(page) < 2048


def test_pages_escape_visitor_input() -> None:
    """The host and detail are HTML-escaped, so a hostile Host header cannot inject markup."""
    page = render_page(404, "<script>alert(1)</script>", "a & b").decode()
    assert "<script>" not in page
    assert "&lt;script&gt;" in page
    assert "a &amp; b" in page


def test_pages_clip_long_input() -> None:
    """Very long hosts, details and notes are cut short."""
    page = render_page(502, "h" * 10_000, "d" * 10_000, "n" * 10_000)
    assert len(page) < 2048 + 400


def test_pages_carry_the_tunnels_note_escaped() -> None:
    """A 502 page shows the route's offline note after the detail, HTML-escaped."""
    raw = error_response(502, "a.test", "connection refused", note="answers 200 <b>& stores</b>")
    body = raw.partition(b"\r\n\r\n")[2].decode()
    assert body.index("connection refused") < body.index("answers 200 &lt;b&gt;&amp; stores")


def test_pages_response_framing() -> None:
    """error_response is a complete HTTP/1.1 response with a correct Content-Length."""
    raw = error_response(502, "a.test", "client offline")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
    assert b"Connection: close" in head
    assert f"Content-Length: {len(body)}".encode() in head
    assert b"client offline" in body


def test_pages_keep_alive_custom_body_and_head_only() -> None:
    """Keep-alive pages omit Connection: close; custom bodies replace the page; HEAD has none."""
    raw = error_response(404, "a.test", keep_alive=True, body=b"<p>custom</p>")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"Connection" not in head
    assert body == b"<p>custom</p>"
    raw = error_response(
        401,
        "a.test",
        head_only=True,
        extra_headers=((b"WWW-Authenticate", b'Basic realm="tunnelkit"'),),
    )
    head, _, body = raw.partition(b"\r\n\r\n")
    assert body == b""
    assert b'WWW-Authenticate: Basic realm="tunnelkit"' in head
    assert b"Content-Length: 0" not in head
