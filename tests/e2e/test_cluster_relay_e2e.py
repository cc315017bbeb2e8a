"""Relays between nodes: three real tunneld, a real redis-server and real tunnelc.

A request for a route owned by another node is relayed over the internal link; the owner
serves it as a public request from the original visitor (X-Forwarded-For). A node without
the cluster secret cannot open a link, and idle or unauthenticated internal connections are
bounded as pre-login peers are.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import ssl
from pathlib import Path
from typing import Any, Final

import aiohttp

from tests.e2e.test_cluster_e2e import Cluster
from tests.e2e.test_http_e2e import (
    CLIENT_IO_TIMEOUT_S,
    Reply,
    Tunneld,
    echo_apps,
    header_values,
    http_proxy,
    toml_lines,
)
from tests.e2e.test_https_e2e import curl_https, tls_app
from tests.e2e.test_plugins_e2e import toml
from tests.e2e.test_tcpmux_e2e import MUX, text_site
from tests.support.certs import make_ca, make_leaf
from tests.support.curl import curl
from tests.support.peers import reserve_port
from tests.support.redisserver import redis_server
from tunnel_server.cluster.link import MAX_PENDING_LINKS_PER_IP

SECRET: Final = "cluster-relay-secret"
DOMAIN_A: Final = "alpha.relay.test"
DOMAIN_B: Final = "beta.relay.test"
SECURE_DOMAIN: Final = "secure.relay.test"
MUX_DOMAIN: Final = "box.relay.test"
VISITOR_IP: Final = "127.0.0.2"  # the visitor's source address, to find in X-Forwarded-For
LINK_READY: Final = re.compile(r"ready: cluster link on ([0-9.]+):(\d+)")
POLL_S: Final = 0.1  # between tries while a node's cache catches up with the routes channel


async def relay_node(
    cluster: Cluster, run_tunneld: Any, name: str, secret: str = SECRET, **extra: object
) -> tuple[Tunneld, int]:
    """A node with relays on; returns it and its internal link port."""
    node = await cluster.node(run_tunneld, name, {"cluster.secret": secret, **extra})
    match = await node.process.wait_for(LINK_READY)
    return node, int(match.group(2))


async def fetch_from(port: int, host: str) -> Reply:
    """GET / through a vhost port from VISITOR_IP, on a connection of its own."""
    timeout = aiohttp.ClientTimeout(total=CLIENT_IO_TIMEOUT_S)
    connector = aiohttp.TCPConnector(local_addr=(VISITOR_IP, 0), force_close=True)
    async with (
        aiohttp.ClientSession(timeout=timeout, connector=connector) as http,
        http.get(f"http://127.0.0.1:{port}/", headers={"Host": host}) as resp,
    ):
        return Reply(resp.status, dict(resp.headers), await resp.read())


async def served(port: int, host: str) -> Reply:
    """The first reply that is not a 404: a node learns other nodes' routes from the routes
    channel, a moment after the claim."""
    while True:
        reply = await fetch_from(port, host)
        if reply.status != 404:
            return reply
        await asyncio.sleep(POLL_S)


async def test_cluster_relay_serves_each_domain_at_each_node(
    run_tunneld, run_tunnelc, tmp_path: Path
) -> None:
    """Two clients on nodes a and b: each domain is served through each of three nodes, by
    its own app, with the visitor's address in X-Forwarded-For."""
    access = tmp_path / "access-a.jsonl"
    async with asyncio.timeout(120), redis_server(tmp_path / "redis") as redis:
        cluster = Cluster(tmp_path, redis)
        async with echo_apps("alice", "bob") as (alice_app, bob_app):
            log = {"accessLog.to": str(access), "accessLog.format": "json"}
            nodes = [(await relay_node(cluster, run_tunneld, "node-a", **log))[0]]
            for name in ("node-b", "node-c"):
                nodes.append((await relay_node(cluster, run_tunneld, name))[0])
            for node, user, app, domain in (
                (nodes[0], "alice", alice_app, DOMAIN_A),
                (nodes[1], "bob", bob_app, DOMAIN_B),
            ):
                client = await run_tunnelc(
                    cluster.client_toml(node, user=user)
                    + http_proxy("web", app.port, customDomains=[domain])
                )
                await client.proxy_endpoint("web")
            for node in nodes:
                for domain, app in ((DOMAIN_A, "alice"), (DOMAIN_B, "bob")):
                    reply = await served(node.vhost_port, domain)
                    assert reply.status == 200, (node, domain, reply.text)
                    echoed = reply.json()
                    assert echoed["app"] == app
                    assert header_values(echoed, "X-Forwarded-For") == [VISITOR_IP], echoed
            # one link per node pair: node b relays to node a on the link that a dialled
            assert any("link to node node-b is up" in line for line in nodes[0].process.lines())
            assert not any("link to node node-a" in line for line in nodes[1].process.lines())
            # the owner logs the relayed requests as public ones, from the visitor's address
            for _ in range(200):  # a line is written as its exchange ends
                lines = (await asyncio.to_thread(access.read_text)).splitlines()
                records = [json.loads(line) for line in lines]
                served_here = [r for r in records if r["host"] == DOMAIN_A and r["status"] == 200]
                if len(served_here) >= 3:
                    break
                await asyncio.sleep(POLL_S)
            assert len(served_here) == 3, records  # from nodes a, b and c
            assert {r["src"].rpartition(":")[0] for r in served_here} == {VISITOR_IP}
            # keep-alive: a second request on the relayed connection reaches the same app
            connector = aiohttp.TCPConnector(local_addr=(VISITOR_IP, 0))
            async with aiohttp.ClientSession(connector=connector) as http:
                for _ in range(3):
                    async with http.get(
                        f"http://127.0.0.1:{nodes[2].vhost_port}/again",
                        headers={"Host": DOMAIN_A},
                    ) as resp:
                        assert (await resp.json())["path"] == "/again"


async def test_cluster_relay_passes_tls_through_by_sni(
    run_tunneld, run_tunnelc, tmp_path: Path
) -> None:
    """An https (passthrough) proxy on node a is reached through node b's HTTPS port: the
    TLS session is the app's own, end to end (curl checks the app's certificate)."""
    async with asyncio.timeout(120), redis_server(tmp_path / "redis") as redis:
        cluster = Cluster(tmp_path, redis)
        (tmp_path / "app").mkdir()
        app_ca = make_ca(tmp_path / "app", "app CA")
        app_cert, app_key = make_leaf(app_ca, tmp_path / "app", [SECURE_DOMAIN])
        async with tls_app(app_cert, app_key) as app:
            owner, _ = await relay_node(cluster, run_tunneld, "node-a", vhostHTTPSPort=0)
            ingress, _ = await relay_node(cluster, run_tunneld, "node-b", vhostHTTPSPort=0)
            client = await run_tunnelc(
                cluster.client_toml(owner, user="alice")
                + "[[proxies]]\n"
                + toml_lines(
                    {
                        "name": "secure",
                        "type": "https",
                        "localPort": app.port,
                        "customDomains": [SECURE_DOMAIN],
                    }
                )
            )
            await client.proxy_endpoint("secure")
            port = (await ingress.process.https_vhost_address()).port
            while True:
                result = await curl_https(SECURE_DOMAIN, port, app_ca[0])
                if result.returncode == 0:
                    break
                await asyncio.sleep(POLL_S)  # node b has not heard of the route yet
            assert json.loads(result.stdout)["app"] == "tls"
            assert app.sni_seen == [SECURE_DOMAIN]


async def test_cluster_relay_refused_to_a_node_without_the_secret(
    run_tunneld, run_tunnelc, tmp_path: Path
) -> None:
    """A node with another secret cannot open the internal link: its visitor gets a 502,
    and the owner logs the refusal."""
    async with asyncio.timeout(120), redis_server(tmp_path / "redis") as redis:
        cluster = Cluster(tmp_path, redis)
        async with echo_apps("alice") as (app,):
            owner, _ = await relay_node(cluster, run_tunneld, "node-a")
            stranger, _ = await relay_node(cluster, run_tunneld, "node-x", secret="guessed")
            client = await run_tunnelc(
                cluster.client_toml(owner, user="alice")
                + http_proxy("web", app.port, customDomains=[DOMAIN_A])
            )
            await client.proxy_endpoint("web")
            reply = await served(stranger.vhost_port, DOMAIN_A)
            assert reply.status == 502, reply.text
            assert "cannot be reached" in reply.text
            await owner.process.wait_for(re.compile(r"refused an internal link.*wrong cluster"))
            assert (await fetch_from(owner.vhost_port, DOMAIN_A)).status == 200


async def _read_until_closed(reader: asyncio.StreamReader) -> bytes:
    data = b""
    while chunk := await reader.read(65536):
        data += chunk
    return data


async def test_cluster_link_port_bounds_unauthenticated_connections(
    run_tunneld, tmp_path: Path
) -> None:
    """Idle internal connections are bounded as pre-login peers: one address past its slots
    loses one connection at once (the newcomer, or its most stalled), another address still
    gets in, and every idle one is closed when its handshake time runs out; a TLS peer with a
    wrong proof is closed too."""
    async with asyncio.timeout(120), redis_server(tmp_path / "redis") as redis:
        cluster = Cluster(tmp_path, redis)
        _node, port = await relay_node(cluster, run_tunneld, "node-a")
        writers: list[asyncio.StreamWriter] = []
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        try:
            readers = []
            for _ in range(MAX_PENDING_LINKS_PER_IP + 1):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                readers.append(reader)
                writers.append(writer)
            reads = [asyncio.create_task(_read_until_closed(reader)) for reader in readers]
            done, _ = await asyncio.wait(reads, return_when=asyncio.FIRST_COMPLETED)
            assert len(done) == 1 and done <= {reads[0], reads[-1]}, done
            # another address is not held up by the first one's flood
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=ctx, local_addr=(VISITOR_IP, 0)
            )
            writers.append(writer)
            assert (await reader.readexactly(40)).startswith(b"TKNODE1\n")
            for read in reads:  # each idle one is closed when its handshake time runs out
                assert await read == b""
            # A TLS peer that answers the challenge with a wrong proof is closed.
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
            writers.append(writer)
            hello = await reader.readexactly(40)
            assert hello.startswith(b"TKNODE1\n")
            writer.write(bytes(32) + b"\x01x" + bytes(32))
            assert await _read_until_closed(reader) == b""
        finally:
            for writer in writers:
                writer.close()
                with contextlib.suppress(ConnectionError, ssl.SSLError):
                    await writer.wait_closed()


async def test_cluster_relay_carries_a_tcpmux_connect_to_the_owner(
    run_tunneld, run_tunnelc, tmp_path: Path
) -> None:
    """A tcpmux (httpconnect) service on node a is reached by curl --proxytunnel through node
    b's tcpmux port: node b relays the CONNECT, node a answers it."""
    async with (
        asyncio.timeout(120),
        redis_server(tmp_path / "redis") as redis,
        text_site("mux-relayed-ok") as site,
    ):
        cluster = Cluster(tmp_path, redis)
        mux_ports = [reserve_port(socket.SOCK_STREAM) for _ in range(2)]
        owner, _ = await relay_node(
            cluster, run_tunneld, "node-a", tcpmuxHTTPConnectPort=mux_ports[0]
        )
        ingress, _ = await relay_node(
            cluster, run_tunneld, "node-b", tcpmuxHTTPConnectPort=mux_ports[1]
        )
        proxy = {"name": "muxed", "localPort": site, "customDomains": [MUX_DOMAIN], **MUX}
        client = await run_tunnelc(cluster.client_toml(owner) + "[[proxies]]\n" + toml(proxy))
        await client.proxy_endpoint("muxed")
        tunnel = ["-sS", "--max-time", "20", "--proxytunnel", "-x"]
        while True:
            result = await curl(
                *tunnel, f"http://127.0.0.1:{mux_ports[1]}", f"http://{MUX_DOMAIN}/"
            )
            if result.returncode == 0:
                break
            assert "404" in result.stderr, result.stderr  # only "not heard of it yet"
            await asyncio.sleep(POLL_S)  # node b has not heard of the route yet
        assert result.stdout.decode() == "mux-relayed-ok"
        await ingress.process.wait_for("cluster: link to node node-a is up")  # it was relayed
        unknown = await curl(*tunnel, f"http://127.0.0.1:{mux_ports[1]}", "http://nobody.test/")
        assert unknown.returncode != 0 and "404" in unknown.stderr, unknown.stderr
