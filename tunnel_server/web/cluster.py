"""The cluster's part of the dashboard: `/api/cluster` and the node's info series in /metrics.

`/api/cluster` lists the live nodes (their registry keys have not expired) and, for each,
how many claims it holds and its load (as the node published it at its last renewal), then
the clients of the whole cluster with their proxies, as this node's registry cache knows
them (no scan of the claims in Redis).

/metrics stays per node, and is labelled as Prometheus expects: Prometheus itself gives every
series of a scrape the target's `instance` label, so the node's name is published once, as a
constant info series `tunnelkit_cluster_node_info{node="..."} 1` (the `*_info` pattern, as
`node_uname_info` or `kube_node_info`), rather than as a label repeated on every series.
A query joins it where the name is wanted:
`tunnelkit_clients * on(instance) group_left(node) tunnelkit_cluster_node_info`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

from aiohttp import web
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from tunnel_server.cluster.registry import ClusterRegistry

MAX_LISTED_NODES: Final = 1000  # nodes one /api/cluster answer lists
MAX_LISTED_PROXIES: Final = 10_000  # proxies (and so clients) one answer lists
NODES_TIMEOUT_S: Final = 5.0  # listing the nodes in Redis, before the answer is a 503


class ClusterNodeCollector:
    """The constant `tunnelkit_cluster_node_info{node}` series of a cluster node."""

    def __init__(self, registry: ClusterRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "tunnelkit_cluster_node_info",
            "This tunneld's node name in its cluster (always 1; join on instance).",
            labels=["node"],
        )
        info.add_metric([self._registry.node], 1)
        yield info


def cluster_routes(registry: ClusterRegistry) -> list[web.RouteDef]:
    """`GET /api/cluster`: this node, the live nodes and each node's claims count."""

    async def api_cluster(request: web.Request) -> web.Response:
        from redis.exceptions import RedisError

        try:
            async with asyncio.timeout(NODES_TIMEOUT_S):
                nodes = await registry.nodes()
        except (RedisError, OSError, TimeoutError) as exc:
            detail = str(exc) or type(exc).__name__
            reason = f"the cluster registry (Redis) is unreachable: {detail}"
            return web.json_response({"error": reason, "node": registry.node}, status=503)
        claims = registry.claims_by_node()
        proxies = registry.proxies(MAX_LISTED_PROXIES + 1)
        truncated = len(proxies) > MAX_LISTED_PROXIES
        clients: dict[tuple[str, str, str], list[str]] = {}
        for name, owner in proxies[:MAX_LISTED_PROXIES]:
            clients.setdefault((owner.node, owner.user, owner.client), []).append(name)
        return web.json_response(
            {
                "node": registry.node,
                "registry_available": registry.available,
                "nodes": [
                    {
                        "name": node.name,
                        "address": node.address,
                        "started": node.started,
                        "claims": claims.get(node.name, 0),
                        "load": dict(node.load),
                    }
                    for node in nodes[:MAX_LISTED_NODES]
                ],
                "nodes_truncated": len(nodes) > MAX_LISTED_NODES,
                "clients": [
                    {"node": node, "user": user, "client_id": client, "proxies": sorted(names)}
                    for (node, user, client), names in sorted(clients.items())
                ],
                "proxies_truncated": truncated,
            }
        )

    return [web.get("/api/cluster", api_cluster)]
