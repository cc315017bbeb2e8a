"""Workers on one machine (cluster.reusePort): two real tunneld share the control and vhost
ports through SO_REUSEPORT, with a real redis-server and two real tunnelc.

The kernel spreads connections across the workers. Each worker owns the sessions it accepted,
and a vhost request that lands on the other worker is relayed to the owner.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any, Final

from tests.e2e.test_cluster_e2e import Cluster
from tests.e2e.test_cluster_relay_e2e import SECRET, fetch_from
from tests.e2e.test_http_e2e import Reply, echo_apps, http_proxy
from tests.support.redisserver import redis_server

DOMAINS: Final = {"alpha.workers.test": "alice", "beta.workers.test": "bob"}
REQUESTS: Final = 40  # per domain, each on a connection of its own
POLL_S: Final = 0.1  # between tries while a worker's cache catches up with the routes channel
LINK_UP: Final = re.compile(r"link to node (worker-[ab]) is up")


async def served(port: int, host: str) -> Reply:
    """A reply that is not a 404: a worker learns the other's routes a moment after the claim."""
    while True:
        reply = await fetch_from(port, host)
        if reply.status != 404:
            return reply
        await asyncio.sleep(POLL_S)


async def test_workers_share_ports_and_serve_every_domain(
    run_tunneld: Any, run_tunnelc: Any, tmp_path: Path
) -> None:
    """Two workers bind the same control and vhost ports; requests to the one vhost port are
    all answered by the right app, whichever worker they land on (local or relayed)."""
    async with asyncio.timeout(120), redis_server(tmp_path / "redis") as redis:
        cluster = Cluster(tmp_path, redis)
        reuse = {"cluster.secret": SECRET, "cluster.reusePort": True}
        async with echo_apps(*DOMAINS.values()) as apps:
            first = await cluster.node(run_tunneld, "worker-a", reuse)
            shared = {"bindPort": first.control_port, "vhostHTTPPort": first.vhost_port}
            second = await cluster.node(run_tunneld, "worker-b", reuse | shared)
            assert (second.control_port, second.vhost_port) == (
                first.control_port,
                first.vhost_port,
            )
            for (domain, user), app in zip(DOMAINS.items(), apps, strict=True):
                client = await run_tunnelc(
                    cluster.client_toml(first, user=user)
                    + http_proxy("web", app.port, customDomains=[domain])
                )
                await client.proxy_endpoint("web")
            for _ in range(REQUESTS):
                for domain, user in DOMAINS.items():
                    reply = await served(first.vhost_port, domain)
                    assert reply.status == 200, (domain, reply.text)
                    assert reply.json()["app"] == user
            # the kernel spread the 80 connections: some landed on a non-owner and were relayed
            logs = [*first.process.lines(), *second.process.lines()]
            assert any(LINK_UP.search(line) for line in logs), logs
