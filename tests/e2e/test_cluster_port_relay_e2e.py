"""Port relays (cluster.relayPorts): a fixed TCP port is reached through any node.

Real tunneld nodes on 127.0.0.1, .2 and .3 (proxyBindAddr, so each binds the same port
number), a real redis-server and a real tunnelc whose tcp proxy (PROXY protocol v1) leads to
a TCP echo server: the echo shows the visitor's address as the owner's proxy saw it, and the
data come back exact. After a failover the relays follow the new owner, a release closes the
relay listeners, and a node without the cluster secret resets its visitors.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import signal
import socket
from pathlib import Path
from typing import Any, Final

from tests.e2e.test_cluster_e2e import Cluster
from tests.e2e.test_cluster_relay_e2e import SECRET
from tests.e2e.test_http_e2e import Tunneld, toml_lines
from tests.support.echo import tcp_echo_server
from tests.support.redisserver import redis_server

VISITOR_IP: Final = "127.0.0.5"  # the visitor's source address, to find in the PROXY header
STRANGER_IP: Final = "127.0.0.6"  # a visitor outside the proxy's allowIPs
PAYLOAD_BYTES: Final = 256 * 1024
IO_TIMEOUT_S: Final = 30.0


def free_port() -> int:
    """A port number free on 127.0.0.1 to 127.0.0.4 (each node binds its own address)."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        try:
            for last in (2, 3, 4):
                with socket.socket() as other:
                    other.bind((f"127.0.0.{last}", port))
        except OSError:
            continue
        return port


async def port_node(
    cluster: Cluster, run_tunneld: Any, name: str, last: int, secret: str = SECRET, **kw: Any
) -> Tunneld:
    """A node with relays and port relays on, binding its public ports on 127.0.0.<last>."""
    extra = {
        "cluster.secret": secret,
        "cluster.relayPorts": True,
        "proxyBindAddr": f"127.0.0.{last}",
    }
    return await cluster.node(run_tunneld, name, extra, **kw)


def tcp_proxy(port: int, local_port: int) -> str:
    proxy = {
        "name": "echo",
        "type": "tcp",
        "localPort": local_port,
        "remotePort": port,
        "transport.proxyProtocolVersion": "v1",
        "allowIPs": [f"{VISITOR_IP}/32"],
    }
    return "[[proxies]]\n" + toml_lines(proxy)


async def exchange(host: str, port: int, payload: bytes, source: str = VISITOR_IP) -> bytes:
    """Send `payload` from `source`, half-close, and read everything back."""
    reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
    try:
        writer.write(payload)
        writer.write_eof()
        async with asyncio.timeout(IO_TIMEOUT_S):
            return await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()


async def echoed_through(host: str, port: int) -> None:
    """The echo through host:port: the PROXY header names the visitor, the data are exact."""
    payload = os.urandom(PAYLOAD_BYTES)
    reply = await exchange(host, port, payload)
    header, _, data = reply.partition(b"\r\n")
    assert header.startswith(f"PROXY TCP4 {VISITOR_IP} ".encode()), header[:80]
    assert data == payload, (len(data), len(payload))


async def test_cluster_port_relay_reaches_a_tcp_port_through_other_nodes(
    run_tunneld, run_tunnelc, tmp_path: Path
) -> None:
    """A tcp proxy on node a is reached at nodes b and c with the visitor's address and the
    data exact; after node a is killed the client moves to node b, which listens itself while
    node c relays to it; when the client stops, node c's relay listener closes."""
    port = free_port()
    async with (
        asyncio.timeout(120),
        redis_server(tmp_path / "redis") as redis,
        tcp_echo_server() as echo,
    ):
        cluster = Cluster(tmp_path, redis)
        kill = {"expect_exit_code": -signal.SIGKILL}
        node_a = await port_node(cluster, run_tunneld, "node-a", 1, **kill)
        node_b = await port_node(cluster, run_tunneld, "node-b", 2)
        node_c = await port_node(cluster, run_tunneld, "node-c", 3)
        relaying = re.compile(rf"relaying port {port} to its owner")
        client = await run_tunnelc(
            cluster.client_toml(node_a, node_b, user="alice") + tcp_proxy(port, echo.port)
        )
        await client.proxy_endpoint("echo")
        await node_b.process.wait_for(relaying)
        await node_c.process.wait_for(relaying)
        assert not any(relaying.search(line) for line in node_a.process.lines())
        for last in (1, 2, 3):
            await echoed_through(f"127.0.0.{last}", port)
        # the owner judges allowIPs on the original visitor: a stranger is reset through c
        try:
            data: bytes | None = await exchange("127.0.0.3", port, b"let me in", STRANGER_IP)
        except OSError as exc:
            # the reset may come before our half-close (ENOTCONN), during it (EPIPE) or after
            if exc.errno not in (errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN):
                raise
            data = None
        assert data is None, data
        # failover: node b takes the port over (its relay listener yields), c follows
        mark = client.line_count
        node_a.process.kill()
        await client.proxy_endpoint("echo", since=mark)
        for last in (2, 3):
            await echoed_through(f"127.0.0.{last}", port)
        # the client leaves: its claim is released, and node c stops relaying the port
        mark_c = node_c.process.line_count
        await client.terminate()
        await node_c.process.wait_for(re.compile(rf"stopped relaying port {port}"), since=mark_c)
        for last in (2, 3):
            try:
                await exchange(f"127.0.0.{last}", port, b"x")
            except ConnectionRefusedError:
                continue
            raise AssertionError(f"127.0.0.{last}:{port} still accepts")


async def test_cluster_port_relay_refused_to_a_node_without_the_secret(
    run_tunneld, run_tunnelc, tmp_path: Path
) -> None:
    """A node with another cluster secret listens on the port but cannot open the link: its
    visitor's connection is reset (never a clean close), and the owner logs the refusal."""
    port = free_port()
    async with (
        asyncio.timeout(120),
        redis_server(tmp_path / "redis") as redis,
        tcp_echo_server() as echo,
    ):
        cluster = Cluster(tmp_path, redis)
        owner = await port_node(cluster, run_tunneld, "node-a", 1)
        stranger = await port_node(cluster, run_tunneld, "node-x", 4, secret="guessed")
        client = await run_tunnelc(
            cluster.client_toml(owner, user="alice") + tcp_proxy(port, echo.port)
        )
        await client.proxy_endpoint("echo")
        await stranger.process.wait_for(re.compile(rf"relaying port {port} to its owner"))
        try:
            data: bytes | None = await exchange("127.0.0.4", port, b"hello")
        except OSError as exc:
            # the reset may come before our half-close (ENOTCONN), during it (EPIPE) or after
            if exc.errno not in (errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN):
                raise
            data = None
        assert data is None, data  # a reset, not an empty clean close
        await owner.process.wait_for(re.compile(r"refused an internal link.*wrong cluster"))
        await echoed_through("127.0.0.1", port)
