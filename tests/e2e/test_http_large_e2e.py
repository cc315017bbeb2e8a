"""256 MiB up and 256 MiB down through the HTTP vhost (the inspector on), intact, with the
processes' memory staying flat: each body is far larger than the peak RSS allowed, so a body
held whole (or a queue that grows) fails. The tcp tunnel carries 1 GiB in test_tcp_e2e.py."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from aiohttp import web

from tests.support.echo import pattern_chunks, pattern_digest

MiB = 1 << 20
BODY_BYTES = 256 * MiB
HOST = "big.example.test"
# Peak RSS allowed for tunneld and tunnelc while the bodies pass: far below BODY_BYTES, so a
# body held whole (or a queue that grows) fails the test.
MAX_PEAK_RSS_MIB = 160


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM for pid {pid}")


async def big_app() -> tuple[web.AppRunner, int]:
    async def upload(request: web.Request) -> web.Response:
        digest = hashlib.sha256()
        total = 0
        async for chunk in request.content.iter_chunked(1 << 18):
            digest.update(chunk)
            total += len(chunk)
        framing = request.headers.get("Transfer-Encoding", "")
        return web.json_response({"bytes": total, "sha256": digest.hexdigest(), "te": framing})

    async def download(request: web.Request) -> web.StreamResponse:
        size = int(request.query["bytes"])
        response = web.StreamResponse(headers={"Content-Length": str(size)})
        await response.prepare(request)
        for chunk in pattern_chunks(size):
            await response.write(chunk)
        await response.write_eof()
        return response

    app = web.Application(client_max_size=2 * BODY_BYTES)
    app.router.add_post("/upload", upload)
    app.router.add_get("/download", download)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port: int = runner.addresses[0][1]
    return runner, port


async def pattern_body(size: int) -> AsyncIterator[bytes]:
    for chunk in pattern_chunks(size):
        yield chunk


async def test_http_256_mib_up_and_down_intact_and_memory_flat(run_tunneld, run_tunnelc) -> None:
    """A 256 MiB chunked upload and a 256 MiB download pass intact; neither process grows."""
    runner, app_port = await big_app()
    try:
        async with asyncio.timeout(240):
            server = await run_tunneld(
                'bindAddr = "127.0.0.1"\nbindPort = 0\nvhostHTTPPort = 0\nvhostHTTPTimeout = 120\n'
            )
            control = await server.control_address()
            vhost = await server.http_vhost_address()
            client = await run_tunnelc(
                f'serverAddr = "127.0.0.1"\nserverPort = {control.port}\n'
                f'transport.tls.serverFingerprint = "{await server.fingerprint()}"\n'
                "inspect.port = 0\n"
                f'[[proxies]]\nname = "big"\ntype = "http"\nlocalPort = {app_port}\n'
                f'customDomains = ["{HOST}"]\n'
            )
            await client.proxy_endpoint("big")
            base = f"http://127.0.0.1:{vhost.port}"
            timeout = aiohttp.ClientTimeout(total=200)
            async with aiohttp.ClientSession(timeout=timeout) as http:
                async with http.post(
                    f"{base}/upload", data=pattern_body(BODY_BYTES), headers={"Host": HOST}
                ) as resp:
                    assert resp.status == 200
                    result = await resp.json()
                assert result == {
                    "bytes": BODY_BYTES,
                    "sha256": pattern_digest(BODY_BYTES),
                    "te": "chunked",
                }

                digest = hashlib.sha256()
                total = 0
                async with http.get(
                    f"{base}/download", params={"bytes": str(BODY_BYTES)}, headers={"Host": HOST}
                ) as resp:
                    assert resp.status == 200
                    async for chunk in resp.content.iter_chunked(1 << 18):
                        digest.update(chunk)
                        total += len(chunk)
                assert total == BODY_BYTES
                assert digest.hexdigest() == pattern_digest(BODY_BYTES)
            for proc in (server, client):
                peak = peak_rss_mib(proc.pid)
                assert peak < MAX_PEAK_RSS_MIB, f"{proc.name} peaked at {peak:.0f} MiB"
    finally:
        await runner.cleanup()
