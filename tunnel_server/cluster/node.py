"""One tunneld as a node of a cluster: claims its sessions' proxies in the shared registry.

tunneld calls `claim_proxy()` after its own checks and before it binds anything, and
`release_proxy()` when the proxy closes. A claim held by another user or client refuses
the proxy with the holder's node in the reason; one held by the same user and client id is
taken over at once (the client reconnected through this node). When this node loses a
claim that way, the stale session's proxy is closed here, as one tunneld replaces a stale
session. While Redis is away, new proxies are refused with the reason, and the proxies
already online keep being served.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import TYPE_CHECKING, Final

from protocol.errors import TunnelError
from protocol.messages import NewProxy
from tunnel_server.cluster.claims import Owner
from tunnel_server.cluster.commands import ClusterCommands
from tunnel_server.cluster.names import proxy_claims
from tunnel_server.cluster.redisurl import redact_url
from tunnel_server.cluster.registry import (
    DEFAULT_PREFIX,
    ClaimRefused,
    ClusterRegistry,
    ClusterUnavailable,
)
from tunnel_server.errors import ProxyHeld, ProxyRefused

if TYPE_CHECKING:
    from tunnel_server.cluster.port_relay import PortRelay
    from tunnel_server.cluster.relay import Relay
    from tunnel_server.server import TunnelServer
    from tunnel_server.session import ServerSession

logger = logging.getLogger(__name__)

MAX_PENDING_RELEASES: Final = 4096  # release tasks in flight; beyond it, leases expire them


class ClusterNode:
    """The registry, plus which claims each local proxy holds."""

    def __init__(self, server: TunnelServer, url: str, name: str | None, lease_s: float) -> None:
        self.server = server
        self.name = name or socket.gethostname()
        try:
            self.registry = ClusterRegistry.from_url(
                url, self.name, "", lease_s=lease_s, on_lost=self._lost
            )
        except ValueError as exc:
            raise TunnelError(f"cluster.redisURL: {exc}") from None
        self._claims: dict[str, list[tuple[str, list[str]]]] = {}  # qualified proxy -> claims
        self._owners: dict[tuple[str, str], str] = {}  # (kind, name) -> qualified proxy
        self._releases: set[asyncio.Task[None]] = set()
        self._url = redact_url(url)
        self.relay: Relay | None = None
        self.port_relay: PortRelay | None = None  # with cluster.relayPorts
        self.registry.load_of = self.load
        self.commands = ClusterCommands(server, url, self.name, DEFAULT_PREFIX)  # commands.py

    def load(self) -> dict[str, int]:
        """This node's load, published with its registry record for the cluster view."""
        server = self.server
        vhost = server.http_vhost
        load = {
            "clients": len(server.sessions),
            "proxies": len(server.proxies),
            "vhost_connections": vhost.connections if vhost is not None else 0,
        }
        if self.relay is not None:
            load["relayed_in"] = self.relay.relayed_in
            load["relayed_out"] = self.relay.relayed_out
        return load

    async def start_relays(self, secret: bytes) -> None:
        """Listen for the other nodes' links, and relay what they own (cluster.secret)."""
        from tunnel_server.certs import server_ssl_context

        from .relay import Relay
        from .relay_http import RelayingHTTPVhost, edge_relay

        server = self.server
        cfg = server.config
        assert server.cert is not None
        relay = self.relay = Relay(server, self.registry, secret, self.name)
        host, port = await relay.start(
            cfg.cluster_internal_addr, cfg.cluster_internal_port, server_ssl_context(server.cert)
        )
        shown = f"[{host}]" if ":" in host else host
        self.registry.internal = f"{shown}:{port}"
        self.registry.fingerprint = server.cert.fingerprint
        vhost = server.http_vhost
        if isinstance(vhost, RelayingHTTPVhost):
            vhost.relay = relay
        if server.edge is not None:
            server.edge.relay = edge_relay(relay, server.served_here)
        if server._tcpmux is not None:
            from .relay_tcpmux import tcpmux_relay

            server._tcpmux.remote = tcpmux_relay(relay)
        logger.info("tunneld: ready: cluster link on %s:%d", shown, port)
        if cfg.cluster_relay_ports:
            from .port_relay import PortRelay

            self.port_relay = PortRelay(relay, self.registry, self.name, cfg.proxy_bind_addr)

    async def start(self, address: str) -> None:
        self.registry.address = address
        await self.registry.start()
        if self.port_relay is not None:
            self.port_relay.start()
        self.commands.start()
        logger.info("tunneld: cluster: node %s joined (registry at %s)", self.name, self._url)

    async def close(self) -> None:
        await self.commands.close()
        if self.port_relay is not None:
            await self.port_relay.close()
        if self.relay is not None:
            self.relay.close()
            await self.relay.wait_closed()
        for task in list(self._releases):
            await asyncio.gather(task, return_exceptions=True)
        await self.registry.close(release=True)

    async def claim_proxy(self, session: ServerSession, qualified: str, request: NewProxy) -> None:
        """Claim everything the proxy needs, or raise ProxyRefused / ProxyHeld (nothing kept)."""
        owner = Owner(self.name, session.user, session.client_id)
        host = self.server.config.sub_domain_host or ""
        taken: list[tuple[str, list[str]]] = []
        try:
            for kind, names in proxy_claims(request, qualified, host):
                refused = await self.registry.claim(kind, names, owner)
                if refused is not None:
                    raise _refusal(refused, session.user)
                taken.append((kind, names))
                if kind == "port" and self.port_relay is not None:
                    self.port_relay.yield_port(int(names[0]))  # before the proxy binds it
        except ClusterUnavailable as exc:
            await self._release(taken)
            raise ProxyRefused(str(exc)) from None
        except ProxyRefused:
            await self._release(taken)
            raise
        self._claims[qualified] = taken
        for kind, names in taken:
            for name in names:
                self._owners[(kind, name)] = qualified

    def release_proxy(self, qualified: str) -> None:
        """Give the proxy's names back (in the background: closing a proxy is sync)."""
        taken = self._claims.pop(qualified, None)
        if not taken:
            return
        for kind, names in taken:
            for name in names:
                self._owners.pop((kind, name), None)
        if len(self._releases) >= MAX_PENDING_RELEASES:
            return  # the leases free them
        task = asyncio.get_running_loop().create_task(self._release(taken))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def _release(self, taken: list[tuple[str, list[str]]]) -> None:
        for kind, names in taken:
            try:
                await self.registry.release(kind, names)
            except ClusterUnavailable as exc:
                logger.info("tunneld: cluster: release left to the lease: %s", exc)
                return

    def _lost(self, kind: str, name: str) -> None:
        qualified = self._owners.get((kind, name))
        if qualified is None:
            return
        holder = self.registry.owner_of(kind, name)
        where = f"node {holder.node}" if holder is not None else "another node"
        owner = self.server.proxies.owner(qualified)
        if owner is not None:
            owner.close_proxy(
                qualified, f"the same client took it over through {where}", notify=True
            )


def _refusal(refused: ClaimRefused, user: str) -> ProxyRefused:
    what = {"proxy": "proxy name", "domain": "route", "port": "port", "udp": "udp port"}
    text = f"{what.get(refused.kind, refused.kind)} {refused.name} is held on node "
    text += refused.holder.node
    if refused.holder.user == user:
        # The same user's other client: maybe a stale session on a dead node, whose lease
        # will run out; the client asks again with backoff.
        return ProxyHeld(text + " by another client of yours (it may be stale)")
    return ProxyRefused(text + " by another user")
