"""Read a TLS ClientHello without terminating TLS: the server name (SNI) and the ALPN list.
Pure code; the one ClientHello parser of tunneld.

Two callers, one parser (`ClientHelloParser`, fed the bytes as they arrive):
- the SNI passthrough vhost (`https_sni.py`) reads the ClientHello itself and forwards it;
  `ClientHelloReader.feed(data)` (and the one-shot `parse_sni`) return the host name, None
  when the ClientHello has no SNI, or NEED_DATA. ALPN is not looked at: the app's own TLS
  server decides on it;
- the HTTPS edge (`edge/listener.py`) *peeks* (MSG_PEEK), so it sees a growing prefix of the
  same bytes on each wake-up; `HelloReader.feed(prefix)` takes only the new bytes, returns a
  `ClientHello` (name and ALPN names) once whole, and `want` says how long the prefix must be
  for the next useful wake-up (the end of the record being read), which the edge uses as the
  socket's receive low-water mark.

Work is linear in the bytes received: raw bytes are kept only until their record is complete,
each complete record's fragment is appended to the handshake buffer once, so no byte is
parsed twice (with 1-byte reads or 1-byte records alike). Both callers' limits:
`max_bytes` raw bytes in total (MAX_CLIENT_HELLO_BYTES), and for the edge at most
MAX_ALPN_NAMES offered protocols. Anything else raises `HelloError` (ClientHelloError).

Layout (RFC 8446 section 4.1.2; SNI RFC 6066 section 3; ALPN RFC 7301 section 3.1). The
handshake message may be split over several TLS records, and the records over several reads:

    record:      type=22 (1) | legacy_version (2) | length (2) | fragment
    handshake:   msg_type=1 (1) | length (3) | ClientHello
    ClientHello: version (2) | random (32) | session_id <0..32> | cipher_suites <2..2^16-2>
                 | compression_methods <1..2^8-1> | extensions <8..2^16-1>
    server_name (0):    list <2> of (name_type=0 (1) | host_name <2>)
    alpn (16):          list <2> of (protocol_name <1>)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

MAX_CLIENT_HELLO_BYTES: Final = 16 * 1024  # raw bytes taken before giving up
MAX_RECORD_BYTES: Final = 2**14 + 256  # RFC 8446 section 5.1 (plus slack for old peers)
MAX_ALPN_NAMES: Final = 16  # more offered protocols than this is not a real browser
MAX_HOST_NAME_CHARS: Final = 253
_RECORD_HEADER: Final = 5
_HANDSHAKE: Final = 22
_CLIENT_HELLO: Final = 1
_EXT_SERVER_NAME: Final = 0
_EXT_ALPN: Final = 16
_HOST_NAME: Final = 0


class HelloError(ValueError):
    """The bytes are not a usable TLS ClientHello."""


ClientHelloError = HelloError  # the passthrough vhost's name for it


class _NeedData(enum.Enum):
    NEED_DATA = "need more data"


NEED_DATA: Final = _NeedData.NEED_DATA


@dataclass(frozen=True, slots=True)
class ClientHello:
    """What the vhosts route on: the server name (lowercased) and the offered ALPN names."""

    server_name: str | None
    alpn: tuple[str, ...]


class ClientHelloParser:
    """The incremental parser. `feed(new_bytes)` -> the ClientHello once whole, else None.

    `max_alpn_names` None skips the ALPN extension (not parsed, not limited)."""

    __slots__ = ("_handshake", "_max", "_max_alpn", "_pending", "_received")

    def __init__(
        self, max_bytes: int = MAX_CLIENT_HELLO_BYTES, max_alpn_names: int | None = MAX_ALPN_NAMES
    ) -> None:
        self._max = max_bytes
        self._max_alpn = max_alpn_names
        self._pending = bytearray()  # raw bytes of the current, incomplete record
        self._handshake = bytearray()  # reassembled handshake bytes
        self._received = 0

    @property
    def buffered_bytes(self) -> int:
        """Bytes held now: the incomplete record plus the reassembled handshake."""
        return len(self._pending) + len(self._handshake)

    @property
    def want(self) -> int:
        """Bytes received in all that the next step needs: the end of the current record."""
        start = self._received - len(self._pending)
        pending = self._pending
        if len(pending) < _RECORD_HEADER:
            return start + _RECORD_HEADER
        return start + _RECORD_HEADER + int.from_bytes(pending[3:5], "big")

    def feed(self, data: bytes | bytearray | memoryview) -> ClientHello | None:
        """Add bytes; the ClientHello once whole, else None. Raises HelloError.

        Bytes past `max_bytes` in all are never looked at: a ClientHello must end within it."""
        data = data[: max(0, self._max - self._received)]
        self._received += len(data)
        self._pending += data
        pending = self._pending
        pos = 0
        while len(pending) - pos >= _RECORD_HEADER:
            if pending[pos] != _HANDSHAKE:
                raise HelloError("not a TLS handshake record")
            if pending[pos + 1] != 3:
                raise HelloError("unknown TLS record version")
            length = int.from_bytes(pending[pos + 3 : pos + 5], "big")
            if length == 0 or length > MAX_RECORD_BYTES:
                raise HelloError("bad TLS record length")
            end = pos + _RECORD_HEADER + length
            if end > len(pending):
                break
            self._handshake += pending[pos + _RECORD_HEADER : end]
            pos = end
            hello = self._check_handshake()
            if hello is not None:
                return hello
        del pending[:pos]
        if pending and pending[0] != _HANDSHAKE:
            raise HelloError("not a TLS handshake record")
        if self._received >= self._max or self.want > self._max:
            raise HelloError("ClientHello is too large")
        return None

    def _check_handshake(self) -> ClientHello | None:
        handshake = self._handshake
        if len(handshake) < 4:
            return None
        if handshake[0] != _CLIENT_HELLO:
            raise HelloError("the first handshake message is not a ClientHello")
        body_len = int.from_bytes(handshake[1:4], "big")
        if body_len > self._max:
            raise HelloError("ClientHello is too large")
        if len(handshake) >= 4 + body_len:
            return _parse_body(memoryview(handshake)[4 : 4 + body_len], self._max_alpn)
        return None


class HelloReader:
    """The edge's form: fed a growing prefix of the connection's bytes (MSG_PEEK)."""

    __slots__ = ("_parser", "_seen")

    def __init__(self, max_bytes: int = MAX_CLIENT_HELLO_BYTES) -> None:
        self._parser = ClientHelloParser(max_bytes, MAX_ALPN_NAMES)
        self._seen = 0  # prefix bytes already given to the parser

    @property
    def want(self) -> int:
        """The prefix length the next feed() needs to progress."""
        return self._parser.want

    def feed(self, prefix: bytes | bytearray | memoryview) -> ClientHello | None:
        """Take the bytes received so far; the ClientHello once whole, else None."""
        new = memoryview(prefix)[self._seen :]
        self._seen += len(new)
        return self._parser.feed(new) if new else None


class ClientHelloReader:
    """The passthrough vhost's form: fed each read; the host name, None or NEED_DATA."""

    __slots__ = ("_parser",)

    def __init__(self, max_bytes: int = MAX_CLIENT_HELLO_BYTES) -> None:
        self._parser = ClientHelloParser(max_bytes, max_alpn_names=None)

    @property
    def buffered_bytes(self) -> int:
        return self._parser.buffered_bytes

    def feed(self, data: bytes | bytearray | memoryview) -> str | _NeedData | None:
        """Add bytes; the server name, None (no SNI) or NEED_DATA. Raises ClientHelloError."""
        hello = self._parser.feed(data)
        return NEED_DATA if hello is None else hello.server_name


def parse_sni(
    data: bytes | bytearray | memoryview, max_bytes: int = MAX_CLIENT_HELLO_BYTES
) -> str | _NeedData | None:
    """See the module docstring (one-shot; `ClientHelloReader` is the incremental form)."""
    return ClientHelloReader(max_bytes).feed(data)


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


def _parse_body(body: memoryview, max_alpn: int | None) -> ClientHello:
    r = _Reader(body)
    r.take(2 + 32)  # legacy_version, random
    r.vector(1)  # legacy_session_id
    r.vector(2)  # cipher_suites
    r.vector(1)  # legacy_compression_methods
    if r.done:
        return ClientHello(None, ())  # no extensions at all (possible before TLS 1.2)
    name: str | None = None
    alpn: tuple[str, ...] = ()
    extensions = _Reader(r.vector(2))
    while not extensions.done:
        ext_type = extensions.number(2)
        ext = _Reader(extensions.vector(2))
        if ext_type == _EXT_SERVER_NAME:
            name = _server_name(ext)
        elif ext_type == _EXT_ALPN and max_alpn is not None:
            alpn = _alpn(ext, max_alpn)
    return ClientHello(name, alpn)


def _server_name(r: _Reader) -> str | None:
    names = _Reader(r.vector(2))
    while not names.done:
        name_type = names.number(1)
        raw = bytes(names.vector(2))
        if name_type == _HOST_NAME:
            if not raw or len(raw) > MAX_HOST_NAME_CHARS or not raw.isascii():
                raise HelloError("bad SNI host name")
            text = raw.decode("ascii")
            if not all(c.isalnum() or c in "-._" for c in text):
                raise HelloError("bad SNI host name")
            return text.lower()
    return None


def _alpn(r: _Reader, max_names: int) -> tuple[str, ...]:
    names = _Reader(r.vector(2))
    out: list[str] = []
    while not names.done:
        raw = bytes(names.vector(1))
        if not raw:
            raise HelloError("empty ALPN protocol name")
        if len(out) >= max_names:
            raise HelloError("too many ALPN protocol names")
        out.append(raw.decode("latin-1"))
    return tuple(out)
