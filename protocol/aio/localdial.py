"""Dial the local service for a stream the peer opened, without a task per connection.

A client proxy dials its local service once per visitor connection. As a task (the
`create_connection` coroutine under `asyncio.timeout`), each dial cost a Task, a Timeout
and its timer, four `get_running_loop()` calls (on Python 3.11 each one is a `getpid` system
call) and one more loop iteration for the task's own end (docs/performance.md, "Opening a
stream, round 6"). Here the loop's `create_connection` coroutine is driven by hand, as a Task
would drive it: sent None to start, and sent None again from the done callback of each
future it waits on. The dial's deadline sits in one table per owner (deadlines.py), so a busy
proxy arms one timer per timeout rather than one per connection.

On success the socket's protocol attaches
the stream when it connects (which accepts it); on a refusal, any other OSError or the
deadline, the stream is reset with DIAL_FAILED and a one-line reason. `LocalDials.close()`
resets the stream of every dial in flight at once and cancels its connect (the coroutine's
next step closes its half-made transport).

Bound: one entry per dial in flight, and each dial belongs to an open stream, so the table is
bounded by the session's stream limit (`max_streams`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from ..errors import ErrorCode
from .deadlines import AcceptDeadlines
from .splice import dial_failure
from .stream import MuxStream

logger = logging.getLogger(__name__)

# Called once per dial when it ends: (stream, connected).
DialDone = Callable[[MuxStream, bool], None]


class LocalDials:
    """The local dials in flight for one owner (a client proxy), each ended by one sweep's
    deadline or by `close()`."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._dials: set[_Dial] = set()
        self._deadlines: AcceptDeadlines[_Dial] = AcceptDeadlines(loop, _Dial.expire)

    def __len__(self) -> int:
        return len(self._dials)

    def start(
        self,
        stream: MuxStream,
        host: str,
        port: int,
        timeout_s: float,
        protocol: Callable[[], asyncio.BaseProtocol],
        done: DialDone,
    ) -> None:
        """Dial host:port for `stream`; `protocol()` makes the socket's protocol (it attaches
        the stream in connection_made). `done(stream, connected)` runs when the dial ends."""
        coro = self.loop.create_connection(protocol, host, port)
        dial = _Dial(self, stream, host, port, timeout_s, coro, done)
        self._dials.add(dial)
        self._deadlines.add(dial, timeout_s)
        dial.step()

    def close(self) -> None:
        """End every dial in flight now: its half-made socket is closed, its stream reset."""
        self._deadlines.close()
        dials, self._dials = self._dials, set()
        for dial in dials:
            dial.cancel()

    def _ended(self, dial: _Dial) -> None:
        self._dials.discard(dial)
        self._deadlines.discard(dial)


class _Dial:
    """One `create_connection` coroutine, stepped from its futures' done callbacks."""

    __slots__ = (
        "_cancelled",
        "_coro",
        "_done",
        "_owner",
        "_timed_out",
        "_waiter",
        "host",
        "port",
        "stream",
        "timeout_s",
    )

    def __init__(
        self,
        owner: LocalDials,
        stream: MuxStream,
        host: str,
        port: int,
        timeout_s: float,
        coro: Coroutine[Any, Any, object],
        done: DialDone,
    ) -> None:
        self._owner = owner
        self.stream = stream
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self._coro: Coroutine[Any, Any, object] | None = coro
        self._done = done
        self._waiter: asyncio.Future[Any] | None = None
        self._timed_out = False
        self._cancelled = False  # close() ended it: the steps left only wind the connect down

    def step(self, _: object = None) -> None:
        """Run the coroutine to its next wait (or its end), as Task.__step does."""
        coro = self._coro
        if coro is None:
            return  # ended (closed) while this step was scheduled
        self._waiter = None
        try:
            waited = coro.send(None)
        except StopIteration:
            self._end(None)
            return
        except asyncio.CancelledError:
            # Only the deadline cancels the waiter (expire); the loop's connect raises
            # OSError for everything else.
            if not self._timed_out and not self._cancelled:
                logger.warning("stream %d: dial cancelled from outside", self.stream.stream_id)
            self._end(TimeoutError())
            return
        except (OSError, TimeoutError) as exc:
            self._end(exc)
            return
        except Exception as exc:  # a bug, not a network error: log it, reset the stream
            logger.exception(
                "stream %d: dialing %s:%d failed", self.stream.stream_id, self.host, self.port
            )
            self._end(exc)
            return
        if getattr(waited, "_asyncio_future_blocking", False):
            waited._asyncio_future_blocking = False
            self._waiter = waited
            waited.add_done_callback(self.step)
            if self._timed_out or self._cancelled:  # the end came between two waits
                waited.cancel()
        elif waited is None:  # a bare yield: run again on the next iteration
            self._owner.loop.call_soon(self.step)
        else:
            coro.close()
            self._coro = None
            self._end(RuntimeError(f"create_connection waited on {waited!r}, not a future"))

    def expire(self, timeout_s: float) -> None:
        """The deadline passed: cancel what the dial waits on (or, between two waits, the
        next thing it waits on); the step after that ends it."""
        self._timed_out = True
        if self._waiter is not None:
            self._waiter.cancel()

    def cancel(self) -> None:
        """End the dial now (its owner is closing): reset its stream at once and cancel what
        the connect waits on, as a Task's cancel would. The step that cancel schedules throws
        CancelledError into the coroutine, which closes its half-made socket; that step runs
        after the loop's own callback on the same future, which takes the socket out of the
        selector first (closing the coroutine here instead left asyncio's selector watching
        a closed descriptor, and the next socket given that number failed with ENOENT)."""
        if self._coro is None or self._cancelled:
            return
        self._cancelled = True
        self.stream.abort(ErrorCode.CANCELLED, "the proxy closed")
        if self._waiter is not None:
            self._waiter.cancel()  # no-op if done: its step is scheduled and sees _cancelled

    def _end(self, exc: BaseException | None) -> None:
        self._coro = None
        self._owner._ended(self)
        if self._cancelled:
            return  # close() reset the stream; a closed owner hears of no end
        stream = self.stream
        if exc is None:
            self._done(stream, not stream.is_closed)  # attach() accepted it on connect
            return
        reason = dial_failure(self.host, self.port, exc, self.timeout_s)
        logger.debug("stream %d: %s", stream.stream_id, reason)
        stream.abort(ErrorCode.DIAL_FAILED, reason)
        self._done(stream, False)
