"""The web surfaces of real tunneld and tunnelc processes: dashboard, metrics and admin API.

The http proxy `hook` forwards to an in-process aiohttp app that records what it gets; traffic
goes through the real vhost with curl. The dashboard test drives the page in the system
Chromium; the others use the JSON APIs, `/metrics` and the `tunnelc` admin subcommands.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp
import pytest
from aiohttp import web
from playwright.async_api import async_playwright, expect
from prometheus_client.parser import text_string_to_metric_families

from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, requires_chromium, serve_app
from tests.support.echo import tcp_echo_server
from tests.support.peers import run_command, tools_unavailable_reason
from tests.support.procs import (
    ADMIN_READY,
    CLIENT_LOGGED_IN,
    Endpoint,
    TunnelProcess,
    proxy_ready_pattern,
    venv_script,
)

TOKEN: Final = "e2e-web-token"
DOMAIN_HOST: Final = "example.test"
WEB_USER: Final = "admin"
WEB_PASSWORD: Final = "dashboard-pw"
TIMEOUT_S: Final = 45.0  # per test body
REQUESTS: Final = 3  # webhooks sent to make the traffic counters move

pytestmark = pytest.mark.skipif(
    tools_unavailable_reason("curl") is not None, reason="these tests drive the tunnel with curl"
)


class RecordingApp:
    """The proxy's local service: answers every request and records its path."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.paths.append(request.path_qs)
        return web.Response(text="ok from the local app\n")

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app


@dataclass(frozen=True, slots=True)
class Tunnel:
    server: TunnelProcess
    client: TunnelProcess
    client_id: str
    public: Endpoint  # http://hook.example.test:<vhost port>
    dashboard: str  # base URL, no trailing slash


def server_toml(*, credentials: bool = False) -> str:
    text = (
        'bindAddr = "127.0.0.1"\nbindPort = 0\nvhostHTTPPort = 0\n'
        f'subDomainHost = "{DOMAIN_HOST}"\nauth.token = "{TOKEN}"\nenablePrometheus = true\n'
        'webServer.addr = "127.0.0.1"\nwebServer.port = 0\n'
    )
    if credentials:
        text += f'webServer.user = "{WEB_USER}"\nwebServer.password = "{WEB_PASSWORD}"\n'
    return text


def client_toml(control_port: int, fingerprint: str, local_port: int, token: str = TOKEN) -> str:
    return (
        f'serverAddr = "127.0.0.1"\nserverPort = {control_port}\nauth.token = "{token}"\n'
        f'transport.tls.serverFingerprint = "{fingerprint}"\n'
        "inspect.enabled = false\n"
        'webServer.addr = "127.0.0.1"\nwebServer.port = 0\n\n' + hook_proxy(local_port)
    )


def hook_proxy(local_port: int) -> str:
    return (
        '[[proxies]]\nname = "hook"\ntype = "http"\nlocalIP = "127.0.0.1"\n'
        f'localPort = {local_port}\nsubdomain = "hook"\n'
    )


@contextlib.asynccontextmanager
async def tunnel_to(
    run_tunneld: Any, run_tunnelc: Any
) -> AsyncIterator[tuple[Tunnel, RecordingApp]]:
    """tunneld with its dashboard, a tunnelc with the http proxy `hook`, and the app behind it."""
    local = RecordingApp()
    async with serve_app(local.app()) as local_url:
        server = await run_tunneld(server_toml())
        control = await server.control_address()
        dashboard = await server.dashboard_address()
        local_port = int(local_url.rsplit(":", 1)[1])
        client = await run_tunnelc(
            client_toml(control.port, await server.fingerprint(), local_port)
        )
        client_id = (await client.wait_for(CLIENT_LOGGED_IN))["client_id"]
        public = await client.proxy_endpoint("hook")
        yield Tunnel(server, client, client_id, public, dashboard.url), local


async def curl(public: Endpoint, path: str) -> str:
    """GET `path` through the vhost with curl; return the body (fails on HTTP errors)."""
    return await run_command(curl_argv(public, path, "--fail"))


def curl_argv(public: Endpoint, path: str, *extra: str) -> list[str]:
    return [
        "curl",
        "--silent",
        "--show-error",
        "--max-time",
        "10",
        "--resolve",
        f"{public.host}:{public.port}:127.0.0.1",
        *extra,
        f"{public.url}{path}",
    ]


async def metric_samples(http: aiohttp.ClientSession) -> dict[tuple[str, tuple[Any, ...]], float]:
    """Scrape /metrics: {(sample name, sorted label items): value}."""
    async with http.get("/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def basic_auth(user: str, password: str) -> dict[str, str]:
    """An Authorization header (aiohttp.BasicAuth is deprecated in the aiohttp we run)."""
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def tunnelc_cli(command: str, config: Path) -> str:
    """Run `tunnelc COMMAND -c CONFIG` (an admin API client) to completion; return stdout."""
    return await run_command([str(venv_script("tunnelc")), command, "-c", str(config)])


@pytest.mark.browser
@requires_chromium
async def test_dashboard_page_shows_client_traffic_and_kicks_it(
    run_tunneld: Any, run_tunnelc: Any, screenshots: Path, patient_expect: None
) -> None:
    """The page shows the client, its proxy and growing counters; Kick drops it, it comes back."""
    async with (
        asyncio.timeout(TIMEOUT_S),
        tunnel_to(run_tunneld, run_tunnelc) as (tunnel, local),
        async_playwright() as playwright,
    ):
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 800})
            await page.goto(tunnel.dashboard + "/")
            await expect(page.get_by_test_id("live-status")).to_contain_text("live")
            client_rows = page.get_by_test_id("client-row")
            await expect(client_rows).to_have_count(1)
            client_row = page.locator(
                f'[data-testid="client-row"][data-client-id="{tunnel.client_id}"]'
            )
            await expect(client_row).to_contain_text(tunnel.client_id)
            await expect(client_row).to_contain_text("127.0.0.1:")
            await expect(client_row.locator("td").nth(5)).to_have_text("hook")
            await expect(page.get_by_test_id("stat-clients")).to_have_text("1")

            proxy_row = page.locator('[data-testid="proxy-row"][data-proxy-name="hook"]')
            cells = proxy_row.locator("td")
            await expect(cells.nth(1)).to_have_text("http")
            await expect(cells.nth(2)).to_have_text(tunnel.public.url)
            await expect(cells.nth(3)).to_have_text(tunnel.client_id)
            await expect(cells.nth(4)).to_have_text("online")
            await expect(cells.nth(5)).to_have_text("0 B")
            await expect(cells.nth(6)).to_have_text("0 B")
            await expect(cells.nth(7)).to_have_text("0 / 0")

            for n in range(REQUESTS):
                assert await curl(tunnel.public, f"/count/{n}") == "ok from the local app\n"
            assert local.paths == [f"/count/{n}" for n in range(REQUESTS)]
            # The page polls; the counters move without a reload.
            await expect(cells.nth(7)).to_have_text(f"0 / {REQUESTS}")
            await expect(cells.nth(5)).not_to_have_text("0 B")
            await expect(cells.nth(6)).not_to_have_text("0 B")
            await expect(page.get_by_test_id("stat-clients")).to_have_text("1")
            await page.screenshot(path=str(screenshots / "e2e-dashboard.png"), full_page=True)

            mark = tunnel.client.line_count
            await client_row.get_by_test_id("kick-button").click()
            await expect(page.get_by_test_id("toast")).to_have_text(f"Kicked {tunnel.client_id}")
            await expect(client_row).to_have_count(0)
            await page.screenshot(
                path=str(screenshots / "e2e-dashboard-kicked.png"), full_page=True
            )
            await tunnel.client.wait_for(r"disconnected from the server: .*kicked", since=mark)
            await tunnel.client.wait_for(r"tunnelc: reconnecting in", since=mark)
            again = await tunnel.client.wait_for(CLIENT_LOGGED_IN, since=mark)
            assert again["client_id"] == tunnel.client_id
            assert await tunnel.client.proxy_endpoint("hook", since=mark) == tunnel.public

            await expect(client_row).to_have_count(1)
            await expect(cells.nth(4)).to_have_text("online")
            assert await curl(tunnel.public, "/after-kick") == "ok from the local app\n"
            # The counters belong to the proxy name, so they carry on across the reconnect.
            await expect(cells.nth(7)).to_have_text(f"0 / {REQUESTS + 1}")
            await page.screenshot(
                path=str(screenshots / "e2e-dashboard-after-kick.png"), full_page=True
            )
        finally:
            await browser.close()


async def test_dashboard_credentials_guard_api_and_metrics_but_not_healthz(
    run_tunneld: Any,
) -> None:
    """With webServer.user/password: 401 without or with wrong credentials, 200 with them."""
    async with asyncio.timeout(TIMEOUT_S):
        server = await run_tunneld(server_toml(credentials=True))
        base = (await server.dashboard_address()).url
        good = basic_auth(WEB_USER, WEB_PASSWORD)
        wrong = basic_auth(WEB_USER, "not-it")
        async with aiohttp.ClientSession(base) as http:
            for path in ("/api/clients", "/metrics", "/"):
                async with http.get(path) as response:
                    assert response.status == 401, path
                    assert response.headers["WWW-Authenticate"].startswith("Basic ")
                async with http.get(path, headers=wrong) as response:
                    assert response.status == 401, path
                async with http.get(path, headers=good) as response:
                    assert response.status == 200, path
            async with http.get("/api/clients", headers=good) as response:
                assert await response.json() == []
            async with http.post("/api/clients/nobody/kick") as response:
                assert response.status == 401
            async with http.get("/healthz") as response:
                assert response.status == 200
                assert await response.json() == {"status": "ok"}


async def test_metrics_count_clients_proxy_bytes_and_auth_failures(
    run_tunneld: Any, run_tunnelc: Any
) -> None:
    """/metrics: one client, the proxy's bytes after traffic, and a failed login counted."""
    async with (
        asyncio.timeout(TIMEOUT_S),
        tunnel_to(run_tunneld, run_tunnelc) as (tunnel, _local),
        aiohttp.ClientSession(tunnel.dashboard) as http,
    ):
        before = await metric_samples(http)
        assert before[("tunnelkit_clients", ())] == 1
        assert before[("tunnelkit_proxies", (("type", "http"),))] == 1
        assert before[("tunnelkit_auth_failures_total", ())] == 0

        for n in range(REQUESTS):
            await curl(tunnel.public, f"/metrics-traffic/{n}")
        after = await metric_samples(http)
        hook_in = after[("tunnelkit_proxy_bytes_total", (("direction", "in"), ("proxy", "hook")))]
        hook_out = after[("tunnelkit_proxy_bytes_total", (("direction", "out"), ("proxy", "hook")))]
        assert hook_in > 0 and hook_out > 0
        assert after[("tunnelkit_proxy_connections_total", (("proxy", "hook"),))] == REQUESTS

        control = await tunnel.server.control_address()
        intruder = await run_tunnelc(
            client_toml(control.port, await tunnel.server.fingerprint(), 9, token="wrong-token"),
            wait_ready=False,
            expect_exit_code=1,
        )
        await intruder.wait_for("authentication failed")
        assert await intruder.wait() == 1
        failed = await metric_samples(http)
        assert failed[("tunnelkit_auth_failures_total", ())] == 1
        assert failed[("tunnelkit_clients", ())] == 1


async def test_dashboard_api_closes_a_proxy_and_tunnelc_logs_it(
    run_tunneld: Any, run_tunnelc: Any
) -> None:
    """POST /api/proxies/{client}/{name}/close: tunnelc logs it, the vhost stops routing it."""
    async with (
        asyncio.timeout(TIMEOUT_S),
        tunnel_to(run_tunneld, run_tunnelc) as (tunnel, local),
        aiohttp.ClientSession(tunnel.dashboard) as http,
    ):
        assert await curl(tunnel.public, "/before-close") == "ok from the local app\n"
        async with http.get("/api/proxies") as response:
            (hook,) = await response.json()
        assert (hook["name"], hook["client_id"], hook["type"], hook["status"]) == (
            "hook",
            tunnel.client_id,
            "http",
            "online",
        )
        assert hook["public"] == [tunnel.public.url]

        mark = tunnel.client.line_count
        async with http.post(f"/api/proxies/{tunnel.client_id}/hook/close") as response:
            assert response.status == 200
            assert await response.json() == {"closed": "hook", "client_id": tunnel.client_id}
        await tunnel.client.wait_for(
            r"tunnelc: proxy hook closed by the server: closed by an administrator", since=mark
        )
        async with http.get("/api/proxies") as response:
            (hook,) = await response.json()
        assert (hook["name"], hook["status"]) == ("hook", "offline")
        async with http.post(f"/api/proxies/{tunnel.client_id}/hook/close") as response:
            assert response.status == 404
        status = await run_command(
            curl_argv(tunnel.public, "/after-close", "--output", "/dev/null", "-w", "%{http_code}")
        )
        assert status == "404"
        assert local.paths == ["/before-close"]
        async with http.get("/api/clients") as response:
            (client,) = await response.json()
        assert (client["client_id"], client["proxies"]) == (tunnel.client_id, [])
        async with http.post("/api/clients/nobody/kick") as response:
            assert response.status == 404


async def test_tunnelc_admin_commands_status_reload_and_stop(
    run_tunneld: Any, run_tunnelc: Any
) -> None:
    """`tunnelc status`, `reload` (adds a tcp proxy, http keeps working) and `stop` (exit 0)."""
    async with (
        asyncio.timeout(TIMEOUT_S),
        tunnel_to(run_tunneld, run_tunnelc) as (tunnel, local),
        tcp_echo_server() as echo,
    ):
        client = tunnel.client
        config = client.config_path
        assert config is not None
        admin = await client.wait_for(ADMIN_READY)
        # webServer.port = 0 let tunnelc pick the port, but the CLI dials the port written in
        # the file (see test_tunnelc_status_finds_an_admin_api_on_port_zero), so write it there.
        text = config.read_text(encoding="utf-8")
        text = text.replace("webServer.port = 0", f"webServer.port = {admin['port']}")
        config.write_text(text, encoding="utf-8")

        status = await tunnelc_cli("status", config)
        assert re.search(rf"^hook\s+http\s+running\s+{re.escape(tunnel.public.url)}$", status, re.M)

        mark = client.line_count
        config.write_text(
            text
            + '\n[[proxies]]\nname = "echo"\ntype = "tcp"\nlocalIP = "127.0.0.1"\n'
            + f"localPort = {echo.port}\nremotePort = 0\n",
            encoding="utf-8",
        )
        reloaded = await tunnelc_cli("reload", config)
        assert json.loads(reloaded) == {"added": ["echo"], "removed": [], "changed": []}
        echo_public = await client.proxy_endpoint("echo", since=mark)
        assert echo_public.scheme == "tcp"
        assert not any(proxy_ready_pattern("hook").search(line) for line in client.lines(mark))
        reader, writer = await asyncio.open_connection(echo_public.host, echo_public.port)
        try:
            writer.write(b"added by reload")
            writer.write_eof()
            assert await reader.read() == b"added by reload"
        finally:
            writer.close()
            await writer.wait_closed()
        assert await curl(tunnel.public, "/after-reload") == "ok from the local app\n"
        assert local.paths[-1] == "/after-reload"

        status = await tunnelc_cli("status", config)
        assert re.search(r"^hook\s+http\s+running\b", status, re.M)
        assert re.search(
            rf"^echo\s+tcp\s+running\s+tcp://127\.0\.0\.1:{echo_public.port}$", status, re.M
        )

        await tunnelc_cli("stop", config)
        assert await client.wait() == 0
        await client.wait_for("tunnelc: stopped")


async def test_tunnelc_status_finds_an_admin_api_on_port_zero(
    run_tunneld: Any, run_tunnelc: Any
) -> None:
    """`tunnelc status -c CONFIG` reaches a running tunnelc whose config says webServer.port = 0."""
    async with asyncio.timeout(TIMEOUT_S), tunnel_to(run_tunneld, run_tunnelc) as (tunnel, _):
        await tunnel.client.wait_for(ADMIN_READY)
        assert tunnel.client.config_path is not None
        status = await tunnelc_cli("status", tunnel.client.config_path)
        assert re.search(r"^hook\s+http\s+running\b", status, re.M)
