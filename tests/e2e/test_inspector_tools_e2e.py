"""Find, compare and export in the inspector of a real tunnelc, driven in Chromium and by API.

Webhooks go through a real tunneld with curl; the page is the real inspector page.
"""

from __future__ import annotations

import asyncio
import json
import shlex
from pathlib import Path
from typing import Any, Final

import aiohttp
import pytest
from playwright.async_api import async_playwright, expect

from tests.e2e.test_inspector_e2e import next_event, send_webhook, tunnel_to
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, requires_chromium
from tests.support.curl import curl, resolve
from tests.support.har import har_errors
from tests.support.peers import tools_unavailable_reason
from tests.support.procs import Endpoint

TIMEOUT_S: Final = 90.0

pytestmark = pytest.mark.skipif(
    tools_unavailable_reason("curl") is not None, reason="these tests drive the tunnel with curl"
)


async def post_json(public: Endpoint, path: str, payload: object) -> None:
    """POST `payload` as JSON through the tunnel with curl."""
    result = await curl(
        *resolve(public.host, public.port),
        "--fail",
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        json.dumps(payload),
        f"{public.url}{path}",
    )
    assert result.returncode == 0, result.stderr


async def test_inspector_api_filters_diffs_and_exports(run_tunneld: Any, run_tunnelc: Any) -> None:
    """/api/requests filters; /api/diff is JSON-aware; HAR validates; curl replays for real."""
    async with (
        asyncio.timeout(TIMEOUT_S),
        tunnel_to(run_tunneld, run_tunnelc) as (tunnel, local),
        aiohttp.ClientSession(tunnel.inspector) as http,
        http.get("/api/events", params={"path": "/orders"}) as events,
    ):
        await next_event(events, "hello")
        await post_json(tunnel.public, "/orders?id=1", {"id": 1, "total": 10, "items": ["a"]})
        await post_json(tunnel.public, "/orders?id=2", {"items": ["a", "b"], "total": 10, "id": 2})
        await send_webhook(tunnel.public, "/wechat")
        first = await next_event(events, "updated", path="/orders?id=1", status=200)
        second = await next_event(events, "updated", path="/orders?id=2", status=200)
        await local.wait_count(3)

        async def listed(**params: str) -> list[str]:
            async with http.get("/api/requests", params=params) as response:
                assert response.status == 200, await response.text()
                return [r["path"] for r in (await response.json())["requests"]]

        assert await listed(path="/orders") == ["/orders?id=2", "/orders?id=1"]
        assert await listed(q='"b"') == ["/orders?id=2"]
        assert await listed(q="hello through") == ["/wechat"]
        assert await listed(method="GET") == []
        assert await listed(status="2xx", proxy="hook") == [
            "/wechat",
            "/orders?id=2",
            "/orders?id=1",
        ]
        async with http.get("/api/requests", params={"status": "7xx"}) as response:
            assert response.status == 400
            assert "filter 'status'" in (await response.json())["error"]

        a, b = first["exchange"]["id"], second["exchange"]["id"]
        async with http.get(f"/api/requests/{a}") as response:
            assert (await response.json())["query"] == [["id", "1"]]
        async with http.get("/api/diff", params={"a": str(a), "b": str(b)}) as response:
            diff = await response.json()
        assert diff["query"] == [{"name": "id", "change": "changed", "a": "1", "b": "2"}]
        assert [(c["path"], c["change"]) for c in diff["request_body"]["changes"]] == [
            ("$.id", "changed"),
            ("$.items[1]", "added"),
        ]

        async with http.get("/api/har", params={"ids": f"{a},{b}"}) as response:
            assert "attachment" in response.headers["Content-Disposition"]
            har = json.loads(await response.text())
        assert har_errors(har) == []
        assert [e["request"]["url"] for e in har["log"]["entries"]] == [
            f"{tunnel.public.url}/orders?id=1",
            f"{tunnel.public.url}/orders?id=2",
        ]
        async with http.get("/api/har", params={"q": "wechat"}) as response:
            filtered = json.loads(await response.text())
        assert har_errors(filtered) == [] and len(filtered["log"]["entries"]) == 1

        async with http.get(f"/api/requests/{a}/raw") as response:
            raw = await response.read()
        assert raw.startswith(b"POST /orders?id=1 HTTP/1.1\r\n")
        assert b"\r\nHTTP/1.1 200 OK\r\n" in raw

        # The copied curl command, run for real, delivers the same request again.
        async with http.get(f"/api/requests/{a}/curl") as response:
            command = (await response.text()).strip()
        argv = shlex.split(command)
        result = await curl(*resolve(tunnel.public.host, tunnel.public.port), *argv[1:])
        assert result.returncode == 0, result.stderr
        again = (await local.wait_count(4))[3]
        original = local.seen[0]
        assert (again.method, again.path, again.body) == (
            original.method,
            original.path,
            original.body,
        )


@pytest.mark.browser
@requires_chromium
async def test_inspector_page_filters_links_compares_and_exports_har(
    run_tunneld: Any, run_tunnelc: Any, screenshots: Path, patient_expect: None
) -> None:
    """In Chromium: a 5xx filter in the address bar, a deep link, query params, a diff, HAR."""
    async with (
        asyncio.timeout(TIMEOUT_S),
        tunnel_to(run_tunneld, run_tunnelc) as (tunnel, local),
        async_playwright() as playwright,
    ):
        await post_json(tunnel.public, "/orders?id=1&src=shop", {"id": 1, "total": 10})
        await post_json(tunnel.public, "/orders?id=2", {"id": 2, "total": 10})
        await send_webhook(tunnel.public, "/wechat")
        await local.wait_count(3)
        async with aiohttp.ClientSession(tunnel.inspector) as http:
            async with http.get("/api/requests", params={"path": "/orders?id=1"}) as response:
                first_id = (await response.json())["requests"][0]["id"]

        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1360, "height": 900})
            rows = page.get_by_test_id("request-row")

            # A filtered view is a link: the filter comes from the address.
            await page.goto(tunnel.inspector + "/?status=5xx")
            await expect(page.get_by_test_id("live-status")).to_have_text("live")
            await expect(page.get_by_test_id("filter-status")).to_have_value("5xx")
            await expect(rows).to_have_count(0)
            await expect(page.get_by_test_id("limits")).to_contain_text("on disk")
            await expect(page.get_by_test_id("limits")).to_contain_text("64.0 KiB")
            await page.get_by_test_id("filter-status").fill("")
            await page.get_by_test_id("filter-path").fill("/orders")
            await expect(rows).to_have_count(2)
            await expect(page).to_have_url(f"{tunnel.inspector}/?path=%2Forders")
            # A live request that does not match the filter stays out of the list.
            await send_webhook(tunnel.public, "/wechat-again")
            await local.wait_count(4)
            await page.get_by_test_id("filter-q").fill("total")
            await expect(rows).to_have_count(2)

            # A deep link opens one request, with its query parameters parsed.
            await page.goto(f"{tunnel.inspector}/#/requests/{first_id}")
            detail = page.get_by_test_id("request-detail")
            await expect(detail.get_by_test_id("detail-path")).to_have_text("/orders?id=1&src=shop")
            params = detail.get_by_test_id("query-params")
            await expect(params).to_contain_text("src")
            await expect(params).to_contain_text("shop")
            await page.screenshot(path=str(screenshots / "inspector-deep-link.png"))

            # Tick the two orders and compare them.
            await expect(rows).to_have_count(4)
            order_rows = rows.filter(has_text="/orders")
            await order_rows.nth(0).get_by_test_id("row-pick").check()
            await order_rows.nth(1).get_by_test_id("row-pick").check()
            await page.get_by_test_id("compare-button").click()
            diff = page.get_by_test_id("diff-view")
            await expect(diff.get_by_test_id("diff-request-body-json")).to_contain_text("$.id")
            await expect(diff.get_by_test_id("diff-query")).to_contain_text("src")
            await page.screenshot(path=str(screenshots / "inspector-diff.png"))

            # Export the ticked pair as HAR through the page's download.
            async with page.expect_download() as info:
                await page.get_by_test_id("har-button").click()
            download = await info.value
            saved = Path(await download.path())
            har = json.loads(await asyncio.to_thread(saved.read_text, encoding="utf-8"))
            assert har_errors(har) == []
            assert [e["request"]["queryString"][0]["value"] for e in har["log"]["entries"]] == [
                "1",
                "2",
            ]
        finally:
            await browser.close()
