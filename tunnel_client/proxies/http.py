"""HTTP proxy (client side): a TCP splice to the local web app, plus the inspector's tap.

The server does the HTTP work (routing, header rules, auth); the client splices bytes. When the
inspector is on, each stream also feeds a copy of its bytes to an HTTPCapture, which parses them
with httptools into a bounded store. The capture never raises into the data path and stops by
itself on anything it cannot parse.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Final

from protocol.aio.connection import MuxSession
from protocol.aio.stream import MuxStream

from ..config import ProxyConfig
from ..inspect.mock import serve_with_rules
from ..inspect.store import CaptureStore
from .base import LOCAL_DIAL_TIMEOUT_S
from .tcp import TCPProxy

if TYPE_CHECKING:
    from ..inspect.capture import HTTPCapture

# Captured bytes waiting to be parsed, per connection (normally one loop iteration's worth).
MAX_PENDING_CAPTURE_BYTES: Final = 4 * 1024 * 1024
# Spliced streams remembered per proxy, to end the idle ones when mock rules change.
MAX_TRACKED_STREAMS: Final = 4096


class _CaptureFeeder:
    """Runs the parsing queued by all of a proxy's taps in one callback per loop iteration
    (instead of one per connection and direction): at most one entry per tap waits."""

    __slots__ = ("_ready", "_scheduled")

    def __init__(self) -> None:
        self._ready: list[_CaptureTap] = []
        self._scheduled = False

    def wake(self, tap: _CaptureTap) -> None:
        self._ready.append(tap)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._run)

    def _run(self) -> None:
        self._scheduled = False
        ready, self._ready = self._ready, []
        for tap in ready:
            tap.process()


class _CaptureTap:
    """Adapts a stream's tap to an HTTPCapture; bytes from the server are the request.

    Parsing is deferred to the end of the event-loop iteration (the proxy's `_CaptureFeeder`),
    after the bytes themselves were forwarded, so capture never delays the proxied request. At
    most MAX_PENDING_CAPTURE_BYTES wait; past that this connection's capture stops.
    """

    __slots__ = ("_capture", "_feeder", "_pending", "_pending_bytes", "_scheduled", "_stream")

    def __init__(self, capture: HTTPCapture, stream: MuxStream, feeder: _CaptureFeeder) -> None:
        self._capture = capture
        self._stream = stream
        self._feeder = feeder
        self._pending: list[tuple[bool, bytes]] = []
        self._pending_bytes = 0
        self._scheduled = False

    def _queue(self, is_request: bool, data: bytes) -> None:
        if not self._capture.capturing:
            return
        if self._pending_bytes + len(data) > MAX_PENDING_CAPTURE_BYTES:
            self._pending.clear()
            self._capture.close()
            return
        self._pending.append((is_request, data))
        self._pending_bytes += len(data)
        if not self._scheduled:
            self._scheduled = True
            self._feeder.wake(self)

    def process(self) -> None:
        """Parse what was queued (the feeder calls this)."""
        self._scheduled = False
        pending, self._pending = self._pending, []
        self._pending_bytes = 0
        capture = self._capture
        for is_request, data in pending:
            if is_request:
                capture.feed_request(data)
            else:
                capture.feed_response(data)

    def received(self, data: bytes) -> None:
        self._queue(True, data)

    def sent(self, data: bytes | memoryview) -> None:
        self._queue(False, bytes(data))

    @property
    def idle(self) -> bool:
        """Between exchanges: nothing waits to be parsed and no message is in progress."""
        return not self._scheduled and not self._pending and self._capture.idle

    def closed(self) -> None:
        # A reset carries why (a local dial that failed names the address and the error).
        reason = self._stream.reset_reason
        if self._scheduled:
            # Let the queued bytes be parsed first; then finish the capture.
            asyncio.get_running_loop().call_soon(self._capture.close, reason)
        else:
            self._capture.close(reason)


class HTTPProxy(TCPProxy):
    def __init__(self, config: ProxyConfig, store: CaptureStore | None) -> None:
        super().__init__(config, store)
        self.store = store
        # Streams spliced straight to the app (no rule looked at their requests), with taps.
        self._spliced: dict[MuxStream, _CaptureTap] = {}
        self._feeder = _CaptureFeeder()
        if store is not None:
            store.mocks.listeners.append(self._rules_changed)

    def _rules_changed(self, proxy: str) -> None:
        """Mock rules changed: end the idle spliced streams, which tunneld keeps alive for
        reuse, so that the next requests come on new streams that see the rules."""
        if proxy != self.config.name:
            return
        for stream, tap in list(self._spliced.items()):
            if tap.idle:
                stream.close()

    def handle_stream(self, session: MuxSession, stream: MuxStream) -> None:
        if self.store is None:
            super().handle_stream(session, stream)
            return
        from ..inspect.capture import HTTPCapture  # httptools: with the first stream

        capture = HTTPCapture(self.store, self.config.name)
        tap = _CaptureTap(capture, stream, self._feeder)
        stream.tap = tap
        if self.plugin is not None or not self.store.mocks.active(self.config.name):
            # Mock rules answer in place of localIP:localPort; a plugin has none to stand for.
            if len(self._spliced) < MAX_TRACKED_STREAMS:
                self._spliced[stream] = tap
                stream.add_close_callback(self._forget)
            super().handle_stream(session, stream)
            return
        # A mock or catch rule is on for this proxy: look at each request first.
        self.spawn(
            serve_with_rules(
                session,
                stream,
                self.store.mocks,
                self.config.name,
                (self.config.local_ip, self.config.local_port),
                LOCAL_DIAL_TIMEOUT_S,
                capture.label,
            )
        )

    def _forget(self, stream: MuxStream) -> None:
        self._spliced.pop(stream, None)

    def close(self) -> None:
        if self.store is not None and self._rules_changed in self.store.mocks.listeners:
            self.store.mocks.listeners.remove(self._rules_changed)
        super().close()
