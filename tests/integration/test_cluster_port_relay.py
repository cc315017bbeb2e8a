"""Port relay listeners (cluster.relayPorts) following a real registry on a real redis-server.

The listeners' bound, their opening and closing as claims come and go, the synchronous
yield when this node claims a port, and the reset of a visitor whose relay fails. The
relay itself (link, owner) is covered end to end in tests/e2e/test_cluster_port_relay_e2e.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Final, cast

from tests.integration.test_cluster_registry import node
from tests.support.redisserver import redis_server
from tunnel_server.cluster.claims import Owner
from tunnel_server.cluster.link import LinkError
from tunnel_server.cluster.port_relay import MAX_PORT_RELAY_LISTENERS, PortRelay
from tunnel_server.cluster.registry import ClusterRegistry
from tunnel_server.cluster.relay import MAX_RELAY_STREAMS, Relay

TEST_TIMEOUT_S: Final = 60.0
FIRST_PORT: Final = 50000
CLAIM_BATCH: Final = 64  # names per claim (the registry's bound)


class _UnreachableOwner:
    """The relay's side as seen from the ingress when no link can be opened."""

    def __init__(self, outgoing: int = 0) -> None:
        self.outgoing = outgoing  # relayed connections leaving the node now
        self.failures = 0
        self.opened = 0

    async def open(self, node: str, kind: str, visitor: tuple[str, int]) -> object:
        self.opened += 1
        raise LinkError(f"node {node} cannot be reached")


async def reset_on_connect(port: int) -> None:
    """Connect, send, and expect a reset (never a clean, empty close); a reset that comes
    before the connect call returns counts too."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionResetError:
        return
    try:
        writer.write(b"hello")
        try:
            data: bytes | None = await reader.read()
        except ConnectionResetError:
            data = None
        assert data is None, data
    finally:
        writer.close()
        with contextlib.suppress(ConnectionResetError):
            await writer.wait_closed()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def changed_until(registry: ClusterRegistry, check: Callable[[], bool]) -> None:
    """Until `check()` holds, re-checked after each change the registry sees (or 50 ms)."""
    while not check():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.05):
                await registry.wait_changed()


async def test_cluster_port_relay_listeners_are_bounded_to_the_lowest_ports(
    tmp_path: Path,
) -> None:
    """More fixed ports claimed elsewhere than MAX_PORT_RELAY_LISTENERS: only the lowest that
    many are wanted, and this node's own ports never are."""
    extra = 6
    async with asyncio.timeout(TEST_TIMEOUT_S), redis_server(tmp_path / "redis") as redis:
        async with node(redis, "x") as x, node(redis, "y") as y:
            names = [str(FIRST_PORT + i) for i in range(MAX_PORT_RELAY_LISTENERS + extra)]
            owner = Owner("x", "alice", "c1")
            for start in range(0, len(names), CLAIM_BATCH):
                assert await x.claim("port", names[start : start + CLAIM_BATCH], owner) is None
            assert await y.claim("port", ["40000"], Owner("y", "bob", "c2")) is None
            await changed_until(y, lambda: len(y.ports()) == len(names) + 1)
            relay = PortRelay(cast(Relay, _UnreachableOwner()), y, "y", "127.0.0.1")
            wanted = relay.wanted()
            assert wanted == [FIRST_PORT + i for i in range(MAX_PORT_RELAY_LISTENERS)]


async def test_cluster_port_relay_listener_follows_claims_and_resets_on_failure(
    tmp_path: Path,
) -> None:
    """A port claimed on node x gets a listener on node y; a visitor there whose relay fails
    is reset; when y claims the port, the listener is gone at once (the port binds); when x
    claims another and releases it, y's listener for it opens and then closes."""
    async with asyncio.timeout(TEST_TIMEOUT_S), redis_server(tmp_path / "redis") as redis:
        async with node(redis, "x") as x, node(redis, "y") as y:
            relay = PortRelay(cast(Relay, _UnreachableOwner()), y, "y", "127.0.0.1")
            relay.start()
            try:
                port = free_port()
                assert await x.claim("port", [str(port)], Owner("x", "alice", "c1")) is None
                await changed_until(y, lambda: relay.ports == [port])
                await reset_on_connect(port)
                # the client moved to node y: y claims the port and binds it at once
                assert await x.release("port", [str(port)]) == 1
                assert await y.claim("port", [str(port)], Owner("y", "alice", "c1")) is None
                relay.yield_port(port)
                with socket.socket() as own:
                    own.bind(("127.0.0.1", port))
                    own.listen()
                    assert port not in relay.wanted()
                # another port claimed on x and released: y's listener opens, then closes
                other = free_port()
                assert await x.claim("port", [str(other)], Owner("x", "carol", "c3")) is None
                await changed_until(y, lambda: relay.ports == [other])
                assert await x.release("port", [str(other)]) == 1
                await changed_until(y, lambda: relay.ports == [])
                with socket.socket() as probe:
                    assert probe.connect_ex(("127.0.0.1", other)) != 0
            finally:
                await relay.close()


async def test_cluster_port_relay_resets_visitors_beyond_the_relay_bound(tmp_path: Path) -> None:
    """With MAX_RELAY_STREAMS relayed connections already leaving the node, a new visitor is
    reset at once, without a stream being asked for."""
    async with asyncio.timeout(TEST_TIMEOUT_S), redis_server(tmp_path / "redis") as redis:
        async with node(redis, "x") as x, node(redis, "y") as y:
            full = _UnreachableOwner(outgoing=MAX_RELAY_STREAMS)
            relay = PortRelay(cast(Relay, full), y, "y", "127.0.0.1")
            relay.start()
            try:
                port = free_port()
                assert await x.claim("port", [str(port)], Owner("x", "alice", "c1")) is None
                await changed_until(y, lambda: relay.ports == [port])
                await reset_on_connect(port)
                assert full.opened == 0
                full.outgoing = 0  # room again: the next visitor is relayed (and fails here)
                await reset_on_connect(port)
                assert full.opened == 1
            finally:
                await relay.close()
