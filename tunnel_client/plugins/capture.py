"""The inspector's view of the HTTP forwarding plugins (https2http and friends).

The inspector parses raw HTTP/1.1 bytes (`HTTPCapture`). A plugin that terminates TLS has
no such bytes on the stream (they are encrypted), so it replays each exchange as the bytes
the local service sees: the rewritten request head, the body (re-framed as chunked when it
has no Content-Length), then the response. It never delays or changes the forwarded data;
like every capture it stops by itself on anything it cannot parse.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..inspect.capture import HTTPCapture
from ..inspect.store import CaptureStore


def _head(first_line: str, headers: Iterable[tuple[str, str]]) -> bytes:
    lines = [first_line, *(f"{name}: {value}" for name, value in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")


class ExchangeCapture:
    """One request/response pair of a plugin, fed to the inspector as HTTP/1.1 bytes."""

    __slots__ = ("_capture", "_req_chunked", "_resp_chunked")

    def __init__(self, store: CaptureStore, proxy: str) -> None:
        self._capture = HTTPCapture(store, proxy)
        self._req_chunked = False
        self._resp_chunked = False

    def request(self, method: str, target: str, headers: list[tuple[str, str]], body: bool) -> None:
        kept = [(n, v) for n, v in headers if n.lower() != "transfer-encoding"]
        self._req_chunked = body and not any(n.lower() == "content-length" for n, _ in kept)
        if self._req_chunked:
            kept.append(("Transfer-Encoding", "chunked"))
        self._capture.feed_request(_head(f"{method} {target} HTTP/1.1", kept))

    def request_body(self, data: bytes) -> None:
        self._capture.feed_request(self._chunk(data) if self._req_chunked else data)

    def request_end(self) -> None:
        if self._req_chunked:
            self._capture.feed_request(b"0\r\n\r\n")

    def response(self, status: int, reason: str, headers: list[tuple[str, str]]) -> None:
        kept = [(n, v) for n, v in headers if n.lower() != "transfer-encoding"]
        names = {n.lower() for n, _ in kept}
        self._resp_chunked = "content-length" not in names and status not in (204, 304)
        if self._resp_chunked:
            kept.append(("Transfer-Encoding", "chunked"))
        self._capture.feed_response(_head(f"HTTP/1.1 {status} {reason}", kept))

    def response_body(self, data: bytes) -> None:
        self._capture.feed_response(self._chunk(data) if self._resp_chunked else data)

    def response_end(self) -> None:
        if self._resp_chunked:
            self._capture.feed_response(b"0\r\n\r\n")
        self._capture.close()

    def abandon(self) -> None:
        self._capture.close()

    @staticmethod
    def _chunk(data: bytes) -> bytes:
        return b"%x\r\n%b\r\n" % (len(data), data) if data else b""
