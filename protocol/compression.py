"""Per-stream compression (frp's `transport.useCompression`): Zstandard, sans-IO.

A proxy asks for compression in `new_proxy.compression`; the server then names the same
algorithm in the `stream_header` of every stream it opens for that proxy, so both ends of a
stream agree from its SYN on (docs/protocol.md section 3.6). Only DATA payloads are
compressed; flow control counts the compressed bytes, the ones that cross the tunnel.

Zstandard (the `zstandard` package) and not the stdlib's zlib: at level 1 it compresses
incompressible bytes (media, archives, TLS) about 30 times faster than zlib's fastest level,
and text about twice as fast with a better ratio (BENCHMARKS.md), so turning compression on
never costs a tunnel most of its speed.

The sender cuts its input into pieces of at most `MAX_PLAIN_BYTES_PER_PIECE`, compresses each
and flushes the block (so an interactive byte is never held back), and hands each piece's
output to the mux on its own, so one DATA frame never carries more than one piece. The
receiver inflates one DATA frame at a time and refuses, as a stream error, a frame that
inflates past `MAX_INFLATED_BYTES_PER_FRAME`, a window past `MAX_WINDOW_BYTES`, or corrupt
data: a peer cannot make it allocate more than that, whatever it sends (a zip bomb resets
its stream, it does not grow memory). The contexts are made on first use: a stream costs
about 150 KiB once it carries data both ways (docs/protocol.md section 3.6).
"""

from __future__ import annotations

from typing import IO, TYPE_CHECKING, Final, cast

from .errors import RemoteProtocolError

if TYPE_CHECKING:
    import zstandard  # loaded by the first compressed stream: most tunnels never compress

KiB: Final = 1024

NO_COMPRESSION: Final = ""
ZSTD: Final = "zstd"  # one Zstandard frame per direction, blocks flushed per piece
COMPRESSION_NAMES: Final = (NO_COMPRESSION, ZSTD)  # the values of the wire fields

ZSTD_LEVEL: Final = 1  # the fastest standard level; most of level 3's ratio on text
# The match window (and the decoder's buffer): 128 KiB. A larger one compresses text a
# little better but costs each compressed stream's two contexts several times the memory.
WINDOW_LOG: Final = 17
MAX_WINDOW_BYTES: Final = 1 << WINDOW_LOG  # a frame that asks the receiver for more is refused
# The sender compresses at most this many plain bytes into one flushed piece.
MAX_PLAIN_BYTES_PER_PIECE: Final = 64 * KiB
# The receiver refuses a DATA frame that inflates past this many bytes (a stream error). Four
# times a piece: a conforming sender stays far below it.
MAX_INFLATED_BYTES_PER_FRAME: Final = 4 * MAX_PLAIN_BYTES_PER_PIECE
# The decoder's output buffer: one byte more than a frame may inflate to. The zstandard writer
# stops calling the decoder once the frame's bytes are consumed, so output that did not fit
# the buffer would wait for the next frame; with this size a conforming frame never fills it,
# and a frame that does fill it is past the limit.
_INFLATE_BUFFER_BYTES: Final = MAX_INFLATED_BYTES_PER_FRAME + 1


class CompressionError(RemoteProtocolError):
    """The peer's compressed data is corrupt or inflates past a limit (resets the stream)."""


class Deflater:
    """One stream direction's compressor."""

    __slots__ = ("_z",)

    def __init__(self) -> None:
        self._z: zstandard.ZstdCompressionObj | None = None

    def compress(self, data: bytes | memoryview) -> list[bytes]:
        """The pieces to send for `data`, each to be handed to the mux on its own."""
        import zstandard  # a dict lookup once loaded

        if self._z is None:
            params = zstandard.ZstdCompressionParameters.from_level(
                ZSTD_LEVEL, window_log=WINDOW_LOG
            )
            self._z = zstandard.ZstdCompressor(compression_params=params).compressobj()
        view = memoryview(data)
        pieces = []
        for start in range(0, len(view), MAX_PLAIN_BYTES_PER_PIECE):
            chunk = view[start : start + MAX_PLAIN_BYTES_PER_PIECE]
            piece = self._z.compress(chunk) + self._z.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
            pieces.append(piece)
        return pieces


class _Output:
    """Where the decoder writes one frame's plain bytes; refuses to hold more than the cap."""

    __slots__ = ("nbytes", "parts")

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.nbytes = 0

    def write(self, data: bytes) -> int:
        self.nbytes += len(data)
        if self.nbytes > MAX_INFLATED_BYTES_PER_FRAME:
            raise CompressionError(
                "a compressed DATA frame inflates past "
                f"{MAX_INFLATED_BYTES_PER_FRAME // KiB} KiB (MAX_INFLATED_BYTES_PER_FRAME)"
            )
        self.parts.append(bytes(data))
        return len(data)


class Inflater:
    """One stream direction's decompressor: one DATA frame in, its plain bytes out."""

    __slots__ = ("_out", "_z")

    def __init__(self) -> None:
        self._out = _Output()
        self._z: zstandard.ZstdDecompressionWriter | None = None

    def inflate(self, frame: bytes | memoryview) -> bytes:
        """The plain bytes of one DATA frame; CompressionError if corrupt or too large."""
        import zstandard  # a dict lookup once loaded

        if self._z is None:
            decoder = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW_BYTES)
            # The writer needs only write(): _Output is that much of a binary file.
            sink = cast(IO[bytes], self._out)
            self._z = decoder.stream_writer(sink, write_size=_INFLATE_BUFFER_BYTES)
        out = self._out
        out.parts.clear()
        out.nbytes = 0
        try:
            self._z.write(frame)
        except zstandard.ZstdError as exc:
            raise CompressionError(f"corrupt compressed data: {exc}") from None
        plain = b"".join(out.parts)
        out.parts.clear()
        return plain
