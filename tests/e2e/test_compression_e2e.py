"""transport.useCompression with the real tunneld/tunnelc: a tcp proxy and an http proxy (the
vhost) carry text and noise exactly, `verify` calls the key supported, and a udp proxy with it
gets a note instead of silence."""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final

from aiohttp import web

from tests.support.curl import curl, resolve
from tests.support.echo import tcp_echo_server
from tests.support.procs import venv_script

TOKEN: Final = "compression-token"
MiB: Final = 1 << 20
LINE: Final = b"2026-11-30T08:00:00Z INFO GET /api/v1/items?page=3 200 12ms user=alice\n"
TEXT: Final = LINE * (8 * MiB // len(LINE))
NOISE: Final = random.Random(10).randbytes(4 * MiB)


def server_toml() -> str:
    return (
        'bindAddr = "127.0.0.1"\nbindPort = 0\nvhostHTTPPort = 0\n'
        f'subDomainHost = "example.test"\nauth.token = "{TOKEN}"\n'
    )


def client_toml(control_port: int, fingerprint: str, echo_port: int, app_port: int) -> str:
    return f"""serverAddr = "127.0.0.1"
serverPort = {control_port}
auth.token = "{TOKEN}"
transport.tls.serverFingerprint = "{fingerprint}"
inspect.enabled = false

[[proxies]]
name = "echo"
type = "tcp"
localPort = {echo_port}
transport.useCompression = true

[[proxies]]
name = "web"
type = "http"
localPort = {app_port}
subdomain = "zipped"
transport.useCompression = true
"""


@asynccontextmanager
async def text_app() -> AsyncIterator[int]:
    """GET /text answers TEXT; POST /sha256 answers the SHA-256 of the body it read."""

    async def text(_: web.Request) -> web.Response:
        return web.Response(body=TEXT, content_type="text/plain")

    async def sha(request: web.Request) -> web.Response:
        return web.Response(text=hashlib.sha256(await request.read()).hexdigest())

    app = web.Application(client_max_size=64 * MiB)
    app.router.add_get("/text", text)
    app.router.add_post("/sha256", sha)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def echo_through(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:

        async def send() -> None:
            writer.write(payload)
            await writer.drain()
            writer.write_eof()

        sender = asyncio.ensure_future(send())
        reply = await reader.read(-1)
        await sender
        return reply
    finally:
        writer.close()


async def test_compression_tcp_and_http_proxies_exact_through_real_processes(
    run_tunneld, run_tunnelc, tmp_path: Path
) -> None:
    """Compressed tcp and http proxies: text and noise echo back byte for byte, curl downloads
    and uploads 8 MiB of text through the vhost exactly."""
    async with asyncio.timeout(120), tcp_echo_server() as echo, text_app() as app_port:
        server = await run_tunneld(server_toml())
        control = await server.control_address()
        vhost = await server.http_vhost_address()
        client = await run_tunnelc(
            client_toml(control.port, await server.fingerprint(), echo.port, app_port)
        )
        public = await client.proxy_endpoint("echo")
        assert await echo_through(public.port, TEXT) == TEXT
        assert await echo_through(public.port, NOISE) == NOISE
        await client.proxy_endpoint("web")
        host = "zipped.example.test"
        got = await curl(*resolve(host, vhost.port), f"http://{host}:{vhost.port}/text")
        assert got.returncode == 0 and got.stdout == TEXT
        body = tmp_path / "body.txt"
        body.write_bytes(TEXT)
        sent = await curl(
            *resolve(host, vhost.port),
            "--data-binary",
            f"@{body}",
            f"http://{host}:{vhost.port}/sha256",
        )
        assert sent.returncode == 0
        assert sent.stdout.decode() == hashlib.sha256(TEXT).hexdigest()


async def test_compression_verify_supported_and_udp_noted(tmp_path: Path) -> None:
    """`tunnelc verify` passes a file with useCompression and prints no 'no effect' note for
    tcp; on a udp proxy it prints one line naming the key and why."""
    config = tmp_path / "frpc.toml"
    config.write_text(
        'serverAddr = "127.0.0.1"\n\n[[proxies]]\nname = "ssh"\ntype = "tcp"\nlocalPort = 22\n'
        'transport.useCompression = true\n\n[[proxies]]\nname = "dns"\ntype = "udp"\n'
        "localPort = 53\nremotePort = 6053\ntransport.useCompression = true\n"
    )
    proc = await asyncio.create_subprocess_exec(
        str(venv_script("tunnelc")),
        "verify",
        "-c",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(60):
        out, _ = await proc.communicate()
    text = out.decode()
    assert proc.returncode == 0, text
    noted = [line for line in text.splitlines() if "useCompression" in line]
    assert len(noted) == 1, text
    assert "proxies[1] (dns).transport.useCompression" in noted[0]
    assert "udp" in noted[0]
