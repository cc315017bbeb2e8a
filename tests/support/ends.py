"""TCP peers that record *how* their connection ended: a clean EOF (FIN) or a reset (RST).

A broken transfer must never look complete, so fault tests watch both ends of a tunnelled
connection: the visitor and the local service. Each end is an `End` protocol that either
streams a pattern (a download's source, an upload's visitor) or counts what it receives; its
`ended` future resolves to "eof" when a FIN arrived and to "reset" when the connection broke
(ECONNRESET, EPIPE, ...). Every amount is bounded by `limit_bytes`.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final, Literal, cast

CHUNK_BYTES: Final = 64 * 1024
Outcome = Literal["eof", "reset"]


class End(asyncio.Protocol):
    """One end of a connection: sends up to `send_bytes`, counts what arrives."""

    def __init__(
        self, send_bytes: int = 0, progress_bytes: int = 1 << 20, *, eof_after: bool = False
    ) -> None:
        loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.send_left = send_bytes
        self.sent = 0
        self.received = 0
        self.progress_bytes = progress_bytes
        # Set once `progress_bytes` went through this end, either way.
        self.progressed = asyncio.Event()
        self.ended: asyncio.Future[Outcome] = loop.create_future()
        self.saw_eof = False
        self._paused = False
        self._eof_after = eof_after  # send FIN once `send_bytes` are written

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self._pump()

    def _pump(self) -> None:
        transport = self.transport
        while transport is not None and self.send_left > 0 and not self._paused:
            if transport.is_closing():
                return
            n = min(CHUNK_BYTES, self.send_left)
            transport.write(b"\x5a" * n)
            self.send_left -= n
            self.sent += n
            self._check_progress(self.sent)
        if transport is not None and self._eof_after and self.send_left == 0:
            self._eof_after = False
            transport.write_eof()  # after the buffered data: a real end of data

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._pump()

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        self._check_progress(self.received)

    def _check_progress(self, amount: int) -> None:
        if amount >= self.progress_bytes:
            self.progressed.set()

    def eof_received(self) -> bool:
        self.saw_eof = True
        if not self.ended.done():
            self.ended.set_result("eof")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ended.done():
            # No FIN came first: an error (RST) or our own abort.
            self.ended.set_result("reset" if exc is not None else "eof")

    def reset(self) -> None:
        """Abort with RST (SO_LINGER 0), as a visitor that gives up hard would."""
        assert self.transport is not None
        sock = self.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()


@asynccontextmanager
async def end_server(
    send_bytes: int = 0, *, eof_after: bool = False
) -> AsyncIterator[tuple[int, asyncio.Queue[End]]]:
    """A local service on 127.0.0.1: each accepted connection is an End put on the queue."""
    loop = asyncio.get_running_loop()
    accepted: asyncio.Queue[End] = asyncio.Queue()
    every: list[End] = []

    def factory() -> End:
        end = End(send_bytes, eof_after=eof_after)
        every.append(end)
        accepted.put_nowait(end)
        return end

    server = await loop.create_server(factory, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], accepted
    finally:
        server.close()
        for end in every:
            if end.transport is not None:
                end.transport.abort()
        await server.wait_closed()


async def connect_end(host: str, port: int, send_bytes: int = 0) -> End:
    """A visitor End connected to host:port."""
    loop = asyncio.get_running_loop()
    _, end = await loop.create_connection(lambda: End(send_bytes), host, port)
    return end
