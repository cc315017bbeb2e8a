"""The real tunneld and tunnelc processes serving HTTP apps through the shared vhost port.

Every app is an in-process aiohttp server on 127.0.0.1:0 (`EchoApp`): it answers any request
with JSON describing what it received (method, path, headers, body length and SHA-256) and
keeps the last few requests, bodies included, for exact comparisons. It also has a WebSocket
echo, a slow route for 504s (held until the test releases it, never a sleep) and a streamed
download. Visitors are real clients: curl, http.client and aiohttp.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import hashlib
import http.client
import json
import socket
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp
from aiohttp import web

from tests.support.curl import curl, resolve
from tests.support.echo import pattern_chunks
from tests.support.peers import reserve_port
from tests.support.procs import ProcessGroup, TunnelProcess, oneliner_name

TOKEN: Final = "e2e-http-token"
SUB_DOMAIN_HOST: Final = "example.test"
MiB: Final = 1 << 20
MAX_KEPT_REQUESTS: Final = 32  # per app; older requests are dropped
MAX_KEPT_BODY_BYTES: Final = 1 * MiB  # per kept request; the rest is hashed, not kept
SLOW_ROUTE_HOLD_S: Final = 30.0  # the slow route answers when released, or after this
CLIENT_IO_TIMEOUT_S: Final = 15.0  # blocking http.client sockets and curl runs
# "At once": a route released by a stopping client answers 404 well within this.
PROMPT_S: Final = 2.0
CLIENT_DRAIN_S: Final = 5.0  # tunnelc's DRAIN_TIMEOUT_S: open requests get this long on SIGTERM


# -- the local apps ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Received:
    """One request as the local app saw it."""

    method: str
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]
    body: bytes  # the first MAX_KEPT_BODY_BYTES
    body_len: int
    sha256: str

    def header(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]


class EchoApp:
    """An aiohttp app on 127.0.0.1:0 that reports what it receives (see the module docstring)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = 0
        self.received: collections.deque[Received] = collections.deque(maxlen=MAX_KEPT_REQUESTS)
        self.release_slow = asyncio.Event()
        self.slow_started = asyncio.Event()  # a request is waiting in the slow route
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/ws", self._websocket)
        app.router.add_get("/slow", self._slow)
        app.router.add_get("/download", self._download)
        app.router.add_route("*", "/{tail:.*}", self._echo)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]

    async def close(self) -> None:
        self.release_slow.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _echo(self, request: web.Request) -> web.Response:
        digest = hashlib.sha256()
        kept = bytearray()
        total = 0
        async for piece in request.content.iter_chunked(256 * 1024):
            digest.update(piece)
            total += len(piece)
            if len(kept) < MAX_KEPT_BODY_BYTES:
                kept += piece[: MAX_KEPT_BODY_BYTES - len(kept)]
        seen = Received(
            method=request.method,
            path=request.path,
            query=request.query_string,
            headers=tuple(request.headers.items()),
            body=bytes(kept),
            body_len=total,
            sha256=digest.hexdigest(),
        )
        self.received.append(seen)
        return web.json_response(
            {
                "app": self.name,
                "method": seen.method,
                "path": seen.path,
                "query": seen.query,
                "headers": [list(pair) for pair in seen.headers],
                "body_len": seen.body_len,
                "sha256": seen.sha256,
            },
            headers={"X-App": self.name, "X-Served-By": f"app-{self.name}"},
        )

    async def _slow(self, request: web.Request) -> web.Response:
        self.slow_started.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SLOW_ROUTE_HOLD_S):
                await self.release_slow.wait()
        return web.Response(text="late\n")

    async def _download(self, request: web.Request) -> web.StreamResponse:
        size = int(request.query["bytes"])
        response = web.StreamResponse(headers={"Content-Length": str(size)})
        await response.prepare(request)
        for piece in pattern_chunks(size):
            await response.write(piece)
        await response.write_eof()
        return response

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str(f"hello from {self.name}")
        async for message in ws:
            if message.type is aiohttp.WSMsgType.TEXT:
                await ws.send_str(f"echo: {message.data}")
            elif message.type is aiohttp.WSMsgType.BINARY:
                await ws.send_bytes(message.data)
        return ws


@contextlib.asynccontextmanager
async def echo_apps(*names: str) -> AsyncIterator[list[EchoApp]]:
    """Start one EchoApp per name; stop them all on exit."""
    apps = [EchoApp(name) for name in names]
    try:
        for app in apps:
            await app.start()
        yield apps
    finally:
        for app in apps:
            await app.close()


# -- tunneld and tunnelc -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tunneld:
    """A running tunneld with its HTTP vhost, and what a client needs to reach it."""

    process: TunnelProcess
    control_port: int
    vhost_port: int
    fingerprint: str


def toml_lines(options: Mapping[str, object]) -> str:
    """`key = value` lines; JSON strings, ints and lists of strings are valid TOML values."""
    return "".join(f"{key} = {json.dumps(value)}\n" for key, value in options.items())


async def start_tunneld(run_tunneld: Any, **options: object) -> Tunneld:
    """tunneld on 127.0.0.1 with an HTTP vhost on a free port and subDomainHost example.test."""
    base: dict[str, object] = {
        "bindAddr": "127.0.0.1",
        "bindPort": 0,
        "vhostHTTPPort": 0,
        "subDomainHost": SUB_DOMAIN_HOST,
        "auth.token": TOKEN,
    }
    process = await run_tunneld(toml_lines(base | options))
    control = await process.control_address()
    vhost = await process.http_vhost_address()
    return Tunneld(process, control.port, vhost.port, await process.fingerprint())


def http_proxy(name: str, local_port: int, **options: object) -> str:
    """One `[[proxies]]` table of type http; options use frpc key names."""
    head = {"name": name, "type": "http", "localPort": local_port}
    return "[[proxies]]\n" + toml_lines(head | options)


def client_toml(server: Tunneld, *proxies: str) -> str:
    head = {
        "serverAddr": "127.0.0.1",
        "serverPort": server.control_port,
        "auth.token": TOKEN,
        "transport.tls.serverFingerprint": server.fingerprint,
        "inspect.enabled": False,
    }
    return toml_lines(head) + "".join(proxies)


# -- visitors ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


def basic_auth(user: str, password: str) -> dict[str, str]:
    """An Authorization header for HTTP basic auth."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return {"Authorization": f"Basic {token}"}


def header_values(echoed: Mapping[str, Any], name: str) -> list[str]:
    """The values of one request header, from an EchoApp JSON reply."""
    return [value for key, value in echoed["headers"] if key.lower() == name.lower()]


async def fetch(
    vhost_port: int,
    host: str,
    path: str = "/",
    *,
    headers: Mapping[str, str] | None = None,
) -> Reply:
    """One GET to the vhost on its own connection, with `Host: host`."""
    timeout = aiohttp.ClientTimeout(total=CLIENT_IO_TIMEOUT_S)
    async with (
        aiohttp.ClientSession(timeout=timeout) as http,
        http.get(
            f"http://127.0.0.1:{vhost_port}{path}", headers={"Host": host, **(headers or {})}
        ) as resp,
    ):
        return Reply(resp.status, dict(resp.headers), await resp.read())


async def raw_exchange(port: int, request: bytes) -> bytes:
    """Send raw bytes to the vhost and read until it closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


# -- tests ---------------------------------------------------------------------------------


async def test_webhook_curl_posts_xml_and_json_bodies_exactly(
    run_tunneld, run_tunnelc, tmp_path: Path
) -> None:
    """A webhook sender's XML and JSON POSTs reach the local app byte for byte via a subdomain."""
    xml = (
        "<xml><ToUserName><![CDATA[gh_123]]></ToUserName>"
        "<FromUserName><![CDATA[oUser]]></FromUserName><CreateTime>1700000000</CreateTime>"
        "<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[你好, tunnel & <friends>]]>"
        "</Content><MsgId>1234567890123456</MsgId></xml>"
    ).encode()
    payload = json.dumps({"event": "push", "ref": "refs/heads/main", "n": [1, 2, 3]}).encode()
    async with asyncio.timeout(30), echo_apps("wx") as (app,):
        server = await start_tunneld(run_tunneld)
        client = await run_tunnelc(client_toml(server, http_proxy("wx", app.port, subdomain="wx")))
        public = await client.proxy_endpoint("wx")
        assert public.url == f"http://wx.{SUB_DOMAIN_HOST}:{server.vhost_port}"
        url = f"{public.url}/hook?signature=abc&timestamp=1700000000&nonce=42"
        bodies = {"xml": (xml, "text/xml"), "json": (payload, "application/json")}
        for kind, (body, content_type) in bodies.items():
            body_file = tmp_path / f"body.{kind}"
            body_file.write_bytes(body)
            result = await curl(
                *resolve(f"wx.{SUB_DOMAIN_HOST}", server.vhost_port),
                "--fail",
                "-H",
                f"Content-Type: {content_type}",
                "--data-binary",
                f"@{body_file}",
                url,
            )
            assert result.returncode == 0, result.stderr
            echoed = json.loads(result.stdout)
            assert echoed["method"] == "POST" and echoed["path"] == "/hook"
            assert echoed["query"] == "signature=abc&timestamp=1700000000&nonce=42"
            assert echoed["sha256"] == hashlib.sha256(body).hexdigest()
            seen = app.received[-1]
            assert seen.body == body
            assert seen.header("Content-Type") == [content_type]
            assert seen.header("Content-Length") == [str(len(body))]


def _alternate_hosts(port: int, hosts: list[str], rounds: int) -> list[tuple[str, str, int]]:
    """On one keep-alive connection, GET / for each host in turn; (host, app, local port)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=CLIENT_IO_TIMEOUT_S)
    conn.connect()
    conn.auto_open = 0  # a reconnect would raise NotConnected instead of hiding a closed socket
    assert conn.sock is not None
    local = conn.sock.getsockname()[1]
    seen: list[tuple[str, str, int]] = []
    try:
        for _ in range(rounds):
            for host in hosts:
                conn.request("GET", f"/from/{host}", headers={"Host": host})
                resp = conn.getresponse()
                body = resp.read()
                assert resp.status == 200, body
                assert not resp.will_close, f"the vhost closed after {host}"
                assert conn.sock is not None
                seen.append((host, json.loads(body)["app"], conn.sock.getsockname()[1]))
    finally:
        conn.close()
    assert {port for _, _, port in seen} == {local}
    return seen


async def test_vhost_keepalive_connection_reaches_two_clients_by_host(
    run_tunneld, run_tunnelc
) -> None:
    """One keep-alive connection alternating two Hosts reaches two apps behind two clients."""
    async with asyncio.timeout(30), echo_apps("alpha", "beta") as (alpha, beta):
        server = await start_tunneld(run_tunneld)
        first = await run_tunnelc(
            client_toml(server, http_proxy("alpha", alpha.port, customDomains=["alpha.test"]))
        )
        second = await run_tunnelc(
            client_toml(server, http_proxy("beta", beta.port, customDomains=["beta.test"]))
        )
        await first.proxy_endpoint("alpha")
        await second.proxy_endpoint("beta")
        seen = await asyncio.to_thread(
            _alternate_hosts, server.vhost_port, ["alpha.test", "beta.test"], 3
        )
        assert [(host, app) for host, app, _ in seen] == [
            ("alpha.test", "alpha"),
            ("beta.test", "beta"),
        ] * 3
        assert [r.path for r in alpha.received] == ["/from/alpha.test"] * 3
        assert [r.path for r in beta.received] == ["/from/beta.test"] * 3


async def test_vhost_locations_route_by_longest_prefix_and_normalized_host(
    run_tunneld, run_tunnelc
) -> None:
    """/api goes to one app and / to another; a Host with a port and upper case still routes."""
    async with asyncio.timeout(30), echo_apps("api", "site") as (api, site):
        server = await start_tunneld(run_tunneld)
        client = await run_tunnelc(
            client_toml(
                server,
                http_proxy("api", api.port, customDomains=["shop.test"], locations=["/api"]),
                http_proxy("site", site.port, customDomains=["shop.test"], locations=["/"]),
            )
        )
        await client.proxy_endpoint("api")
        await client.proxy_endpoint("site")
        port = server.vhost_port
        cases = {
            ("shop.test", "/api"): "api",
            ("shop.test", "/api/orders?id=7"): "api",
            ("shop.test", "/"): "site",
            ("shop.test", "/about"): "site",
            (f"SHOP.Test:{port}", "/api/orders"): "api",
            (f"Shop.TEST:{port}", "/cart"): "site",
        }
        for (host, path), expected in cases.items():
            reply = await fetch(port, host, path)
            assert reply.status == 200, (host, path, reply.text)
            assert reply.json()["app"] == expected, (host, path)


async def test_vhost_header_rules_and_forwarded_headers_reach_the_app(
    run_tunneld, run_tunnelc
) -> None:
    """Host rewrite, requestHeaders/responseHeaders.set and X-Forwarded-*/X-Real-IP are applied."""
    async with asyncio.timeout(30), echo_apps("hdr") as (app,):
        server = await start_tunneld(run_tunneld)
        proxy = http_proxy(
            "hdr",
            app.port,
            customDomains=["hdr.test"],
            hostHeaderRewrite="internal.local:8080",
            **{
                "requestHeaders.set.X-From-Tunnel": "yes",
                "requestHeaders.set.X-Tenant": "acme",
                "responseHeaders.set.X-Served-By": "tunnelkit",
                "responseHeaders.set.Strict-Transport-Security": "max-age=60",
            },
        )
        client = await run_tunnelc(client_toml(server, proxy))
        await client.proxy_endpoint("hdr")
        host = f"hdr.test:{server.vhost_port}"
        reply = await fetch(
            server.vhost_port,
            host,
            "/h",
            headers={
                "X-Forwarded-For": "203.0.113.7, 198.51.100.2",
                "X-Forwarded-Proto": "https",  # a visitor's claim: replaced
                "X-Forwarded-Host": "evil.test",  # likewise
                "X-Real-IP": "10.9.9.9",  # likewise
                "X-Tenant": "visitor-says-otherwise",  # the rule wins
            },
        )
        assert reply.status == 200
        echoed = reply.json()
        assert header_values(echoed, "Host") == ["internal.local:8080"]
        assert header_values(echoed, "X-Forwarded-For") == ["203.0.113.7, 198.51.100.2, 127.0.0.1"]
        assert header_values(echoed, "X-Forwarded-Proto") == ["http"]
        assert header_values(echoed, "X-Forwarded-Host") == [host]
        assert header_values(echoed, "X-Real-IP") == ["127.0.0.1"]
        assert header_values(echoed, "X-From-Tunnel") == ["yes"]
        assert header_values(echoed, "X-Tenant") == ["acme"]
        assert reply.headers["X-Served-By"] == "tunnelkit"  # replaces the app's own value
        assert reply.headers["Strict-Transport-Security"] == "max-age=60"
        assert reply.headers["X-App"] == "hdr"  # other app headers pass through

        plain = await fetch(server.vhost_port, "hdr.test", "/plain")
        assert header_values(plain.json(), "X-Forwarded-For") == ["127.0.0.1"]


async def test_vhost_basic_auth_challenges_then_admits(run_tunneld, run_tunnelc) -> None:
    """Without (or with wrong) credentials: 401 + WWW-Authenticate; with them: 200, secret kept."""
    async with asyncio.timeout(30), echo_apps("private") as (app,):
        server = await start_tunneld(run_tunneld)
        proxy = http_proxy(
            "private",
            app.port,
            customDomains=["private.test"],
            httpUser="alice",
            httpPassword="s3cret pass",
        )
        client = await run_tunnelc(client_toml(server, proxy))
        await client.proxy_endpoint("private")
        port = server.vhost_port

        anonymous = await fetch(port, "private.test", "/")
        assert anonymous.status == 401
        assert anonymous.headers["WWW-Authenticate"].startswith("Basic realm=")
        wrong = await fetch(port, "private.test", "/", headers=basic_auth("alice", "nope"))
        assert wrong.status == 401
        assert len(app.received) == 0  # refused requests never reach the app

        result = await curl(
            *resolve("private.test", port),
            "--fail",
            "-u",
            "alice:s3cret pass",
            f"http://private.test:{port}/inside",
        )
        assert result.returncode == 0, result.stderr
        echoed = json.loads(result.stdout)
        assert echoed["path"] == "/inside"
        assert header_values(echoed, "Authorization") == []  # the tunnel's secret stays here


async def test_vhost_unknown_host_gets_a_404_page_naming_it(run_tunneld) -> None:
    """A Host nobody serves gets 404 with a page that names the host."""
    async with asyncio.timeout(20):
        server = await start_tunneld(run_tunneld)
        reply = await fetch(server.vhost_port, "nobody-here.test", "/x")
        assert reply.status == 404
        assert reply.headers["Content-Type"].startswith("text/html")
        assert "404 Not Found" in reply.text
        assert "nobody-here.test" in reply.text


async def test_vhost_custom_404_page_is_served(run_tunneld, tmp_path: Path) -> None:
    """custom404Page replaces the built-in page for unknown hosts."""
    page = tmp_path / "404.html"
    page.write_text("<html><body>Nothing to see at this tunnel</body></html>\n")
    async with asyncio.timeout(20):
        server = await start_tunneld(run_tunneld, custom404Page=str(page))
        reply = await fetch(server.vhost_port, "missing.test")
        assert reply.status == 404
        assert reply.body == page.read_bytes()


async def test_vhost_dead_local_service_gets_502_and_others_keep_working(
    run_tunneld, run_tunnelc
) -> None:
    """A proxy whose local service is down answers 502 at once; a live one still answers."""
    dead_port = reserve_port(socket.SOCK_STREAM)
    async with asyncio.timeout(30), echo_apps("live") as (app,):
        server = await start_tunneld(run_tunneld)
        client = await run_tunnelc(
            client_toml(
                server,
                http_proxy("dead", dead_port, customDomains=["dead.test"]),
                http_proxy("live", app.port, customDomains=["live.test"]),
            )
        )
        await client.proxy_endpoint("dead")
        await client.proxy_endpoint("live")
        started = time.monotonic()
        reply = await fetch(server.vhost_port, "dead.test", "/")
        assert reply.status == 502
        assert time.monotonic() - started < PROMPT_S
        assert "502 Bad Gateway" in reply.text and "dead.test" in reply.text
        assert (await fetch(server.vhost_port, "live.test", "/")).json()["app"] == "live"


async def test_vhost_stopped_client_fails_in_flight_requests_and_releases_its_route(
    run_tunneld, run_tunnelc
) -> None:
    """When tunnelc stops, an in-flight request that outlives its drain deadline gets a 502
    then, and its Host answers 404 at once after."""
    async with asyncio.timeout(40), echo_apps("gone") as (app,):
        server = await start_tunneld(run_tunneld, vhostHTTPTimeout=30)
        config = client_toml(server, http_proxy("gone", app.port, customDomains=["gone.test"]))
        client = await run_tunnelc(config)
        await client.proxy_endpoint("gone")
        assert (await fetch(server.vhost_port, "gone.test")).status == 200

        in_flight = asyncio.create_task(fetch(server.vhost_port, "gone.test", "/slow"))
        await app.slow_started.wait()
        started = time.monotonic()
        assert await client.terminate() == 0
        cut = await in_flight
        waited = time.monotonic() - started
        assert cut.status == 502, cut.text
        assert CLIENT_DRAIN_S - 1 <= waited < CLIENT_DRAIN_S + PROMPT_S  # drained, then cut
        assert "gone.test" in cut.text

        started = time.monotonic()
        reply = await fetch(server.vhost_port, "gone.test")
        assert (reply.status, time.monotonic() - started < PROMPT_S) == (404, True), reply.text
        assert "gone.test" in reply.text

        # A client that dies without a word: the server sees its connection close, not a
        # heartbeat timeout, and releases the route the same way.
        killed = await run_tunnelc(config, expect_exit_code=None)
        await killed.proxy_endpoint("gone")
        assert (await fetch(server.vhost_port, "gone.test")).status == 200
        mark = server.process.line_count
        killed.kill()
        await killed.wait()
        await server.process.wait_for(r"tunneld: client \S+ disconnected", PROMPT_S, since=mark)
        assert (await fetch(server.vhost_port, "gone.test")).status == 404


async def test_vhost_slow_app_gets_504_after_vhost_http_timeout(run_tunneld, run_tunnelc) -> None:
    """vhostHTTPTimeout = 1: an app that does not answer gets the visitor a 504 after ~1 s."""
    async with asyncio.timeout(30), echo_apps("slow") as (app,):
        server = await start_tunneld(run_tunneld, vhostHTTPTimeout=1)
        client = await run_tunnelc(
            client_toml(server, http_proxy("slow", app.port, customDomains=["slow.test"]))
        )
        await client.proxy_endpoint("slow")
        started = time.monotonic()
        reply = await fetch(server.vhost_port, "slow.test", "/slow")
        elapsed = time.monotonic() - started
        app.release_slow.set()
        assert reply.status == 504
        assert "504 Gateway Timeout" in reply.text
        assert 0.9 <= elapsed < 1 + PROMPT_S
        assert (await fetch(server.vhost_port, "slow.test", "/fast")).status == 200


async def test_vhost_malformed_request_gets_400_and_listener_keeps_serving(
    run_tunneld, run_tunnelc
) -> None:
    """Garbage request lines get 400 and a close; the listener goes on serving."""
    async with asyncio.timeout(30), echo_apps("ok") as (app,):
        server = await start_tunneld(run_tunneld)
        client = await run_tunnelc(
            client_toml(server, http_proxy("ok", app.port, customDomains=["ok.test"]))
        )
        await client.proxy_endpoint("ok")
        for garbage in (
            b"THIS IS NOT HTTP\r\n\r\n",
            b"GET / HTTP/9.Z\r\nHost: ok.test\r\n\r\n",
            b"GET /\x00 HTTP/1.1\r\nHost: ok.test\r\n\r\n",
        ):
            answer = await raw_exchange(server.vhost_port, garbage)
            assert answer.startswith(b"HTTP/1.1 400 "), (garbage, answer[:200])
        assert len(app.received) == 0
        answer = await raw_exchange(
            server.vhost_port, b"GET /after HTTP/1.1\r\nHost: ok.test\r\nConnection: close\r\n\r\n"
        )
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
        assert app.received[-1].path == "/after"


async def test_vhost_websocket_echoes_both_ways(run_tunneld, run_tunnelc) -> None:
    """A WebSocket through the vhost carries text and binary messages both ways."""
    async with asyncio.timeout(30), echo_apps("ws") as (app,):
        server = await start_tunneld(run_tunneld)
        client = await run_tunnelc(
            client_toml(server, http_proxy("ws", app.port, customDomains=["ws.test"]))
        )
        await client.proxy_endpoint("ws")
        timeout = aiohttp.ClientTimeout(total=CLIENT_IO_TIMEOUT_S)
        blob = bytes(range(256)) * 1024
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.ws_connect(
                f"http://127.0.0.1:{server.vhost_port}/ws", headers={"Host": "ws.test"}
            ) as ws,
        ):
            assert await ws.receive_str() == "hello from ws"  # app -> visitor unprompted
            for n in range(5):
                await ws.send_str(f"message {n}")
                assert await ws.receive_str() == f"echo: message {n}"
            await ws.send_bytes(blob)
            assert await ws.receive_bytes() == blob
            await ws.close()
        assert ws.close_code == aiohttp.WSCloseCode.OK


async def test_vhost_expect_100_continue_with_curl(
    run_tunneld, run_tunnelc, tmp_path: Path
) -> None:
    """curl's Expect: 100-continue gets its 100 through the tunnel, then the body is delivered."""
    body = bytes(range(256)) * 16 + b"tail"  # over 1 KiB
    body_file = tmp_path / "body.bin"
    body_file.write_bytes(body)
    async with asyncio.timeout(30), echo_apps("expect") as (app,):
        server = await start_tunneld(run_tunneld)
        client = await run_tunnelc(
            client_toml(server, http_proxy("expect", app.port, customDomains=["expect.test"]))
        )
        await client.proxy_endpoint("expect")
        result = await curl(
            *resolve("expect.test", server.vhost_port),
            "--verbose",
            "--fail",
            "-H",
            "Expect: 100-continue",
            # Without a 100 curl would wait this long and then send anyway: too slow to pass.
            "--expect100-timeout",
            "10",
            "--data-binary",
            f"@{body_file}",
            f"http://expect.test:{server.vhost_port}/upload",
        )
        assert result.returncode == 0, result.stderr
        assert "< HTTP/1.1 100 Continue" in result.stderr
        assert result.elapsed_s < PROMPT_S
        assert app.received[-1].body == body
        assert app.received[-1].header("Expect") == ["100-continue"]


async def test_vhost_claimed_domain_is_refused_until_its_owner_stops(
    run_tunneld, run_tunnelc
) -> None:
    """A second client claiming a taken domain waits, saying why; it gets it once freed."""
    async with asyncio.timeout(40), echo_apps("owner", "thief") as (owner_app, thief_app):
        server = await start_tunneld(run_tunneld)
        owner = await run_tunnelc(
            client_toml(server, http_proxy("owner", owner_app.port, customDomains=["owned.test"]))
        )
        await owner.proxy_endpoint("owner")
        thief_config = client_toml(
            server, http_proxy("thief", thief_app.port, customDomains=["owned.test"])
        )
        thief = await run_tunnelc(thief_config)
        waiting = await thief.wait_for(
            r"proxy thief waiting for the stale session to expire \(attempt 1.*?\): (?P<why>.*)$"
        )
        reason = waiting["why"]
        assert "owned.test" in reason and "already used" in reason and "owner" in reason
        assert (await fetch(server.vhost_port, "owned.test")).json()["app"] == "owner"

        await owner.terminate()
        public = await thief.proxy_endpoint("thief")  # asked again with backoff
        assert public.host == "owned.test"
        assert (await fetch(server.vhost_port, "owned.test")).json()["app"] == "thief"


async def test_vhost_custom_domain_under_sub_domain_host_is_refused(
    run_tunneld, run_tunnelc
) -> None:
    """customDomains may not take a name under subDomainHost; the reason names the fix."""
    async with asyncio.timeout(30), echo_apps("sneaky") as (app,):
        server = await start_tunneld(run_tunneld)
        client = await run_tunnelc(
            client_toml(
                server,
                http_proxy("sneaky", app.port, customDomains=[f"admin.{SUB_DOMAIN_HOST}"]),
            )
        )
        reason = await client.proxy_refusal("sneaky")
        assert f"admin.{SUB_DOMAIN_HOST}" in reason and "subdomain" in reason
        assert (await fetch(server.vhost_port, f"admin.{SUB_DOMAIN_HOST}")).status == 404


async def start_oneliner(
    process_group: ProcessGroup, server: Tunneld, tmp_path: Path, port: int, *args: str
) -> TunnelProcess:
    home = tmp_path / "home-oneliner"
    home.mkdir(exist_ok=True)
    return await process_group.start_tunnel(
        "tunnelc",
        ["http", str(port), "--server", f"127.0.0.1:{server.control_port}", "--token", TOKEN,
         "--server-fingerprint", server.fingerprint, *args],
        env={"HOME": str(home)},
        cwd=tmp_path,
    )  # fmt: skip


async def test_tunnelc_http_oneliner_prints_its_url_and_serves(
    run_tunneld, process_group: ProcessGroup, tmp_path: Path
) -> None:
    """`tunnelc http PORT --subdomain x ...` prints http://x.<subDomainHost>:PORT and serves."""
    async with asyncio.timeout(30), echo_apps("one") as (app,):
        server = await start_tunneld(run_tunneld)
        client = await start_oneliner(process_group, server, tmp_path, app.port, "--subdomain", "x")
        public = await client.proxy_endpoint(oneliner_name("http", app.port))
        assert public.url == f"http://x.{SUB_DOMAIN_HOST}:{server.vhost_port}"
        result = await curl(
            *resolve(f"x.{SUB_DOMAIN_HOST}", server.vhost_port), "--fail", f"{public.url}/one"
        )
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["app"] == "one"
        assert await client.terminate() == 0


async def test_tunnelc_http_oneliner_basic_auth_guards_the_app(
    run_tunneld, process_group: ProcessGroup, tmp_path: Path
) -> None:
    """`tunnelc http PORT --basic-auth user:pass` answers 401 without credentials, 200 with."""
    async with asyncio.timeout(30), echo_apps("guarded") as (app,):
        server = await start_tunneld(run_tunneld)
        client = await start_oneliner(
            process_group, server, tmp_path, app.port, "--subdomain", "y", "--basic-auth", "bob:pw1"
        )
        await client.proxy_endpoint(oneliner_name("http", app.port))
        host = f"y.{SUB_DOMAIN_HOST}"
        assert (await fetch(server.vhost_port, host)).status == 401
        reply = await fetch(server.vhost_port, host, headers=basic_auth("bob", "pw1"))
        assert reply.status == 200 and reply.json()["app"] == "guarded"


@contextlib.asynccontextmanager
async def closing_app() -> AsyncIterator[tuple[int, list[bytes]]]:
    """An HTTP/1.1 app that closes each connection right after its response, without saying
    `Connection: close` first: what any app does when its keep-alive idle timeout fires
    (gunicorn 2 s, Node 5 s). Yields its port and the request lines it received."""
    request_lines: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            request_lines.append(head.split(b"\r\n", 1)[0])
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    await reader.readexactly(int(line.split(b":", 1)[1]))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
            await writer.drain()
        finally:
            writer.close()

    listener = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield listener.sockets[0].getsockname()[1], request_lines
    finally:
        listener.close()
        await listener.wait_closed()


def _post_after_the_app_closed(port: int) -> tuple[int, bytes]:
    """GET on one keep-alive connection; a GET on another (see below); then POST on the first."""
    first = http.client.HTTPConnection("127.0.0.1", port, timeout=CLIENT_IO_TIMEOUT_S)
    other = http.client.HTTPConnection("127.0.0.1", port, timeout=CLIENT_IO_TIMEOUT_S)
    try:
        first.request("GET", "/first", headers={"Host": "closing.test"})
        assert first.getresponse().read() == b"ok\n"
        # The app's FIN after /first and this response share the client's one mux connection,
        # in that order: once this response is here, tunneld has seen the first stream end.
        other.request("GET", "/sync", headers={"Host": "closing.test"})
        assert other.getresponse().read() == b"ok\n"
        first.request("POST", "/webhook", body=b"hello", headers={"Host": "closing.test"})
        resp = first.getresponse()
        return resp.status, resp.read()
    finally:
        first.close()
        other.close()


async def test_vhost_keepalive_post_after_the_app_closed_its_connection_reaches_the_app(
    run_tunneld, run_tunnelc
) -> None:
    """A POST on a visitor keep-alive connection whose app connection already closed gets 200."""
    async with asyncio.timeout(30), closing_app() as (app_port, request_lines):
        server = await start_tunneld(run_tunneld)
        client = await run_tunnelc(
            client_toml(server, http_proxy("closing", app_port, customDomains=["closing.test"]))
        )
        await client.proxy_endpoint("closing")
        status, body = await asyncio.to_thread(_post_after_the_app_closed, server.vhost_port)
        assert (status, body) == (200, b"ok\n"), body[:300]
        assert request_lines == [
            b"GET /first HTTP/1.1",
            b"GET /sync HTTP/1.1",
            b"POST /webhook HTTP/1.1",
        ]
