"""The server dashboard in a real Chromium: live tables and the Kick button."""

import asyncio
from pathlib import Path

import pytest
from playwright.async_api import async_playwright, expect

from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, requires_chromium, serve_app
from tunnel_server.stats import ServerStats
from tunnel_server.web.dashboard import build_dashboard_app
from tunnel_server.web.view import ClientInfo, ProxyInfo

pytestmark = [pytest.mark.browser, requires_chromium]

TIMEOUT = 60.0


class FakeServerView:
    """Two clients with a few proxies; kicking removes a client and its proxies."""

    def __init__(self, stats: ServerStats) -> None:
        self.kicked: list[str] = []
        self._clients = {
            "laptop-1": ClientInfo(
                "laptop-1", "203.0.113.7:51000", "0.1.0", "alice", 1.7e9, ("web", "ssh")
            ),
            "pi-garage": ClientInfo(
                "pi-garage", "198.51.100.23:40112", "0.1.0", "", 1.7e9, ("cam",)
            ),
        }
        web, ssh, cam = stats.proxy("web"), stats.proxy("ssh"), stats.proxy("cam")
        web.bytes_in, web.bytes_out, web.connections_total, web.connections_active = (
            48_213,
            1_532_901,
            57,
            3,
        )
        ssh.bytes_in, ssh.bytes_out, ssh.connections_total = 9_120, 30_554, 2
        self._proxies = [
            ProxyInfo(
                "web",
                "laptop-1",
                "http",
                ("http://web.example.com:8080", "http://api.example.com:8080"),
                "online",
                web,
            ),
            ProxyInfo("ssh", "laptop-1", "tcp", ("tcp://0.0.0.0:6000",), "online", ssh),
            ProxyInfo("cam", "pi-garage", "udp", ("udp://0.0.0.0:5004",), "offline", cam),
        ]

    def clients(self) -> list[ClientInfo]:
        return list(self._clients.values())

    def proxies(self) -> list[ProxyInfo]:
        return [p for p in self._proxies if p.client_id in self._clients or p.status == "offline"]

    def kick_client(self, client_id: str) -> bool:
        if self._clients.pop(client_id, None) is None:
            return False
        self.kicked.append(client_id)
        return True

    def close_proxy(self, client_id: str, name: str) -> bool:
        return False


async def test_dashboard_browser_shows_clients_and_kicks_one(screenshots: Path) -> None:
    """The page lists clients and proxies; Kick removes the client from the live table."""
    async with asyncio.timeout(TIMEOUT):
        stats = ServerStats()
        view = FakeServerView(stats)
        app = build_dashboard_app(view, stats, user="admin", password="pw", enable_prometheus=True)
        async with serve_app(app) as base, async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                context = await browser.new_context(
                    http_credentials={"username": "admin", "password": "pw"},
                    viewport={"width": 1280, "height": 800},
                )
                page = await context.new_page()
                await page.goto(base + "/")
                rows = page.get_by_test_id("client-row")
                await expect(rows).to_have_count(2)
                await expect(rows.first).to_contain_text("laptop-1")
                await expect(page.get_by_test_id("proxy-row")).to_have_count(3)
                await expect(page.get_by_test_id("live-status")).to_contain_text("live")
                await expect(page.get_by_test_id("stat-clients")).to_have_text("2")
                await page.screenshot(path=str(screenshots / "dashboard.png"), full_page=True)

                laptop = page.locator('[data-testid="client-row"][data-client-id="laptop-1"]')
                await laptop.get_by_test_id("kick-button").click()
                await expect(laptop).to_have_count(0)
                await expect(rows).to_have_count(1)
                await expect(page.get_by_test_id("toast")).to_contain_text("Kicked laptop-1")
                assert view.kicked == ["laptop-1"]
                await page.screenshot(
                    path=str(screenshots / "dashboard-after-kick.png"), full_page=True
                )
                await context.close()
            finally:
                await browser.close()
