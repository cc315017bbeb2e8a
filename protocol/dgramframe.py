"""Datagrams on a stream (sudp): each one is a u16 big-endian length, then its bytes.

Pure, no I/O. A secret UDP proxy carries one visitor peer's datagrams on one stream, so the
server joins it like any stream and never looks inside; both clients frame and unframe.
The decoder holds at most one partial datagram (MAX_DATAGRAM_BYTES + 2 bytes).
"""

from __future__ import annotations

import struct
from typing import Final

from .errors import RemoteProtocolError

MAX_DATAGRAM_BYTES: Final = 65_535  # what a u16 length can say (and UDP's own ceiling)
_LEN: Final = struct.Struct(">H")
DATAGRAM_LENGTH_BYTES: Final = _LEN.size  # the u16 length before each datagram


def frame_datagram(data: bytes) -> bytes:
    """One datagram as stream bytes; larger than MAX_DATAGRAM_BYTES is a caller error."""
    if len(data) > MAX_DATAGRAM_BYTES:
        raise ValueError(f"a datagram of {len(data)} bytes is over {MAX_DATAGRAM_BYTES}")
    return _LEN.pack(len(data)) + data


class DatagramDecoder:
    """Feed stream bytes, get whole datagrams back."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        buffer = self._buffer
        buffer += data
        out: list[bytes] = []
        offset = 0
        while len(buffer) - offset >= _LEN.size:
            (size,) = _LEN.unpack_from(buffer, offset)
            end = offset + _LEN.size + size
            if end > len(buffer):
                break
            out.append(bytes(buffer[offset + _LEN.size : end]))
            offset = end
        del buffer[:offset]
        return out

    def finish(self) -> None:
        """The stream ended: a partial datagram left over is the peer's error."""
        if self._buffer:
            raise RemoteProtocolError(f"the stream ended inside a datagram ({len(self._buffer)} B)")


# -- several datagrams of one flow in one DATAGRAM frame (mux.py; docs/protocol.md 6.3) -----------
# Packed: the frame's payload is datagrams in this same u16-length form, back to back. A
# receiver decodes one frame (and one TLS record's share) per pack instead of per datagram.
PACKED_MAX_DATAGRAMS: Final = 32  # per frame; a pack with more is the peer's protocol error


def pack_datagrams(datagrams: list[bytes]) -> bytes:
    """Datagrams as one packed payload; more than PACKED_MAX_DATAGRAMS is a caller error."""
    if not 0 < len(datagrams) <= PACKED_MAX_DATAGRAMS:
        count = len(datagrams)
        raise ValueError(f"a pack holds 1 to {PACKED_MAX_DATAGRAMS} datagrams, not {count}")
    # Lengths and datagrams joined once: no per-datagram call or intermediate copy (half the
    # cost of joining frame_datagram's results: 0.5 against 1.0-1.2 us per 1400-byte datagram).
    parts: list[bytes] = []
    append, pack = parts.append, _LEN.pack
    for data in datagrams:
        if len(data) > MAX_DATAGRAM_BYTES:
            raise ValueError(f"a datagram of {len(data)} bytes is over {MAX_DATAGRAM_BYTES}")
        append(pack(len(data)))
        append(data)
    return b"".join(parts)


def unpack_datagrams(payload: bytes) -> list[bytes]:
    """A packed payload's datagrams; anything malformed (a cut datagram, an empty pack, more
    than PACKED_MAX_DATAGRAMS) is the peer's protocol error."""
    out: list[bytes] = []
    offset, end = 0, len(payload)
    unpack_from = _LEN.unpack_from
    while offset < end:
        if len(out) >= PACKED_MAX_DATAGRAMS:
            raise RemoteProtocolError(f"a datagram pack holds over {PACKED_MAX_DATAGRAMS}")
        if end - offset < _LEN.size:
            raise RemoteProtocolError("a datagram pack ends inside a length")
        (size,) = unpack_from(payload, offset)
        offset += _LEN.size
        if offset + size > end:
            raise RemoteProtocolError("a datagram pack ends inside a datagram")
        out.append(payload[offset : offset + size])
        offset += size
    if not out:
        raise RemoteProtocolError("an empty datagram pack")
    return out
