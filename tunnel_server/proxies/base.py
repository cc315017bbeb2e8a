"""What every server-side proxy is, and what it gets from the server."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from protocol.aio.connection import MuxSession
from protocol.messages import NewProxy
from protocol.proxytype import ProxyType

from ..errors import ProxyRefused
from ..fdbudget import FDBudget
from ..flows import DatagramSink, FlowTable
from ..stats import ProxyCounters

if TYPE_CHECKING:
    from ..config import ServerConfig
    from ..edge.service import EdgeService
    from ..groups import Groups
    from ..offline import OfflineParking
    from ..ports import PortAllocator
    from ..udpfair import DatagramScheduler
    from ..vhost.routing import VhostRouter
    from ..visitors import Visitors

logger = logging.getLogger(__name__)

__all__ = ["DatagramSink", "FlowTable", "ProxyContext", "ProxyRefused", "ServerProxy"]


@dataclass(frozen=True, slots=True)
class ProxyContext:
    """Everything a proxy needs from the server and from its client's session."""

    config: ServerConfig
    session: MuxSession
    client_id: str
    user: str  # frp's `user`: vhost names belong to it (see vhost/claims.py)
    local_name: str  # the name the client knows the proxy by (without the user prefix)
    counters: ProxyCounters
    ports: PortAllocator
    http_router: VhostRouter | None
    https_router: VhostRouter | None
    http_port: int | None  # the vhost ports as actually bound (for public URLs)
    https_port: int | None
    edge: EdgeService | None  # the HTTPS edge, when it terminates TLS for http proxies
    public_host: str
    flows: FlowTable  # the session's datagram flows (flow id -> its proxy)
    fd_budget: FDBudget  # the server's descriptors for visitor connections
    offline: OfflineParking | None = None  # parked http routes and stored requests
    visitors: Visitors | None = None  # IP rules, connection quota, access log
    groups: Groups | None = None  # load-balanced groups (loadBalancer.group)
    tcpmux_router: VhostRouter | None = None  # tcpmuxHTTPConnectPort's routes
    tcpmux_port: int | None = None
    udp_out: DatagramScheduler | None = None  # per session: fair queues towards the client


class ServerProxy(Protocol):
    name: str
    type: ProxyType
    public_urls: tuple[str, ...]
    public_note: str  # shown after the URLs on the client's ready line ("" for none)

    async def start(self) -> None:
        """Claim the port/domains and start serving; raise ProxyRefused with a reason."""

    def refresh_urls(self) -> bool:
        """Recompute public_urls/public_note (a certificate arrived); True if they changed."""

    def close(self) -> None:
        """Release everything at once (sync, idempotent)."""

    async def wait_closed(self) -> None: ...


class ProxyFactory(Protocol):
    def __call__(self, ctx: ProxyContext, request: NewProxy, name: str) -> ServerProxy: ...
