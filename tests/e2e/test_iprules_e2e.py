"""IP rules on a real tunneld, with visitors from a second loopback address (127.0.0.2)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from tests.e2e.test_tcp_e2e import client_toml, server_toml, tcp_proxy
from tests.support.curl import curl, resolve
from tests.support.echo import tcp_echo_server
from tests.support.procs import DASHBOARD_READY

OTHER = "127.0.0.2"  # the whole 127/8 is loopback on Linux: a second source address
SUB = "ip.test"


async def roundtrip_from(source: str, port: int, payload: bytes) -> bytes:
    """Send `payload` from `source` to 127.0.0.1:port and read the echo; b"" if refused."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    except OSError:
        return b""
    try:
        writer.write(payload)
        writer.write_eof()
        return await reader.read()
    except OSError:  # reset or already closed: refused
        return b""
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass  # the server closed first; nothing left to flush


async def metric(port: int, name: str, label: str) -> float:
    result = await curl(f"http://127.0.0.1:{port}/metrics")
    for line in result.stdout.decode().splitlines():
        if line.startswith(name) and label in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@contextlib.asynccontextmanager
async def hello_app() -> AsyncIterator[int]:
    """A tiny HTTP app on 127.0.0.1:0 answering "hello"; yields its port."""

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/{tail:.*}", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


def http_proxy(name: str, local_port: int, sub: str, rules: str = "") -> str:
    return (
        f'[[proxies]]\nname = "{name}"\ntype = "http"\nlocalPort = {local_port}\n'
        f'subdomain = "{sub}"\n{rules}'
    )


async def test_iprules_server_deny_closes_tcp_and_403s_http(run_tunneld, run_tunnelc) -> None:
    """Server-wide denyIPs: a tcp visitor from 127.0.0.2 is closed, an http one gets 403; the
    same visitors from 127.0.0.1 get through; the refusals are counted."""
    extra = {
        "denyIPs": f'["{OTHER}/32"]',
        "vhostHTTPPort": 0,
        "subDomainHost": f'"{SUB}"',
        "webServer.port": 0,
        "enablePrometheus": "true",
    }
    async with asyncio.timeout(60), tcp_echo_server() as echo:
        server = await run_tunneld(server_toml(**extra))
        control = await server.control_address()
        http_port = (await server.wait_for(r"http vhost on \S+:(\d+)"))[1]
        web = int((await server.wait_for(DASHBOARD_READY))["port"])
        proxies = tcp_proxy("echo", echo.port) + http_proxy("web", echo.port, "app")
        client = await run_tunnelc(client_toml(control.port, await server.fingerprint(), proxies))
        public = await client.proxy_endpoint("echo")
        await client.proxy_endpoint("web")
        assert await roundtrip_from("127.0.0.1", public.port, b"hello") == b"hello"
        assert await roundtrip_from(OTHER, public.port, b"hello") == b""
        refused = await curl(
            "--interface", OTHER, *resolve(f"app.{SUB}", int(http_port)),
            f"http://app.{SUB}:{http_port}/", "-o", "-", "-w", "%{http_code}",
        )  # fmt: skip
        assert refused.stdout.endswith(b"403"), refused
        assert b"not allowed on this server" in refused.stdout
        assert await metric(web, "tunnelkit_proxy_refused_visitors_total", '"echo"') == 1


async def test_iprules_per_proxy_rules_from_the_client(run_tunneld, run_tunnelc) -> None:
    """A proxy's own allowIPs admits only 127.0.0.1; another proxy's denyIPs refuses
    127.0.0.2 over http with a 403 page; a proxy without rules admits both."""
    extra = {"vhostHTTPPort": 0, "subDomainHost": f'"{SUB}"'}
    async with asyncio.timeout(60), tcp_echo_server() as echo, hello_app() as app_port:
        server = await run_tunneld(server_toml(**extra))
        control = await server.control_address()
        http_port = int((await server.wait_for(r"http vhost on \S+:(\d+)"))[1])
        proxies = (
            tcp_proxy("only-local", echo.port)
            + 'allowIPs = ["127.0.0.1/32"]\n'
            + tcp_proxy("open", echo.port)
            + http_proxy("web", app_port, "app", f'denyIPs = ["{OTHER}"]\n')
        )
        client = await run_tunnelc(client_toml(control.port, await server.fingerprint(), proxies))
        local = await client.proxy_endpoint("only-local")
        open_ = await client.proxy_endpoint("open")
        await client.proxy_endpoint("web")
        assert await roundtrip_from("127.0.0.1", local.port, b"a") == b"a"
        assert await roundtrip_from(OTHER, local.port, b"a") == b""
        assert await roundtrip_from(OTHER, open_.port, b"b") == b"b"
        for source, code in (("127.0.0.1", b"200"), (OTHER, b"403")):
            result = await curl(
                "--interface", source, *resolve(f"app.{SUB}", http_port),
                f"http://app.{SUB}:{http_port}/", "-o", "-", "-w", "%{http_code}",
            )  # fmt: skip
            assert result.stdout.endswith(code), (source, result)


async def test_iprules_control_port_refuses_a_denied_client(run_tunneld, run_tunnelc) -> None:
    """A client from a denied address is closed before TLS: it keeps retrying, never in."""
    async with asyncio.timeout(60):
        server = await run_tunneld(server_toml(denyIPs='["127.0.0.0/8"]'))
        control = await server.control_address()
        client = await run_tunnelc(
            client_toml(control.port, await server.fingerprint(), ""), wait_ready=False
        )
        await client.wait_for(r"cannot reach the server at .*(reset|closed)", 30)
        await client.wait_for(r"reconnecting in", 30)
        assert not any("logged in" in line for line in client.lines())


async def test_iprules_reject_a_bad_network_in_config(run_tunnelc, tmp_path) -> None:
    """A proxy allowIPs entry that is not a network is a one-line config error."""
    client = await run_tunnelc(
        client_toml(1, "SHA256:" + ":".join(["AB"] * 32), tcp_proxy("x", 9))
        + 'allowIPs = ["10.0.0.300/8"]\n',
        wait_ready=False,
        expect_exit_code=1,
    )
    await client.wait_for(r"proxies\[0\] \(x\)\.allowIPs: .*not an IP address or CIDR network")
    assert await client.wait(15) == 1
