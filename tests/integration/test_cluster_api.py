"""/api/cluster against a real redis-server: its bounds hold under a flood of node records."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Final

import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.support.redisserver import redis_server
from tunnel_server.cluster.claims import Owner
from tunnel_server.cluster.registry import ClusterRegistry
from tunnel_server.web.cluster import MAX_LISTED_NODES, cluster_routes

TEST_TIMEOUT_S: Final = 60.0
FLOOD_NODES: Final = MAX_LISTED_NODES + 50


async def test_cluster_api_lists_at_most_the_node_cap_under_a_flood(tmp_path: Path) -> None:
    """1,050 live node records: /api/cluster lists 1,000 of them, says the list is
    truncated, and still lists the clients and proxies from the cache."""
    async with asyncio.timeout(TEST_TIMEOUT_S), redis_server(tmp_path / "redis") as redis:
        admin = aioredis.from_url(redis.url)
        try:
            async with admin.pipeline(transaction=False) as pipe:
                for i in range(FLOOD_NODES):
                    record = {"name": f"n{i:04}", "address": "192.0.2.1:7000", "started": 0.0}
                    pipe.set(f"tunnelkit:node:n{i:04}", json.dumps(record), px=60_000)
                await pipe.execute()
        finally:
            await admin.aclose()
        registry = ClusterRegistry.from_url(redis.url, "me", "127.0.0.1:7000", lease_s=30)
        registry.load_of = lambda: {"clients": 1, "proxies": 1}
        await registry.start()
        await registry.wait_synced()
        try:
            await registry.claim("proxy", ["alice.web"], Owner("me", "alice", "c1"))
            app = web.Application()
            app.add_routes(cluster_routes(registry))
            async with TestClient(TestServer(app)) as client:
                response = await client.get("/api/cluster")
                assert response.status == 200
                data = await response.json()
            assert len(data["nodes"]) == MAX_LISTED_NODES
            assert data["nodes_truncated"] is True
            assert data["clients"] == [
                {"node": "me", "user": "alice", "client_id": "c1", "proxies": ["alice.web"]}
            ]
            assert data["nodes"][0]["name"] == "me"  # sorted by name: "me" < "n0000"
            assert data["nodes"][0]["load"] == {"clients": 1, "proxies": 1}
        finally:
            await registry.close()
