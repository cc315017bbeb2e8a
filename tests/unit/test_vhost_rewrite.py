"""Unit tests for the request and response heads the vhost writes."""

from __future__ import annotations

from typing import Any

from tunnel_server.vhost.rewrite import (
    Framing,
    HeaderRules,
    compile_rules,
    request_head,
    response_head,
)


def rules(**kw: Any) -> HeaderRules:
    args: dict[str, Any] = {
        "host_header_rewrite": None,
        "request_headers_set": {},
        "response_headers_set": {},
        "http_user": None,
        "http_password": None,
    }
    args.update(kw)
    return compile_rules(**args)


def parse_head(raw: bytes) -> tuple[bytes, list[tuple[str, str]]]:
    assert raw.endswith(b"\r\n\r\n")
    lines = raw[:-4].decode().split("\r\n")
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(": ")
        headers.append((name, value))
    return lines[0].encode(), headers


def build_request(headers: list[tuple[bytes, bytes]], **kw: Any) -> list[tuple[str, str]]:
    args: dict[str, Any] = {
        "method": b"GET",
        "target": b"/x?y=1",
        "headers": headers,
        "connection_tokens": frozenset(),
        "rules": rules(),
        "host": b"a.test:8080",
        "framing": Framing.NONE,
        "upgrade": None,
        "peer_ip": b"192.0.2.7",
    }
    args.update(kw)
    line, out = parse_head(request_head(**args))
    assert line == args["method"] + b" " + args["target"] + b" HTTP/1.1"
    return out


def test_rewrite_forwarded_headers_set() -> None:
    """X-Forwarded-For/-Proto/-Host and X-Real-IP describe what the vhost saw."""
    out = dict(build_request([(b"Host", b"a.test:8080"), (b"Accept", b"*/*")]))
    assert out["Host"] == "a.test:8080"
    assert out["X-Forwarded-For"] == "192.0.2.7"
    assert out["X-Forwarded-Proto"] == "http"
    assert out["X-Forwarded-Host"] == "a.test:8080"
    assert out["X-Real-IP"] == "192.0.2.7"
    assert out["Accept"] == "*/*"


def test_rewrite_forwarded_for_appends() -> None:
    """An incoming X-Forwarded-For keeps its value with the peer appended; spoofed
    X-Real-IP / X-Forwarded-Proto values are replaced."""
    out = build_request(
        [
            (b"X-Forwarded-For", b"10.0.0.1"),
            (b"x-forwarded-for", b"10.0.0.2, 10.0.0.3"),
            (b"X-Real-IP", b"1.2.3.4"),
            (b"X-Forwarded-Proto", b"https"),
        ]
    )
    values = dict(out)
    assert values["X-Forwarded-For"] == "10.0.0.1, 10.0.0.2, 10.0.0.3, 192.0.2.7"
    assert values["X-Real-IP"] == "192.0.2.7"
    assert values["X-Forwarded-Proto"] == "http"
    assert [n.lower() for n, _ in out].count("x-forwarded-for") == 1


def test_rewrite_hop_by_hop_dropped() -> None:
    """Hop-by-hop headers and the names listed in Connection are not forwarded."""
    out = build_request(
        [
            (b"Connection", b"keep-alive, X-Secret-Hop"),
            (b"Keep-Alive", b"timeout=5"),
            (b"X-Secret-Hop", b"1"),
            (b"Proxy-Authorization", b"Basic abc"),
            (b"TE", b"trailers"),
            (b"Upgrade", b"h2c"),
            (b"X-Kept", b"yes"),
        ],
        connection_tokens=frozenset({b"keep-alive", b"x-secret-hop"}),
    )
    names = {n.lower() for n, _ in out}
    assert names.isdisjoint(
        {"connection", "keep-alive", "x-secret-hop", "proxy-authorization", "te", "upgrade"}
    )
    assert ("X-Kept", "yes") in out


def test_rewrite_host_rewrite_and_set_rules() -> None:
    """hostHeaderRewrite replaces Host; requestHeaders.set replaces or adds, and wins last."""
    r = rules(
        host_header_rewrite="backend.local",
        request_headers_set={"X-From": "tunnel", "user-agent": "tk", "X-Forwarded-Proto": "https"},
    )
    out = dict(build_request([(b"Host", b"a.test"), (b"User-Agent", b"curl")], rules=r))
    assert out["Host"] == "backend.local"
    assert out["X-Forwarded-Host"] == "a.test:8080"
    assert out["X-From"] == "tunnel"
    assert out["user-agent"] == "tk"
    assert "User-Agent" not in out
    assert out["X-Forwarded-Proto"] == "https"


def test_rewrite_authorization_stripped_only_with_route_auth() -> None:
    """The tunnel's own basic-auth credentials never reach the app."""
    headers = [(b"Authorization", b"Basic dTpw")]
    assert ("Authorization", "Basic dTpw") in build_request(headers)
    protected = rules(http_user="u", http_password="p")
    assert "Authorization" not in dict(build_request(headers, rules=protected))


def test_rewrite_chunked_and_upgrade_regenerated() -> None:
    """Chunked framing and an upgrade are regenerated, not copied."""
    out = dict(
        build_request(
            [(b"Transfer-Encoding", b"chunked")],
            framing=Framing.CHUNKED,
            upgrade=b"websocket",
        )
    )
    assert out["Transfer-Encoding"] == "chunked"
    assert out["Connection"] == "Upgrade"
    assert out["Upgrade"] == "websocket"


def test_rewrite_response_head() -> None:
    """Responses lose hop-by-hop headers, get responseHeaders.set and the visitor's framing."""
    r = rules(response_headers_set={"X-Served-By": "tunnelkit", "Server": "tk"})
    raw = response_head(
        status=200,
        reason=b"OK",
        headers=[
            (b"Server", b"app"),
            (b"Connection", b"close, X-Hop"),
            (b"X-Hop", b"1"),
            (b"Transfer-Encoding", b"chunked"),
            (b"Content-Type", b"text/plain"),
        ],
        rules=r,
        framing=Framing.CHUNKED,
        transfer_encoding=b"chunked",
        connection=None,
        upgrade=None,
    )
    line, out = parse_head(raw)
    assert line == b"HTTP/1.1 200 OK"
    values = dict(out)
    assert values == {
        "Content-Type": "text/plain",
        "Transfer-Encoding": "chunked",
        "X-Served-By": "tunnelkit",
        "Server": "tk",
    }


def test_rewrite_response_connection_close_and_interim() -> None:
    """The vhost's own Connection value is sent; interim heads get no set rules."""
    r = rules(response_headers_set={"X-A": "1"})
    raw = response_head(
        status=100,
        reason=b"Continue",
        headers=[],
        rules=None,
        framing=Framing.NONE,
        transfer_encoding=b"",
        connection=None,
        upgrade=None,
    )
    assert raw == b"HTTP/1.1 100 Continue\r\n\r\n"
    raw = response_head(
        status=200,
        reason=b"OK",
        headers=[(b"Content-Length", b"3")],
        rules=r,
        framing=Framing.LENGTH,
        transfer_encoding=b"",
        connection=b"close",
        upgrade=None,
    )
    assert dict(parse_head(raw)[1]) == {"Content-Length": "3", "Connection": "close", "X-A": "1"}
