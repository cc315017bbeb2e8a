"""What the HTTP and HTTPS vhost listeners share: the socket, the connection cap, and shutdown.

Each accepted connection gets an `InboundProtocol` and, if the listener is under
`max_connections`, one task that the listener owns: `_admit(conn)` returns the coroutine to
run (by default `_serve_one(conn)`, then a close or an abort as it answers), and the task is
tracked until it ends. Over the cap, `_turn_away(conn)` answers and closes
(the connection is counted in `refused_connections`).

Shutdown (aiohttp's order): `close()` stops accepting and wakes every connection so idle ones
leave at once; in-flight work then has `shutdown_grace_s` before the remaining tasks are
cancelled. `wait_closed()` returns when every task has ended.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Final, Self

from ..fdbudget import FDBudget
from .inbound import InboundProtocol

logger = logging.getLogger(__name__)

DEFAULT_MAX_CONNECTIONS: Final = 10_000
SHUTDOWN_GRACE_S: Final = 10.0  # after close(), in-flight connections get this long
LISTEN_BACKLOG: Final = 1024


class VhostListener:
    """Base class of the vhost listeners. `start`, then `close` + `wait_closed`."""

    _kind = "vhost"  # for log lines

    def __init__(self, *, max_connections: int, shutdown_grace_s: float) -> None:
        self._max_connections = max_connections
        self._shutdown_grace_s = shutdown_grace_s
        self._server: asyncio.Server | None = None
        self._tasks: dict[asyncio.Task[None], InboundProtocol] = {}
        self._closing = False
        self._cancel_handle: asyncio.TimerHandle | None = None
        self.refused_connections = 0  # over max_connections or while closing
        # The server's IP rules: a visitor it refuses gets `_deny` (a 403 page or a close).
        self.peer_allowed: Callable[[str], bool] | None = None
        self.denied_connections = 0
        # The server's descriptor budget (tunnel_server/fdbudget.py); set before start().
        self.fd_budget: FDBudget | None = None

    @property
    def connections(self) -> int:
        """Visitor connections being served now."""
        return len(self._tasks)

    @property
    def closing(self) -> bool:
        return self._closing

    def buffered_bytes(self) -> int:
        """Bytes held for visitors now: queued input plus unsent output, all connections."""
        return sum(conn.buffered_bytes for conn in self._tasks.values())

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> tuple[str, int]:
        """Listen on host:port (0 picks a port) and return the bound address.

        `reuse_port`: SO_REUSEPORT, the port shared with other workers (cluster.reusePort)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: InboundProtocol(self._connection_made),
            host,
            port,
            reuse_address=True,
            reuse_port=reuse_port or None,
            backlog=LISTEN_BACKLOG,
        )
        sockname = self._server.sockets[0].getsockname()
        return str(sockname[0]), int(sockname[1])

    def protocol(self) -> InboundProtocol:
        """A protocol for a connection accepted elsewhere (the HTTPS edge hands them over)."""
        return InboundProtocol(self._connection_made)

    def close(self) -> None:
        """Stop accepting, let idle connections go, cancel the rest after the grace time."""
        if self._closing:
            return
        self._closing = True
        if self._server is not None:
            self._server.close()
        for conn in self._tasks.values():
            conn.notify()  # a connection waiting for input sees `closing` and leaves
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

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
        await self.wait_closed()

    # --- for subclasses ------------------------------------------------------------------

    def _admit(self, conn: InboundProtocol) -> Coroutine[Any, Any, None]:
        """Set up a new connection and return the coroutine that serves it.

        By default `_serve_one`, then a clean close if it says so, else an abort (also when
        it raises or is cancelled).
        """
        return self._serve_then_close(conn)

    async def _serve_one(self, conn: InboundProtocol) -> bool:
        """Serve the connection; True: close it cleanly, False: abort it (a reset)."""
        raise NotImplementedError

    def _turn_away(self, conn: InboundProtocol) -> None:
        """Answer a connection over the cap, then close it."""
        conn.abort()

    def _deny(self, conn: InboundProtocol) -> None:
        """Answer a connection from an address the IP rules refuse, then close it."""
        conn.abort()

    # --- internals -----------------------------------------------------------------------

    async def _serve_then_close(self, conn: InboundProtocol) -> None:
        clean = False
        try:
            clean = await self._serve_one(conn)
        finally:
            if clean:
                conn.close()
            else:
                conn.abort()

    def _connection_made(self, conn: InboundProtocol) -> None:
        loop = asyncio.get_running_loop()
        budget = self.fd_budget
        if (
            self._closing
            or len(self._tasks) >= self._max_connections
            or (budget is not None and not budget.try_acquire(loop.time()))
        ):
            self.refused_connections += 1
            conn.feeder = conn.discard
            self._turn_away(conn)
            return
        if self.peer_allowed is not None and not self.peer_allowed(conn.peer[0]):
            self.denied_connections += 1
            conn.feeder = conn.discard
            self._deny(conn)
            return
        task = loop.create_task(self._admit(conn))
        self._tasks[task] = conn
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        del self._tasks[task]
        if self.fd_budget is not None:
            self.fd_budget.release()
        if not task.cancelled() and task.exception() is not None:
            logger.error("%s connection failed", self._kind, exc_info=task.exception())
