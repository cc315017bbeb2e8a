"""Mock and catch rules on a real tunnelc, made and toggled from the inspector page in Chromium."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Final

import aiohttp
import pytest
from playwright.async_api import async_playwright, expect

from tests.e2e.test_inspector_e2e import tunnel_to
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, requires_chromium
from tests.support.curl import curl, resolve
from tests.support.peers import tools_unavailable_reason
from tests.support.procs import INSPECTOR_READY, Endpoint

TIMEOUT_S: Final = 90.0

pytestmark = pytest.mark.skipif(
    tools_unavailable_reason("curl") is not None, reason="these tests drive the tunnel with curl"
)


async def hit(public: Endpoint, *paths: str) -> list[tuple[int, str]]:
    """POST to each path on ONE curl connection (keep-alive); (status, body) for each."""
    args: list[str] = [*resolve(public.host, public.port)]
    for index, path in enumerate(paths):
        if index:
            args.append("--next")
        args += [*resolve(public.host, public.port), "-d", "x=1", "-w", "\n%{http_code}\n"]
        args.append(f"{public.url}{path}")
    result = await curl(*args)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().split("\n")
    out: list[tuple[int, str]] = []
    body: list[str] = []
    for line in lines:
        if line.isdigit() and len(line) == 3:
            out.append((int(line), "\n".join(body)))
            body = []
        elif line:
            body.append(line)
    return out


@pytest.mark.browser
@requires_chromium
async def test_inspector_mock_rule_toggled_from_the_page(
    run_tunneld: Any, run_tunnelc: Any, screenshots: Path, patient_expect: None
) -> None:
    """A 500 mock made in the page answers without the app; off again, the app answers;
    a catch rule answers 200; per request on a keep-alive connection; the rules, as toggled,
    survive a tunnelc restart and toggle again from the new page."""
    async with (
        asyncio.timeout(TIMEOUT_S),
        tunnel_to(run_tunneld, run_tunnelc) as (tunnel, local),
        async_playwright() as playwright,
    ):
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1360, "height": 900})
            await page.goto(tunnel.inspector + "/")
            await expect(page.get_by_test_id("live-status")).to_have_text("live")
            await page.get_by_test_id("rules-button").click()
            await expect(page.get_by_test_id("rule-proxy")).to_have_value("hook")
            await page.get_by_test_id("rule-method").fill("POST")
            await page.get_by_test_id("rule-path").fill("/pay*")
            await page.get_by_test_id("rule-status").fill("500")
            await page.get_by_test_id("rule-body").fill("mocked failure")
            await page.get_by_test_id("rule-add").click()
            rules = page.get_by_test_id("rule-row")
            await expect(rules).to_have_count(1)
            await expect(rules.first).to_have_attribute("data-enabled", "true")

            # One keep-alive connection: the first request goes to the app, the second is mocked.
            answers = await hit(tunnel.public, "/other", "/pay/now?id=7")
            assert answers[0][0] == 200 and "success" in answers[0][1]
            assert answers[1] == (500, "mocked failure")
            assert [seen.path for seen in await local.wait_count(1)] == ["/other"]
            rows = page.get_by_test_id("request-row")
            await expect(rows).to_have_count(2)
            await expect(rows.first.get_by_test_id("row-mocked")).to_have_text("mock rule #1")
            await expect(rows.first.get_by_test_id("row-status")).to_have_text("500")
            await page.screenshot(path=str(screenshots / "inspector-mock-on.png"), full_page=True)

            # Off from the page: the app answers again.
            await rules.first.get_by_test_id("rule-toggle").uncheck()
            await expect(rules.first).to_have_attribute("data-enabled", "false")
            assert (await hit(tunnel.public, "/pay/now"))[0][0] == 200
            assert [seen.path for seen in await local.wait_count(2)][-1] == "/pay/now"

            # A catch rule records and answers 200 without the app.
            await page.get_by_test_id("rule-path").fill("/catch-me")
            await page.get_by_test_id("rule-action").select_option("catch")
            await page.get_by_test_id("rule-add").click()
            await expect(rules).to_have_count(2)
            assert await hit(tunnel.public, "/catch-me") == [(200, "")]
            await expect(rows.first.get_by_test_id("row-mocked")).to_have_text("catch rule #2")
            assert len(local.seen) == 2

            # A bad rule is refused with a reason.
            await page.get_by_test_id("rule-path").fill("no-slash")
            await page.get_by_test_id("rule-add").click()
            await expect(page.get_by_test_id("rule-error")).to_contain_text("path must start")

            # On again from the page, then tunnelc restarts: the rules are still there, as left.
            await rules.first.get_by_test_id("rule-toggle").check()
            await expect(rules.first).to_have_attribute("data-enabled", "true")
            assert await hit(tunnel.public, "/pay/now") == [(500, "mocked failure")]
            await tunnel.client.wait_for(r"inspector history in \S+")
            await tunnel.client.terminate()
            assert tunnel.client.config_path is not None
            again = await run_tunnelc(tunnel.client.config_path.read_text())
            await again.wait_for(r"2 mock rules restored from the history")
            found = await again.wait_for(INSPECTOR_READY)
            public = await again.proxy_endpoint("hook")
            inspector = f"http://127.0.0.1:{found['port']}"
            await page.goto(inspector + "/")
            await expect(page.get_by_test_id("live-status")).to_have_text("live")
            await page.get_by_test_id("rules-button").click()
            await expect(rules).to_have_count(2)
            await expect(rules.first).to_have_attribute("data-enabled", "true")
            assert await hit(public, "/pay/now") == [(500, "mocked failure")]
            await rules.first.get_by_test_id("rule-toggle").uncheck()
            await expect(rules.first).to_have_attribute("data-enabled", "false")
            assert (await hit(public, "/pay/now"))[0][0] == 200
            assert len(await local.wait_count(3)) == 3
            await page.screenshot(path=str(screenshots / "inspector-mock-restart.png"))
        finally:
            await browser.close()

        async with aiohttp.ClientSession(inspector) as http:
            async with http.get("/api/mocks") as response:
                listed = (await response.json())["rules"]
            assert [(r["id"], r["hits"], r["enabled"]) for r in listed] == [
                (1, 1, False),  # hits count since this start
                (2, 0, True),
            ]
            async with http.post("/api/mocks/2/delete") as response:
                assert response.status == 200
            assert (await hit(public, "/catch-me"))[0][0] == 200
            assert len(await local.wait_count(4)) == 4
            async with http.post("/api/mocks", json={"proxy": "hook", "path": "/x"}) as response:
                assert (await response.json())["id"] == 3  # ids are not reused after a restart
