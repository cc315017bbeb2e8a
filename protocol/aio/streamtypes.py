"""The types a MuxStream's users see besides the stream: its reset error, the traffic
counters it adds to, and the tap that sees a copy of its traffic."""

from __future__ import annotations

from typing import Protocol

from ..errors import ErrorCode


class TrafficCounters(Protocol):
    bytes_in: int
    bytes_out: int


class StreamTap(Protocol):
    """Sees a copy of a stream's traffic (the HTTP inspector). Must not raise."""

    def received(self, data: bytes) -> None:
        """Bytes that came from the peer."""

    def sent(self, data: bytes | memoryview) -> None:
        """Bytes handed to the stream for the peer."""

    def closed(self) -> None: ...


class StreamResetError(ConnectionResetError):
    """The stream was reset; `code` is an ErrorCode and `reason` the peer's words."""

    def __init__(self, code: int, reason: str) -> None:
        name = ErrorCode(code).name if code in ErrorCode._value2member_map_ else str(code)
        super().__init__(f"stream reset ({name}): {reason}")
        self.code = code
        self.reason = reason
