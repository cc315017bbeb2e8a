"""A byte stream to the tunnel client whose traffic both ways waits for a token bucket.

The HTTP vhost (h1 and h2), its WebSocket splice and the HTTPS (SNI) splice use the async
`ByteStream` interface of a stream rather than a splice protocol, so a user's bandwidth quota
applies to them here: every chunk read from or written to the stream is charged to the
user's bucket, and the call returns only once the bucket has paid for it. A waiting read
holds at most one chunk (READ_CHUNK_BYTES of the caller); the rest waits in the stream's
window, so backpressure reaches the client as it does for a slow visitor.
"""

from __future__ import annotations

import asyncio

from tunnel_common.throttle import Pacer

from .vhost.upstream import ByteStream


class PacedStream:
    """`inner` under `pacer`: the ByteStream interface, paced."""

    def __init__(self, inner: ByteStream, pacer: Pacer) -> None:
        self._inner = inner
        self._pacer = pacer

    async def _pay(self, nbytes: int) -> None:
        delay = self._pacer.charge(nbytes)
        if delay > 0:
            await asyncio.sleep(delay)

    async def read(self, max_bytes: int) -> bytes:
        data = await self._inner.read(max_bytes)
        if data:
            await self._pay(len(data))
        return data

    async def write(self, data: bytes) -> None:
        # Wait until a debt left by earlier traffic (either way) is repaid, then send.
        delay = self._pacer.delay(self._pacer.clock())
        if delay > 0:
            await asyncio.sleep(delay)
        await self._inner.write(data)
        self._pacer.charge(len(data))

    def write_eof(self) -> None:
        self._inner.write_eof()

    def abort(self) -> None:
        self._inner.abort()

    def close(self) -> None:
        self._inner.close()

    def at_eof(self) -> bool:
        return self._inner.at_eof()

    async def wait_closed(self) -> None:
        await self._inner.wait_closed()
