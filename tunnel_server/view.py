"""The server as the dashboard sees it: `ServerView` over the live session registry."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .proxies.secret import SecretProxy
from .proxies.tcp import TCPProxy
from .proxies.xtcp import XTCPProxy
from .web.view import (
    CertificateInfo,
    CertificateReport,
    ClientInfo,
    GroupInfo,
    GroupMemberInfo,
    ProxyInfo,
)

if TYPE_CHECKING:
    from .server import TunnelServer


class LiveServerView:
    """Reads the running server; `kick_client` and `close_proxy` act on it."""

    def __init__(self, server: TunnelServer) -> None:
        self._server = server

    def clients(self) -> list[ClientInfo]:
        return [
            ClientInfo(
                client_id=s.client_id,
                address=s.address,
                version=s.client_version,
                user=s.user,
                since=s.since,
                proxies=tuple(s.proxies),
            )
            for s in self._server.sessions.values()
        ]

    def proxies(self) -> list[ProxyInfo]:
        manager = self._server.proxies
        online = [
            ProxyInfo(
                name=entry.name,
                client_id=entry.client_id,
                type=entry.type,
                public=entry.proxy.public_urls,
                status="online",
                counters=entry.counters,
                metadatas=dict(entry.request.metadatas),
                annotations=dict(entry.request.annotations),
                bandwidth_limit=entry.request.bandwidth_limit,
                group=entry.request.group,
                bandwidth_rate=(
                    entry.proxy.throttle.current_rate()
                    if isinstance(entry.proxy, TCPProxy) and entry.proxy.throttle is not None
                    else 0.0
                ),
                visitors=(
                    entry.proxy.visitor_list() if isinstance(entry.proxy, SecretProxy) else ()
                ),
                path="relayed" if isinstance(entry.proxy, SecretProxy) else "",
                p2p=entry.proxy.p2p_counts() if isinstance(entry.proxy, XTCPProxy) else {},
            )
            for entry in manager.entries()
        ]
        departed = [
            ProxyInfo(
                row.name, row.client_id, row.type, (), row.state, row.counters, reason=row.reason
            )
            for row in manager.departed()
        ]
        return online + departed

    def groups(self) -> list[GroupInfo]:
        """Every load-balanced group with its members and their health."""
        server = self._server
        rows: list[GroupInfo] = []
        for group in server.groups.all():
            members = [
                GroupMemberInfo(m.name, group.clients.get(m.name, ""), "online", True, "")
                for m in group.members
            ]
            for left in group.left.values():
                reason = server.departures.reason(left.name)
                members.append(
                    GroupMemberInfo(
                        left.name, left.client_id, "left", "unhealthy" not in reason, reason
                    )
                )
            public = next(
                (
                    entry.proxy.public_urls
                    for m in group.members
                    if (entry := server.proxies.get(m.name))
                ),
                (),
            )
            rows.append(GroupInfo(group.name, group.kind, group.user, public, tuple(members)))
        return rows

    def kick_client(self, client_id: str) -> bool:
        return self._server.kick(client_id)

    def close_proxy(self, client_id: str, name: str) -> bool:
        session = self._server.sessions.get(client_id)
        if session is None:
            return False
        return session.close_proxy(name, "closed by an administrator", notify=True)

    def certificates(self) -> CertificateReport:
        """The HTTPS edge's certificates and ACME states, for the dashboard and /metrics."""
        server = self._server
        rows: dict[str, CertificateInfo] = {}
        for entry in server.certs.certificates():
            for name in entry.names:
                rows[name] = CertificateInfo(
                    name, entry.source, "ready", "", entry.not_after.timestamp(), 0
                )
        manager = server.cert_manager
        if manager is None:
            return CertificateReport(tuple(rows.values()), 0, 0)
        for name, status in manager.status.items():
            known = rows.get(name)
            rows[name] = CertificateInfo(
                name,
                "acme",
                status.state,
                status.detail,
                known.not_after if known is not None else None,
                status.failures,
            )
        return CertificateReport(
            tuple(sorted(rows.values(), key=lambda row: row.name)),
            manager.orders_total,
            manager.failures_total,
        )
