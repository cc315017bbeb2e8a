"""The dashboard's proxy rows and /metrics on a real tunneld: refusal reasons, HTTP status and
latency histograms per proxy, and series of departed proxies that expire."""

from __future__ import annotations

import asyncio
import json

from tests.e2e.test_iprules_e2e import hello_app, http_proxy
from tests.e2e.test_tcp_e2e import client_toml, server_toml, tcp_proxy
from tests.support.curl import curl, resolve
from tests.support.procs import DASHBOARD_READY, proxy_refused_pattern

SUB = "m.test"


async def test_dashboard_metrics_reasons_histograms_and_expiry(run_tunneld, run_tunnelc) -> None:
    """Three requests show in the status and latency series of their proxy; a refused proxy
    and a closed one carry their reasons; the closed proxy's series expire after the TTL."""
    extra = {
        "vhostHTTPPort": 0,
        "subDomainHost": f'"{SUB}"',
        "webServer.port": 0,
        "enablePrometheus": "true",
        "departedMetricsTTL": 2,
        "allowPorts": "[{ single = 1 }]",
    }
    async with asyncio.timeout(90), hello_app() as app:
        server = await run_tunneld(server_toml(**extra))
        control = await server.control_address()
        http_port = int((await server.wait_for(r"http vhost on \S+:(\d+)"))[1])
        web = f"http://127.0.0.1:{(await server.wait_for(DASHBOARD_READY))['port']}"
        proxies = http_proxy("web", app, "app") + tcp_proxy("dup", app, 2)
        client = await run_tunnelc(client_toml(control.port, await server.fingerprint(), proxies))
        await client.proxy_endpoint("web")
        await client.wait_for(proxy_refused_pattern("dup"))
        for _ in range(3):
            result = await curl(*resolve(f"app.{SUB}", http_port), f"http://app.{SUB}:{http_port}/")
            assert result.stdout == b"hello"
        metrics = (await curl(f"{web}/metrics")).stdout.decode()
        assert 'tunnelkit_http_responses_total{code="2xx",proxy="web"} 3.0' in metrics
        assert 'tunnelkit_http_request_duration_seconds_count{proxy="web"} 3.0' in metrics
        assert (
            'tunnelkit_http_request_duration_seconds_bucket{le="+Inf",proxy="web"} 3.0' in metrics
        )
        rows = json.loads((await curl(f"{web}/api/proxies")).stdout)
        dup = next(r for r in rows if r["name"] == "dup")
        assert dup["status"] == "refused" and dup["type"] == "tcp" and dup["client_id"]
        assert "port 2 is not allowed by the server (allowPorts)" in dup["reason"]
        await client.terminate()
        for _ in range(200):
            rows = json.loads((await curl(f"{web}/api/proxies")).stdout)
            web_row = next((r for r in rows if r["name"] == "web"), None)
            if web_row is not None and web_row["status"] == "offline":
                break
            await asyncio.sleep(0.05)
        assert web_row is not None and web_row["reason"] == "closed: session ended"
        for _ in range(200):  # the TTL (2 s) passes, then the next 1 s sweep removes it
            metrics = (await curl(f"{web}/metrics")).stdout.decode()
            if 'proxy="web"' not in metrics:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the departed proxy's series never expired")
