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
