"""The server as the dashboard sees it: `ServerView` over the live session registry."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .proxies.secret import SecretProxy
from .proxies.tcp import TCPProxy
from .stats import ProxyCounters
from .web.view import CertificateInfo, CertificateReport, ClientInfo, ProxyInfo

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
        stats = self._server.stats
        online: list[ProxyInfo] = []
        names: set[str] = set()
        for session in self._server.sessions.values():
            for name, proxy in session.proxies.items():
                names.add(name)
                request = session.proxy_requests.get(name)
                online.append(
                    ProxyInfo(
                        name=name,
                        client_id=session.client_id,
                        type=str(proxy.type),
                        public=proxy.public_urls,
                        status="online",
                        counters=stats.get(name) or stats.proxy(name),
                        metadatas=dict(request.metadatas) if request else {},
                        annotations=dict(request.annotations) if request else {},
                        bandwidth_limit=request.bandwidth_limit if request else 0,
                        bandwidth_rate=(
                            proxy.throttle.current_rate()
                            if isinstance(proxy, TCPProxy) and proxy.throttle is not None
                            else 0.0
                        ),
                        visitors=proxy.visitor_list() if isinstance(proxy, SecretProxy) else (),
                        path="relayed" if isinstance(proxy, SecretProxy) else "",
                    )
                )
        departures = self._server.departures
        offline: list[ProxyInfo] = []
        for name, counters in stats.items():
            if name in names:
                continue
            refusal = departures.refusal(name)
            if refusal is not None:  # refused before it ever served (its counters exist)
                client_id, proxy_type, reason = refusal
                offline.append(
                    ProxyInfo(name, client_id, proxy_type, (), "refused", counters, reason=reason)
                )
                continue
            client_id, proxy_type = self._server.proxy_meta.get(name, ("", ""))
            offline.append(
                ProxyInfo(
                    name,
                    client_id,
                    proxy_type,
                    (),
                    "offline",
                    counters,
                    reason=departures.reason(name),
                )
            )
        refused = [
            ProxyInfo(
                name=name,
                client_id=client_id,
                type=proxy_type,
                public=(),
                status="refused",
                counters=ProxyCounters(),
                reason=reason,
            )
            for name, (client_id, proxy_type, reason) in departures.refusals()
            if name not in names and stats.get(name) is None
        ]
        return online + offline + refused

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
