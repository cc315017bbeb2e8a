"""The records the inspector keeps: one `CapturedExchange` per HTTP request/response pair."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

Headers = tuple[tuple[str, str], ...]


class CapturedBody(NamedTuple):
    """A message body, kept up to the store's byte limit. (A named tuple: two are made per
    captured exchange, and a tuple is the cheapest immutable record.)"""

    data: bytes = b""
    size: int = 0  # bytes seen on the wire after de-chunking, including any not kept
    truncated: bool = False

    @classmethod
    def limited(cls, data: bytes, size: int, limit: int) -> CapturedBody:
        """Keep at most `limit` bytes of `data`, remembering the full `size`."""
        return cls(data=data[:limit], size=size, truncated=size > limit)


@dataclass(slots=True)
class CapturedExchange:
    """One request and (once it arrives) its response.

    The capture that created it fills in the response fields later; readers treat a ``None``
    status as "no response yet" and read `error` for why one never came.
    """

    id: int
    proxy: str
    started_at: float  # epoch seconds when the first request byte arrived
    method: str
    path: str  # the raw request target
    http_version: str
    request_headers: Headers
    request_body: CapturedBody = field(default_factory=CapturedBody)
    status: int | None = None
    reason: str = ""
    response_http_version: str = ""
    response_headers: Headers = ()
    response_body: CapturedBody = field(default_factory=CapturedBody)
    duration_ms: float | None = None
    replay: bool = False
    replay_of: int | None = None
    error: str | None = None
    late: bool = False  # captured by tunneld while this client was offline, delivered later
    mocked: str | None = None  # answered by a mock/catch rule, not the local service


def header_value(headers: Iterable[tuple[str, str]], name: str) -> str | None:
    """Return the first value of header `name` (case-insensitive), or None."""
    wanted = name.lower()
    for key, value in headers:
        if key.lower() == wanted:
            return value
    return None
