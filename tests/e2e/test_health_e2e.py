"""healthCheck through the real tunneld and tunnelc: a backend killed and restarted takes its
proxy off the server and back, within the configured bounds."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, Final

from aiohttp import web

from tests.e2e.test_plugins_e2e import start_server, toml

INTERVAL_S: Final = 1
TIMEOUT_S: Final = 1
MAX_FAILED: Final = 2
# Detection bound: the last good check may be one interval before the kill, then MAX_FAILED
# failed checks each up to TIMEOUT_S, plus a margin for log and wire under load.
DETECT_BOUND_S: Final = INTERVAL_S * MAX_FAILED + TIMEOUT_S + INTERVAL_S + 2.0


async def start_checked_client(
    run_tunnelc: Any, port: int, fingerprint: str, proxy: dict[str, object], extra_toml: str = ""
) -> Any:
    """tunnelc with one proxy under frequent checks; `extra_toml` is appended to the proxy."""
    head = toml(
        {
            "serverAddr": "127.0.0.1",
            "serverPort": port,
            "auth.token": "plugin-e2e-token",
            "transport.tls.serverFingerprint": fingerprint,
            "inspect.enabled": False,
        }
    )
    checks: dict[str, object] = {
        "healthCheck.timeoutSeconds": TIMEOUT_S,
        "healthCheck.maxFailed": MAX_FAILED,
        "healthCheck.intervalSeconds": INTERVAL_S,
    }
    return await run_tunnelc(head + "[[proxies]]\n" + toml({**proxy, **checks}) + extra_toml)


class Backend:
    """A TCP echo service that can be stopped and started again on the same port; with a
    `tag`, it first answers each connection with it (which backend of a group answered)."""

    def __init__(self, tag: bytes = b"") -> None:
        self.tag = tag
        self.server: asyncio.Server | None = None
        self.port = 0
        self.writers: set[asyncio.StreamWriter] = set()

    async def _echo(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            if self.tag:
                writer.write(self.tag)
                await writer.drain()
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass  # the test ends connections abruptly
        finally:
            self.writers.discard(writer)
            writer.close()

    async def start(self) -> None:
        self.server = await asyncio.start_server(
            self._echo, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is None:
            return
        self.server.close()
        for writer in list(self.writers):
            writer.close()
        await self.server.wait_closed()
        self.server = None


async def echo_once(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"ping")
    data = await reader.readexactly(4)
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
    return data


async def refused(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        return True
    except ConnectionResetError:
        return False  # the listener closed with our SYN in its backlog: ask again
    writer.close()
    return False


async def test_health_check_tcp_takes_a_dead_backend_offline_and_back(
    run_tunneld, run_tunnelc
) -> None:
    """Killing the backend closes the public port within the bound; restarting reopens it."""
    backend = Backend()
    await backend.start()
    try:
        async with asyncio.timeout(90):
            _, port, fingerprint = await start_server(run_tunneld)
            client = await start_checked_client(
                run_tunnelc,
                port,
                fingerprint,
                {"name": "hc", "type": "tcp", "localPort": backend.port, "remotePort": 0,
                 "healthCheck.type": "tcp"},
            )  # fmt: skip
            public = await client.proxy_endpoint("hc")
            assert await echo_once(public.port) == b"ping"

            since = client.line_count
            killed = time.monotonic()
            await backend.stop()
            await client.wait_for(r"proxy hc is unhealthy", DETECT_BOUND_S, since=since)
            detected = time.monotonic() - killed
            # Not before maxFailed checks (the first may run at once after the kill).
            assert detected >= INTERVAL_S * (MAX_FAILED - 1), f"{detected:.2f}s"
            for _ in range(int(DETECT_BOUND_S / 0.05)):  # the server closes it on CloseProxy
                if await refused(public.port):
                    break
                await asyncio.sleep(0.05)
            assert await refused(public.port), client.tail()
            offline_after = time.monotonic() - killed
            assert offline_after <= DETECT_BOUND_S, f"{offline_after:.2f}s: {client.tail()}"

            since = client.line_count
            await backend.start()
            again = await client.proxy_endpoint("hc", DETECT_BOUND_S, since=since)
            assert again.port == public.port, client.tail()  # the same public port comes back
            assert await echo_once(public.port) == b"ping"
    finally:
        if backend.server is not None:
            await backend.stop()


async def test_health_check_http_follows_the_status_page_with_headers(
    run_tunneld, run_tunnelc
) -> None:
    """An http check sends its headers; a 503 takes the proxy down, a 200 brings it back."""
    healthy = True
    seen: list[str | None] = []

    async def status(request: web.Request) -> web.Response:
        seen.append(request.headers.get("x-from-where"))
        return web.Response(status=200 if healthy else 503, text="status")

    app = web.Application()
    app.router.add_get("/status", status)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    local_port = runner.addresses[0][1]
    try:
        async with asyncio.timeout(90):
            _, port, fingerprint = await start_server(run_tunneld, vhostHTTPPort=0)
            client = await start_checked_client(
                run_tunnelc,
                port,
                fingerprint,
                {"name": "web", "type": "http", "localPort": local_port,
                 "customDomains": ["hc.example.test"], "healthCheck.type": "http",
                 "healthCheck.path": "/status"},
                'healthCheck.httpHeaders = [{ name = "x-from-where", value = "frp" }]\n',
            )  # fmt: skip
            await client.proxy_endpoint("web")
            assert seen and set(seen) == {"frp"}
            since = client.line_count
            healthy = False
            match = await client.wait_for(
                r"proxy web is unhealthy.*: (.*)$", DETECT_BOUND_S, since=since
            )
            assert "503" in match[1]
            since = client.line_count
            healthy = True
            await client.proxy_endpoint("web", DETECT_BOUND_S, since=since)
    finally:
        await runner.cleanup()


async def test_health_check_registers_a_proxy_only_after_its_first_pass(
    run_tunneld, run_tunnelc
) -> None:
    """A backend that is down at start keeps its proxy off the server until it answers."""
    backend = Backend()
    await backend.start()
    await backend.stop()  # keeps backend.port: nothing listens there now
    try:
        async with asyncio.timeout(90):
            _, port, fingerprint = await start_server(run_tunneld)
            client = await start_checked_client(
                run_tunnelc,
                port,
                fingerprint,
                {"name": "late", "type": "tcp", "localPort": backend.port, "remotePort": 0,
                 "healthCheck.type": "tcp"},
            )  # fmt: skip
            await client.wait_for(r"proxy late is unhealthy", DETECT_BOUND_S)
            assert not any("proxy late ready" in line for line in client.lines())
            since = client.line_count
            await backend.start()
            public = await client.proxy_endpoint("late", DETECT_BOUND_S, since=since)
            assert await echo_once(public.port) == b"ping"
    finally:
        if backend.server is not None:
            await backend.stop()
