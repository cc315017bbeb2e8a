"""Integration tests for the HTTPS (SNI passthrough) vhost, driven by curl --resolve.

Each backend is an aiohttp server with TLS, holding a leaf certificate from a throwaway CA;
the vhost never sees a key. Real sockets on 127.0.0.1 with port 0.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.support.certs import make_ca, make_leaf
from tunnel_server.vhost import HTTPRoute, HTTPSVhostServer, VhostRouter, tcp_opener

LOOPBACK = "127.0.0.1"
TEST_TIMEOUT_S = 20.0
BACKEND_NAME = web.AppKey("backend_name", str)


async def _hello(request: web.Request) -> web.Response:
    return web.Response(text=f"{request.app[BACKEND_NAME]} via {request.host}")


@asynccontextmanager
async def tls_backend(name: str, cert: Path, key: Path) -> AsyncIterator[int]:
    """An aiohttp HTTPS server answering "<name> via <host>"; yields its port."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    app = web.Application()
    app[BACKEND_NAME] = name
    app.router.add_get("/{tail:.*}", _hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, LOOPBACK, 0, ssl_context=ctx)
    await site.start()
    try:
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


@asynccontextmanager
async def sni_vhost(
    routes: dict[str, int], **kw: Any
) -> AsyncIterator[tuple[HTTPSVhostServer, int]]:
    """An HTTPS vhost with one route per (domain -> backend port)."""
    router = VhostRouter(kw.pop("sub_domain_host", None), 100)
    for domain, port in routes.items():
        router.add(
            HTTPRoute(
                proxy_key=f"c/{domain}",
                proxy_name=domain,
                opener=tcp_opener(LOOPBACK, port),
                domains=[domain],
            )
        )
    server = HTTPSVhostServer(router, **kw)
    _, vport = await server.start(LOOPBACK, 0)
    try:
        yield server, vport
    finally:
        server.close()
        await server.wait_closed()


async def curl_https(name: str, port: int, ca: Path, *extra: str) -> tuple[int, bytes, bytes]:
    proc = await asyncio.create_subprocess_exec(
        "/usr/bin/curl",
        "--silent",
        "--show-error",
        "--max-time",
        "10",
        "--cacert",
        str(ca),
        "--resolve",
        f"{name}:{port}:{LOOPBACK}",
        *extra,
        f"https://{name}:{port}/",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out, err


async def test_vhost_https_routes_by_sni(tmp_path: Path) -> None:
    """curl reaches each TLS backend by its SNI name; the certificate verifies end to end."""
    ca = make_ca(tmp_path)
    cert_a, key_a = make_leaf(ca, tmp_path, ["a.example.test"])
    cert_b, key_b = make_leaf(ca, tmp_path, ["b.example.test"])
    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with (
            tls_backend("A", cert_a, key_a) as pa,
            tls_backend("B", cert_b, key_b) as pb,
            sni_vhost({"a.example.test": pa, "b.example.test": pb}) as (_, port),
        ):
            for name, backend in (("a.example.test", "A"), ("b.example.test", "B")):
                rc, out, err = await curl_https(name, port, ca[0])
                assert rc == 0, err
                assert out.decode() == f"{backend} via {name}:{port}"


async def test_vhost_https_wildcard_and_keepalive(tmp_path: Path) -> None:
    """A wildcard SNI route works, and several requests share one spliced TLS connection."""
    ca = make_ca(tmp_path)
    cert, key = make_leaf(ca, tmp_path, ["*.wild.test"])
    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with (
            tls_backend("W", cert, key) as pw,
            sni_vhost({"*.wild.test": pw}) as (server, port),
        ):
            url = f"https://x.wild.test:{port}/"
            rc, out, err = await curl_https("x.wild.test", port, ca[0], url)
            assert rc == 0, err
            assert out.decode() == f"W via x.wild.test:{port}" * 2
            async with asyncio.timeout(5):
                # The count drops once curl has closed; the poll is bounded by the timeout.
                while server.connections:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)


async def test_vhost_https_unknown_or_missing_sni_closes(tmp_path: Path) -> None:
    """An unknown name, no SNI at all, garbage, or a silent visitor all get a clean close,
    and the listener keeps working."""
    ca = make_ca(tmp_path)
    cert, key = make_leaf(ca, tmp_path, ["known.test"])
    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with (
            tls_backend("K", cert, key) as pk,
            sni_vhost({"known.test": pk}, header_timeout_s=0.5) as (_, port),
        ):
            rc, _, _ = await curl_https("unknown.test", port, ca[0])
            assert rc != 0
            # curl sends no SNI to an IP address
            proc = await asyncio.create_subprocess_exec(
                "/usr/bin/curl",
                "--silent",
                "--max-time",
                "10",
                "--insecure",
                f"https://{LOOPBACK}:{port}/",
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            assert await proc.wait() != 0
            for payload in (b"GET / HTTP/1.1\r\nHost: known.test\r\n\r\n", b"\x16\x03\x01"):
                reader, writer = await asyncio.open_connection(LOOPBACK, port)
                writer.write(payload)
                assert await reader.read(-1) == b""  # closed: garbage at once, partial by timeout
                writer.close()
                await writer.wait_closed()
            rc, out, err = await curl_https("known.test", port, ca[0])
            assert rc == 0, err
            assert out.startswith(b"K via")


async def test_vhost_https_client_hello_split_across_writes(tmp_path: Path) -> None:
    """A ClientHello that arrives in small pieces is still routed."""
    ca = make_ca(tmp_path)
    cert, key = make_leaf(ca, tmp_path, ["slow.test"])
    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with tls_backend("S", cert, key) as ps, sni_vhost({"slow.test": ps}) as (_, port):
            ctx = ssl.create_default_context(cafile=str(ca[0]))
            incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            tls = ctx.wrap_bio(incoming, outgoing, server_hostname="slow.test")
            reader, writer = await asyncio.open_connection(LOOPBACK, port)

            async def flush() -> None:
                data = outgoing.read()
                for i in range(0, len(data), 7):  # tiny writes, each its own segment
                    writer.write(data[i : i + 7])
                    await writer.drain()

            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    await flush()
                    incoming.write(await reader.read(65536))
            tls.write(b"GET / HTTP/1.1\r\nHost: slow.test\r\nConnection: close\r\n\r\n")
            await flush()
            response = b""
            expected_tail = b"S via slow.test"
            while not response.endswith(expected_tail):  # the app's TLS close waits for us
                data = await reader.read(65536)
                assert data, "connection closed before the response"
                incoming.write(data)
                try:
                    response += tls.read(65536)
                except ssl.SSLWantReadError:
                    continue
            writer.close()
            await writer.wait_closed()
            assert response.startswith(b"HTTP/1.1 200 OK")
            assert response.endswith(b"S via slow.test")
