"""The cluster view on real tunneld nodes and a real redis-server: /api/cluster lists the
live nodes with their claims, and /metrics names the node in its info series."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

from playwright.async_api import async_playwright, expect

from tests.e2e.test_cluster_e2e import DOMAIN, Cluster
from tests.e2e.test_http_e2e import echo_apps, http_proxy
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, requires_chromium
from tests.support.curl import curl
from tests.support.procs import DASHBOARD_READY
from tests.support.redisserver import redis_server

SHORT_LEASE = {"cluster.leaseSeconds": 3}  # a node publishes its load at each renewal (1 s)
LOAD_WAIT_MS = 30_000
WEB = {"webServer.addr": "127.0.0.1", "webServer.port": 0, "enablePrometheus": True}


async def dashboard(node: Any) -> str:
    """The node's dashboard base URL, from its ready line."""
    return f"http://127.0.0.1:{(await node.process.wait_for(DASHBOARD_READY))['port']}"


async def cluster_api(web: str) -> dict[str, Any]:
    result = await curl("--fail", "-sS", f"{web}/api/cluster")
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


async def test_cluster_view_lists_nodes_claims_and_node_info(
    run_tunneld, run_tunnelc, tmp_path: Path
) -> None:
    """Both nodes' /api/cluster list both nodes; the claims of a client on node a show on
    node b too; each /metrics carries its own node's info series."""
    async with asyncio.timeout(120), redis_server(tmp_path / "redis") as redis:
        cluster = Cluster(tmp_path, redis)
        async with echo_apps("app") as (app,):
            node_a = await cluster.node(run_tunneld, "node-a", extra=WEB)
            node_b = await cluster.node(run_tunneld, "node-b", extra=WEB)
            web_a, web_b = await dashboard(node_a), await dashboard(node_b)
            client = await run_tunnelc(
                cluster.client_toml(node_a) + http_proxy("hooks", app.port, customDomains=[DOMAIN])
            )
            await client.proxy_endpoint("hooks")
            for web, me in ((web_a, "node-a"), (web_b, "node-b")):
                for _ in range(300):  # node b learns the claims from the routes channel
                    view = await cluster_api(web)
                    claims = {n["name"]: n["claims"] for n in view["nodes"]}
                    if claims.get("node-a") == 2:
                        break
                    await asyncio.sleep(0.1)
                assert view["node"] == me and view["registry_available"] is True
                assert claims == {"node-a": 2, "node-b": 0}, view  # the proxy name and route
                metrics = (await curl("-sS", f"{web}/metrics")).stdout.decode()
                assert f'tunnelkit_cluster_node_info{{node="{me}"}} 1.0' in metrics
                assert re.search(r'tunnelkit_cluster_node_info\{node="node-[ab]"\}', metrics)
                assert metrics.count("tunnelkit_cluster_node_info{") == 1


async def test_cluster_view_answers_503_while_redis_is_away(run_tunneld, tmp_path: Path) -> None:
    """Redis stopped: /api/cluster says why with a 503, and /metrics still answers."""
    async with asyncio.timeout(120), redis_server(tmp_path / "redis") as redis:
        cluster = Cluster(tmp_path, redis)
        node = await cluster.node(run_tunneld, "node-a", extra=WEB)
        web = await dashboard(node)
        await redis.stop()
        result = await curl("-sS", "-w", "\\n%{http_code}", f"{web}/api/cluster")
        body, _, code = result.stdout.decode().rpartition("\n")
        assert code == "503", result.stdout
        assert "the cluster registry (Redis) is unreachable" in json.loads(body)["error"]
        metrics = (await curl("--fail", "-sS", f"{web}/metrics")).stdout.decode()
        assert 'tunnelkit_cluster_node_info{node="node-a"} 1.0' in metrics


@requires_chromium
async def test_cluster_view_page_shows_every_node_with_its_clients_and_load(
    run_tunneld, run_tunnelc, tmp_path: Path, screenshots: Path
) -> None:
    """Node b's dashboard page (headless Chromium) shows one table of both nodes, each with
    its load and the clients and proxies that the registry places on it."""
    async with asyncio.timeout(120), redis_server(tmp_path / "redis") as redis:
        cluster = Cluster(tmp_path, redis)
        async with echo_apps("one", "two") as (app_one, app_two):
            node_a = await cluster.node(run_tunneld, "node-a", extra=WEB | SHORT_LEASE)
            node_b = await cluster.node(run_tunneld, "node-b", extra=WEB | SHORT_LEASE)
            web_b = await dashboard(node_b)
            for node, name, app, domain in (
                (node_a, "hooks", app_one, DOMAIN),
                (node_b, "other", app_two, "other.cluster.test"),
            ):
                client = await run_tunnelc(
                    cluster.client_toml(node, clientID=f"office-{name}")
                    + http_proxy(name, app.port, customDomains=[domain])
                )
                await client.proxy_endpoint(name)
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(
                    executable_path=CHROMIUM, args=CHROMIUM_ARGS
                )
                try:
                    page = await browser.new_page(viewport={"width": 1400, "height": 800})
                    await page.goto(web_b + "/")
                    rows = page.get_by_test_id("cluster-row")
                    await expect(rows).to_have_count(2)
                    row_a = page.locator('[data-testid="cluster-row"][data-node="node-a"]')
                    row_b = page.locator('[data-testid="cluster-row"][data-node="node-b"]')
                    # the loads come with each node's next renewal (lease / 3)
                    await expect(row_a.get_by_test_id("cluster-clients")).to_have_text(
                        "1", timeout=LOAD_WAIT_MS
                    )
                    await expect(row_a.get_by_test_id("cluster-node-clients")).to_contain_text(
                        "office-hooks"
                    )
                    await expect(row_a).to_contain_text("hooks")
                    await expect(row_b.get_by_test_id("cluster-node-clients")).to_contain_text(
                        "office-other"
                    )
                    await expect(row_b).to_contain_text("this node")
                    await page.screenshot(
                        path=str(screenshots / "cluster-view.png"), full_page=True
                    )
                finally:
                    await browser.close()
