"""The server dashboard: an HTML page, a JSON API and optional Prometheus ``/metrics``.

Everything is computed on request from the `ServerView` and `ServerStats`; the app keeps no
state of its own. The page's CSS and JS ship inside the package (no CDN).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Final

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from protocol import PROTOCOL_VERSION, __version__
from tunnel_common.webbind import auth_enabled, check_web_bind
from tunnel_common.webguard import install_guard, page_routes
from tunnel_server.httpstats import HTTPStats
from tunnel_server.metrics import build_metrics_registry
from tunnel_server.stats import ServerStats
from tunnel_server.users.admin import UsersAdmin
from tunnel_server.web.cluster import ClusterNodeCollector, cluster_routes
from tunnel_server.web.groupmetrics import GroupCollector
from tunnel_server.web.users import user_routes
from tunnel_server.web.view import (
    CertificateInfo,
    CertificateReport,
    ClientInfo,
    GroupInfo,
    ProxyInfo,
    ServerView,
)

if TYPE_CHECKING:
    from tunnel_server.cluster.commands import ClusterCommands
    from tunnel_server.cluster.registry import ClusterRegistry

logger = logging.getLogger(__name__)

OPEN_PATHS: Final = frozenset({"/healthz"})
_ASSETS: Final = {
    "dashboard.css": "text/css",
    "dashboard.js": "text/javascript",
}


def check_dashboard_bind(addr: str, user: str | None, password: str | None) -> None:
    """Refuse to expose a dashboard without credentials beyond this host (ValueError)."""
    check_web_bind("webServer", addr, user, password)


def _client_json(info: ClientInfo) -> dict[str, object]:
    return {
        "client_id": info.client_id,
        "address": info.address,
        "version": info.version,
        "user": info.user,
        "since": info.since,
        "proxies": list(info.proxies),
    }


def _proxy_json(info: ProxyInfo) -> dict[str, object]:
    counters = info.counters
    return {
        "name": info.name,
        "client_id": info.client_id,
        "type": info.type,
        "public": list(info.public),
        "status": info.status,
        "reason": info.reason,
        "bytes_in": counters.bytes_in,
        "bytes_out": counters.bytes_out,
        "connections_total": counters.connections_total,
        "connections_active": counters.connections_active,
        "dropped_datagrams": counters.dropped_datagrams,
        "refused_flows": counters.refused_flows,
        "metadatas": dict(info.metadatas),
        "annotations": dict(info.annotations),
        "bandwidth_limit": info.bandwidth_limit,
        "bandwidth_rate": round(info.bandwidth_rate),
        "group": info.group,
        "visitors": list(info.visitors),
        "path": info.path,
        "p2p": dict(info.p2p),
    }


def _group_json(info: GroupInfo) -> dict[str, object]:
    return {
        "name": info.name,
        "type": info.type,
        "user": info.user,
        "public": list(info.public),
        "members": [
            {
                "name": m.name,
                "client_id": m.client_id,
                "state": m.state,
                "healthy": m.healthy,
                "reason": m.reason,
            }
            for m in info.members
        ],
    }


def _certificate_json(info: CertificateInfo) -> dict[str, object]:
    return {
        "name": info.name,
        "source": info.source,
        "state": info.state,
        "detail": info.detail,
        "not_after": info.not_after,
        "failures": info.failures,
    }


def _server_info(
    view: ServerView, stats: ServerStats, info: Mapping[str, object]
) -> dict[str, object]:
    proxies = view.proxies()
    totals = stats.totals()
    return {
        "version": __version__,
        "protocol_version": PROTOCOL_VERSION,
        "started_at": stats.started_at,
        "uptime_seconds": max(0.0, time.time() - stats.started_at),
        "clients": len(view.clients()),
        "proxies": len(proxies),
        "proxies_online": sum(1 for proxy in proxies if proxy.status == "online"),
        "sessions_total": stats.sessions_total,
        "auth_failures": stats.auth_failures,
        "bytes_in": totals.bytes_in,
        "bytes_out": totals.bytes_out,
        "connections_active": totals.connections_active,
        "config": dict(info),
    }


def build_dashboard_app(
    view: ServerView,
    stats: ServerStats,
    *,
    user: str | None,
    password: str | None,
    enable_prometheus: bool,
    info: Mapping[str, object] | None = None,
    users: UsersAdmin | None = None,
    http_stats: HTTPStats | None = None,
    user_metrics: Collector | None = None,
    certificates: Callable[[], CertificateReport] | None = None,
    cluster: ClusterRegistry | None = None,
    groups: Callable[[], list[GroupInfo]] | None = None,
    commands: ClusterCommands | None = None,
) -> web.Application:
    """Build the dashboard app; `info` is echoed as ``config`` in ``/api/serverinfo``.

    `certificates` (the HTTPS edge's names and ACME states) adds ``/api/certificates``, a
    ``certificates`` list in ``/api`` and certificate metrics. `cluster` (a cluster node's
    registry) adds ``/api/cluster`` and the node's info series (web/cluster.py). With
    `commands` too, a kick or close aimed at a client held by another node is published
    to that node (cluster/commands.py) and answered 202 with the node's name."""
    app = web.Application()
    install_guard(app, user=user, password=password, open_paths=OPEN_PATHS)
    server_config: Mapping[str, object] = dict(info or {})

    async def api_clients(request: web.Request) -> web.Response:
        return web.json_response([_client_json(client) for client in view.clients()])

    async def api_proxies(request: web.Request) -> web.Response:
        return web.json_response([_proxy_json(proxy) for proxy in view.proxies()])

    async def api_serverinfo(request: web.Request) -> web.Response:
        return web.json_response(_server_info(view, stats, server_config))

    def certificate_rows() -> list[dict[str, object]]:
        if certificates is None:
            return []
        return [_certificate_json(row) for row in certificates().certificates]

    async def api_certificates(request: web.Request) -> web.Response:
        return web.json_response(certificate_rows())

    def group_rows() -> list[dict[str, object]]:
        return [_group_json(row) for row in groups()] if groups is not None else []

    async def api_groups(request: web.Request) -> web.Response:
        return web.json_response(group_rows())

    async def api_overview(request: web.Request) -> web.Response:
        # One request per page refresh, so the tables come from the same moment.
        return web.json_response(
            {
                "serverinfo": _server_info(view, stats, server_config),
                "clients": [_client_json(client) for client in view.clients()],
                "proxies": [_proxy_json(proxy) for proxy in view.proxies()],
                "certificates": certificate_rows(),
                "groups": group_rows(),
            }
        )

    async def elsewhere(op: str, client_id: str, proxy: str | None) -> web.Response | None:
        """Publish `op` to the node that holds the client (202), or None if none does."""
        from tunnel_server.cluster.commands import CommandRefused, holder_of

        if commands is None or cluster is None:
            return None
        node = holder_of(cluster, client_id, proxy)
        if node is None or node == commands.node:
            return None  # on no node, or a stale claim of this node's
        fields = {"client": client_id} | ({"proxy": proxy} if proxy is not None else {})
        try:
            await commands.publish(op, **fields)
        except CommandRefused as exc:
            return web.json_response({"error": str(exc)}, status=503)
        what = f"[client={client_id}" + (f" proxy={proxy}]" if proxy is not None else "]")
        logger.info("%s %s sent to node %s", what, op, node)
        done = {"kick": "kicked", "close": "closed"}[op]
        body = {done: proxy if proxy is not None else client_id, "client_id": client_id}
        return web.json_response(body | {"node": node, "pending": True}, status=202)

    async def kick(request: web.Request) -> web.Response:
        client_id = request.match_info["client_id"]
        if not view.kick_client(client_id):
            sent = await elsewhere("kick", client_id, None)
            if sent is not None:
                return sent
            return web.json_response({"error": f"no client {client_id!r}"}, status=404)
        logger.info("[client=%s] kicked from the dashboard", client_id)
        return web.json_response({"kicked": client_id})

    async def close_proxy(request: web.Request) -> web.Response:
        client_id = request.match_info["client_id"]
        name = request.match_info["name"]
        if not view.close_proxy(client_id, name):
            sent = await elsewhere("close", client_id, name)
            if sent is not None:
                return sent
            return web.json_response(
                {"error": f"no proxy {name!r} for client {client_id!r}"}, status=404
            )
        logger.info("[client=%s proxy=%s] closed from the dashboard", client_id, name)
        return web.json_response({"closed": name, "client_id": client_id})

    routes = [
        *page_routes("tunnel_server.web", "dashboard.html", _ASSETS),
        web.get("/api", api_overview),
        web.get("/api/clients", api_clients),
        web.get("/api/proxies", api_proxies),
        web.get("/api/serverinfo", api_serverinfo),
        web.get("/api/certificates", api_certificates),
        web.get("/api/groups", api_groups),
        web.post("/api/clients/{client_id}/kick", kick),
        web.post("/api/proxies/{client_id}/{name}/close", close_proxy),
    ]
    if users is not None:
        routes.extend(user_routes(users, commands))
    if cluster is not None:
        routes.extend(cluster_routes(cluster))
    if enable_prometheus:
        registry = build_metrics_registry(stats, view, certificates)
        if http_stats is not None:
            registry.register(http_stats)
        if groups is not None:
            registry.register(GroupCollector(groups))
        if user_metrics is not None:
            registry.register(user_metrics)
        if cluster is not None:
            registry.register(ClusterNodeCollector(cluster))

        async def metrics(request: web.Request) -> web.Response:
            response = web.Response(body=generate_latest(registry))
            response.headers["Content-Type"] = CONTENT_TYPE_LATEST
            return response

        routes.append(web.get("/metrics", metrics))
    app.add_routes(routes)
    if not auth_enabled(user, password):
        logger.debug("dashboard has no credentials; it answers only localhost Host headers")
    return app
