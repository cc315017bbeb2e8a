"""The compression state of one compressed MuxStream (protocol/compression.py), kept apart so a
plain stream carries one empty slot for it.

Incoming DATA frames of a compressed stream wait here compressed (bounded by the stream's
receive window) until the consumer can take their bytes; only then is one frame inflated, so
the inflated bytes in memory are at most one frame's (`MAX_INFLATED_BYTES_PER_FRAME`) beyond
what a plain stream would hold.
"""

from __future__ import annotations

from collections import deque

from ..compression import Deflater, Inflater


class StreamCodec:
    __slots__ = (
        "close_pending",
        "deflater",
        "eof_pending",
        "frames",
        "frames_bytes",
        "inflater",
        "plain",
    )

    def __init__(self) -> None:
        self.deflater = Deflater()
        self.inflater = Inflater()
        self.frames: deque[bytes] = deque()  # received, still compressed
        self.frames_bytes = 0
        self.plain = b""  # inflated bytes `read` has not returned yet (async style)
        self.eof_pending = False  # spliced: the peer's FIN waits for the frames before it
        self.close_pending = False  # spliced: so does the clean close

    def queue(self, frame: bytes) -> None:
        self.frames.append(frame)
        self.frames_bytes += len(frame)

    def pop(self) -> bytes:
        frame = self.frames.popleft()
        self.frames_bytes -= len(frame)
        return frame

    def drop(self) -> int:
        """Forget the waiting frames; returns their size (to credit to the peer)."""
        n, self.frames_bytes = self.frames_bytes, 0
        self.frames.clear()
        self.plain = b""
        return n

    @property
    def buffered_bytes(self) -> int:
        return self.frames_bytes + len(self.plain)
