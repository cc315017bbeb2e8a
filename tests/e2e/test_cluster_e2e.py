"""tunneld nodes sharing names through a real redis-server, with real tunneld and tunnelc.

The nodes share one certificate (as a cluster's nodes do) and one Redis on a Unix socket.
"""

from __future__ import annotations

import asyncio
import re
import signal
from pathlib import Path
from typing import Any, Final

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
from tests.support.procs import proxy_refused_pattern
from tests.support.redisserver import RedisServer, redis_server

DOMAIN: Final = "hooks.cluster.test"
NODE_NAME: Final = "tunnel.cluster.test"  # the name on the nodes' shared certificate
LONG_LEASE_S: Final = 300.0  # far longer than any wait below: a takeover must not wait for it


class Cluster:
    """A CA, the nodes' shared certificate and a Redis; starts nodes and clients."""

    def __init__(self, tmp_path: Path, redis: RedisServer) -> None:
        self.redis = redis
        self.ca = make_ca(tmp_path, "cluster CA")
        self.cert, self.key = make_leaf(self.ca, tmp_path, [NODE_NAME])

    async def node(self, run_tunneld: Any, name: str, **kw: Any) -> Tunneld:
        options = {
            "bindAddr": "127.0.0.1",
            "bindPort": 0,
            "vhostHTTPPort": 0,
            "subDomainHost": SUB_DOMAIN_HOST,
            "auth.token": TOKEN,
            "transport.tls.certFile": str(self.cert),
            "transport.tls.keyFile": str(self.key),
            "cluster.redisURL": self.redis.url,
            "cluster.nodeName": name,
            "cluster.leaseSeconds": LONG_LEASE_S,
        }
        process = await run_tunneld(toml_lines(options), **kw)
        await process.wait_for(re.compile(rf"cluster: node {name} joined"))
        control = await process.control_address()
        vhost = await process.http_vhost_address()
        return Tunneld(process, control.port, vhost.port, await process.fingerprint())

    def client_toml(self, first: Tunneld, *more: Tunneld, **options: object) -> str:
        head = {
            "serverAddr": "127.0.0.1",
            "serverPort": first.control_port,
            "serverAddrs": [f"127.0.0.1:{node.control_port}" for node in more],
            "auth.token": TOKEN,
            "transport.tls.trustedCaFile": str(self.ca[0]),
            "transport.tls.serverName": NODE_NAME,
            "inspect.enabled": False,
            **options,
        }
        return toml_lines(head)


async def get(domain: str, port: int) -> bytes:
    """GET / through a vhost port, as a visitor would; returns the body or raises."""
    result = await curl(*resolve(domain, port), "--fail", "-sS", f"http://{domain}:{port}/")
    assert result.returncode == 0, result.stderr
    return bytes(result.stdout)


async def test_cluster_a_route_held_on_one_node_is_refused_on_another(
    run_tunneld, run_tunnelc, tmp_path: Path
) -> None:
    """Two users ask two nodes for the same domain: the second is refused, and the refusal
    names the node that holds it."""
    async with asyncio.timeout(120), redis_server(tmp_path / "redis") as redis:
        cluster = Cluster(tmp_path, redis)
        async with echo_apps("alice", "bob") as (alice_app, bob_app):
            node_a = await cluster.node(run_tunneld, "node-a")
            node_b = await cluster.node(run_tunneld, "node-b")
            alice = await run_tunnelc(
                cluster.client_toml(node_a, user="alice")
                + http_proxy("web", alice_app.port, customDomains=[DOMAIN])
            )
            await alice.proxy_endpoint("web")
            bob = await run_tunnelc(
                cluster.client_toml(node_b, user="bob")
                + http_proxy("web", bob_app.port, customDomains=[DOMAIN])
            )
            match = await bob.wait_for(proxy_refused_pattern("web"))
            assert "held on node node-a by another user" in match.string, match.string
            assert b"alice" in await get(DOMAIN, node_a.vhost_port)


async def test_cluster_same_client_through_another_node_takes_over_at_once(
    run_tunneld, run_tunnelc, tmp_path: Path
) -> None:
    """The client's node is killed: it logs in to the next node, which takes its domain over
    at once (the lease is far longer than the wait), and serves it."""
    async with asyncio.timeout(120), redis_server(tmp_path / "redis") as redis:
        cluster = Cluster(tmp_path, redis)
        async with echo_apps("app") as (app,):
            node_a = await cluster.node(run_tunneld, "node-a", expect_exit_code=-signal.SIGKILL)
            node_b = await cluster.node(run_tunneld, "node-b")
            client = await run_tunnelc(
                cluster.client_toml(node_a, node_b, clientID="office-1")
                + http_proxy("hooks", app.port, customDomains=[DOMAIN])
            )
            await client.proxy_endpoint("hooks")
            mark = client.line_count
            node_a.process.kill()
            await client.proxy_endpoint("hooks", 60, since=mark)
            assert b"app" in await get(DOMAIN, node_b.vhost_port)


async def test_cluster_a_stale_session_on_a_live_node_is_replaced(
    run_tunneld, run_tunnelc, tmp_path: Path
) -> None:
    """The same client id logs in through node b while its old session on node a still
    looks alive (a silent NAT): b takes the domain, and a closes the stale proxy."""
    async with asyncio.timeout(120), redis_server(tmp_path / "redis") as redis:
        cluster = Cluster(tmp_path, redis)
        async with echo_apps("old", "new") as (old_app, new_app):
            node_a = await cluster.node(run_tunneld, "node-a")
            node_b = await cluster.node(run_tunneld, "node-b")
            old = await run_tunnelc(
                cluster.client_toml(node_a, clientID="office-1")
                + http_proxy("hooks", old_app.port, customDomains=[DOMAIN])
            )
            await old.proxy_endpoint("hooks")
            new = await run_tunnelc(
                cluster.client_toml(node_b, clientID="office-1")
                + http_proxy("hooks", new_app.port, customDomains=[DOMAIN])
            )
            await new.proxy_endpoint("hooks")
            await node_a.process.wait_for(
                re.compile(
                    r"proxy=hooks\] closed: the same client took it over through node node-b"
                )
            )
            assert b"new" in await get(DOMAIN, node_b.vhost_port)
