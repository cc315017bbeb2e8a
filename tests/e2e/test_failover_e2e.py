"""Client failover between tunneld nodes (`serverAddrs`), with the real tunneld and tunnelc.

Two tunneld share one certificate, as a cluster's nodes do, so the client verifies either
one against the same CA. The client holds one http route; when its node is killed, it moves
to the next node at once and the same domain is served there.
"""

from __future__ import annotations

import asyncio
import re
import signal
from pathlib import Path
from typing import Final

from tests.e2e.test_http_e2e import (
    SUB_DOMAIN_HOST,
    TOKEN,
    Tunneld,
    echo_apps,
    http_proxy,
    toml_lines,
)
from tests.support.certs import make_ca, make_leaf
from tests.support.curl import curl, resolve

DOMAIN: Final = "hooks.failover.test"
NODE_NAME: Final = "tunnel.cluster.test"  # the name on the nodes' shared certificate


async def start_node(run_tunneld, cert: Path, key: Path, **kw: object) -> Tunneld:  # type: ignore[no-untyped-def]
    """A tunneld with the nodes' shared certificate and an HTTP vhost on a free port."""
    options = {
        "bindAddr": "127.0.0.1",
        "bindPort": 0,
        "vhostHTTPPort": 0,
        "subDomainHost": SUB_DOMAIN_HOST,
        "auth.token": TOKEN,
        "transport.tls.certFile": str(cert),
        "transport.tls.keyFile": str(key),
    }
    process = await run_tunneld(toml_lines(options), **kw)
    control = await process.control_address()
    vhost = await process.http_vhost_address()
    return Tunneld(process, control.port, vhost.port, await process.fingerprint())


async def get(domain: str, port: int) -> bytes:
    """GET / through a vhost port, as a visitor would; returns the body or raises."""
    result = await curl(*resolve(domain, port), "--fail", "-sS", f"http://{domain}:{port}/")
    assert result.returncode == 0, result.stderr
    return bytes(result.stdout)


async def test_failover_client_moves_to_the_next_server_with_its_routes(
    run_tunneld, run_tunnelc, tmp_path: Path
) -> None:
    """serverAddr is node a, serverAddrs lists node b: after a kill -9 of a, the client logs
    in to b at once (no backoff round) and the same domain is served through b's vhost."""
    ca = make_ca(tmp_path, "cluster CA")
    cert, key = make_leaf(ca, tmp_path, [NODE_NAME])
    async with asyncio.timeout(120), echo_apps("app") as (app,):
        node_a = await start_node(run_tunneld, cert, key, expect_exit_code=-signal.SIGKILL)
        node_b = await start_node(run_tunneld, cert, key)
        head = {
            "serverAddr": "127.0.0.1",
            "serverPort": node_a.control_port,
            "serverAddrs": [f"127.0.0.1:{node_b.control_port}"],
            "auth.token": TOKEN,
            "transport.tls.trustedCaFile": str(ca[0]),
            "transport.tls.serverName": NODE_NAME,
            "inspect.enabled": False,
        }
        client = await run_tunnelc(
            toml_lines(head) + http_proxy("hooks", app.port, customDomains=[DOMAIN])
        )
        await client.proxy_endpoint("hooks")
        assert b"app" in await get(DOMAIN, node_a.vhost_port)
        mark = client.line_count
        node_a.process.kill()
        await client.wait_for(
            re.compile(rf"logged in to 127\.0\.0\.1:{node_b.control_port} "), 60, since=mark
        )
        await client.proxy_endpoint("hooks", since=mark)
        assert b"app" in await get(DOMAIN, node_b.vhost_port)
        after = client.lines(mark)
        assert any("trying the next server" in line for line in after), after
        assert not any("reconnecting in" in line for line in after), after
