"""Read the SNI name and the ALPN list from a TLS ClientHello, incrementally. Pure code.

The edge listener peeks at a visitor's first bytes without consuming them (the socket then
goes to a TLS terminator or a passthrough splice with those bytes still unread), so it sees a
*growing prefix* of the same bytes on each wake-up. `HelloReader.feed(prefix)` resumes at the
last whole record it has already taken, so the total work stays linear in the ClientHello's
size however the bytes trickle in; `want` says how many bytes the next useful wake-up needs
(the end of the record being read), which the listener uses as the socket's receive
low-water mark.

Layout (RFC 8446 section 4.1.2; SNI RFC 6066 section 3; ALPN RFC 7301 section 3.1):

    record:      type=22 (1) | legacy_version (2) | length (2) | fragment
    handshake:   msg_type=1 (1) | length (3) | ClientHello
    ClientHello: version (2) | random (32) | session_id <0..32> | cipher_suites <2..2^16-2>
                 | compression_methods <1..2^8-1> | extensions <8..2^16-1>
    server_name (0):    list <2> of (name_type=0 (1) | host_name <2>)
    alpn (16):          list <2> of (protocol_name <1>)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

MAX_CLIENT_HELLO_BYTES: Final = 16 * 1024  # raw bytes peeked before giving up
MAX_RECORD_BYTES: Final = 2**14 + 256  # RFC 8446 section 5.1 (plus slack for old peers)
MAX_ALPN_NAMES: Final = 16  # more offered protocols than this is not a real browser
_RECORD_HEADER: Final = 5
_HANDSHAKE: Final = 22
_CLIENT_HELLO: Final = 1
_EXT_SERVER_NAME: Final = 0
_EXT_ALPN: Final = 16


class HelloError(ValueError):
    """The bytes are not a usable TLS ClientHello."""


@dataclass(frozen=True, slots=True)
class ClientHello:
    """What the edge routes on: the server name (lowercased) and the offered ALPN names."""

    server_name: str | None
    alpn: tuple[str, ...]


class HelloReader:
    """Reassembles one ClientHello from a growing prefix of the connection's bytes."""

    __slots__ = ("_handshake", "_max_bytes", "_pos", "want")

    def __init__(self, max_bytes: int = MAX_CLIENT_HELLO_BYTES) -> None:
        self._max_bytes = max_bytes
        self._pos = 0  # bytes of the prefix already taken (whole records)
        self._handshake = bytearray()
        self.want = _RECORD_HEADER  # the prefix length the next feed() needs to progress

    def feed(self, prefix: bytes | bytearray | memoryview) -> ClientHello | None:
        """Take the bytes received so far; the ClientHello once whole, else None."""
        view = memoryview(prefix)
        if len(view) > self._max_bytes:
            view = view[: self._max_bytes]
        while True:
            pos = self._pos
            if len(view) - pos < _RECORD_HEADER:
                self._need(pos + _RECORD_HEADER)
                return None
            if view[pos] != _HANDSHAKE:
                raise HelloError("not a TLS handshake record")
            if view[pos + 1] != 3:
                raise HelloError("unknown TLS record version")
            length = int.from_bytes(view[pos + 3 : pos + 5], "big")
            if length == 0 or length > MAX_RECORD_BYTES:
                raise HelloError("bad TLS record length")
            end = pos + _RECORD_HEADER + length
            if end > len(view):
                self._need(end)
                return None
            self._handshake += view[pos + _RECORD_HEADER : end]
            self._pos = end
            handshake = self._handshake
            if len(handshake) >= 4:
                if handshake[0] != _CLIENT_HELLO:
                    raise HelloError("the first handshake message is not a ClientHello")
                body_len = int.from_bytes(handshake[1:4], "big")
                if body_len > self._max_bytes:
                    raise HelloError("ClientHello is too large")
                if len(handshake) >= 4 + body_len:
                    return _parse_body(memoryview(handshake)[4 : 4 + body_len])

    def _need(self, length: int) -> None:
        if length > self._max_bytes:
            raise HelloError("ClientHello is too large")
        self.want = length


class _Reader:
    """Bounds-checked reads over one vector."""

    __slots__ = ("buf", "pos")

    def __init__(self, buf: memoryview) -> None:
        self.buf = buf
        self.pos = 0

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.buf):
            raise HelloError("truncated ClientHello")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def number(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def vector(self, length_bytes: int) -> memoryview:
        return self.take(self.number(length_bytes))

    @property
    def done(self) -> bool:
        return self.pos >= len(self.buf)


def _parse_body(body: memoryview) -> ClientHello:
    r = _Reader(body)
    r.take(2 + 32)  # legacy_version, random
    r.vector(1)  # legacy_session_id
    r.vector(2)  # cipher_suites
    r.vector(1)  # legacy_compression_methods
    name: str | None = None
    alpn: tuple[str, ...] = ()
    if r.done:
        return ClientHello(None, ())  # no extensions at all (possible before TLS 1.2)
    extensions = _Reader(r.vector(2))
    while not extensions.done:
        ext_type = extensions.number(2)
        ext = _Reader(extensions.vector(2))
        if ext_type == _EXT_SERVER_NAME:
            name = _server_name(ext)
        elif ext_type == _EXT_ALPN:
            alpn = _alpn(ext)
    return ClientHello(name, alpn)


def _server_name(r: _Reader) -> str | None:
    names = _Reader(r.vector(2))
    while not names.done:
        name_type = names.number(1)
        raw = bytes(names.vector(2))
        if name_type == 0:
            if not raw or len(raw) > 253 or not raw.isascii():
                raise HelloError("bad SNI host name")
            text = raw.decode("ascii")
            if not all(c.isalnum() or c in "-._" for c in text):
                raise HelloError("bad SNI host name")
            return text.lower()
    return None


def _alpn(r: _Reader) -> tuple[str, ...]:
    names = _Reader(r.vector(2))
    out: list[str] = []
    while not names.done:
        raw = bytes(names.vector(1))
        if not raw:
            raise HelloError("empty ALPN protocol name")
        if len(out) >= MAX_ALPN_NAMES:
            raise HelloError("too many ALPN protocol names")
        out.append(raw.decode("latin-1"))
    return tuple(out)
