"""routeByHTTPUser through the real tunneld and tunnelc: one domain, two backends, chosen by
the request's basic-auth user."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, Final

from aiohttp import web

from tests.e2e.test_plugins_e2e import start_server, toml
from tests.support.curl import curl, resolve

SITE: Final = "shared.example.test"


@contextlib.asynccontextmanager
async def named_app(name: str) -> AsyncIterator[int]:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=f"{name} saw {request.headers.get('Authorization', '-')}")

    app = web.Application()
    app.router.add_get("/{tail:.*}", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def test_route_by_http_user_sends_each_user_to_their_backend(
    run_tunneld: Any, run_tunnelc: Any
) -> None:
    """alice's requests reach her app (after auth); anonymous ones reach the shared app."""
    async with (
        asyncio.timeout(60),
        named_app("alice-app") as alice_port,
        named_app("shared-app") as shared_port,
    ):
        server, port, fingerprint = await start_server(run_tunneld, vhostHTTPPort=0)
        vhost = await server.http_vhost_address()
        head = toml(
            {
                "serverAddr": "127.0.0.1",
                "serverPort": port,
                "auth.token": "plugin-e2e-token",
                "transport.tls.serverFingerprint": fingerprint,
                "inspect.enabled": False,
            }
        )
        alice = toml(
            {
                "name": "alice",
                "type": "http",
                "localPort": alice_port,
                "customDomains": [SITE],
                "routeByHTTPUser": "alice",
                "httpUser": "alice",
                "httpPassword": "wonderland",
            }
        )
        shared = toml(
            {"name": "shared", "type": "http", "localPort": shared_port, "customDomains": [SITE]}
        )
        client = await run_tunnelc(f"{head}[[proxies]]\n{alice}[[proxies]]\n{shared}")
        await client.proxy_endpoint("alice")
        await client.proxy_endpoint("shared")
        url = f"http://{SITE}:{vhost.port}/"
        as_alice = await curl(*resolve(SITE, vhost.port), "-u", "alice:wonderland", url)
        assert as_alice.stdout == b"alice-app saw -"  # the tunnel's own auth is not passed on
        anonymous = await curl(*resolve(SITE, vhost.port), url)
        assert anonymous.stdout == b"shared-app saw -"
        wrong = await curl(
            *resolve(SITE, vhost.port), "-u", "alice:guess", "-o", "/dev/null",
            "-w", "%{http_code}", url,
        )  # fmt: skip
        assert wrong.stdout == b"401"  # alice's route, wrong password
