"""Header rules of an HTTP route, and the request and response heads the vhost writes.

Pure code, no I/O. A route's rules are validated and encoded once (`compile_rules`), so the
per-request work is one pass over the headers that appends byte strings to a list.

What the vhost changes on the way to the app:
- hop-by-hop headers (RFC 9110 section 7.6.1: Connection, the names it lists, Keep-Alive,
  Proxy-Connection, Proxy-Authorization, TE, Trailer, Transfer-Encoding, Upgrade) are dropped;
  framing and `Upgrade` are regenerated from what the parser saw;
- Host becomes hostHeaderRewrite when set;
- X-Forwarded-For gets the visitor's IP appended; X-Forwarded-Proto, X-Forwarded-Host,
  X-Real-IP and `Forwarded` (RFC 7239, this hop only) are set from what the vhost saw,
  replacing anything the visitor sent;
- Authorization is dropped when the route has its own basic auth (it is the tunnel's secret);
- requestHeaders.set is applied last, so it can override the X-Forwarded-* values.

On the way back, hop-by-hop headers are dropped, framing is regenerated for the visitor's HTTP
version, and responseHeaders.set replaces or adds headers on final (non-1xx) responses.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Final

MAX_RULE_HEADERS: Final = 64  # per direction; a client asking for more is refused
MAX_RULE_VALUE_BYTES: Final = 4096

_TOKEN_RE: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HOSTPORT_RE: Final = re.compile(r"[A-Za-z0-9._\-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")

HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# What a response head drops: hop-by-hop headers, and Content-Length when the body is
# re-framed (chunked or until close) for the visitor.
_RESPONSE_SKIP_LENGTH: Final = HOP_BY_HOP
_RESPONSE_SKIP_REFRAMED: Final = HOP_BY_HOP | {b"content-length"}
# passthrough_head: a status that is final and not 101, and the hop-by-hop names (as they
# begin a header line) that make a head need rebuilding.
_FINAL_STATUS_DIGITS: Final = (b"2", b"3", b"4", b"5")
_PASSTHROUGH_REFUSED: Final = re.compile(  # a folded line, or a hop-by-hop name
    rb"\r\n(?:[ \t]|(?:keep-alive|proxy-connection|proxy-authenticate|proxy-authorization|te"
    rb"|trailer|transfer-encoding|upgrade):)",
    re.IGNORECASE,
)
_CONTENT_LENGTH: Final = re.compile(rb"\r\ncontent-length:", re.IGNORECASE)
_CONNECTION: Final = re.compile(rb"\r\nconnection:(?:( keep-alive\r\n)|)", re.IGNORECASE)
# Headers the vhost generates itself on requests: the visitor's copies are dropped.
REQUEST_OWN: Final = HOP_BY_HOP | {
    b"host",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-forwarded-host",
    b"x-real-ip",
    b"forwarded",
}
# A route may not set these: they decide message framing or the connection itself, and setting
# them would let one proxy's config desynchronise the stream (request smuggling).
_RESERVED: Final = HOP_BY_HOP | {b"content-length", b"host"}


class Framing(Enum):
    """How a message body is delimited."""

    NONE = "none"
    LENGTH = "length"
    CHUNKED = "chunked"
    UNTIL_CLOSE = "until-close"


@dataclass(frozen=True, slots=True)
class HeaderRules:
    """A route's header rules, validated and encoded to bytes."""

    host_rewrite: bytes | None = None
    request_set: tuple[tuple[bytes, bytes], ...] = ()
    request_set_names: frozenset[bytes] = frozenset()
    response_set: tuple[tuple[bytes, bytes], ...] = ()
    response_set_names: frozenset[bytes] = frozenset()
    auth: tuple[bytes, bytes] | None = None  # (user, password); None = no basic auth

    def check_auth(self, authorization: bytes | None) -> bool:
        """True when the route needs no auth or the Authorization header matches it."""
        if self.auth is None:
            return True
        user, password = _parse_basic(authorization)
        # Compare both parts whatever the first result, so timing does not reveal which failed.
        user_ok = hmac.compare_digest(user, self.auth[0])
        password_ok = hmac.compare_digest(password, self.auth[1])
        return user_ok and password_ok


def basic_auth_user(authorization: bytes | None) -> str:
    """The user named by a Basic Authorization header ("" if none), for routeByHTTPUser."""
    user, _ = _parse_basic(authorization)
    return user.decode("latin-1")


def _parse_basic(authorization: bytes | None) -> tuple[bytes, bytes]:
    if not authorization:
        return b"", b"\x00"
    scheme, _, encoded = authorization.strip().partition(b" ")
    if scheme.lower() != b"basic":
        return b"", b"\x00"
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return b"", b"\x00"
    user, sep, password = decoded.partition(b":")
    if not sep:
        return b"", b"\x00"
    return user, password


def _compile_set(what: str, rules: Mapping[str, str]) -> tuple[tuple[bytes, bytes], ...]:
    if len(rules) > MAX_RULE_HEADERS:
        raise ValueError(f"{what}: at most {MAX_RULE_HEADERS} headers, got {len(rules)}")
    out: list[tuple[bytes, bytes]] = []
    seen: set[bytes] = set()
    for name, value in rules.items():
        if not _TOKEN_RE.fullmatch(name):
            raise ValueError(f"{what}: {name!r} is not a valid header name")
        lname = name.lower().encode("ascii")
        if lname in _RESERVED:
            raise ValueError(f"{what}: {name!r} controls the connection or framing; remove it")
        if lname in seen:
            raise ValueError(f"{what}: {name!r} is set twice (names are case-insensitive)")
        seen.add(lname)
        encoded = value.encode("utf-8")
        if len(encoded) > MAX_RULE_VALUE_BYTES:
            raise ValueError(f"{what}: value of {name!r} is over {MAX_RULE_VALUE_BYTES} bytes")
        if any((c < 0x20 and c != 0x09) or c == 0x7F for c in encoded):
            raise ValueError(f"{what}: value of {name!r} has a control character")
        out.append((name.encode("ascii"), encoded.strip(b" \t")))
    return tuple(out)


def compile_rules(
    *,
    host_header_rewrite: str | None,
    request_headers_set: Mapping[str, str],
    response_headers_set: Mapping[str, str],
    http_user: str | None,
    http_password: str | None,
) -> HeaderRules:
    """Validate a route's header options; raise ValueError(reason) with a one-line reason."""
    host: bytes | None = None
    if host_header_rewrite:
        if len(host_header_rewrite) > 260 or not _HOSTPORT_RE.fullmatch(host_header_rewrite):
            raise ValueError(f"hostHeaderRewrite: {host_header_rewrite!r} is not a host[:port]")
        host = host_header_rewrite.encode("ascii")
    request_set = _compile_set("requestHeaders.set", request_headers_set)
    response_set = _compile_set("responseHeaders.set", response_headers_set)
    auth = None
    if http_user or http_password:
        if ":" in (http_user or ""):
            raise ValueError("httpUser: must not contain ':'")
        auth = ((http_user or "").encode("utf-8"), (http_password or "").encode("utf-8"))
    return HeaderRules(
        host_rewrite=host,
        request_set=request_set,
        request_set_names=frozenset(n.lower() for n, _ in request_set),
        response_set=response_set,
        response_set_names=frozenset(n.lower() for n, _ in response_set),
        auth=auth,
    )


def _extend(parts: list[bytes], headers: Iterable[tuple[bytes, bytes]]) -> None:
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")


def request_head(
    *,
    method: bytes,
    target: bytes,
    headers: list[tuple[bytes, bytes]],
    connection_tokens: frozenset[bytes],
    rules: HeaderRules,
    host: bytes,
    framing: Framing,
    upgrade: bytes | None,
    peer_ip: bytes,
    proto: bytes = b"http",
) -> bytes:
    """The request head to write upstream (always HTTP/1.1).

    Framing is regenerated: a chunked body is sent as `Transfer-Encoding: chunked` whatever
    the visitor wrote (the vhost accepts no other transfer coding). `Forwarded` is the
    server's own (RFC 7239): the visitor's copy is dropped, as it could be spoofed.
    """
    parts = [method, b" ", target, b" HTTP/1.1\r\n"]
    forwarded_for: list[bytes] = []
    set_names = rules.request_set_names
    strip_auth = rules.auth is not None
    for name, value in headers:
        lname = name.lower()
        if lname in REQUEST_OWN:
            if lname == b"x-forwarded-for":
                forwarded_for.append(value)
            continue
        if lname in connection_tokens or lname in set_names:
            continue
        if strip_auth and lname == b"authorization":
            continue
        parts += (name, b": ", value, b"\r\n")
    parts += (b"Host: ", rules.host_rewrite or host, b"\r\n")
    if framing is Framing.CHUNKED:
        parts.append(b"Transfer-Encoding: chunked\r\n")
    if upgrade is not None:
        parts += (b"Connection: Upgrade\r\nUpgrade: ", upgrade, b"\r\n")
    _extend(parts, added_headers(rules, host, peer_ip, proto, forwarded_for))
    parts.append(b"\r\n")
    return b"".join(parts)


def raw_head_ok(rules: HeaderRules) -> bool:
    """True if this route's requests may forward the visitor's head as it came
    (`RequestHead.raw`) with `appended_headers` after it: the route rewrites no header the
    visitor sent (no hostHeaderRewrite, no requestHeaders.set, no basic auth to strip)."""
    return rules.host_rewrite is None and not rules.request_set and rules.auth is None


def appended_headers(rules: HeaderRules, host: bytes, peer_ip: bytes, proto: bytes) -> bytes:
    """What follows a raw head's last header line: `added_headers` for a visitor that sent
    no X-Forwarded-For, and the closing CRLF. The same for every request of a connection to
    one route and host, so the caller keeps it."""
    parts: list[bytes] = []
    _extend(parts, added_headers(rules, host, peer_ip, proto, []))
    parts.append(b"\r\n")
    return b"".join(parts)


def forwarded_headers(
    headers: Iterable[tuple[bytes, bytes]], rules: HeaderRules
) -> tuple[list[tuple[bytes, bytes]], list[bytes]]:
    """The visitor's headers an HTTP/2 request keeps, and its X-Forwarded-For values.

    The same filter as `request_head` for headers that are not hop-by-hop in HTTP/2 (the
    caller drops those): the vhost's own headers, the route's set names and, with basic auth,
    Authorization are removed.
    """
    kept: list[tuple[bytes, bytes]] = []
    forwarded_for: list[bytes] = []
    strip_auth = rules.auth is not None
    for name, value in headers:
        lname = name.lower()
        if lname in REQUEST_OWN:
            if lname == b"x-forwarded-for":
                forwarded_for.append(value)
            continue
        if lname in rules.request_set_names or (strip_auth and lname == b"authorization"):
            continue
        kept.append((name, value))
    return kept, forwarded_for


def added_headers(
    rules: HeaderRules, host: bytes, peer_ip: bytes, proto: bytes, forwarded_for: list[bytes]
) -> list[tuple[bytes, bytes]]:
    """What the vhost adds to every request: `Forwarded` and X-Forwarded-* (unless the route
    sets them), then requestHeaders.set. Shared by HTTP/1.1 heads and HTTP/2 (h2c) headers."""
    set_names = rules.request_set_names
    out: list[tuple[bytes, bytes]] = []
    if b"forwarded" not in set_names:
        node = b"[" + peer_ip + b"]" if b":" in peer_ip else peer_ip
        out.append((b"Forwarded", b'for="%b";host="%b";proto=%b' % (node, host, proto)))
    if b"x-forwarded-for" not in set_names:
        out.append((b"X-Forwarded-For", b", ".join([*forwarded_for, peer_ip])))
    if b"x-forwarded-proto" not in set_names:
        out.append((b"X-Forwarded-Proto", proto))
    if b"x-forwarded-host" not in set_names:
        out.append((b"X-Forwarded-Host", host))
    if b"x-real-ip" not in set_names:
        out.append((b"X-Real-IP", peer_ip))
    out += rules.request_set
    return out


def response_head(
    *,
    status: int,
    reason: bytes,
    headers: list[tuple[bytes, bytes]],
    rules: HeaderRules | None,
    framing: Framing,
    transfer_encoding: bytes,
    connection: bytes | None,
    upgrade: bytes | None,
) -> bytes:
    """The response head to write to the visitor.

    `rules` is None for interim (1xx) responses, which get no responseHeaders.set.
    `framing` is the framing towards the visitor; `connection` the Connection header to send.
    """
    parts = [b"HTTP/1.1 %d " % status, reason, b"\r\n"]
    skip = (
        _RESPONSE_SKIP_LENGTH
        if framing is Framing.LENGTH or framing is Framing.NONE
        else (_RESPONSE_SKIP_REFRAMED)
    )
    for name, value in headers:
        if len(name) == 10 and name.lower() == b"connection":
            # The names a Connection header lists are hop-by-hop too (RFC 9110 7.6.1).
            tokens = {t.strip().lower() for t in value.split(b",")}
            if not tokens <= skip:  # "keep-alive" names a hop-by-hop header already
                skip = skip | tokens
    if rules is not None and rules.response_set_names:
        skip = skip | rules.response_set_names
    for name, value in headers:
        if name.lower() not in skip:
            parts += (name, b": ", value, b"\r\n")
    if framing is Framing.CHUNKED:
        parts += (b"Transfer-Encoding: ", transfer_encoding, b"\r\n")
    if upgrade is not None:
        parts += (b"Connection: Upgrade\r\nUpgrade: ", upgrade, b"\r\n")
    elif connection is not None:
        parts += (b"Connection: ", connection, b"\r\n")
    if rules is not None:
        _extend(parts, rules.response_set)
    parts.append(b"\r\n")
    return b"".join(parts)


def passthrough_head(data: bytes, max_bytes: int) -> bytes | None:
    """The app's response head to forward as it is, or None when it must be rebuilt.

    `data` is a read from the app that begins with a response. Only the common case passes:
    an HTTP/1.1 final (2xx-5xx) response whose whole head is in `data` (at most `max_bytes`),
    framed by Content-Length, with CRLF line ends, no folded lines and no hop-by-hop header
    but `Connection: keep-alive`, which is left out (the visitor's HTTP/1.1 connection is
    persistent by default). For it, `response_head` would write the same bytes. llhttp parses
    the same bytes as usual and rejects a malformed head; this only looks for names.
    """
    if data[:9] != b"HTTP/1.1 " or data[9:10] not in _FINAL_STATUS_DIGITS:
        return None
    end = data.find(b"\r\n\r\n", 0, max_bytes)
    if end < 0 or data.count(b"\n", 0, end + 2) != data.count(b"\r\n", 0, end + 2):
        return None  # no whole head, or a line that ends in a bare LF
    if _PASSTHROUGH_REFUSED.search(data, 0, end + 2) is not None:
        return None
    if _CONTENT_LENGTH.search(data, 0, end + 2) is None:
        return None  # re-framed for the visitor, or no body at all
    found = _CONNECTION.search(data, 0, end + 2)
    if found is None:
        return data[: end + 4]
    if found[1] is None or _CONNECTION.search(data, found.end() - 2, end + 2) is not None:
        return None  # a Connection header other than one "keep-alive"
    return data[: found.start()] + data[found.end() - 2 : end + 4]


def chunk(data: bytes) -> list[bytes]:
    """One chunk of a chunked body, as pieces for writelines."""
    return [b"%x\r\n" % len(data), data, b"\r\n"]


def last_chunk(trailers: list[tuple[bytes, bytes]]) -> bytes:
    """The terminating zero-length chunk, with trailers if any."""
    if not trailers:
        return b"0\r\n\r\n"
    parts = [b"0\r\n"]
    for name, value in trailers:
        if name.lower() not in _RESERVED:
            parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)
