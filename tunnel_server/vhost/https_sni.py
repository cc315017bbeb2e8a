"""The shared HTTPS vhost listener (vhostHTTPSPort): route by SNI, splice raw TLS bytes.

TLS is not terminated here (passthrough, as frp does): the listener buffers the visitor's
first bytes until the ClientHello is complete (at most 16 KiB, within `header_timeout_s`), reads
the server name, looks it up in the router, opens a stream to the route, writes the buffered
bytes and splices both ways. The certificate lives with the app behind the tunnel.

A ClientHello without SNI, with an unknown name, malformed, or too slow ends with a clean close
(the visitor's TLS library reports the connection closed); the listener never answers in TLS.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Final

from .inbound import InboundProtocol
from .listener import DEFAULT_MAX_CONNECTIONS, SHUTDOWN_GRACE_S, VhostListener
from .routing import VhostRouter
from .sni import NEED_DATA, ClientHelloError, ClientHelloReader
from .splice import SpliceCounters, splice
from .upstream import UpstreamError, close_stream

logger = logging.getLogger(__name__)

OPEN_TIMEOUT_S: Final = 10.0  # bound on opening the stream to the client

OnConnection = Callable[[str, int, int], None]  # (proxy_name, bytes_in, bytes_out)


class HTTPSVhostServer(VhostListener):
    """The HTTPS (SNI) vhost listener. `start`, then `close` + `wait_closed`."""

    _kind = "https vhost"

    def __init__(
        self,
        router: VhostRouter,
        *,
        header_timeout_s: float = 10.0,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        open_timeout_s: float = OPEN_TIMEOUT_S,
        shutdown_grace_s: float = SHUTDOWN_GRACE_S,
        on_connection: OnConnection | None = None,
    ) -> None:
        super().__init__(max_connections=max_connections, shutdown_grace_s=shutdown_grace_s)
        self._router = router
        self._header_timeout_s = header_timeout_s
        self._open_timeout_s = open_timeout_s
        self._on_connection = on_connection

    async def _read_client_hello(self, conn: InboundProtocol) -> tuple[bytes, str | None] | None:
        """Buffer the ClientHello; return (bytes, server name) or None if it never came."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._header_timeout_s
        buffer = bytearray()
        reader = ClientHelloReader()
        while True:
            item = conn.pop()
            if item is None:
                if self.closing or not await conn.wait(deadline):
                    logger.debug("https vhost: no ClientHello from %s in time", conn.peer[0])
                    return None
                continue
            if not isinstance(item, bytes):
                return None  # EOF or LOST before the ClientHello was complete
            buffer += item
            try:
                name = reader.feed(item)
            except ClientHelloError as exc:
                logger.debug("https vhost: bad ClientHello from %s: %s", conn.peer[0], exc)
                return None
            if name is not NEED_DATA:
                assert not isinstance(name, type(NEED_DATA))
                return bytes(buffer), name

    async def _serve_one(self, conn: InboundProtocol) -> bool:
        hello = await self._read_client_hello(conn)
        if hello is None:
            return not conn.lost
        data, name = hello
        route = self._router.lookup(name) if name is not None else None
        if route is None:
            logger.debug("https vhost: no route for SNI %r from %s", name, conn.peer[0])
            return True
        try:
            async with asyncio.timeout(self._open_timeout_s):
                stream = await route.opener(conn.peer)
        except (TimeoutError, UpstreamError, ConnectionError, OSError) as exc:
            logger.debug("[proxy=%s] https open failed: %r", route.proxy_key, exc)
            return True
        if conn.lost:
            stream.abort()
            return False
        counters = SpliceCounters()
        try:
            try:
                await stream.write(data)
            except (ConnectionError, OSError) as exc:
                logger.debug("[proxy=%s] https upstream write failed: %r", route.proxy_key, exc)
                stream.abort()
                return False
            counters.to_app += len(data)
            await splice(conn, stream, counters)
        except BaseException:
            stream.abort()
            raise
        finally:
            if self._on_connection is not None:
                self._on_connection(route.proxy_name, counters.to_app, counters.to_visitor)
        await close_stream(stream)
        return not conn.lost
