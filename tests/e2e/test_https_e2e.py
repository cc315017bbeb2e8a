"""The real tunneld and tunnelc processes passing TLS through the HTTPS (SNI) vhost.

The local app is an aiohttp HTTPS server holding a leaf certificate from a throwaway CA
(tests/support/certs.py). tunneld never terminates TLS: curl verifies the app's certificate
against that CA, so a page fetched with `--cacert CA` proves the TLS session is end to end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.support.certs import make_ca, make_leaf
from tests.support.curl import CurlResult, curl, resolve
from tests.support.procs import TunnelProcess

TOKEN: Final = "e2e-https-token"
SECURE: Final = "secure.example.test"
SUB_DOMAIN_HOST: Final = "tunnel.test"  # not a parent of SECURE, which is a customDomain
CLIENT_IO_TIMEOUT_S: Final = 15.0  # curl runs and direct TLS connections
PROMPT_S: Final = 2.0  # a refused TLS connection must fail well within this


@dataclass
class TLSApp:
    """An aiohttp HTTPS app on 127.0.0.1:0; records the SNI names it was asked for."""

    cert: Path
    key: Path
    port: int = 0
    sni_seen: list[str | None] | None = None
    _runner: web.AppRunner | None = None

    async def start(self) -> None:
        self.sni_seen = []
        seen = self.sni_seen

        def record_sni(sock: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
            seen.append(name)

        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert, self.key)
        ctx.sni_callback = record_sni

        async def hello(request: web.Request) -> web.Response:
            return web.json_response(
                {"app": "tls", "host": request.host, "path": request.path, "secure": request.secure}
            )

        app = web.Application()
        app.router.add_get("/{tail:.*}", hello)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=ctx).start()
        self.port = self._runner.addresses[0][1]

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@contextlib.asynccontextmanager
async def tls_app(cert: Path, key: Path) -> AsyncIterator[TLSApp]:
    app = TLSApp(cert, key)
    try:
        await app.start()
        yield app
    finally:
        await app.close()


def toml_lines(options: Mapping[str, object]) -> str:
    """`key = value` lines; JSON strings, ints and lists of strings are valid TOML values."""
    return "".join(f"{key} = {json.dumps(value)}\n" for key, value in options.items())


@dataclass(frozen=True, slots=True)
class Tunneld:
    process: TunnelProcess
    control_port: int
    vhost_port: int
    fingerprint: str


async def start_tunneld(run_tunneld: Any) -> Tunneld:
    """tunneld on 127.0.0.1 with an HTTPS vhost on a free port."""
    process = await run_tunneld(
        toml_lines(
            {
                "bindAddr": "127.0.0.1",
                "bindPort": 0,
                "vhostHTTPSPort": 0,
                "subDomainHost": SUB_DOMAIN_HOST,
                "auth.token": TOKEN,
            }
        )
    )
    control = await process.control_address()
    vhost = await process.https_vhost_address()
    return Tunneld(process, control.port, vhost.port, await process.fingerprint())


def client_toml(server: Tunneld, local_port: int) -> str:
    """Two https proxies to the same TLS app: a custom domain and a subdomain."""
    head = {
        "serverAddr": "127.0.0.1",
        "serverPort": server.control_port,
        "auth.token": TOKEN,
        "transport.tls.serverFingerprint": server.fingerprint,
        "inspect.enabled": False,
    }
    secure = {"name": "secure", "type": "https", "localPort": local_port, "customDomains": [SECURE]}
    sub = {"name": "sub", "type": "https", "localPort": local_port, "subdomain": "sub"}
    return (
        toml_lines(head) + "[[proxies]]\n" + toml_lines(secure) + "[[proxies]]\n" + toml_lines(sub)
    )


async def curl_https(name: str, port: int, ca: Path, connect_to: str | None = None) -> CurlResult:
    """GET https://name:port/ with --cacert CA, sending `name` to 127.0.0.1 (--resolve).

    With `connect_to`, the URL names that host instead (an IP address sends no SNI).
    """
    url_host = connect_to or name
    return await curl(
        "--cacert", str(ca), *resolve(name, port), f"https://{url_host}:{port}/page",
        timeout_s=CLIENT_IO_TIMEOUT_S,
    )  # fmt: skip


async def peer_certificate(port: int, name: str, ca: Path) -> bytes:
    """The DER certificate a verified TLS handshake to 127.0.0.1:port with SNI `name` sees."""
    ctx = ssl.create_default_context(cafile=str(ca))
    _reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname=name
    )
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True)
        assert der is not None
        return bytes(der)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()


def client_hello(name: str) -> bytes:
    """The bytes of a real TLS ClientHello for SNI `name` (from ssl's memory BIO)."""
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=name)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


async def send_hello_and_read(port: int, name: str) -> bytes:
    """Send a ClientHello for `name`; return all the listener answers until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(client_hello(name))
        await writer.drain()
        return await reader.read()  # raises ConnectionResetError on an abortive close
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_https_vhost_passes_tls_end_to_end_to_the_local_app(
    run_tunneld, run_tunnelc, tmp_path: Path
) -> None:
    """curl --cacert reaches the app by SNI; the certificate it sees is the app's own."""
    ca = make_ca(tmp_path)
    cert, key = make_leaf(ca, tmp_path, [SECURE, f"sub.{SUB_DOMAIN_HOST}"])
    async with asyncio.timeout(30), tls_app(cert, key) as app:
        server = await start_tunneld(run_tunneld)
        client = await run_tunnelc(client_toml(server, app.port))
        public = await client.proxy_endpoint("secure")
        assert public.url == f"https://{SECURE}:{server.vhost_port}"
        sub = await client.proxy_endpoint("sub")
        assert sub.url == f"https://sub.{SUB_DOMAIN_HOST}:{server.vhost_port}"

        for name in (SECURE, f"sub.{SUB_DOMAIN_HOST}"):
            result = await curl_https(name, server.vhost_port, ca[0])
            assert result.returncode == 0, result.stderr
            page = json.loads(result.stdout)
            assert page == {
                "app": "tls",
                "host": f"{name}:{server.vhost_port}",
                "path": "/page",
                "secure": True,
            }
        assert app.sni_seen == [SECURE, f"sub.{SUB_DOMAIN_HOST}"]

        seen = await peer_certificate(server.vhost_port, SECURE, ca[0])
        leaf = x509.load_pem_x509_certificate(cert.read_bytes())
        assert seen == leaf.public_bytes(serialization.Encoding.DER)


async def test_https_vhost_unknown_sni_is_closed_cleanly_and_listener_keeps_serving(
    run_tunneld, run_tunnelc, tmp_path: Path
) -> None:
    """An unknown or missing SNI gets a clean close at once; known names still work after."""
    ca = make_ca(tmp_path)
    cert, key = make_leaf(ca, tmp_path, [SECURE])
    async with asyncio.timeout(30), tls_app(cert, key) as app:
        server = await start_tunneld(run_tunneld)
        client = await run_tunnelc(client_toml(server, app.port))
        await client.proxy_endpoint("secure")
        port = server.vhost_port

        unknown = await curl_https("unknown.example.test", port, ca[0])
        assert unknown.returncode != 0
        assert unknown.elapsed_s < PROMPT_S, unknown
        no_sni = await curl_https(SECURE, port, ca[0], connect_to="127.0.0.1")
        assert no_sni.returncode != 0
        assert no_sni.elapsed_s < PROMPT_S, no_sni

        # A clean close: EOF with no bytes (the listener never answers in TLS), not a reset.
        assert await send_hello_and_read(port, "unknown.example.test") == b""
        assert app.sni_seen == []  # nothing reached the app

        ok = await curl_https(SECURE, port, ca[0])
        assert ok.returncode == 0, ok.stderr
        assert json.loads(ok.stdout)["app"] == "tls"
