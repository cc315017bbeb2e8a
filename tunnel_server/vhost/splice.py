"""Splice a visitor connection and an upstream stream: raw bytes both ways until both end.

Used after a 101 (WebSocket) on the HTTP vhost and for every HTTPS (SNI) connection.

- visitor -> app: queued chunks are written with `ByteStream.write`, which waits on the
  stream's window; meanwhile the visitor's queue fills and its transport pauses reading.
- app -> visitor: each read is written to the transport; while the transport is over its
  high-water mark the loop waits in `drain()` and does not read from the app.
- EOF in one direction becomes a half-close on the other (`write_eof`); a reset or loss on one
  side aborts the other, which ends the remaining direction.

There is no inactivity deadline: idle upgraded connections are legitimate (WebSocket), and
the listener's connection cap bounds how many can exist.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from .inbound import EOF, LOST, InboundProtocol
from .upstream import ByteStream

logger = logging.getLogger(__name__)

READ_CHUNK_BYTES: Final = 256 * 1024  # per read from the app (plain links: 64-256 KiB)
WRITE_COALESCE_BYTES: Final = 256 * 1024  # queued visitor chunks are joined up to this


class SpliceCounters:
    """Bytes moved by a splice, readable while it runs."""

    __slots__ = ("to_app", "to_visitor")

    def __init__(self) -> None:
        self.to_app = 0
        self.to_visitor = 0


async def splice(
    conn: InboundProtocol, stream: ByteStream, counters: SpliceCounters | None = None
) -> SpliceCounters:
    """Copy both ways until both directions have ended. Never raises network errors."""
    counters = counters if counters is not None else SpliceCounters()
    conn.on_lost = stream.abort
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(_app_to_visitor(conn, stream, counters))
            await _visitor_to_app(conn, stream, counters)
    finally:
        conn.on_lost = None
    return counters


async def _visitor_to_app(
    conn: InboundProtocol, stream: ByteStream, counters: SpliceCounters
) -> None:
    while True:
        item = conn.pop()
        if item is None:
            await conn.wait(None)
            continue
        if isinstance(item, bytes):
            parts = [item]
            size = len(item)
            while size < WRITE_COALESCE_BYTES and isinstance(conn.peek(), bytes):
                more = conn.pop()
                assert isinstance(more, bytes)
                parts.append(more)
                size += len(more)
            try:
                await stream.write(parts[0] if len(parts) == 1 else b"".join(parts))
            except (ConnectionError, OSError) as exc:
                # The app side reset or closed: the visitor's connection goes too.
                logger.debug("splice: app side failed on write: %r", exc)
                conn.abort()
                return
            counters.to_app += size
        elif item is EOF:
            stream.write_eof()
            return
        else:
            # LOST (the visitor is gone) or anything unexpected in raw mode.
            if item is not LOST:
                logger.debug("splice: unexpected item %r", item)
            stream.abort()
            return


async def _app_to_visitor(
    conn: InboundProtocol, stream: ByteStream, counters: SpliceCounters
) -> None:
    while True:
        try:
            data = await stream.read(READ_CHUNK_BYTES)
        except (ConnectionError, OSError) as exc:
            # The app side reset: reset the visitor too, so it sees the failure.
            logger.debug("splice: app side reset: %r", exc)
            conn.abort()
            return
        if not data:
            conn.write_eof()
            return
        if conn.lost:
            stream.abort()
            return
        conn.write(data)
        counters.to_visitor += len(data)
        if conn.writing_paused:
            await conn.drain()
