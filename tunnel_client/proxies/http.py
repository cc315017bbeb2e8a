"""HTTP proxy (client side): a TCP splice to the local web app, plus the inspector's tap.

The server does the HTTP work (routing, header rules, auth); the client splices bytes. When the
inspector is on, each stream also feeds a copy of its bytes to an HTTPCapture, which parses them
with httptools into a bounded store. The capture never raises into the data path and stops by
itself on anything it cannot parse.
"""

from __future__ import annotations

from protocol.aio.connection import MuxSession
from protocol.aio.stream import MuxStream

from ..config import ProxyConfig
from ..inspect.capture import HTTPCapture
from ..inspect.store import CaptureStore
from .tcp import TCPProxy


class _CaptureTap:
    """Adapts a stream's tap to an HTTPCapture: from the server is the request."""

    __slots__ = ("_capture",)

    def __init__(self, capture: HTTPCapture) -> None:
        self._capture = capture

    def received(self, data: bytes) -> None:
        if self._capture.capturing:
            self._capture.feed_request(data)

    def sent(self, data: bytes | memoryview) -> None:
        if self._capture.capturing:
            self._capture.feed_response(bytes(data))

    def closed(self) -> None:
        self._capture.close()


class HTTPProxy(TCPProxy):
    def __init__(self, config: ProxyConfig, store: CaptureStore | None) -> None:
        super().__init__(config, store)
        self.store = store

    def handle_stream(self, session: MuxSession, stream: MuxStream) -> None:
        if self.store is not None:
            stream.tap = _CaptureTap(HTTPCapture(self.store, self.config.name))
        super().handle_stream(session, stream)
