"""tunneld's public listeners: the HTTP vhost, the HTTPS edge (with the SNI vhost and TLS
termination), and tcpmux. TunnelServer.start() runs `start_vhosts` before it binds the
control port, so that "ready: control" means a client's proxies are reachable.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Final

from protocol.errors import TunnelError

from .offline import OfflineLimits, OfflineParking, OfflineStore
from .vhost.http_proxy import HTTPVhostServer
from .vhost.listener import DEFAULT_MAX_CONNECTIONS
from .vhost.routing import VhostRouter

if TYPE_CHECKING:
    from .server import TunnelServer

logger = logging.getLogger(__name__)

OFFLINE_STORE_NAME: Final = "offline.sqlite3"  # in stateDir: requests stored for offline clients
MAX_VHOST_ROUTES: Final = 65536  # (domain, location) pairs per vhost listener


def display_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def start_vhosts(server: TunnelServer) -> None:
    cfg = server.config
    page = None
    if cfg.custom_404_page is not None:
        try:
            page = cfg.custom_404_page.read_text(encoding="utf-8")
        except OSError as exc:
            raise TunnelError(
                f"custom404Page {cfg.custom_404_page}: cannot read: {exc.strerror}"
            ) from None
    if cfg.vhost_http_port is not None:
        server.http_router = VhostRouter(cfg.sub_domain_host, MAX_VHOST_ROUTES, server.claims)
        server.offline = OfflineParking(
            OfflineStore(cfg.state_dir / OFFLINE_STORE_NAME),
            OfflineLimits(
                cfg.offline_max_requests,
                cfg.offline_max_bytes,
                cfg.offline_max_age,
                cfg.offline_max_total_bytes,
            ),
        )
        server.offline.start()
        await server.offline.restore(server.http_router)
        vhost_class = HTTPVhostServer
        if cfg.cluster_redis_url is not None and cfg.cluster_secret is not None:
            from .cluster.relay_http import RelayingHTTPVhost  # relays to the owning node

            vhost_class = RelayingHTTPVhost
        server._http_vhost = vhost_class(
            server.http_router,
            timeout_s=cfg.vhost_http_timeout,
            custom_404_page=page,
            on_access=server._on_http_access,
            challenge_answer=server.acme_board.http01_response,
            https_port_for=functools.partial(_https_port_for, server),
        )
        server._http_vhost.peer_allowed = server._peer_allowed
        server._http_vhost.fd_budget = server.fd_budget
        host, server.http_port = await server._http_vhost.start(
            cfg.proxy_bind_addr, cfg.vhost_http_port, reuse_port=cfg.cluster_reuse_port
        )
        logger.info("tunneld: ready: http vhost on %s:%d", display_host(host), server.http_port)
    if cfg.vhost_https_port is not None:
        await _start_edge(server, page)
    if cfg.tcpmux_httpconnect_port:
        await _start_tcpmux(server)


async def _start_tcpmux(server: TunnelServer) -> None:
    """tcpmuxHTTPConnectPort: TCP services chosen by the host of an HTTP CONNECT."""
    from .vhost.tcpmux import TCPMuxServer

    cfg = server.config
    assert cfg.tcpmux_httpconnect_port
    server.tcpmux_router = VhostRouter(cfg.sub_domain_host, MAX_VHOST_ROUTES, server.claims)
    server._tcpmux = TCPMuxServer(server.tcpmux_router, passthrough=cfg.tcpmux_passthrough)
    server._tcpmux.peer_allowed = server._peer_allowed
    server._tcpmux.fd_budget = server.fd_budget
    host, server.tcpmux_port = await server._tcpmux.start(
        cfg.proxy_bind_addr, cfg.tcpmux_httpconnect_port, reuse_port=cfg.cluster_reuse_port
    )
    logger.info(
        "tunneld: ready: tcpmux httpconnect on %s:%d", display_host(host), server.tcpmux_port
    )


async def _start_edge(server: TunnelServer, page: str | None) -> None:
    """The HTTPS port: SNI passthrough, and TLS termination for http proxies."""
    # Imported here: the edge, HTTP/2 (h2) and ACME load only on a server with vhostHTTPSPort.
    from .acme.manager import CertManager
    from .edge.certstore import CertificateError
    from .edge.h2conn import H2Service
    from .edge.listener import EdgeListener
    from .edge.service import EdgeService
    from .vhost.https_sni import HTTPSVhostServer

    cfg = server.config
    assert cfg.vhost_https_port is not None
    for files in cfg.edge_tls.certificates:
        try:
            server.certs.load(files.cert_file, files.key_file)
        except CertificateError as exc:
            raise TunnelError(f"tls.certificates: {exc}") from None
    server.https_router = VhostRouter(cfg.sub_domain_host, MAX_VHOST_ROUTES, server.claims)
    server._https_vhost = HTTPSVhostServer(server.https_router)
    server._https_vhost.peer_allowed = server._peer_allowed
    server._https_vhost.fd_budget = server.fd_budget
    if server.http_router is None and cfg.edge_tls.enabled:
        # https only: http proxies are reachable through the edge alone
        server.http_router = VhostRouter(cfg.sub_domain_host, MAX_VHOST_ROUTES, server.claims)
    if server.http_router is not None:
        server._tls_vhost = HTTPVhostServer(
            server.http_router,
            timeout_s=cfg.vhost_http_timeout,
            custom_404_page=page,
            on_access=server._on_http_access,
            forwarded_proto=b"https",
        )
        server._tls_vhost.peer_allowed = server._peer_allowed
        server._tls_vhost.fd_budget = server.fd_budget
        server._h2 = H2Service(
            server.http_router,
            timeout_s=cfg.vhost_http_timeout,
            max_connections=DEFAULT_MAX_CONNECTIONS,
            on_access=server._on_http_access,
            custom_404_page=page,
        )
        server._h2.peer_allowed = server._peer_allowed
        server._h2.fd_budget = server.fd_budget
    if cfg.edge_tls.acme is not None:
        server.cert_manager = CertManager(
            cfg.edge_tls.acme,
            cfg.state_dir,
            server.certs,
            server.acme_board,
            sub_domain_host=cfg.sub_domain_host,
            on_issued=server._certificate_issued,
        )
        server.cert_manager.start()
    if server._tls_vhost is not None:
        server.edge_service = EdgeService(server.certs, server.cert_manager)
    server.edge = EdgeListener(
        certs=server.certs,
        passthrough=server._https_vhost,
        passthrough_router=server.https_router,
        terminated=server._tls_vhost,
        h2=server._h2,
        challenges=server.acme_board.tls_alpn_context,
        control=server._control.accepted if server.port_reuse and server._control else None,
        control_server_name=cfg.control_server_name,
    )
    server.edge.fd_budget = server.fd_budget
    host, server.https_port = await server.edge.start(
        cfg.proxy_bind_addr, cfg.vhost_https_port, reuse_port=cfg.cluster_reuse_port
    )
    logger.info("tunneld: ready: https vhost on %s:%d", display_host(host), server.https_port)


def _https_port_for(server: TunnelServer, name: str) -> int | None:
    """The HTTPS edge's port if it can terminate TLS for `name` now (redirectHTTP)."""
    if server._tls_vhost is None or server.https_port is None:
        return None
    return server.https_port if server.certs.lookup(name) is not None else None
