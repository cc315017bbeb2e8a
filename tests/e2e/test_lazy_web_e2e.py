"""Real tunneld and tunnelc load aiohttp for their web pages only when a page is requested.

The ports are bound at start (the ready lines name them); aiohttp's C extension is mapped
into the process (/proc/PID/maps) only after the first connection, which curl makes.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Final

import pytest

from tests.support.peers import run_command, tools_unavailable_reason
from tests.support.procs import INSPECTOR_READY, TunnelProcess, proxy_ready_pattern

TOKEN: Final = "e2e-lazy-web"
TIMEOUT_S: Final = 60.0  # per test body
AIOHTTP_MAPPED: Final = "aiohttp/"  # in the path of aiohttp's C extensions
CONCURRENT_FIRST: Final = 20  # curls started together at a page nobody opened yet

pytestmark = pytest.mark.skipif(
    tools_unavailable_reason("curl") is not None, reason="these tests request pages with curl"
)


def _aiohttp_mapped(proc: TunnelProcess) -> bool:
    return AIOHTTP_MAPPED in Path(f"/proc/{proc.pid}/maps").read_text()


async def _curl_status(url: str) -> str:
    """The HTTP status curl got for `url` (curl failing fails the test)."""
    out = await run_command(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", url])
    return out.strip()


async def _server_with_dashboard(run_tunneld) -> tuple[TunnelProcess, int]:
    server = await run_tunneld(
        'bindAddr = "127.0.0.1"\nbindPort = 0\nvhostHTTPPort = 0\n'
        f'auth.token = "{TOKEN}"\nwebServer.addr = "127.0.0.1"\nwebServer.port = 0\n'
    )
    return server, (await server.dashboard_address()).port


async def test_lazy_web_inspector_loads_aiohttp_on_first_request(run_tunneld, run_tunnelc):
    """tunnelc with an http proxy has not mapped aiohttp until the inspector is requested;
    then every one of 20 concurrent first requests gets the page (200)."""
    async with asyncio.timeout(TIMEOUT_S):
        server, _ = await _server_with_dashboard(run_tunneld)
        control = await server.control_address()
        client = await run_tunnelc(
            f'serverAddr = "127.0.0.1"\nserverPort = {control.port}\nauth.token = "{TOKEN}"\n'
            f'transport.tls.serverFingerprint = "{await server.fingerprint()}"\n'
            "inspect.port = 0\n"
            '[[proxies]]\nname = "hook"\ntype = "http"\nlocalPort = 9\n'
            'customDomains = ["hook.example.test"]\n'
        )
        port = int((await client.wait_for(INSPECTOR_READY))["port"])
        await client.wait_for(proxy_ready_pattern("hook"))
        assert not _aiohttp_mapped(client)
        url = f"http://127.0.0.1:{port}/"
        statuses = await asyncio.gather(*(_curl_status(url) for _ in range(CONCURRENT_FIRST)))
        assert statuses == ["200"] * CONCURRENT_FIRST
        assert _aiohttp_mapped(client)
        assert await _curl_status(url + "api/requests") == "200"


async def test_lazy_web_dashboard_loads_aiohttp_on_first_request(run_tunneld):
    """tunneld with webServer has not mapped aiohttp until the dashboard is requested; then
    it serves the page (200)."""
    async with asyncio.timeout(TIMEOUT_S):
        server, port = await _server_with_dashboard(run_tunneld)
        assert not _aiohttp_mapped(server)
        assert await _curl_status(f"http://127.0.0.1:{port}/") == "200"
        assert _aiohttp_mapped(server)
        assert await _curl_status(f"http://127.0.0.1:{port}/api/serverinfo") == "200"


async def test_lazy_web_stops_cleanly_before_any_request(run_tunneld):
    """A tunneld whose dashboard nobody opened stops on SIGTERM with exit code 0 and frees
    the port (the process group checks the exit code)."""
    async with asyncio.timeout(TIMEOUT_S):
        server, port = await _server_with_dashboard(run_tunneld)
        assert await server.terminate() == 0
        with pytest.raises(ConnectionRefusedError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            await writer.wait_closed()


async def test_lazy_web_dashboard_port_in_use_fails_at_start(run_tunneld):
    """A dashboard port another socket holds stops tunneld at start with one line naming the
    address (exit code 1), before any connection; no traceback."""
    async with asyncio.timeout(TIMEOUT_S):
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", 0))
            holder.listen()
            port = holder.getsockname()[1]
            server = await run_tunneld(
                'bindAddr = "127.0.0.1"\nbindPort = 0\n'
                f'webServer.addr = "127.0.0.1"\nwebServer.port = {port}\n',
                wait_ready=False,
                expect_exit_code=1,
            )
            assert await server.wait() == 1
        await server.wait_for(
            rf"tunneld: error: cannot start the dashboard on 127\.0\.0\.1:{port}: "
            "Address already in use$"
        )
        assert not any("Traceback" in line for line in server.lines())
