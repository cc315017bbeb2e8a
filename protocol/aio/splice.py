"""Splice a MuxStream with a local TCP socket using asyncio.Protocol callbacks (the hot path).

Bytes from the socket go to `MuxStream.send`; when the stream's window or the connection is
full, the stream pauses this socket's reading and resumes it when credit returns. Bytes from
the stream are written to this socket; when its buffer passes high water the stream stops
crediting the peer. EOF passes through in both directions (half-close), and a reset on either
side resets the other at once (RST, never FIN: see sockopts.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

from . import sockopts
from .stream import MuxStream


class SpliceProtocol(asyncio.Protocol):
    """The local socket's side of a splice."""

    def __init__(
        self,
        stream: MuxStream | None = None,
        on_connect: Callable[[SpliceProtocol, asyncio.Transport], MuxStream | None] | None = None,
        on_close: Callable[[MuxStream], None] | None = None,
        *,
        abortive: bool = False,
    ) -> None:
        self.stream = stream
        self._on_connect = on_connect
        self._on_close = on_close
        # True: the socket is abortive already (accepted from a listener with SO_LINGER on,
        # which accepted sockets inherit), so connection_made skips the setsockopt.
        self._abortive = abortive
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport but implement it.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        # No set_nodelay: the loop already set TCP_NODELAY on every TCP transport it made
        # (uvloop and asyncio both do); one more setsockopt per connection is measurable.
        # Abortive until a real end of data: if this process dies, the peer sees RST.
        if not self._abortive:
            sockopts.set_abortive(transport)
        if self.stream is None and self._on_connect is not None:
            self.stream = self._on_connect(self, transport)
            if self.stream is None:
                sockopts.reset(transport)  # refused: not a clean, empty exchange
                return
        if self.stream is not None:
            self.stream.attach(transport)

    def data_received(self, data: bytes) -> None:
        stream = self.stream
        if stream is not None:
            stream.send(data)

    def eof_received(self) -> bool:
        if self.stream is not None:
            self.stream.send_eof()
        return True  # keep our write side open: half-close passes through

    def connection_lost(self, exc: Exception | None) -> None:
        stream = self.stream
        if stream is None:
            return
        stream.detach(exc)
        if self._on_close is not None:
            self._on_close(stream)

    def pause_writing(self) -> None:
        if self.stream is not None:
            self.stream.sink_paused()

    def resume_writing(self) -> None:
        if self.stream is not None:
            self.stream.sink_resumed()


def dial_failure(host: str, port: int, exc: BaseException, timeout_s: float) -> str:
    """One line naming the local address and the error: "connection refused to 127.0.0.1:8000"."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    # TimeoutError first: it is an OSError too (with no strerror), so the deadline would read
    # " to host:port".
    if isinstance(exc, OSError) and not isinstance(exc, TimeoutError):
        return f"{(exc.strerror or str(exc)).lower()} to {where}"
    return f"no answer from {where} within {timeout_s:g}s"
