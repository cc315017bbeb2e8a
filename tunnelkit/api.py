"""`forward()`: one http (or tcp) tunnel run by an in-process `TunnelClient`.

`forward()` returns a `Forwarding` at once; it connects when awaited (`await forward(...)`),
entered (`async with` / `with`), or started (`start()` / `start_sync()`). Async use runs the
client on the caller's event loop; sync use runs it on a loop in a daemon thread that the
`Forwarding` owns and stops at `close()`.

The inspector's store keeps the captures (`requests`); its web page is off unless
`inspect_port` is given, and the history stays in memory (a test's captures are its own).
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Generator
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import Final, Literal

from protocol.errors import TunnelError
from protocol.proxytype import ProxyType
from tunnel_client.client import TunnelClient
from tunnel_client.config import InspectConfig, make_oneliner_config, make_oneliner_proxy
from tunnel_client.inspect.exchange import CapturedExchange
from tunnel_client.inspect.store import CaptureStore

__all__ = ["Forwarding", "TunnelError", "forward"]

READY_TIMEOUT_S: Final = 30.0  # connect, log in and have the proxy accepted
STOP_TIMEOUT_S: Final = 10.0


class Forwarding:
    """A running tunnel: `url`, `urls`, `requests`; close it with `aclose()` or `close()`."""

    def __init__(self, client: TunnelClient, name: str, timeout: float) -> None:
        self.client = client
        self.name = name
        self._timeout = timeout
        self._task: asyncio.Task[int] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # -- what it gives ------------------------------------------------------------------------
    @property
    def urls(self) -> tuple[str, ...]:
        """The public URLs the server gave this proxy."""
        status = self.client.proxy_status.get(self.name)
        return status.public_urls if status is not None else ()

    @property
    def url(self) -> str:
        """The first public URL (raises TunnelError before the tunnel is up)."""
        if not self.urls:
            raise TunnelError("the tunnel is not up (await it or enter it first)")
        return self.urls[0]

    @property
    def requests(self) -> list[CapturedExchange]:
        """The captured requests, oldest first (http proxies)."""
        store = self.client.surfaces.store
        if store is None:
            return []
        if self._thread is not None and self._loop is not None:
            # The store belongs to the tunnel's loop thread: read it there.
            future: Future[list[CapturedExchange]] = asyncio.run_coroutine_threadsafe(
                _oldest_first(store), self._loop
            )
            return future.result(self._timeout)
        return list(reversed(store.list()))

    # -- async use ----------------------------------------------------------------------------
    async def start(self) -> Forwarding:
        """Connect, and return once the server accepted the proxy (raises TunnelError)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.client.run())
        waiter = asyncio.ensure_future(self.client.wait_status(self.name, ("running", "refused")))
        try:
            async with asyncio.timeout(self._timeout):
                done, _ = await asyncio.wait(
                    {waiter, self._task}, return_when=asyncio.FIRST_COMPLETED
                )
        except TimeoutError:
            await self.aclose()
            raise TunnelError(
                f"the tunnel was not up within {self._timeout:g}s: {self._why()}"
            ) from None
        finally:
            waiter.cancel()
        if waiter not in done or waiter.result().state != "running":
            reason = self._why()
            await self.aclose()
            raise TunnelError(f"the tunnel could not be opened: {reason}")
        return self

    def _why(self) -> str:
        status = self.client.proxy_status.get(self.name)
        if status is not None and status.error:
            return status.error
        return self.client.last_error or "no answer from the server"

    def __await__(self) -> Generator[object, None, Forwarding]:
        return self.start().__await__()

    async def __aenter__(self) -> Forwarding:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the tunnel and wait for it (idempotent)."""
        self.client.request_stop()
        if self._task is not None:
            try:
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await asyncio.gather(self._task, return_exceptions=True)
            except TimeoutError:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)

    # -- sync use -----------------------------------------------------------------------------
    def start_sync(self) -> Forwarding:
        """Run the tunnel on a loop in a background thread; return once it is up."""
        ready: Future[None] = Future()
        loop = asyncio.new_event_loop()
        self._loop = loop

        def run() -> None:
            asyncio.set_event_loop(loop)

            async def main() -> None:
                try:
                    await self.start()
                except BaseException as exc:
                    ready.set_exception(exc)
                    return
                ready.set_result(None)
                assert self._task is not None
                await asyncio.gather(self._task, return_exceptions=True)

            try:
                loop.run_until_complete(main())
                # Anything the client left running (a connect in flight) ends here, on its
                # own loop, before the loop closes: no socket outlives the thread.
                leftovers = asyncio.all_tasks(loop)
                for task in leftovers:
                    task.cancel()
                loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name=f"tunnelkit-{self.name}", daemon=True)
        self._thread.start()
        try:
            ready.result(self._timeout + STOP_TIMEOUT_S)
        except BaseException:
            self._thread.join(STOP_TIMEOUT_S)
            raise
        return self

    def close(self) -> None:
        """Stop a tunnel started with `start_sync()` / `with` (idempotent)."""
        if self._thread is None or self._loop is None or not self._thread.is_alive():
            return
        self._loop.call_soon_threadsafe(self.client.request_stop)
        self._thread.join(STOP_TIMEOUT_S + 5)

    def __enter__(self) -> Forwarding:
        return self.start_sync()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


async def _oldest_first(store: CaptureStore) -> list[CapturedExchange]:
    return list(reversed(store.list()))


def forward(
    port: int,
    *,
    server: str,
    token: str | None = None,
    protocol: Literal["http", "tcp"] = "http",
    subdomain: str | None = None,
    custom_domains: tuple[str, ...] = (),
    remote_port: int | None = None,
    local_host: str = "127.0.0.1",
    name: str | None = None,
    server_fingerprint: str | None = None,
    ca_file: Path | None = None,
    insecure_skip_verify: bool = False,
    inspect_port: int | None = None,
    timeout: float = READY_TIMEOUT_S,
) -> Forwarding:
    """Expose `local_host:port` through the tunneld at `server` ("host:port").

    http (the default) needs `subdomain` or `custom_domains`, as the server's vhost routes by
    name; tcp takes `remote_port` (0 or None: the server picks). Raises TunnelError for a bad
    argument now, and when awaited or entered if the tunnel cannot be opened.
    """
    kind = ProxyType(protocol)
    proxy = make_oneliner_proxy(
        kind,
        port,
        name=name,
        local_ip=local_host,
        remote_port=remote_port if kind is ProxyType.TCP else None,
        custom_domains=custom_domains,
        subdomain=subdomain,
    )
    config = make_oneliner_config(
        server,
        token,
        proxy,
        trusted_ca_file=ca_file,
        server_fingerprint=server_fingerprint,
        insecure_skip_verify=insecure_skip_verify,
        source="tunnelkit.forward",
    )
    inspect = InspectConfig(
        enabled=True,
        port=inspect_port if inspect_port is not None else 0,
        history=False,
    )
    config = dataclasses.replace(config, inspect=inspect)
    client = TunnelClient(config)
    if inspect_port is None:
        client.surfaces.serve_inspector = False
    return Forwarding(client, proxy.name, timeout)
