"""The vhost forwards a plain response head as the app sent it (rewrite.passthrough_head)."""

from __future__ import annotations

import pytest

from tunnel_server.vhost import response as response_module
from tunnel_server.vhost.response import BadResponse, ResponseRelay
from tunnel_server.vhost.rewrite import HeaderRules, passthrough_head

NGINX = (
    b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: text/html\r\nContent-Length: 5\r\n"
    b'Connection: keep-alive\r\nETag: "1-5"\r\n\r\nhello'
)


def relay_for(rules: HeaderRules | None = None, *, http11: bool = True) -> ResponseRelay:
    relay = ResponseRelay(4096)
    start(relay, rules, http11=http11)
    return relay


def start(relay: ResponseRelay, rules: HeaderRules | None = None, *, http11: bool = True) -> None:
    relay.start(
        rules=rules or HeaderRules(),
        head_request=False,
        client_http11=http11,
        client_keep_alive=True,
        upgrade_requested=False,
    )


def run_relay(relay: ResponseRelay, *chunks: bytes) -> bytes:
    out = b""
    for data in chunks:
        relay.feed(data)
        out += b"".join(relay.take())
    return out


def test_passthrough_head_drops_only_keep_alive() -> None:
    """A plain head passes whole, less its `Connection: keep-alive` line."""
    head = passthrough_head(NGINX, 4096)
    assert head == (
        b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: text/html\r\nContent-Length: 5\r\n"
        b'ETag: "1-5"\r\n\r\n'
    )
    plain = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
    assert passthrough_head(plain, 4096) == plain


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx",  # HTTP/1.0: rebuilt as 1.1
        b"HTTP/1.1 100 Continue\r\n\r\n",  # interim
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: ws\r\nConnection: upgrade\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n",  # the head is not whole
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n",  # until close: re-framed
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive, X-A\r\nX-A: 1\r\n\r\nx",
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nConnection: keep-alive\r\n"
        b"Content-Length: 1\r\n\r\nx",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nKeep-Alive: timeout=5\r\n\r\nx",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nproxy-connection: x\r\n\r\nx",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTE: trailers\r\n\r\nx",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTrailer: X\r\n\r\nx",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nUPGRADE: h2c\r\n\r\nx",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nX-A: 1\nTransfer-Encoding: chunked\r\n\r\nx",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nX-A: 1\r\n folded\r\n\r\nx",
    ],
)
def test_passthrough_head_refuses_heads_to_rebuild(raw: bytes) -> None:
    """A head with anything the vhost must change or re-frame is rebuilt, never passed."""
    assert passthrough_head(raw, 4096) is None


def test_passthrough_head_refuses_past_the_size_limit() -> None:
    """A head longer than the limit is left to the rebuilding parser (which refuses it)."""
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n"
    assert passthrough_head(raw, 4096) is None
    with pytest.raises(BadResponse, match="too large"):
        run_relay(relay_for(), raw)


@pytest.mark.parametrize("split", [0, 7, 60, 95, 107])
def test_relay_passthrough_writes_what_rebuilding_writes(
    split: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The visitor gets the same bytes with and without the pass-through, across reads and
    over one reused stream (responses alternating between the two parsers)."""
    other = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    responses = [NGINX, other, NGINX, NGINX]

    def relay_all() -> list[bytes]:
        relay = ResponseRelay(4096)
        outs = []
        for raw in responses:
            start(relay)
            cut = split or len(raw)
            outs.append(run_relay(relay, raw[:cut], raw[cut:]) if cut < len(raw) else b"")
            if cut >= len(raw):
                outs[-1] = run_relay(relay, raw)
            assert relay.complete and relay.reusable and relay.status == 200
        return outs

    fast = relay_all()
    monkeypatch.setattr(response_module, "passthrough_head", lambda data, limit: None)
    assert fast == relay_all()
    assert fast[0].endswith(b"\r\n\r\nhello") and b"Connection" not in fast[0]


def test_relay_passthrough_only_without_response_rules() -> None:
    """responseHeaders.set and HTTP/1.0 visitors still get a rebuilt head."""
    rules = HeaderRules(response_set=((b"X-Via", b"tk"),), response_set_names=frozenset({b"x-via"}))
    assert b"X-Via: tk\r\n" in run_relay(relay_for(rules), NGINX)
    assert b"Connection: keep-alive\r\n" in run_relay(relay_for(http11=False), NGINX)


def test_relay_passthrough_still_checks_the_message() -> None:
    """llhttp still parses a passed head: a bad length is refused, and bytes after the
    response (a second one nobody asked for) make the stream unfit for reuse."""
    bad = b"HTTP/1.1 200 OK\r\nContent-Length: 5x\r\n\r\nhello"
    assert passthrough_head(bad, 4096) is not None
    with pytest.raises(BadResponse, match="malformed"):
        run_relay(relay_for(), bad)
    relay = relay_for()
    out = run_relay(relay, NGINX + NGINX)
    assert out.endswith(b"\r\n\r\nhello") and out.count(b"HTTP/1.1") == 1
    assert relay.complete and not relay.reusable
