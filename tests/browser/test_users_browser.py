"""The dashboard's users page in a real Chromium, over a real user store."""

import asyncio
import time
from pathlib import Path

import pytest
from playwright.async_api import async_playwright, expect

from protocol.userkey import user_login_key
from tests.browser.test_dashboard_browser import FakeServerView
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, requires_chromium, serve_app
from tunnel_server.stats import ServerStats
from tunnel_server.users.admin import SessionInfo, UsersAdmin
from tunnel_server.users.directory import UserDirectory
from tunnel_server.users.model import Quota
from tunnel_server.users.store import UserStore
from tunnel_server.web.dashboard import build_dashboard_app

pytestmark = [pytest.mark.browser, requires_chromium]

TIMEOUT = 60.0
DAY = 86400.0


async def test_users_browser_lists_disables_rotates_and_charts(
    screenshots: Path, tmp_path: Path
) -> None:
    """Users show with sessions, proxies, quota, usage and last seen; Disable and Rotate act
    on the store (the token is shown once); the traffic chart has one bar per stored day."""
    async with asyncio.timeout(TIMEOUT):
        store = UserStore(tmp_path / "users.db")
        store.add("alice")
        store.add("bob")
        store.set_quota("alice", Quota(max_proxies=3, bytes_per_day=5_000_000_000))
        now = time.time()
        for back in range(5):
            store.add_usage({"alice": (1000 * (back + 1), 500)}, now - back * DAY)
        store.touch(["alice"], now)
        directory = UserDirectory(store, None)
        changes: list[str] = []

        def changed() -> None:
            changes.append("x")
            directory.refresh(force=True)

        admin = UsersAdmin(
            directory,
            lambda: [SessionInfo("alice", "laptop-1", "203.0.113.7:51000", ("alice.web",))],
            changed,
        )
        stats = ServerStats()
        app = build_dashboard_app(
            FakeServerView(stats),
            stats,
            user="admin",
            password="pw",
            enable_prometheus=False,
            users=admin,
        )
        async with serve_app(app) as base, async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                context = await browser.new_context(
                    http_credentials={"username": "admin", "password": "pw"},
                    viewport={"width": 1280, "height": 800},
                )
                page = await context.new_page()
                await page.goto(base + "/")
                await page.get_by_test_id("users-link").click()
                await expect(page.get_by_test_id("users-count")).to_have_text("2")
                alice = page.get_by_test_id("user-alice")
                await expect(alice).to_contain_text("online")
                await expect(alice).to_contain_text("alice.web")
                await expect(alice).to_contain_text("laptop-1")
                await expect(alice).to_contain_text("proxies<=3")
                await expect(alice).to_contain_text("day=5G")
                await expect(page.get_by_test_id("user-bob")).to_contain_text("never")
                await expect(page.get_by_test_id("traffic-user")).to_have_text("alice")
                await expect(page.locator("#traffic-chart rect.bar")).to_have_count(5)
                await page.screenshot(path=str(screenshots / "users.png"), full_page=True)

                await page.get_by_test_id("disable-alice").click()
                await expect(alice).to_have_attribute("data-state", "disabled")
                record = store.get("alice")
                assert record is not None and not record.enabled

                await page.get_by_test_id("rotate-bob").click()
                dialog = page.get_by_test_id("token-dialog")
                await expect(dialog).to_be_visible()
                token = (await page.get_by_test_id("token-value").text_content() or "").strip()
                assert token.startswith("tku_")
                bob = store.get("bob")
                assert bob is not None and bob.login_key == user_login_key(token, "bob")
                await page.get_by_test_id("token-close").click()
                await expect(dialog).to_be_hidden()
                listing = await page.evaluate("fetch('api/users').then(r => r.text())")
                assert token not in listing
                assert len(changes) == 2
                await context.close()
            finally:
                await browser.close()
        store.close()
