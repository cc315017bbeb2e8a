"""What the HTTP vhost accepts from a visitor at the edge, in canonical form. Pure code.

Paths (issue #8: `locations` auth bypasses). Routing and basic auth work on the *normalized*
path, and the app receives that same path, so the vhost and the app can never disagree about
which location a request is for. Normalization is RFC 3986's, in this order:
1. percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded (`/%61dmin` is
   `/admin`); other escapes keep their meaning and get upper-case hex (`%2f` -> `%2F`: an
   encoded slash is data, not a separator, as RFC 3986 says);
2. repeated slashes are merged (`//admin` is `/admin`, as nginx's `merge_slashes`);
3. dot segments are removed (section 5.2.4: `/x/../admin` and `/./admin` are `/admin`; `..`
   never climbs above the root).
A path that cannot be read unambiguously is refused with 400: a `%` not followed by two hex
digits, an escaped control character (`%00`-`%1F`, `%7F`), or a raw backslash (some servers
treat it as a slash).

Host (RFC 9110 section 7.2, RFC 3986 section 3.2.2): `host[:port]` only, where host is a DNS
name (letters, digits, `-`, `_`, `.`), an IPv4 address or a bracketed IPv6 literal. Anything
else (`a:80@b`, spaces, a second colon, an empty port) is a 400.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

from .rewrite import Framing

if TYPE_CHECKING:
    from .request import RequestHead

MAX_PORT: Final = 65535
_HOST_RE: Final = re.compile(
    r"(?:(?P<name>[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,252}))|\[(?P<v6>[0-9A-Fa-f:.]{2,45})\])"
    r"(?::(?P<port>[0-9]{1,5}))?"
)
_UNRESERVED: Final = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
)
_HEX: Final = frozenset(b"0123456789abcdefABCDEF")


class BadRequestTarget(ValueError):
    """The request cannot be read unambiguously; `str()` says why, `status` is the answer."""

    def __init__(self, detail: str, status: int = 400) -> None:
        super().__init__(detail)
        self.status = status


def check_host(host: str) -> None:
    """Raise BadRequestTarget unless `host` is `host[:port]` as RFC 9110 allows."""
    match = _HOST_RE.fullmatch(host)
    if match is None:
        raise BadRequestTarget("the Host header is not a valid host[:port]")
    port = match.group("port")
    if port is not None and int(port) > MAX_PORT:
        raise BadRequestTarget("the Host header has a port above 65535")


def normalize_path(path: bytes) -> bytes:
    """The RFC 3986 normal form of an origin-form path (no query); see the module docstring."""
    if b"%" in path:
        path = _decode_unreserved(path)
    if b"\\" in path:
        raise BadRequestTarget("the path has a backslash")
    if b"//" in path:
        path = re.sub(rb"/{2,}", b"/", path)
    if b"/." in path:  # a dot segment follows a slash; "/index.html" has none
        path = _remove_dot_segments(path)
    return path


def _decode_unreserved(path: bytes) -> bytes:
    out = bytearray()
    i = 0
    n = len(path)
    while i < n:
        j = path.find(b"%", i)
        if j < 0:
            out += path[i:]
            break
        out += path[i:j]
        hex2 = path[j + 1 : j + 3]
        if len(hex2) != 2 or hex2[0] not in _HEX or hex2[1] not in _HEX:
            raise BadRequestTarget("the path has a '%' that is not followed by two hex digits")
        value = int(hex2, 16)
        if value < 0x20 or value == 0x7F:
            raise BadRequestTarget("the path has an escaped control character")
        if value in _UNRESERVED:
            out.append(value)
        else:
            out += b"%" + hex2.upper()
        i = j + 3
    return bytes(out)


def _remove_dot_segments(path: bytes) -> bytes:
    """RFC 3986 section 5.2.4 on an absolute path with no empty segments."""
    segments = path.split(b"/")
    out: list[bytes] = []
    for index, segment in enumerate(segments[1:], 1):
        last = index == len(segments) - 1
        if segment == b".":
            if last:
                out.append(b"")
        elif segment == b"..":
            if out:
                out.pop()
            if last:
                out.append(b"")
        else:
            out.append(segment)
    return b"/" + b"/".join(out)


def check_request(head: RequestHead) -> tuple[bytes, bytes, str]:
    """(host, target, path) to route and forward; raises BadRequestTarget to refuse.

    The target's path is normalized (see normalize.py) and forwarded in that form, so the
    app serves the location that was matched and authorized.
    """
    target = head.target
    host_raw = head.host
    if target[:1] != b"/":
        lowered = target[:8].lower()
        if lowered.startswith((b"http://", b"https://")):
            # absolute-form: the authority in the target wins over Host (RFC 9112 3.2.2)
            rest = target[target.index(b"//") + 2 :]
            end = min((i for i in map(rest.find, (b"/", b"?")) if i >= 0), default=-1)
            host_raw, target = (rest, b"/") if end < 0 else (rest[:end], rest[end:])
            if target[:1] == b"?":
                target = b"/" + target
    if head.host_count > 1:
        raise BadRequestTarget("the request has more than one Host header")
    if not host_raw:
        raise BadRequestTarget("the request has no Host header")
    if head.framing is Framing.CHUNKED:
        if not head.http11:
            raise BadRequestTarget("Transfer-Encoding in an HTTP/1.0 request")
        if head.transfer_encoding.strip().lower() != b"chunked":
            raise BadRequestTarget("only the chunked transfer coding is supported", 501)
    check_host(host_raw.decode("latin-1"))
    if target[:1] == b"/":
        query = target.find(b"?")
        raw_path = target if query < 0 else target[:query]
        path = normalize_path(raw_path)
        if path != raw_path:
            target = path + target[len(raw_path) :]
    elif (target == b"*" and head.method == b"OPTIONS") or head.switching:
        path = b"/"  # OPTIONS *, or CONNECT host:port (refused with 405 next)
    else:
        raise BadRequestTarget("the request target is not a path")
    return host_raw, target, path.decode("latin-1")
