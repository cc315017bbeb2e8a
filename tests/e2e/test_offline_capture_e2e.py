"""Capture while the client is offline: real tunneld and tunnelc, webhooks sent with curl.

tunnelc stops; three webhooks arrive and tunneld answers them from the proxy's fallback and
stores them; a fourth finds the store full and gets 503. tunnelc starts again: the three reach
the app in order, marked delivered late, and the inspector lists them as such.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

import aiohttp
import pytest

from tests.e2e.test_inspector_e2e import TOKEN, RecordingApp, client_toml
from tests.support.browser import serve_app
from tests.support.curl import curl, resolve
from tests.support.peers import tools_unavailable_reason
from tests.support.procs import INSPECTOR_READY, Endpoint

TIMEOUT_S: Final = 90.0
DOMAIN: Final = "example.test"
OFFLINE_KEYS: Final = 'offlineCapture = true\nofflineStatus = 200\nofflineBody = "success"\n'

pytestmark = pytest.mark.skipif(
    tools_unavailable_reason("curl") is not None, reason="these tests drive the tunnel with curl"
)


async def post(public: Endpoint, body: str) -> tuple[int, str, str]:
    """POST `body`; (status, response body, X-Tunnelkit-Offline header)."""
    result = await curl(
        *resolve(public.host, public.port),
        "-i",
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        body,
        f"{public.url}/hook",
    )
    assert result.returncode == 0, result.stderr
    head, _, text = result.stdout.decode().partition("\r\n\r\n")
    status = int(head.split(" ", 2)[1])
    offline = ""
    for line in head.split("\r\n"):
        if line.lower().startswith("x-tunnelkit-offline:"):
            offline = line.split(":", 1)[1].strip()
    return status, text, offline


async def test_offline_capture_delivers_stored_webhooks_in_order_after_reconnect(
    run_tunneld: Any, run_tunnelc: Any
) -> None:
    """3 webhooks while offline are answered and stored, a 4th is refused (store full), and
    on reconnect the 3 reach the app in order, marked delivered late in the inspector."""
    local = RecordingApp()
    async with asyncio.timeout(TIMEOUT_S), serve_app(local.app()) as local_url:
        server = await run_tunneld(
            'bindAddr = "127.0.0.1"\nbindPort = 0\nvhostHTTPPort = 0\n'
            f'subDomainHost = "{DOMAIN}"\nauth.token = "{TOKEN}"\noffline.maxRequests = 3\n'
        )
        control = await server.control_address()
        config = (
            client_toml(control.port, await server.fingerprint(), int(local_url.rsplit(":", 1)[1]))
            + OFFLINE_KEYS
        )
        client = await run_tunnelc(config)
        public = await client.proxy_endpoint("hook")
        assert (await post(public, '{"n": 0}'))[:2] == (
            200,
            "<xml><Content><![CDATA[success]]></Content></xml>",
        )
        await local.wait_count(1)

        await client.terminate()
        await server.wait_for(r"client offline: tunneld answers and stores requests with 200")
        answers = [await post(public, f'{{"n": {n}}}') for n in (1, 2, 3, 4)]
        assert answers[:3] == [(200, "success", "stored")] * 3
        assert answers[3][0] == 503 and answers[3][2] == "not-stored"
        assert "store is full" in answers[3][1]
        assert len(local.seen) == 1  # nothing reached the app while it was offline

        again = await run_tunnelc(config)
        await server.wait_for(r"delivered 3 stored requests")
        seen = await local.wait_count(4)
        late = seen[1:]
        assert [s.body for s in late] == [b'{"n": 1}', b'{"n": 2}', b'{"n": 3}']
        assert all(s.path == "/hook" and "X-Tunnelkit-Delivered-Late" in s.headers for s in late)
        assert "X-Tunnelkit-Delivered-Late" not in seen[0].headers

        found = await again.wait_for(INSPECTOR_READY)
        async with aiohttp.ClientSession(f"http://127.0.0.1:{found['port']}") as http:
            for _ in range(100):  # the capture publishes as the responses finish
                async with http.get("/api/requests") as response:
                    listed = (await response.json())["requests"]
                late_rows = [r for r in listed if r["late"] and r["status"] == 200]
                if len(late_rows) == 3:
                    break
                await asyncio.sleep(0.1)
        assert [r["request_size"] for r in sorted(late_rows, key=lambda r: r["id"])] == [8, 8, 8]

        # Delivered requests leave the store: a second reconnect delivers nothing again.
        await again.terminate()
        await server.wait_for(r"client offline: tunneld answers")
        third = await run_tunnelc(config)
        await third.proxy_endpoint("hook")
        assert (await post(public, '{"n": 5}'))[:2] == (
            200,
            "<xml><Content><![CDATA[success]]></Content></xml>",
        )
        assert len(await local.wait_count(5)) == 5
