"""Capture while the client is offline: real tunneld and tunnelc, webhooks sent with curl.

tunnelc stops; three webhooks arrive and tunneld answers them from the proxy's fallback and
stores them; a fourth finds the store full and gets 503. tunnelc starts again: the three reach
the app in order, marked delivered late, and the inspector lists them as such.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any, Final

import aiohttp
import pytest
from aiohttp import web

from tests.e2e.test_inspector_e2e import TOKEN, RecordingApp, client_toml
from tests.support.browser import serve_app
from tests.support.curl import curl, resolve
from tests.support.peers import reserve_port, tools_unavailable_reason
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


class GatedApp(RecordingApp):
    """A RecordingApp that holds its answers to late deliveries until `gate` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        response = await super().handle(request)
        if "X-Tunnelkit-Delivered-Late" in request.headers:
            await self.gate.wait()
        return response


async def test_offline_capture_survives_tunneld_restarts_and_delivers_in_order(
    run_tunneld: Any, run_tunnelc: Any
) -> None:
    """Client offline, 3 webhooks, tunneld restarted, a 4th: all 4 delivered in order, and a
    live one sent during the delivery after them. Then tunneld stops while the client is
    online: the restarted tunneld still parks the route."""
    local = GatedApp()
    control_port = reserve_port(socket.SOCK_STREAM)
    vhost_port = reserve_port(socket.SOCK_STREAM)
    server_config = (
        f'bindAddr = "127.0.0.1"\nbindPort = {control_port}\nvhostHTTPPort = {vhost_port}\n'
        f'subDomainHost = "{DOMAIN}"\nauth.token = "{TOKEN}"\nlog.level = "debug"\n'
    )
    async with asyncio.timeout(TIMEOUT_S * 2), serve_app(local.app()) as local_url:
        first = await run_tunneld(server_config)
        fingerprint = await first.fingerprint()
        local_port = int(local_url.rsplit(":", 1)[1])
        config = client_toml(control_port, fingerprint, local_port) + OFFLINE_KEYS
        client = await run_tunnelc(config)
        public = await client.proxy_endpoint("hook")
        assert (await post(public, '{"n": 0}'))[0] == 200
        await local.wait_count(1)

        await client.terminate()
        await first.wait_for(r"client offline: tunneld answers and stores requests with 200")
        for n in (1, 2, 3):
            assert await post(public, f'{{"n": {n}}}') == (200, "success", "stored")
        await first.terminate()
        second = await run_tunneld(server_config)
        await second.wait_for(r"1 parked routes of offline clients restored")
        assert await post(public, '{"n": 4}') == (200, "success", "stored")
        assert len(local.seen) == 1

        again = await run_tunnelc(config)
        await local.wait_count(2)  # the first stored one reached the app, which holds it
        live = asyncio.create_task(post(public, '{"n": 99}'))
        try:
            await second.wait_for(r"proxy=hook\] a request waits for the stored ones")
            local.gate.set()
            assert (await live)[0] == 200
        finally:
            live.cancel()
            await asyncio.gather(live, return_exceptions=True)
        await second.wait_for(r"delivered 4 stored requests")
        late = (await local.wait_count(6))[1:5]
        assert [s.body for s in late] == [f'{{"n": {n}}}'.encode() for n in (1, 2, 3, 4)]
        assert all("X-Tunnelkit-Delivered-Late" in s.headers for s in late)
        stamps = [float(s.headers["X-Tunnelkit-Delivered-Late"]) for s in late]
        assert stamps == sorted(stamps)
        assert local.seen[5].body == b'{"n": 99}'  # the live one, after the stored ones

        # tunneld stops while the client is online: the route is parked for the next start.
        mark = again.line_count
        await second.terminate()
        await again.wait_for("disconnected from the server", since=mark)
        await again.terminate()
        third = await run_tunneld(server_config)
        await third.wait_for(r"1 parked routes of offline clients restored")
        assert await post(public, '{"n": 5}') == (200, "success", "stored")
        await run_tunnelc(config)
        await third.wait_for(r"delivered 1 stored requests")
        assert (await local.wait_count(7))[6].body == b'{"n": 5}'


async def test_offline_capture_502_page_says_what_happens(
    run_tunneld: Any, run_tunnelc: Any
) -> None:
    """The local app down: the 502 page says tunneld answers and stores while offline, or
    (without the offline keys) that it answers 404 and keeps nothing."""
    async with asyncio.timeout(TIMEOUT_S):
        server = await run_tunneld(
            'bindAddr = "127.0.0.1"\nbindPort = 0\nvhostHTTPPort = 0\n'
            f'subDomainHost = "{DOMAIN}"\nauth.token = "{TOKEN}"\n'
        )
        control = await server.control_address()
        fingerprint = await server.fingerprint()
        down = reserve_port(socket.SOCK_STREAM)  # nothing listens there
        pages = []
        for extra in (OFFLINE_KEYS, ""):
            client = await run_tunnelc(client_toml(control.port, fingerprint, down) + extra)
            public = await client.proxy_endpoint("hook")
            result = await curl(*resolve(public.host, public.port), f"{public.url}/hook")
            pages.append(result.stdout.decode())
            mark = server.line_count
            await client.terminate()
            await server.wait_for(r"proxy=hook\] closed: session ended", since=mark)
        with_capture, without = pages
        assert "502 Bad Gateway" in with_capture and "connection refused" in with_capture
        assert "tunneld answers 200 and stores each request (up to 100 requests" in with_capture
        assert "does not answer for it (404) and keeps no requests" in without
