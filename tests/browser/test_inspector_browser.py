"""The request inspector in a real Chromium: live list, detail, replay and edited replay."""

import asyncio
from pathlib import Path

import pytest
from aiohttp import web
from playwright.async_api import async_playwright, expect

from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, requires_chromium, serve_app
from tunnel_client.inspect.app import build_inspector_app
from tunnel_client.inspect.capture import HTTPCapture
from tunnel_client.inspect.replay import make_local_replayer
from tunnel_client.inspect.store import CaptureStore

pytestmark = [pytest.mark.browser, requires_chromium]

TIMEOUT = 60.0
READ_CHUNK_BYTES = 65536
WECHAT_XML = (
    "<xml><ToUserName><![CDATA[gh_0123456789ab]]></ToUserName>"
    "<FromUserName><![CDATA[oUpF8uMuAJO_M2pxb1Q9zNjWeS6o]]></FromUserName>"
    "<CreateTime>1700000000</CreateTime><MsgType><![CDATA[text]]></MsgType>"
    "<Content><![CDATA[hello from the browser test]]></Content><MsgId>1234567890</MsgId></xml>"
)


class Backend:
    """The proxy's local service on 127.0.0.1:0; records every request it gets."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, bytes]] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.seen.append((request.method, request.path_qs, body))
        return web.Response(
            text="<xml><Content><![CDATA[success]]></Content></xml>", content_type="text/xml"
        )

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app


async def relay_and_capture(store: CaptureStore, backend_url: str, raw_request: bytes) -> None:
    """Do what the client's splice does: relay one connection and feed copies to a capture."""
    host, port = backend_url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    capture = HTTPCapture(store, "web")
    try:
        writer.write(raw_request)
        capture.feed_request(bytes(raw_request))
        await writer.drain()
        while chunk := await reader.read(READ_CHUNK_BYTES):  # ends at EOF (Connection: close)
            capture.feed_response(bytes(chunk))
    finally:
        capture.close()
        writer.close()
        await writer.wait_closed()


async def test_inspector_browser_live_list_detail_and_replay(screenshots: Path) -> None:
    """A relayed webhook appears live; Replay sends it to the local service a second time."""
    async with asyncio.timeout(TIMEOUT):
        backend = Backend()
        store = CaptureStore(max_requests=100, max_body_bytes=64 * 1024)
        async with serve_app(backend.app()) as backend_url:
            host, port = backend_url.removeprefix("http://").rsplit(":", 1)
            replayer = make_local_replayer(
                lambda name: (host, int(port)) if name == "web" else None
            )
            inspector = build_inspector_app(store, replayer, user=None, password=None)
            async with serve_app(inspector) as base, async_playwright() as playwright:
                browser = await playwright.chromium.launch(
                    executable_path=CHROMIUM, args=CHROMIUM_ARGS
                )
                try:
                    page = await browser.new_page(viewport={"width": 1360, "height": 900})
                    await page.goto(base + "/")
                    await expect(page.get_by_test_id("live-status")).to_have_text("live")
                    rows = page.get_by_test_id("request-row")
                    await expect(rows).to_have_count(0)

                    # The live path: a request relayed after the page loaded shows up by itself.
                    body = WECHAT_XML.encode()
                    raw = (
                        b"POST /wechat/callback?signature=4f1c&timestamp=1700000000 HTTP/1.1\r\n"
                        b"Host: web.example.com\r\nContent-Type: text/xml\r\n"
                        b"User-Agent: Mozilla/4.0\r\nConnection: close\r\n"
                        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
                    )
                    await relay_and_capture(store, backend_url, raw)
                    assert len(backend.seen) == 1
                    await expect(rows).to_have_count(1)
                    await expect(rows.first).to_contain_text("/wechat/callback")
                    await expect(rows.first.get_by_test_id("row-status")).to_have_text("200")

                    await rows.first.click()
                    detail = page.get_by_test_id("request-detail")
                    await expect(detail.get_by_test_id("detail-path")).to_contain_text(
                        "/wechat/callback"
                    )
                    await expect(detail.get_by_test_id("request-body")).to_contain_text(
                        "<ToUserName><![CDATA[gh_0123456789ab]]></ToUserName>"
                    )
                    await page.screenshot(path=str(screenshots / "inspector-detail.png"))

                    await page.get_by_test_id("replay-button").click()
                    await expect(page.get_by_test_id("replay-result")).to_contain_text(
                        "Replayed: 200"
                    )
                    await expect(rows).to_have_count(2)
                    assert len(backend.seen) == 2
                    assert backend.seen[1] == backend.seen[0]

                    # Replay with edits: change the path and the body.
                    await page.get_by_test_id("edit-replay-button").click()
                    await page.get_by_test_id("replay-path").fill("/wechat/edited")
                    await page.get_by_test_id("replay-body").fill("<xml><Edited>1</Edited></xml>")
                    await page.screenshot(path=str(screenshots / "inspector-edit.png"))
                    await page.get_by_test_id("replay-send").click()
                    await expect(rows).to_have_count(3)
                    await expect(page.get_by_test_id("detail-path")).to_have_text("/wechat/edited")
                    assert backend.seen[2] == (
                        "POST",
                        "/wechat/edited",
                        b"<xml><Edited>1</Edited></xml>",
                    )
                    await page.screenshot(path=str(screenshots / "inspector-list.png"))

                    await page.get_by_test_id("clear-button").click()
                    await expect(rows).to_have_count(0)
                finally:
                    await browser.close()
