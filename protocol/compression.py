"""Per-stream compression (frp's `transport.useCompression`): raw deflate, sans-IO.

A proxy asks for compression in `new_proxy.compression`; the server then names the same
algorithm in the `stream_header` of every stream it opens for that proxy, so both ends of a
stream agree from its SYN on (docs/protocol.md section 3.6). Only DATA payloads are
compressed; flow control counts the compressed bytes, the ones that cross the tunnel.

The sender cuts its input into pieces of at most `MAX_PLAIN_BYTES_PER_PIECE`, deflates each
with a sync flush (so an interactive byte is never held back), and hands each piece's output
to the mux on its own, so one DATA frame never carries more than one piece: a conforming
frame inflates to at most that piece plus the few bytes a deflate code spans across frames.
The receiver inflates one DATA frame at a time and refuses, as a stream error, a frame that
inflates past `MAX_INFLATED_BYTES_PER_FRAME`: a peer cannot make it allocate more than that
per frame, whatever it sends (a zip bomb resets its stream, it does not grow memory).
"""

from __future__ import annotations

import zlib
from typing import Final

from .errors import RemoteProtocolError

KiB: Final = 1024

NO_COMPRESSION: Final = ""
DEFLATE: Final = "deflate"  # raw deflate (RFC 1951), zlib's wbits = -15
COMPRESSION_NAMES: Final = (NO_COMPRESSION, DEFLATE)  # the values of the wire fields

# zlib level 1: most of level 6's ratio on text at several times its speed (bench/compression.py).
DEFLATE_LEVEL: Final = 1
_RAW_DEFLATE_WBITS: Final = -15
# The sender compresses at most this many plain bytes into one flushed piece.
MAX_PLAIN_BYTES_PER_PIECE: Final = 64 * KiB
# The receiver refuses a DATA frame that inflates past this many bytes (a stream error). Four
# times a piece: a conforming sender stays far below it.
MAX_INFLATED_BYTES_PER_FRAME: Final = 4 * MAX_PLAIN_BYTES_PER_PIECE


class CompressionError(RemoteProtocolError):
    """The peer's compressed data is corrupt or inflates past the limit (resets the stream)."""


class Deflater:
    """One stream direction's compressor."""

    __slots__ = ("_z",)

    def __init__(self, level: int = DEFLATE_LEVEL) -> None:
        self._z = zlib.compressobj(level, zlib.DEFLATED, _RAW_DEFLATE_WBITS)

    def compress(self, data: bytes | memoryview) -> list[bytes]:
        """The pieces to send for `data`, each to be handed to the mux on its own."""
        view = memoryview(data)
        pieces = []
        for start in range(0, len(view), MAX_PLAIN_BYTES_PER_PIECE):
            chunk = view[start : start + MAX_PLAIN_BYTES_PER_PIECE]
            pieces.append(self._z.compress(chunk) + self._z.flush(zlib.Z_SYNC_FLUSH))
        return pieces


class Inflater:
    """One stream direction's decompressor: one DATA frame in, its plain bytes out."""

    __slots__ = ("_z",)

    def __init__(self) -> None:
        self._z = zlib.decompressobj(_RAW_DEFLATE_WBITS)

    def inflate(self, frame: bytes | memoryview) -> bytes:
        """The plain bytes of one DATA frame; CompressionError if corrupt or too large."""
        try:
            plain = self._z.decompress(frame, MAX_INFLATED_BYTES_PER_FRAME)
        except zlib.error as exc:
            raise CompressionError(f"corrupt compressed data: {exc}") from None
        if self._z.unconsumed_tail:
            raise CompressionError(
                "a compressed DATA frame inflates past "
                f"{MAX_INFLATED_BYTES_PER_FRAME // KiB} KiB (MAX_INFLATED_BYTES_PER_FRAME)"
            )
        if self._z.eof:
            # A final deflate block: a conforming sender never ends the stream that way, and
            # zlib would ignore everything after it.
            raise CompressionError("the compressed stream ended with a final block")
        return plain
