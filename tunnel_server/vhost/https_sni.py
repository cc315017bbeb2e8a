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
from .routing import VhostRouter
from .sni import NEED_DATA, ClientHelloError, parse_sni
from .splice import SpliceCounters, splice
from .upstream import UpstreamError

logger = logging.getLogger(__name__)

DEFAULT_MAX_CONNECTIONS: Final = 10_000
OPEN_TIMEOUT_S: Final = 10.0  # bound on opening the stream to the client
SHUTDOWN_GRACE_S: Final = 10.0

OnConnection = Callable[[str, int, int], None]  # (proxy_name, bytes_in, bytes_out)


class HTTPSVhostServer:
    """The HTTPS (SNI) vhost listener. `start`, then `close` + `wait_closed`."""

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
        self._router = router
        self._header_timeout_s = header_timeout_s
        self._max_connections = max_connections
        self._open_timeout_s = open_timeout_s
        self._shutdown_grace_s = shutdown_grace_s
        self._on_connection = on_connection
        self._server: asyncio.Server | None = None
        self._tasks: dict[asyncio.Task[None], InboundProtocol] = {}
        self._closing = False
        self._cancel_handle: asyncio.TimerHandle | None = None
        self.refused_connections = 0

    @property
    def connections(self) -> int:
        return len(self._tasks)

    def buffered_bytes(self) -> int:
        """Bytes held for visitors now: queued input plus unsent output, all connections."""
        return sum(conn.buffered_bytes for conn in self._tasks.values())

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Listen on host:port (0 picks a port) and return the bound address."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: InboundProtocol(self._connection_made),
            host,
            port,
            reuse_address=True,
            backlog=1024,
        )
        sockname = self._server.sockets[0].getsockname()
        return str(sockname[0]), int(sockname[1])

    def close(self) -> None:
        """Stop accepting; connections still reading a ClientHello end now, splices after the
        grace time."""
        if self._closing:
            return
        self._closing = True
        if self._server is not None:
            self._server.close()
        for conn in self._tasks.values():
            conn.notify()
        if self._tasks:
            loop = asyncio.get_running_loop()
            self._cancel_handle = loop.call_later(self._shutdown_grace_s, self._cancel_all)

    def _cancel_all(self) -> None:
        for task in self._tasks:
            task.cancel()

    async def wait_closed(self) -> None:
        if self._server is not None:
            await self._server.wait_closed()
        while self._tasks:
            await asyncio.wait(list(self._tasks))
        if self._cancel_handle is not None:
            self._cancel_handle.cancel()

    async def __aenter__(self) -> HTTPSVhostServer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
        await self.wait_closed()

    def _connection_made(self, conn: InboundProtocol) -> None:
        if self._closing or len(self._tasks) >= self._max_connections:
            self.refused_connections += 1
            conn.feeder = conn.discard
            conn.abort()
            return
        task = asyncio.get_running_loop().create_task(self._serve(conn))
        self._tasks[task] = conn
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        del self._tasks[task]
        if not task.cancelled() and task.exception() is not None:
            logger.error("https vhost connection failed", exc_info=task.exception())

    async def _serve(self, conn: InboundProtocol) -> None:
        clean = False
        try:
            clean = await self._serve_one(conn)
        finally:
            if clean:
                conn.close()
            else:
                conn.abort()

    async def _read_client_hello(self, conn: InboundProtocol) -> tuple[bytes, str | None] | None:
        """Buffer the ClientHello; return (bytes, server name) or None if it never came."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._header_timeout_s
        buffer = bytearray()
        while True:
            item = conn.pop()
            if item is None:
                if self._closing or not await conn.wait(deadline):
                    logger.debug("https vhost: no ClientHello from %s in time", conn.peer[0])
                    return None
                continue
            if not isinstance(item, bytes):
                return None  # EOF or LOST before the ClientHello was complete
            buffer += item
            try:
                name = parse_sni(buffer)
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
        stream.close()
        await stream.wait_closed()
        return not conn.lost
