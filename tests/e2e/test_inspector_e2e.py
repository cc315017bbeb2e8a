"""The request inspector of a real tunnelc: a webhook sent with curl through a real tunneld.

The local service is an in-process aiohttp app that records every request it gets, so each
test can check what a replay really delivered. The browser test drives the inspector page in
the system Chromium; the API tests use its JSON API and its server-sent events.
"""

from __future__ import annotations

import asyncio
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

from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, requires_chromium, serve_app
from tests.support.peers import run_command, tools_unavailable_reason
from tests.support.procs import INSPECTOR_READY, Endpoint, TunnelProcess

TOKEN: Final = "e2e-inspector-token"
DOMAIN_HOST: Final = "example.test"
TIMEOUT_S: Final = 45.0  # per test body
MAX_SSE_LINES: Final = 200  # lines read from the event stream before giving up
WECHAT_XML: Final = (
    "<xml><ToUserName><![CDATA[gh_0123456789ab]]></ToUserName>"
    "<FromUserName><![CDATA[oUpF8uMuAJO_M2pxb1Q9zNjWeS6o]]></FromUserName>"
    "<CreateTime>1700000000</CreateTime><MsgType><![CDATA[text]]></MsgType>"
    "<Content><![CDATA[hello through the tunnel]]></Content><MsgId>1234567890</MsgId></xml>"
)
# How the inspector pretty-prints WECHAT_XML: one element per line, two-space indent.
PRETTY_LINE: Final = "\n  <ToUserName><![CDATA[gh_0123456789ab]]></ToUserName>\n"

pytestmark = pytest.mark.skipif(
    tools_unavailable_reason("curl") is not None, reason="these tests drive the tunnel with curl"
)


@dataclass(frozen=True, slots=True)
class Seen:
    """One request as the local service received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class RecordingApp:
    """The proxy's local service: answers every request and records it."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self._changed = asyncio.Condition()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        async with self._changed:
            self.seen.append(Seen(request.method, request.path_qs, dict(request.headers), body))
            self._changed.notify_all()
        return web.Response(
            text="<xml><Content><![CDATA[success]]></Content></xml>", content_type="text/xml"
        )

    async def wait_count(self, count: int) -> list[Seen]:
        """Wait (the caller bounds it) until `count` requests have arrived."""
        async with self._changed:
            await self._changed.wait_for(lambda: len(self.seen) >= count)
        return self.seen

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app


@dataclass(frozen=True, slots=True)
class Tunnel:
    server: TunnelProcess
    client: TunnelProcess
    public: Endpoint  # http://hook.example.test:<vhost port>
    inspector: str  # base URL, no trailing slash


def server_toml() -> str:
    return (
        'bindAddr = "127.0.0.1"\nbindPort = 0\nvhostHTTPPort = 0\n'
        f'subDomainHost = "{DOMAIN_HOST}"\nauth.token = "{TOKEN}"\n'
    )


def client_toml(control_port: int, fingerprint: str, local_port: int) -> str:
    return (
        f'serverAddr = "127.0.0.1"\nserverPort = {control_port}\nauth.token = "{TOKEN}"\n'
        f'transport.tls.serverFingerprint = "{fingerprint}"\n'
        'inspect.addr = "127.0.0.1"\ninspect.port = 0\n\n'
        '[[proxies]]\nname = "hook"\ntype = "http"\nlocalIP = "127.0.0.1"\n'
        f'localPort = {local_port}\nsubdomain = "hook"\n'
    )


@contextlib.asynccontextmanager
async def tunnel_to(
    run_tunneld: Any,
    run_tunnelc: Any,
    *,
    local_app: web.Application | None = None,
    extra_client_toml: str = "",
) -> AsyncIterator[tuple[Tunnel, RecordingApp]]:
    """tunneld, a tunnelc with the http proxy `hook`, and the recording app behind it
    (or `local_app`; the RecordingApp is then unused). `extra_client_toml` is appended."""
    local = RecordingApp()
    async with serve_app(local_app or local.app()) as local_url:
        server = await run_tunneld(server_toml())
        control = await server.control_address()
        local_port = int(local_url.rsplit(":", 1)[1])
        client = await run_tunnelc(
            client_toml(control.port, await server.fingerprint(), local_port) + extra_client_toml
        )
        public = await client.proxy_endpoint("hook")
        found = await client.wait_for(INSPECTOR_READY)
        assert found["host"] == "127.0.0.1"
        yield Tunnel(server, client, public, f"http://127.0.0.1:{found['port']}"), local


async def send_webhook(public: Endpoint, path: str = "/wechat", body: str = WECHAT_XML) -> str:
    """POST `body` as text/xml through the tunnel with curl; return the response body."""
    return await run_command(
        [
            "curl",
            "--silent",
            "--show-error",
            "--fail",
            "--max-time",
            "10",
            "--resolve",
            f"{public.host}:{public.port}:127.0.0.1",
            "-X",
            "POST",
            "-H",
            "Content-Type: text/xml",
            "--data",
            body,
            f"{public.url}{path}",
        ]
    )


async def next_event(stream: aiohttp.ClientResponse, kind: str, **fields: object) -> dict[str, Any]:
    """Read server-sent events until one of `kind` whose exchange has all of `fields`."""
    for _ in range(MAX_SSE_LINES):
        line = await stream.content.readline()
        if not line:
            raise AssertionError("the inspector closed its event stream")
        if not line.startswith(b"data: "):
            continue  # retry:, keepalive comments, blank separators
        event = json.loads(line[len(b"data: ") :])
        exchange = event.get("exchange") or {}
        if event["kind"] == kind and all(exchange.get(k) == v for k, v in fields.items()):
            return event
    raise AssertionError(f"no {kind} event with {fields} in {MAX_SSE_LINES} lines")


@pytest.mark.browser
@requires_chromium
async def test_inspector_page_shows_live_webhook_and_replays_it(
    run_tunneld: Any, run_tunnelc: Any, screenshots: Path, patient_expect: None
) -> None:
    """A curl webhook appears live; its XML is pretty-printed; Replay and edits reach the app."""
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
            rows = page.get_by_test_id("request-row")
            await expect(rows).to_have_count(0)

            # The live path: the page is not reloaded; the request arrives over /api/events.
            reply = await send_webhook(tunnel.public)
            assert "success" in reply
            first = (await local.wait_count(1))[0]
            assert (first.method, first.path, first.body) == (
                "POST",
                "/wechat",
                WECHAT_XML.encode(),
            )
            await expect(rows).to_have_count(1)
            await expect(rows.first).to_contain_text("/wechat")
            await expect(rows.first.get_by_test_id("row-status")).to_have_text("200")

            await rows.first.click()
            detail = page.get_by_test_id("request-detail")
            await expect(detail.get_by_test_id("detail-method")).to_have_text("POST")
            await expect(detail.get_by_test_id("detail-path")).to_have_text("/wechat")
            await expect(detail.get_by_test_id("detail-status")).to_have_text("200 OK")
            pretty = detail.get_by_test_id("request-body").get_by_test_id("pretty-body")
            await expect(pretty).to_contain_text("hello through the tunnel")
            assert PRETTY_LINE in await pretty.inner_text()
            await expect(detail.get_by_test_id("request-headers")).to_contain_text("text/xml")
            await page.screenshot(path=str(screenshots / "e2e-inspector-detail.png"))

            await page.get_by_test_id("replay-button").click()
            await expect(page.get_by_test_id("replay-result")).to_contain_text("Replayed: 200")
            await expect(rows).to_have_count(2)
            replayed = (await local.wait_count(2))[1]
            assert (replayed.method, replayed.path, replayed.body) == (
                first.method,
                first.path,
                first.body,
            )
            assert replayed.headers["Content-Type"] == "text/xml"

            # Replay with edits: another path and one more header; the body stays.
            await page.get_by_test_id("edit-replay-button").click()
            await page.get_by_test_id("replay-path").fill("/wechat/edited?from=inspector")
            headers = page.get_by_test_id("replay-headers")
            await headers.fill(await headers.input_value() + "\nX-Replay-Edit: yes")
            await page.screenshot(path=str(screenshots / "e2e-inspector-edit.png"))
            await page.get_by_test_id("replay-send").click()
            await expect(rows).to_have_count(3)
            await expect(detail.get_by_test_id("detail-path")).to_have_text(
                "/wechat/edited?from=inspector"
            )
            edited = (await local.wait_count(3))[2]
            assert edited.path == "/wechat/edited?from=inspector"
            assert edited.headers["X-Replay-Edit"] == "yes"
            assert edited.body == first.body
            await expect(rows.first).to_contain_text("replay")
            await page.screenshot(path=str(screenshots / "e2e-inspector-list.png"), full_page=True)
        finally:
            await browser.close()


async def test_inspector_api_lists_details_replays_and_clears(
    run_tunneld: Any, run_tunnelc: Any
) -> None:
    """GET /api/requests and /api/requests/{id}, POST replay (plain, edited), POST clear clears."""
    async with (
        asyncio.timeout(TIMEOUT_S),
        tunnel_to(run_tunneld, run_tunnelc) as (tunnel, local),
        aiohttp.ClientSession(tunnel.inspector) as http,
        http.get("/api/events") as events,
    ):
        await next_event(events, "hello")
        await send_webhook(tunnel.public)
        done = await next_event(events, "updated", path="/wechat", status=200)
        request_id = done["exchange"]["id"]

        async with http.get("/api/requests") as response:
            assert response.status == 200
            listed = (await response.json())["requests"]
        assert [(r["id"], r["proxy"], r["method"], r["path"], r["status"]) for r in listed] == [
            (request_id, "hook", "POST", "/wechat", 200)
        ]
        assert listed[0]["request_size"] == len(WECHAT_XML)

        async with http.get(f"/api/requests/{request_id}") as response:
            assert response.status == 200
            detail = await response.json()
        headers = {name.lower(): value for name, value in detail["request_headers"]}
        assert headers["host"] == f"{tunnel.public.host}:{tunnel.public.port}"
        assert headers["content-type"] == "text/xml"
        assert detail["request_body"]["kind"] == "xml"
        assert detail["request_body"]["text"] == WECHAT_XML
        assert PRETTY_LINE in detail["request_body"]["pretty"]
        assert "success" in detail["response_body"]["text"]

        async with http.post(f"/api/requests/{request_id}/replay") as response:
            assert response.status == 200
            replay = await response.json()
        assert (replay["replay"], replay["replay_of"], replay["status"]) == (True, request_id, 200)
        first, again = (await local.wait_count(2))[:2]
        assert (again.method, again.path, again.body) == (first.method, first.path, first.body)

        edits = {"path": "/wechat/v2", "headers": [["Content-Type", "application/xml"]]}
        async with http.post(f"/api/requests/{request_id}/replay", json=edits) as response:
            assert response.status == 200
            assert (await response.json())["path"] == "/wechat/v2"
        edited = (await local.wait_count(3))[2]
        assert (edited.path, edited.headers["Content-Type"]) == ("/wechat/v2", "application/xml")
        assert edited.body == first.body

        async with http.post("/api/requests/999999/replay") as response:
            assert response.status == 404
        async with http.post(
            f"/api/requests/{request_id}/replay", json={"path": "no-slash"}
        ) as response:
            assert response.status == 400
        assert len(local.seen) == 3

        async with http.get("/api/requests") as response:
            assert len((await response.json())["requests"]) == 3
        async with http.post("/api/requests/clear") as response:
            assert response.status == 200
        await next_event(events, "cleared")
        async with http.get("/api/requests") as response:
            assert (await response.json())["requests"] == []
        async with http.get(f"/api/requests/{request_id}") as response:
            assert response.status == 404
        assert re.search(r"replayed POST /wechat/v2 -> 200", "\n".join(tunnel.client.lines()))

        # SIGTERM while a viewer still follows the live stream: the stream ends, exit code 0.
        assert await tunnel.client.terminate() == 0
        assert (await events.content.read()).strip() == b""  # at most the last separator
