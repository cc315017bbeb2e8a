"""Read the server name (SNI) from a TLS ClientHello, without terminating TLS. Pure code.

`ClientHelloReader().feed(data)` takes each read as it arrives (linear in the bytes received;
`parse_sni(data)` is the one-shot form) and returns:
- the host name (a str, lowercased) when the ClientHello carries SNI;
- None when the ClientHello is complete and has no SNI;
- NEED_DATA when more bytes are needed.
It raises `ClientHelloError` when the bytes are not a TLS ClientHello or are over the cap.

Layout (RFC 8446 section 4.1.2, RFC 6066 section 3). The handshake message may be split over
several TLS records, and the records over several reads; both are reassembled:

    record:     type=22 (1) | legacy_version (2) | length (2) | fragment
    handshake:  msg_type=1 (1) | length (3) | ClientHello
    ClientHello: version (2) | random (32) | session_id <0..32> (1-byte length)
                 | cipher_suites (2-byte length) | compression_methods (1-byte length)
                 | extensions (2-byte length): type (2) | length (2) | data
    server_name (type 0): list length (2) | name_type=0 (1) | host_name (2-byte length)
"""

from __future__ import annotations

import enum
from typing import Final

MAX_CLIENT_HELLO_BYTES: Final = 16 * 1024  # raw bytes we buffer before giving up
MAX_RECORD_BYTES: Final = 2**14 + 256  # RFC 8446 section 5.1 (plus slack for old peers)
_HANDSHAKE: Final = 22
_CLIENT_HELLO: Final = 1
_EXT_SERVER_NAME: Final = 0
_HOST_NAME: Final = 0


class ClientHelloError(ValueError):
    """The bytes are not a usable TLS ClientHello."""


class _NeedData(enum.Enum):
    NEED_DATA = "need more data"


NEED_DATA: Final = _NeedData.NEED_DATA


class ClientHelloReader:
    """Incremental `parse_sni`: feed each read as it comes; linear in the bytes received.

    Raw bytes are kept only until their record is complete; each complete record's fragment
    is appended to the handshake buffer once, so no byte is parsed twice (with 1-byte reads or
    1-byte records alike). At most `max_bytes` raw bytes are accepted in total.
    """

    __slots__ = ("_handshake", "_max", "_pending", "_received")

    def __init__(self, max_bytes: int = MAX_CLIENT_HELLO_BYTES) -> None:
        self._max = max_bytes
        self._pending = bytearray()  # raw bytes of the current, incomplete record
        self._handshake = bytearray()  # reassembled handshake bytes
        self._received = 0

    def feed(self, data: bytes | bytearray | memoryview) -> str | _NeedData | None:
        """Add bytes; the server name, None (no SNI) or NEED_DATA. Raises ClientHelloError."""
        self._received += len(data)
        self._pending += data
        pending = self._pending
        pos = 0
        while len(pending) - pos >= 5:
            if pending[pos] != _HANDSHAKE:
                raise ClientHelloError("not a TLS handshake record")
            if pending[pos + 1] != 3:
                raise ClientHelloError("unknown TLS record version")
            length = int.from_bytes(pending[pos + 3 : pos + 5], "big")
            if length == 0 or length > MAX_RECORD_BYTES:
                raise ClientHelloError("bad TLS record length")
            end = pos + 5 + length
            if end > len(pending):
                break
            self._handshake += pending[pos + 5 : end]
            pos = end
            result = self._check_handshake()
            if result is not NEED_DATA:
                return result
        del pending[:pos]
        if len(pending) >= 1 and pending[0] != _HANDSHAKE:
            raise ClientHelloError("not a TLS handshake record")
        return _need_more(self._received, self._max)

    def _check_handshake(self) -> str | _NeedData | None:
        handshake = self._handshake
        if len(handshake) < 4:
            return NEED_DATA
        if handshake[0] != _CLIENT_HELLO:
            raise ClientHelloError("the first handshake message is not a ClientHello")
        body_len = int.from_bytes(handshake[1:4], "big")
        if body_len > self._max:
            raise ClientHelloError("ClientHello is too large")
        if len(handshake) >= 4 + body_len:
            return _parse_client_hello(memoryview(handshake)[4 : 4 + body_len])
        return NEED_DATA


def parse_sni(
    data: bytes | bytearray | memoryview, max_bytes: int = MAX_CLIENT_HELLO_BYTES
) -> str | _NeedData | None:
    """See the module docstring (one-shot; `ClientHelloReader` is the incremental form)."""
    return ClientHelloReader(max_bytes).feed(data)


def _need_more(have: int, max_bytes: int) -> _NeedData:
    if have >= max_bytes:
        raise ClientHelloError("ClientHello is too large")
    return NEED_DATA


class _Reader:
    """Bounds-checked reads over the ClientHello body."""

    __slots__ = ("buf", "pos")

    def __init__(self, buf: memoryview) -> None:
        self.buf = buf
        self.pos = 0

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.buf):
            raise ClientHelloError("truncated ClientHello")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def number(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def vector(self, length_bytes: int) -> memoryview:
        return self.take(self.number(length_bytes))


def _parse_client_hello(body: memoryview) -> str | None:
    r = _Reader(body)
    r.take(2 + 32)  # legacy_version, random
    r.vector(1)  # legacy_session_id
    r.vector(2)  # cipher_suites
    r.vector(1)  # legacy_compression_methods
    if r.pos == len(body):
        return None  # no extensions at all (possible before TLS 1.2)
    extensions = _Reader(r.vector(2))
    while extensions.pos < len(extensions.buf):
        ext_type = extensions.number(2)
        ext = extensions.vector(2)
        if ext_type == _EXT_SERVER_NAME:
            return _parse_server_name(_Reader(ext))
    return None


def _parse_server_name(r: _Reader) -> str | None:
    names = _Reader(r.vector(2))
    while names.pos < len(names.buf):
        name_type = names.number(1)
        name = names.vector(2)
        if name_type == _HOST_NAME:
            raw = bytes(name)
            if not raw or len(raw) > 253 or not raw.isascii():
                raise ClientHelloError("bad SNI host name")
            text = raw.decode("ascii")
            if not all(c.isalnum() or c in "-._" for c in text):
                raise ClientHelloError("bad SNI host name")
            return text.lower()
    return None
