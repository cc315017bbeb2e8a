"""loadBalancer.group through the real tunneld and three tunnelc: round robin over the members,
a wrong groupKey refused, and a member whose backend dies leaves (health check) and returns."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from pathlib import Path
from typing import Any, Final

import aiohttp
from playwright.async_api import expect

from tests.e2e.test_cluster_e2e import Cluster
from tests.e2e.test_health_e2e import DETECT_BOUND_S, Backend, start_checked_client
from tests.e2e.test_http_e2e import http_proxy
from tests.e2e.test_plugins_e2e import TOKEN, start_server, toml
from tests.support.browser import chromium_page, requires_chromium
from tests.support.procs import proxy_refused_pattern
from tests.support.redisserver import redis_server

GROUP: Final = {"loadBalancer.group": "web", "loadBalancer.groupKey": "s3cret"}


async def tag_of(port: int) -> bytes:
    """One connection through the group: which backend answered (its 1-byte tag)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        return await reader.readexactly(1)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def api_groups(session: aiohttp.ClientSession, dashboard: Any) -> list[dict[str, Any]]:
    async with session.get(f"http://127.0.0.1:{dashboard.port}/api/groups") as response:
        assert response.status == 200
        rows: list[dict[str, Any]] = await response.json()
        return rows


def head(port: int, fingerprint: str) -> str:
    return toml(
        {
            "serverAddr": "127.0.0.1",
            "serverPort": port,
            "auth.token": TOKEN,
            "transport.tls.serverFingerprint": fingerprint,
            "inspect.enabled": False,
        }
    )


@requires_chromium
async def test_loadbalance_tcp_group_round_robin_and_wrong_key_refused(
    run_tunneld, run_tunnelc, unused_tcp_port: int
) -> None:
    """Three clients share one port, visited in turn; a fourth with another groupKey is
    refused, and /api/groups and the dashboard page list the three members."""
    backends = [Backend(tag) for tag in (b"a", b"b", b"c")]
    for backend in backends:
        await backend.start()
    try:
        async with asyncio.timeout(120), aiohttp.ClientSession() as http:
            server, port, fingerprint = await start_server(
                run_tunneld,
                **{"webServer.addr": "127.0.0.1", "webServer.port": 0, "enablePrometheus": True},
            )
            public = unused_tcp_port
            for i, backend in enumerate(backends):
                proxy = {"name": f"lb{i}", "type": "tcp", "localPort": backend.port,
                         "remotePort": public, **GROUP}  # fmt: skip
                client = await run_tunnelc(head(port, fingerprint) + "[[proxies]]\n" + toml(proxy))
                ready = await client.proxy_endpoint(f"lb{i}")
                assert ready.port == public
            tags = Counter([await tag_of(public) for _ in range(30)])
            assert tags == {b"a": 10, b"b": 10, b"c": 10}, tags

            intruder = {"name": "evil", "type": "tcp", "localPort": backends[0].port,
                        "remotePort": public, "loadBalancer.group": "web",
                        "loadBalancer.groupKey": "guess"}  # fmt: skip
            bad = await run_tunnelc(head(port, fingerprint) + "[[proxies]]\n" + toml(intruder))
            match = await bad.wait_for(proxy_refused_pattern("evil"))
            assert "groupKey does not match" in match[0], match[0]

            [row] = await api_groups(http, await server.dashboard_address())
            assert (row["name"], row["type"]) == ("web", "tcp")
            assert row["public"] == [f"tcp://127.0.0.1:{public}"]
            states = {m["name"]: (m["state"], m["healthy"]) for m in row["members"]}
            assert states == {f"lb{i}": ("online", True) for i in range(3)}, states
            dashboard = await server.dashboard_address()
            async with http.get(f"http://127.0.0.1:{dashboard.port}/metrics") as response:
                metrics = await response.text()
            assert 'tunnelkit_group_members{group="web",state="online",type="tcp"} 3.0' in metrics
            async with chromium_page(f"http://127.0.0.1:{dashboard.port}/") as page:
                row = page.locator('[data-testid="group-row"][data-group="web"]')
                await expect(row).to_contain_text(f"tcp://127.0.0.1:{public}")
                members = row.get_by_test_id("group-member")
                await expect(members).to_have_count(3)
                for i in range(3):
                    member = row.locator(f'[data-testid="group-member"][data-member="lb{i}"]')
                    await expect(member).to_contain_text("online")
    finally:
        for backend in backends:
            await backend.stop()


async def test_loadbalance_http_group_spreads_requests_over_clients(
    run_tunneld, run_tunnelc
) -> None:
    """An http group shares one domain: new visitor connections go to each member in turn;
    a member asking for another domain is refused."""
    backends = [Backend(tag) for tag in (b"x", b"y")]
    apps: list[aiohttp.web.AppRunner] = []
    try:
        async with asyncio.timeout(120):
            _, port, fingerprint = await start_server(run_tunneld, vhostHTTPPort=0)
            server_vhost = None
            for i, tag in enumerate(("x", "y")):
                app = aiohttp.web.Application()

                async def hello(request: aiohttp.web.Request, tag: str = tag) -> Any:
                    return aiohttp.web.Response(text=tag)

                app.router.add_get("/", hello)
                runner = aiohttp.web.AppRunner(app, access_log=None)
                await runner.setup()
                await aiohttp.web.TCPSite(runner, "127.0.0.1", 0).start()
                apps.append(runner)
                proxy = {"name": f"web{i}", "type": "http", "localPort": runner.addresses[0][1],
                         "customDomains": ["lb.example.test"], **GROUP}  # fmt: skip
                client = await run_tunnelc(head(port, fingerprint) + "[[proxies]]\n" + toml(proxy))
                server_vhost = await client.proxy_endpoint(f"web{i}")
            assert server_vhost is not None
            seen: Counter[str] = Counter()
            connector = aiohttp.TCPConnector(force_close=True)  # a new connection each time
            async with aiohttp.ClientSession(connector=connector) as http:
                for _ in range(10):
                    async with http.get(
                        f"http://127.0.0.1:{server_vhost.port}/",
                        headers={"Host": "lb.example.test"},
                    ) as response:
                        assert response.status == 200
                        seen[await response.text()] += 1
            assert seen == {"x": 5, "y": 5}, seen

            other = {"name": "web9", "type": "http", "localPort": 1,
                     "customDomains": ["other.example.test"], **GROUP}  # fmt: skip
            bad = await run_tunnelc(head(port, fingerprint) + "[[proxies]]\n" + toml(other))
            match = await bad.wait_for(proxy_refused_pattern("web9"))
            assert "members of a group must share it" in match[0], match[0]
    finally:
        for runner in apps:
            await runner.cleanup()
        for backend in backends:
            await backend.stop()


async def test_loadbalance_member_killed_mid_load_leaves_and_returns(
    run_tunneld, run_tunnelc, unused_tcp_port: int
) -> None:
    """Kill one of three backends under load: once the server drops that member (within the
    health check's bound) no connection fails; restarted, the member serves again."""
    backends = [Backend(tag) for tag in (b"a", b"b", b"c")]
    for backend in backends:
        await backend.start()
    try:
        async with asyncio.timeout(150), aiohttp.ClientSession() as http:
            server, port, fingerprint = await start_server(
                run_tunneld, **{"webServer.addr": "127.0.0.1", "webServer.port": 0}
            )
            dashboard = await server.dashboard_address()
            public = unused_tcp_port
            clients = []
            for i, backend in enumerate(backends):
                proxy = {"name": f"m{i}", "type": "tcp", "localPort": backend.port,
                         "remotePort": public, "healthCheck.type": "tcp", **GROUP}  # fmt: skip
                client = await start_checked_client(run_tunnelc, port, fingerprint, proxy)
                await client.proxy_endpoint(f"m{i}")
                clients.append(client)

            results: list[tuple[float, bytes | None]] = []  # (start time, tag or None = failed)
            stop = asyncio.Event()
            wanted = [30]  # results to wait for; `enough` is set when there are that many
            enough = asyncio.Event()

            async def load() -> None:
                for _ in range(5000):  # bounded; stopped by the event long before
                    if stop.is_set():
                        return
                    started = time.monotonic()
                    try:
                        tag: bytes | None = await tag_of(public)
                    except (ConnectionError, asyncio.IncompleteReadError):
                        tag = None
                    results.append((started, tag))
                    if len(results) >= wanted[0]:
                        enough.set()
                    await asyncio.sleep(0.01)

            loader = asyncio.create_task(load())
            await enough.wait()
            killed = time.monotonic()
            await backends[1].stop()
            left_at = None
            while time.monotonic() - killed < DETECT_BOUND_S + 5:
                [row] = await api_groups(http, dashboard)
                member = next(m for m in row["members"] if m["name"] == "m1")
                if member["state"] == "left":
                    left_at = time.monotonic()
                    assert not member["healthy"] and "unhealthy" in member["reason"], member
                    break
                await asyncio.sleep(0.05)
            assert left_at is not None, clients[1].tail()
            assert left_at - killed <= DETECT_BOUND_S, f"{left_at - killed:.2f}s"
            enough.clear()
            wanted[0] = len(results) + 60
            await enough.wait()
            stop.set()
            await loader
            after = [tag for started, tag in results if started >= left_at]
            failed_before = sum(1 for started, tag in results if tag is None and started < left_at)
            print(f"detected in {left_at - killed:.2f}s (bound {DETECT_BOUND_S:.1f}s); "
                  f"{failed_before} failed before, 0 of {len(after)} after")  # fmt: skip
            assert None not in after, f"{after.count(None)} of {len(after)} failed after detection"
            assert set(after) == {b"a", b"c"}, Counter(after)

            since = clients[1].line_count
            await backends[1].start()
            await clients[1].proxy_endpoint("m1", DETECT_BOUND_S, since=since)
            tags = {await tag_of(public) for _ in range(6)}
            assert tags == {b"a", b"b", b"c"}, tags
            [row] = await api_groups(http, dashboard)
            assert all(m["state"] == "online" for m in row["members"]), row
    finally:
        for backend in backends:
            await backend.stop()


async def test_loadbalance_group_is_refused_on_a_cluster_node(
    run_tunneld, run_tunnelc, tmp_path: Path
) -> None:
    """A cluster node refuses a grouped proxy with a clear reason (its registry gives a port
    or route to one client); the client's other proxies still run."""
    async with asyncio.timeout(120), redis_server(tmp_path / "redis") as redis:
        cluster = Cluster(tmp_path, redis)
        node = await cluster.node(run_tunneld, "node-a")
        client = await run_tunnelc(
            cluster.client_toml(node)
            + http_proxy("grouped", 1, customDomains=["g.grouped.test"], **GROUP)
            + http_proxy("plain", 1, customDomains=["p.grouped.test"])
        )
        match = await client.wait_for(proxy_refused_pattern("grouped"))
        assert "not supported on a cluster node" in match.string, match.string
        await client.proxy_endpoint("plain")
