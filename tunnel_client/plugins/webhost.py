"""An aiohttp app served on the user connections of one proxy (no listening socket).

Each user connection is joined to a socketpair (`socket_for`) and its other end is handed
to aiohttp's request handler, TLS-terminated first when the plugin serves HTTPS. The visitor
address the server sent with the stream is kept per socket, so handlers can read it with
`visitor(request)`.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Final

from aiohttp import web

from protocol.aio.stream import MuxStream

from .base import Splice, logger, socket_for

TLS_HANDSHAKE_TIMEOUT_S: Final = 15.0


class _Visitor:
    __slots__ = ("addr",)

    def __init__(self, addr: str) -> None:
        self.addr = addr


_VISITORS: Final = web.AppKey("visitors", dict[int, _Visitor])
HTTP_KEEPALIVE_TIMEOUT_S: Final = 75.0  # idle keep-alive connections are closed after this


class WebHost:
    """Runs `app` on demand; `serve(stream)` returns when that connection has ended."""

    def __init__(self, app: web.Application, tls: ssl.SSLContext | None) -> None:
        self.app = app
        self.tls = tls
        self.app[_VISITORS] = {}
        self._runner: web.AppRunner | None = None
        self._starting = asyncio.Lock()
        self._closed = False

    async def _server(self) -> web.Server:
        async with self._starting:
            if self._runner is None:
                runner = web.AppRunner(
                    self.app, handle_signals=False, keepalive_timeout=HTTP_KEEPALIVE_TIMEOUT_S
                )
                await runner.setup()
                self._runner = runner
            server = self._runner.server
            assert server is not None  # set by setup()
            return server

    async def serve(self, stream: MuxStream, splice: Splice) -> None:
        if self._closed:
            stream.abort(reason="the plugin is stopping")
            return
        server = await self._server()
        sock = await socket_for(stream, splice)
        visitors = self.app[_VISITORS]
        fd = sock.fileno()
        entry = visitors[fd] = _Visitor(stream.header.src_addr)
        try:
            loop = asyncio.get_running_loop()
            timeout = TLS_HANDSHAKE_TIMEOUT_S if self.tls is not None else None
            try:
                await loop.connect_accepted_socket(
                    server, sock, ssl=self.tls, ssl_handshake_timeout=timeout
                )
            except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
                logger.debug("plugin: TLS handshake failed: %s", exc)  # a bad or slow client
                sock.close()
                stream.abort(reason=f"TLS handshake failed: {exc}")
                return
            await stream.wait_closed()
        finally:
            if visitors.get(fd) is entry:  # the fd may already serve a newer connection
                del visitors[fd]

    def close(self) -> None:
        self._closed = True

    async def wait_closed(self) -> None:
        self._closed = True
        async with self._starting:
            if self._runner is not None:
                await self._runner.cleanup()
                self._runner = None


def visitor(request: web.Request) -> str:
    """The visitor's IP address as the server saw it ("" if unknown)."""
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return ""
    entry = request.app[_VISITORS].get(sock.fileno())
    return entry.addr if entry is not None else ""
