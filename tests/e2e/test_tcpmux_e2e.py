"""tcpmux (multiplexer = "httpconnect") through the real tunneld and tunnelc: real ssh through
`nc -X connect` and curl --proxytunnel share one port, routed by the CONNECT host; the
Proxy-Authorization user picks a route; bad, unknown, oversized and slow heads are refused."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from pathlib import Path
from typing import Any, Final

import pytest
from aiohttp import web

from tests.e2e.test_plugins_e2e import TOKEN, start_server, toml
from tests.support.peers import reserve_port, run_command, sshd, tools_unavailable_reason
from tunnel_server.vhost.tcpmux import HEAD_TIMEOUT_S, MAX_HEAD_BYTES

MUX: Final = {"type": "tcpmux", "multiplexer": "httpconnect"}


async def start_tcpmux_server(run_tunneld: Any, **extra: object) -> tuple[int, str, int]:
    """tunneld with a tcpmux port; returns (control port, fingerprint, tcpmux port)."""
    # 0 turns tcpmux off (as in frp), so the test reserves a free port for it.
    server, port, fingerprint = await start_server(
        run_tunneld,
        tcpmuxHTTPConnectPort=reserve_port(socket.SOCK_STREAM),
        subDomainHost="mux.test",
        **extra,
    )
    match = await server.wait_for(r"tunneld: ready: tcpmux httpconnect on [\d.]+:(\d+)")
    return port, fingerprint, int(match[1])


async def start_mux_client(
    run_tunnelc: Any, port: int, fingerprint: str, *proxies: dict[str, object]
) -> Any:
    text = toml(
        {
            "serverAddr": "127.0.0.1",
            "serverPort": port,
            "auth.token": TOKEN,
            "transport.tls.serverFingerprint": fingerprint,
            "inspect.enabled": False,
        }
    )
    for proxy in proxies:
        text += "[[proxies]]\n" + toml({**MUX, **proxy})
    client = await run_tunnelc(text)
    for proxy in proxies:
        await client.proxy_endpoint(str(proxy["name"]))
    return client


@contextlib.asynccontextmanager
async def text_site(text: str) -> Any:
    """An HTTP service answering every GET / with `text`; yields its port."""

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=text)

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def raw_exchange(port: int, data: bytes, *, eof: bool = False) -> bytes:
    """Send `data` to the tcpmux port, return everything it answers until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        if eof:
            writer.write_eof()
        return await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def curl_tunnel(mux_port: int, host: str, *extra: str) -> str:
    return await run_command(
        ["curl", "-sS", "--max-time", "20", "--proxytunnel", "-x", f"http://127.0.0.1:{mux_port}",
         *extra, f"http://{host}/"]
    )  # fmt: skip


async def test_tcpmux_ssh_and_curl_share_one_port_by_connect_host(
    run_tunneld, run_tunnelc, tmp_path: Path
) -> None:
    """Real ssh (nc -X connect) and curl --proxytunnel reach two services on one port."""
    if reason := tools_unavailable_reason("sshd", "ssh", "ssh-keygen", "nc", "curl"):
        pytest.skip(reason)
    async with asyncio.timeout(90), sshd(tmp_path) as ssh_server, text_site("web-ok") as site:
        port, fingerprint, mux = await start_tcpmux_server(run_tunneld)
        await start_mux_client(
            run_tunnelc,
            port,
            fingerprint,
            {"name": "ssh", "localPort": ssh_server.port, "customDomains": ["box.example.test"]},
            {"name": "web", "localPort": site, "subdomain": "web"},
        )
        proxy_command = f"ProxyCommand=nc -X connect -x 127.0.0.1:{mux} %h %p"
        out = await run_command(
            ["ssh", "-o", proxy_command, *ssh_server.ssh_args(port=22, host="box.example.test"),
             "echo tcpmux-ok"]
        )  # fmt: skip
        assert "tcpmux-ok" in out
        assert await curl_tunnel(mux, "web.mux.test") == "web-ok"


async def test_tcpmux_routes_by_proxy_authorization_user(run_tunneld, run_tunnelc) -> None:
    """routeByHTTPUser: the CONNECT's Proxy-Authorization user picks its own route; others
    get the route without one; httpUser/httpPassword are checked (407 when wrong)."""
    if reason := tools_unavailable_reason("curl"):
        pytest.skip(reason)
    async with (
        asyncio.timeout(90),
        text_site("for-alice") as alice,
        text_site("for-all") as everyone,
        text_site("locked") as locked,
    ):
        port, fingerprint, mux = await start_tcpmux_server(run_tunneld)
        await start_mux_client(
            run_tunnelc,
            port,
            fingerprint,
            {"name": "alice", "localPort": alice, "customDomains": ["team.example.test"],
             "routeByHTTPUser": "alice"},
            {"name": "all", "localPort": everyone, "customDomains": ["team.example.test"]},
            {"name": "locked", "localPort": locked, "customDomains": ["safe.example.test"],
             "httpUser": "bob", "httpPassword": "pw"},
        )  # fmt: skip
        assert await curl_tunnel(mux, "team.example.test", "-U", "alice:x") == "for-alice"
        assert await curl_tunnel(mux, "team.example.test", "-U", "carol:x") == "for-all"
        assert await curl_tunnel(mux, "team.example.test") == "for-all"
        assert await curl_tunnel(mux, "safe.example.test", "-U", "bob:pw") == "locked"
        denied = await raw_exchange(
            mux, b"CONNECT safe.example.test:80 HTTP/1.1\r\nHost: safe.example.test:80\r\n\r\n"
        )
        assert denied.startswith(b"HTTP/1.1 407 ") and b"Proxy-Authenticate: Basic" in denied


async def test_tcpmux_refuses_unknown_bad_oversized_and_slow_heads(
    run_tunneld, run_tunnelc
) -> None:
    """Each refusal is one clear HTTP answer and a close; the port keeps serving."""
    async with asyncio.timeout(90), text_site("still-ok") as site:
        port, fingerprint, mux = await start_tcpmux_server(run_tunneld)
        await start_mux_client(
            run_tunnelc, port, fingerprint,
            {"name": "web", "localPort": site, "customDomains": ["ok.example.test"]},
        )  # fmt: skip
        unknown = await raw_exchange(mux, b"CONNECT nobody.example.test:22 HTTP/1.1\r\n\r\n")
        assert unknown.startswith(b"HTTP/1.1 404 ") and b"nobody.example.test" in unknown
        get = await raw_exchange(mux, b"GET / HTTP/1.1\r\nHost: ok.example.test\r\n\r\n")
        assert get.startswith(b"HTTP/1.1 400 ") and b"only CONNECT" in get
        junk = await raw_exchange(mux, b"\x16\x03\x01 not http at all\r\n\r\n")
        assert junk.startswith(b"HTTP/1.1 400 ")
        huge = b"CONNECT ok.example.test:80 HTTP/1.1\r\nX-Pad: " + b"a" * MAX_HEAD_BYTES
        oversized = await raw_exchange(mux, huge)
        assert oversized.startswith(b"HTTP/1.1 431 "), oversized[:80]
        started = time.monotonic()
        slow = await raw_exchange(mux, b"CONNECT ok.example.test:80 HTTP/1.1\r\n")
        waited = time.monotonic() - started
        assert slow.startswith(b"HTTP/1.1 408 "), slow[:80]
        assert HEAD_TIMEOUT_S - 1 <= waited <= HEAD_TIMEOUT_S + 15, f"{waited:.1f}s"
        half = await raw_exchange(mux, b"CONNECT ok.exa", eof=True)
        assert half.startswith(b"HTTP/1.1 400 ")
        if not tools_unavailable_reason("curl"):
            assert await curl_tunnel(mux, "ok.example.test") == "still-ok"


async def test_tcpmux_passthrough_forwards_the_connect_head(run_tunneld, run_tunnelc) -> None:
    """With tcpmuxPassthrough the service behind the tunnel gets the CONNECT and answers it."""
    heads: list[bytes] = []

    async def connect_proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            heads.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(b"HTTP/1.1 200 OK from the service\r\n\r\n")
            while data := await reader.read(65536):
                writer.write(data.upper())
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the test closes abruptly
        finally:
            writer.close()

    service = await asyncio.start_server(connect_proxy, "127.0.0.1", 0)
    try:
        async with asyncio.timeout(60):
            port, fingerprint, mux = await start_tcpmux_server(run_tunneld, tcpmuxPassthrough=True)
            service_port = service.sockets[0].getsockname()[1]
            await start_mux_client(
                run_tunnelc, port, fingerprint,
                {"name": "pass", "localPort": service_port, "customDomains": ["p.example.test"]},
            )  # fmt: skip
            head = b"CONNECT p.example.test:443 HTTP/1.1\r\nHost: p.example.test:443\r\n\r\n"
            answer = await raw_exchange(mux, head + b"hello", eof=True)
            assert answer == b"HTTP/1.1 200 OK from the service\r\n\r\nHELLO"
            assert heads == [head]
    finally:
        service.close()
        await service.wait_closed()
