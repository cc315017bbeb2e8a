"""The users page in a real Chromium against a real tunneld, its user store and a real tunnelc:
what the operator sees is the live server, and the buttons act on real sessions."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from playwright.async_api import async_playwright, expect

from tests.e2e.test_tcp_e2e import tcp_proxy
from tests.e2e.test_users_e2e import (
    WRONG_TOKEN,
    add_user,
    user_client_toml,
    users_cli,
    users_server_toml,
)
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, requires_chromium
from tests.support.echo import tcp_echo_server
from tests.support.procs import DASHBOARD_READY

pytestmark = [pytest.mark.browser, requires_chromium]


async def test_users_dashboard_shows_live_sessions_and_acts_on_them(
    run_tunneld, run_tunnelc, tmp_path: Path, screenshots: Path, patient_expect: None
) -> None:
    """alice shows online with her session, proxy, bandwidth quota and last-seen time (no
    traffic stored yet says so); Disable ends her real
    session and keeps her client out; Rotate shows bob's new token once, and it logs in."""
    store = tmp_path / "users.db"
    alice, bob = await add_user(store, "alice"), await add_user(store, "bob")
    await users_cli(store, "set-quota", "alice", "--bandwidth", "1MB", "--max-proxies", "3")
    extra = 'webServer.port = 0\nwebServer.user = "admin"\nwebServer.password = "pw"\n'
    async with asyncio.timeout(120), tcp_echo_server() as echo:
        server = await run_tunneld(users_server_toml(store, extra=extra))
        port = (await server.control_address()).port
        fp = await server.fingerprint()
        base = f"http://127.0.0.1:{(await server.wait_for(DASHBOARD_READY))['port']}"
        client = await run_tunnelc(
            user_client_toml(port, fp, "alice", alice, tcp_proxy("ssh", echo.port)),
            expect_exit_code=None,
        )
        await client.proxy_endpoint("ssh")
        async with async_playwright() as playwright:
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
                row = page.get_by_test_id("user-alice")
                await expect(row).to_contain_text("online")
                await expect(row).to_contain_text("alice.ssh")
                await expect(row).to_contain_text("bandwidth=1.0MB/s")
                await expect(row).to_contain_text("proxies<=3")
                await expect(row).not_to_contain_text("never")  # seen at login, shown at once
                await expect(page.get_by_test_id("traffic-empty")).to_be_visible()
                await expect(page.get_by_test_id("user-bob")).to_contain_text("never")
                await page.screenshot(path=str(screenshots / "users-live.png"), full_page=True)

                await page.get_by_test_id("disable-alice").click()
                await expect(row).to_have_attribute("data-state", "disabled")
                await server.wait_for(r"dropping client \S+ of user 'alice': user 'alice' is")
                await client.wait_for(r"login refused: user 'alice' is disabled", 30)

                await page.get_by_test_id("rotate-bob").click()
                await expect(page.get_by_test_id("token-dialog")).to_be_visible()
                token = (await page.get_by_test_id("token-value").text_content() or "").strip()
                assert token.startswith("tku_") and token != bob
                listing = await page.evaluate("fetch('api/users').then(r => r.text())")
                assert token not in listing and json.loads(listing)[0]["name"] == "alice"
                await context.close()
            finally:
                await browser.close()
        await run_tunnelc(user_client_toml(port, fp, "bob", token, ""))
        old = await run_tunnelc(
            user_client_toml(port, fp, "bob", bob, ""), wait_ready=False, expect_exit_code=1
        )
        await old.wait_for(WRONG_TOKEN)
        assert await old.wait(30) == 1
