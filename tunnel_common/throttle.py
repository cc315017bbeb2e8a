"""Apply a bandwidth limit to spliced connections through backpressure.

`Throttle` holds one proxy's `TokenBucket` (shared by all its connections and both
directions, as frp's limiter is) and its `RateMeter`; the server also keeps one per user with a
bandwidth quota, shared by all that user's proxies and sessions. `JointThrottle` applies two
(a proxy's and its user's) at once: a byte is charged to both, and waits for the slower.
`ThrottledSplice` is the splice protocol of one local socket under a throttle (either kind):

* Socket -> tunnel: each read is charged to the bucket; while the bucket is in debt the
  socket's reading is paused (`pause_reading`), and resumed when the debt is repaid, unless
  the stream wants it paused too (its window is full).
* Tunnel -> socket: the stream writes into a `_LimitedTransport`. A write the bucket cannot
  pay for waits in that transport's queue, and the stream is told its sink is paused, so it
  stops crediting the peer: the peer can have sent at most one stream window, which bounds
  the queue (the same bound a stream's own receive queue has). The queue drains at the
  bucket's rate, then the stream's credit resumes.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from protocol.aio.splice import SpliceProtocol
from protocol.aio.stream import MuxStream

from .bandwidth import RateMeter, TokenBucket


class Pacer(Protocol):
    """What a paced connection asks of its limit (a Throttle or a JointThrottle)."""

    clock: Callable[[], float]

    def charge(self, nbytes: int) -> float:
        """Count `nbytes` that just passed; the pause owed before more may pass."""

    def ready(self, now: float) -> bool:
        """True if bytes may pass now without waiting."""

    def delay(self, now: float) -> float:
        """Seconds until bytes may pass again (0 = now)."""

    def protocol(
        self, stream: MuxStream | None = None, *, preamble: bytes = b"", **kwargs: Any
    ) -> ThrottledSplice: ...


class Throttle:
    """One limit: `rate` bytes per second, in total, both directions."""

    def __init__(self, rate: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.bucket = TokenBucket(rate, clock())
        self.meter = RateMeter(clock())
        self.delayed_s = 0.0  # total time connections spent paused by this limit

    @property
    def rate(self) -> int:
        return self.bucket.rate

    def set_rate(self, rate: int) -> None:
        """Change the limit in place: connections already under it follow at once."""
        if rate != self.bucket.rate:
            self.bucket.set_rate(rate, self.clock())

    def ready(self, now: float) -> bool:
        return self.bucket.ready(now)

    def delay(self, now: float) -> float:
        return self.bucket.delay(now)

    def charge(self, nbytes: int) -> float:
        """Count `nbytes` that just passed; the pause owed before more may pass."""
        now = self.clock()
        self.meter.record(nbytes, now)
        delay = self.bucket.take(nbytes, now)
        self.delayed_s += delay
        return delay

    def current_rate(self) -> float:
        return self.meter.rate(self.clock())

    def protocol(
        self, stream: MuxStream | None = None, *, preamble: bytes = b"", **kwargs: Any
    ) -> ThrottledSplice:
        return ThrottledSplice(self, stream, preamble=preamble, **kwargs)


class JointThrottle:
    """Two limits at once (a proxy's own and its user's): bytes pass when both allow."""

    def __init__(self, first: Throttle, second: Throttle) -> None:
        self.first = first
        self.second = second
        self.clock = first.clock

    def charge(self, nbytes: int) -> float:
        return max(self.first.charge(nbytes), self.second.charge(nbytes))

    def ready(self, now: float) -> bool:
        return self.first.ready(now) and self.second.ready(now)

    def delay(self, now: float) -> float:
        return max(self.first.delay(now), self.second.delay(now))

    def protocol(
        self, stream: MuxStream | None = None, *, preamble: bytes = b"", **kwargs: Any
    ) -> ThrottledSplice:
        return ThrottledSplice(self, stream, preamble=preamble, **kwargs)


def joined(first: Throttle | None, second: Throttle | None) -> Pacer | None:
    """The limit that applies both of these (either may be None)."""
    if first is None:
        return second
    if second is None:
        return first
    return JointThrottle(first, second)


class _LimitedTransport:
    """What the stream sees as its local transport: writes are paced, the rest delegated."""

    def __init__(self, inner: asyncio.Transport, owner: ThrottledSplice) -> None:
        self._inner = inner
        self._owner = owner
        self._queue: deque[bytes] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._eof_pending = False
        self._close_pending = False
        self.stream_wants_pause = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    # -- writing (tunnel -> socket) ---------------------------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._queue or not self._owner.throttle.ready(self._owner.throttle.clock()):
            self._queue.append(bytes(data))
            self._owner.hold_sink()
            self._arm()
            return
        self._send(bytes(data))

    def _send(self, data: bytes) -> None:
        self._inner.write(data)
        self._owner.throttle.charge(len(data))

    def _arm(self) -> None:
        if self._timer is None:
            delay = self._owner.throttle.delay(self._owner.throttle.clock())
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(delay, self._drain)

    def _drain(self) -> None:
        self._timer = None
        throttle = self._owner.throttle
        while self._queue and throttle.ready(throttle.clock()):
            if self._inner.is_closing():
                self._queue.clear()
                break
            self._send(self._queue.popleft())
        if self._queue:
            self._arm()
            return
        if self._eof_pending:
            self._eof_pending = False
            self._inner.write_eof()
        if self._close_pending:
            self._inner.close()
            return
        self._owner.release_sink()

    def write_eof(self) -> None:
        if self._queue:
            self._eof_pending = True
        else:
            self._inner.write_eof()

    def close(self) -> None:
        # A clean end after data still queued: close once it has been written.
        if self._queue:
            self._close_pending = True
        else:
            self._inner.close()

    def abort(self) -> None:
        self._queue.clear()
        self.cancel()
        self._inner.abort()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- reading (socket -> tunnel): the stream's pauses and ours combine -------------------
    def pause_reading(self) -> None:
        self.stream_wants_pause = True
        if self._inner.is_reading():
            self._inner.pause_reading()

    def resume_reading(self) -> None:
        self.stream_wants_pause = False
        if not self._owner.reading_held and not self._inner.is_reading():
            self._inner.resume_reading()

    def is_reading(self) -> bool:
        # As the stream sees it: reading is on unless the stream itself paused it (a pause the
        # limit holds is ours to lift). uvloop may restart a pause made in connection_made, so
        # the real transport's state counts too.
        if self._inner.is_reading():
            return True
        return self._owner.reading_held and not self.stream_wants_pause


class ThrottledSplice(SpliceProtocol):
    """A SpliceProtocol whose traffic both ways is paced by `throttle`."""

    def __init__(
        self,
        throttle: Pacer,
        stream: MuxStream | None = None,
        *,
        preamble: bytes = b"",
        **kwargs: Any,
    ):
        super().__init__(stream, **kwargs)
        self.throttle = throttle
        self.preamble = preamble  # written first (a PROXY protocol header), not charged
        self.limited: _LimitedTransport | None = None
        self.reading_held = False
        self._sink_held = False
        self._high_water = False
        self._read_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        inner: asyncio.Transport = transport  # type: ignore[assignment]
        if self.preamble:
            inner.write(self.preamble)
        self.limited = _LimitedTransport(inner, self)
        super().connection_made(self.limited)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        delay = self.throttle.charge(len(data))
        if delay > 0 and self.limited is not None and not self.reading_held:
            self.reading_held = True
            inner = self.limited._inner
            if inner.is_reading():
                inner.pause_reading()
            self._read_timer = asyncio.get_running_loop().call_later(delay, self._release_read)

    def _release_read(self) -> None:
        self._read_timer = None
        delay = self.throttle.delay(self.throttle.clock())
        if delay > 0:  # the other direction spent the refill meanwhile
            self._read_timer = asyncio.get_running_loop().call_later(delay, self._release_read)
            return
        self.reading_held = False
        limited = self.limited
        if limited is not None and not limited.stream_wants_pause:
            inner = limited._inner
            if not inner.is_closing() and not inner.is_reading():
                inner.resume_reading()

    # -- the sink: paused by high water (the socket) or by the limit (our queue) -------------
    def hold_sink(self) -> None:
        if not self._sink_held:
            self._sink_held = True
            if not self._high_water and self.stream is not None:
                self.stream.sink_paused()

    def release_sink(self) -> None:
        if self._sink_held:
            self._sink_held = False
            if not self._high_water and self.stream is not None:
                self.stream.sink_resumed()

    def pause_writing(self) -> None:
        self._high_water = True
        if not self._sink_held:
            super().pause_writing()

    def resume_writing(self) -> None:
        self._high_water = False
        if not self._sink_held:
            super().resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None
        if self.limited is not None:
            self.limited.cancel()
        super().connection_lost(exc)
