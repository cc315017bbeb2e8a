"""Per-user quotas checked when a store user asks for a proxy, and per visitor connection.

Every refusal is a `ProxyRefused` whose text reaches the client as
`tunnelc: proxy NAME refused: <reason>`, naming the quota and its value so the user knows what
to ask the operator for.
"""

from __future__ import annotations

import random
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Final

from protocol.messages import NewProxy
from protocol.proxytype import ProxyType
from tunnel_common.bandwidth import format_bandwidth

from ..errors import ProxyRefused
from .directory import byte_quota_reached
from .model import UserRecord, format_ports

if TYPE_CHECKING:
    from ..server import TunnelServer

PORT_PICK_ATTEMPTS: Final = 64  # random tries for a free port in the user's ranges
_PORT_TYPES: Final = (ProxyType.TCP, ProxyType.UDP)


def user_proxies(server: TunnelServer, user: str) -> list[tuple[str, object]]:
    """(qualified name, proxy) of every proxy this user holds, over all its sessions."""
    return [
        (name, proxy)
        for session in server.sessions.values()
        if session.user == user
        for name, proxy in session.proxies.items()
    ]


def check_new_proxy(server: TunnelServer, record: UserRecord, request: NewProxy) -> NewProxy:
    """Raise ProxyRefused if `request` breaks a quota of `record`; else return the request,
    with a port picked from the user's ranges when it asked for any port."""
    quota = record.quota
    held = user_proxies(server, record.name)
    if quota.max_proxies and len(held) >= quota.max_proxies:
        raise ProxyRefused(
            f"user {record.name!r} already has {quota.max_proxies} proxies (quota maxProxies)"
        )
    reached = byte_quota_reached(record, server.users.used(record.name, time.time()))
    if reached:
        raise ProxyRefused(f"user {record.name!r}: {reached}")
    kind = ProxyType(request.type)
    if kind in _PORT_TYPES:
        ports_held = sum(1 for _, p in held if getattr(p, "type", None) in _PORT_TYPES)
        if quota.max_ports and ports_held >= quota.max_ports:
            raise ProxyRefused(
                f"user {record.name!r} already holds {quota.max_ports} ports (quota maxPorts)"
            )
        if request.remote_port and not quota.allows_port(request.remote_port):
            raise ProxyRefused(
                f"port {request.remote_port} is outside the ports of user {record.name!r} "
                f"({format_ports(quota.ports)})"
            )
        if not request.remote_port and quota.ports:
            request = replace(request, remote_port=_pick_port(server, record, kind))
    else:
        if request.subdomain and not quota.allows_subdomain(request.subdomain.lower()):
            raise ProxyRefused(
                f"subdomain {request.subdomain!r} is not allowed for user {record.name!r} "
                f"(allowed: {', '.join(quota.subdomains)})"
            )
        for domain in request.custom_domains:
            if not quota.allows_custom_domain(domain.lower().rstrip(".")):
                allowed = ", ".join(quota.custom_domains) or "none"
                raise ProxyRefused(
                    f"custom domain {domain!r} is not allowed for user {record.name!r} "
                    f"(allowed: {allowed})"
                )
    return request


def _pick_port(server: TunnelServer, record: UserRecord, kind: ProxyType) -> int:
    ranges = record.quota.ports
    total = sum(b - a + 1 for a, b in ranges)
    rng = random.Random()
    for _ in range(min(PORT_PICK_ATTEMPTS, total * 2)):
        k = rng.randrange(total)
        for a, b in ranges:
            if k <= b - a:
                port = a + k
                break
            k -= b - a + 1
        if server.ports.is_free(str(kind), port) and server.config.allows_port(port):
            return port
    raise ProxyRefused(
        f"no free port left in the ports of user {record.name!r} ({format_ports(ranges)})"
    )


def connection_refusal(server: TunnelServer, record: UserRecord) -> str:
    """Why one more visitor connection for this user must be refused ("" = admit)."""
    limit = record.quota.max_connections
    if not limit:
        return ""
    active = 0
    for name, _ in user_proxies(server, record.name):
        counters = server.stats.get(name)
        if counters is not None:
            active += counters.connections_active
    if active >= limit:
        return f"user {record.name!r} has {limit} connections open (quota maxConnections)"
    return ""


def quota_note(record: UserRecord | None, note: str) -> str:
    """The note on a proxy's ready line, with the user's bandwidth quota when it paces it."""
    if record is None or not record.quota.bandwidth:
        return note
    paced = (
        f"paced with user {record.name!r}'s other proxies at "
        f"{format_bandwidth(record.quota.bandwidth)} (quota bandwidth)"
    )
    return f"{note}; {paced}" if note else paced
