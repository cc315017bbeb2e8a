"""A web surface that listens from the start and loads aiohttp on its first connection.

aiohttp's server and an app's own modules cost 15-25 MiB of RSS (aiohttp, the inspector's
cryptography and XML viewers, prometheus_client), and most of the time nobody opens the
inspector, the admin API or the dashboard. `LazySite` binds and listens at start
(tunnel_common/listen.py), so the port is known, printed and reserved, and a port in use is
an OSError at once; the event loop watches the listening sockets, and the first readable
event (a connection waiting in the backlog) imports aiohttp, builds the app from the factory
and starts `web.SockSite` on the same sockets, whose accept takes the waiting connections.
Connections that arrive meanwhile wait in the backlog (`DEFAULT_BACKLOG`).

A factory that fails is one log line naming the surface and the cause, and the sockets are
closed (later connections are refused); never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING

from tunnel_common.listen import listen_sockets

if TYPE_CHECKING:
    from aiohttp import web

logger = logging.getLogger(__name__)

AppFactory = Callable[[], "web.Application"]


class LazySite:
    """Listening sockets now; the aiohttp app behind them on the first connection."""

    def __init__(
        self,
        name: str,
        socks: list[socket.socket],
        factory: AppFactory,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.name = name
        self._socks = socks
        self._factory = factory
        self._ssl_context = ssl_context
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watching: list[int] = []
        self._build: asyncio.Task[None] | None = None
        self._runner: web.AppRunner | None = None
        self._closed = False
        self._woken = asyncio.Event()  # the first connection came, or close()
        self.port: int = socks[0].getsockname()[1]

    @classmethod
    def bind(
        cls,
        name: str,
        host: str,
        port: int,
        factory: AppFactory,
        ssl_context: ssl.SSLContext | None = None,
    ) -> LazySite:
        """Bind and listen on host:port (0 = a free port) and watch for the first connection.

        Raises OSError (EADDRINUSE, a name that does not resolve); nothing stays open then.
        Call from the running event loop.
        """
        site = cls(name, listen_sockets(host, port), factory, ssl_context)
        site._watch()
        return site

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The bound (host, port) of every listening socket."""
        return [sock.getsockname()[:2] for sock in self._socks]

    @property
    def started(self) -> bool:
        """True once the app is built and serving."""
        build = self._build
        return self._runner is not None and build is not None and build.done()

    async def wait_started(self) -> bool:
        """Wait for the first connection and the app's start (or `close()`); True if the
        app serves."""
        await self._woken.wait()
        build = self._build
        if build is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(build)
        return self.started and not self._closed

    def _watch(self) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            for sock in self._socks:
                self._loop.add_reader(sock.fileno(), self._first_connection)
                self._watching.append(sock.fileno())
        except BaseException:
            self._unwatch()
            self._close_socks()
            raise

    def _unwatch(self) -> None:
        assert self._loop is not None
        while self._watching:
            self._loop.remove_reader(self._watching.pop())

    def _first_connection(self) -> None:
        if self._build is not None or self._closed:
            return
        self._unwatch()
        self._woken.set()
        assert self._loop is not None
        self._build = self._loop.create_task(self._start(), name=f"{self.name}: start")

    async def _start(self) -> None:
        try:
            from aiohttp import web  # the point of this module: only now

            app = self._factory()
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            self._runner = runner
            await runner.setup()
            for sock in self._socks:
                await web.SockSite(runner, sock, ssl_context=self._ssl_context).start()
        except asyncio.CancelledError:
            await self._teardown()
            raise
        except Exception as exc:  # one clear line, never a traceback; the port closes
            logger.error("%s: cannot start the web page: %s", self.name, _reason(exc))
            await self._teardown()

    async def _teardown(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            with contextlib.suppress(Exception):
                await runner.cleanup()
        self._close_socks()

    def _close_socks(self) -> None:
        for sock in self._socks:
            sock.close()

    async def close(self) -> None:
        """Stop serving: before, during or after the app's start (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._woken.set()
        if self._loop is not None:
            self._unwatch()
        build = self._build
        if build is not None and not build.done():
            build.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await build
        await self._teardown()


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
