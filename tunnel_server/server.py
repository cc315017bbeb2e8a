"""TunnelServer: the control listener, the sessions, and everything shared between them.

Shutdown order (aiohttp/asyncssh style): stop listeners, tell every client GO_AWAY, let open
streams drain until a deadline, then close what is left.
"""

from __future__ import annotations

import asyncio
import logging
import math
import weakref
from typing import TYPE_CHECKING, Final

from protocol import __version__
from protocol.aio.connection import MuxSession
from protocol.auth import derive_key
from protocol.errors import ErrorCode, TunnelError
from protocol.messages import NewProxy
from protocol.settings import MuxSettings
from tunnel_common import allocator
from tunnel_common.fingerprint import parse_fingerprint
from tunnel_common.iprules import IPRules
from tunnel_common.webtls import web_ssl_context

from .accept import MAX_BUSY_ANSWERS, ControlListener
from .accesslog import AccessLog
from .acme.challenges import ChallengeBoard
from .authlimit import FailureLimiter
from .certs import ServerCert, load_or_create_server_cert, server_ssl_context
from .config import ServerConfig
from .departures import Departures
from .edge.certstore import CertStore
from .errors import ProxyRefused
from .fdbudget import FDBudget
from .groups import Groups
from .httpstats import HTTPStats
from .manager import ProxyManager
from .offline import OfflineParking
from .oidc import OIDCVerifier
from .pluginops import ping_loop, session_user
from .plugins import PluginManager
from .ports import PortAllocator
from .prelogin import PendingLogins, PendingSlot
from .proxies.base import ProxyContext
from .session import ServerSession
from .stats import ServerStats
from .usermetrics import UserMetrics
from .users.directory import UserDirectory
from .users.model import UserError
from .users.store import UserStore
from .vhost.access import RequestRecord
from .vhost.claims import DomainClaims
from .vhost.http_proxy import HTTPVhostServer
from .vhost.listener import VhostListener
from .vhost.routing import VhostRouter
from .vhoststart import display_host, start_vhosts
from .visitorgate import VisitorGate
from .visitors import Visitors

# What only the HTTPS edge, ACME and tcpmux use loads when they start (vhoststart.py): a server
# without them never imports h2 or cryptography (tests/unit/test_lazy_imports.py).
if TYPE_CHECKING:
    from aiohttp import web

    from tunnel_common.lazysite import LazySite

    from .acme.manager import CertManager
    from .cluster.node import ClusterNode
    from .edge.h2conn import H2Service
    from .edge.listener import EdgeListener
    from .edge.service import EdgeService
    from .users.admin import SessionInfo
    from .vhost.https_sni import HTTPSVhostServer
    from .vhost.tcpmux import TCPMuxServer

logger = logging.getLogger(__name__)

DRAIN_TIMEOUT_S: Final = 5.0


class TunnelServer:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.stats = ServerStats()
        self.auth_limiter = FailureLimiter()
        self.ports = PortAllocator(config.allow_ports, config.max_ports_per_client)
        token = config.auth_token.reveal() if config.auth_token is not None else None
        if config.auth_method == "oidc" and token is None:
            # Names outside the store log in with a verified OIDC token. With auth.token too,
            # the login proofs are keyed by it, so the server proves itself first
            # (docs/security.md, "OIDC logins").
            token = ""
        self.users = UserDirectory(None, token)  # the store opens in start()
        self._users_task: asyncio.Task[None] | None = None
        self.ip_rules = config.ip_rules  # replaced on reload
        self.access_log: AccessLog | None = None
        self.plugins = PluginManager(config.http_plugins)
        self.oidc = OIDCVerifier(config) if config.auth_method == "oidc" else None
        self._ping_task: asyncio.Task[None] | None = None
        # proxy name -> its Visitors, for the HTTP access hook (entries go with their proxy)
        self._visitors: weakref.WeakValueDictionary[str, Visitors] = weakref.WeakValueDictionary()
        self.cert: ServerCert | None = None
        self.sessions: dict[str, ServerSession] = {}  # logged-in sessions by client id
        self.visitor_gate = VisitorGate(self)  # stcp/sudp visitors: proofs, nonces
        self.pending = PendingLogins(
            config.max_pending_logins,
            config.max_pending_logins_per_ip,
            counters=self.stats.limits,
        )
        # Replaced in start() by one sized from the real descriptor limit.
        self.fd_budget = FDBudget()
        self._control: ControlListener | None = None
        # The HMAC key of the login proofs (protocol/auth.py), set by start().
        self.auth_key = b""
        self.cert_fp = b""
        self.control_port = 0
        self._closing = False
        self._trim = allocator.TrimTimer()  # malloc_trim after a wave of departures
        self.departures = Departures(config.departed_metrics_ttl)
        # name -> proxy, owner session, status and counters: the one home of proxies.
        self.proxies = ProxyManager(self.stats, self.departures)
        self.groups = Groups()  # load-balanced groups of proxies across clients
        self.user_metrics = UserMetrics(self)  # per-user series; they expire like departures
        self.http_stats = HTTPStats(self.stats.max_proxies)
        self._web: LazySite | None = None
        # Who owns which vhost names across http and https, and each client's route quota.
        self.claims = DomainClaims(
            config.sub_domain_host,
            max_routes_per_client=config.max_vhost_routes_per_client,
            wildcards_cover_subdomains=config.vhost_wildcards_cover_subdomains,
            refusals=self.stats.vhost_route_refusals,
        )
        self.http_router: VhostRouter | None = None
        self.offline: OfflineParking | None = None
        self.https_router: VhostRouter | None = None
        self._http_vhost: HTTPVhostServer | None = None
        self._https_vhost: HTTPSVhostServer | None = None
        self._tls_vhost: HTTPVhostServer | None = None  # http proxies behind the HTTPS edge
        self._h2: H2Service | None = None  # the same, for visitors speaking HTTP/2
        self.tcpmux_router: VhostRouter | None = None
        self._tcpmux: TCPMuxServer | None = None
        self.tcpmux_port: int | None = None
        self.edge: EdgeListener | None = None
        self.certs = CertStore()
        self.acme_board = ChallengeBoard(config.state_dir / "acme" / "scratch")
        self.cert_manager: CertManager | None = None
        self.cluster: ClusterNode | None = None  # with cluster.redisURL
        self.edge_service: EdgeService | None = None
        self.http_port: int | None = None
        self.https_port: int | None = None
        # frp's heartbeatTimeout = -1 turns the timeout off; pings still keep NATs open.
        timeout = config.heartbeat_timeout if config.heartbeat_timeout > 0 else math.inf
        self.mux_settings = MuxSettings(
            keepalive_interval_s=min(30.0, timeout / 3),
            keepalive_timeout_s=timeout,
        )

    # -- life cycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        cfg = self.config
        self.fd_budget = FDBudget.for_server(
            cfg.max_clients + cfg.max_pending_logins + MAX_BUSY_ANSWERS, self.stats.limits
        )
        if self.cert is None:  # the command line loads it before the server's modules
            self.cert = load_or_create_server_cert(
                cfg.state_dir, cfg.tls_cert_file, cfg.tls_key_file
            )
        try:
            # No file, no store: sqlite3 loads when `tunneld users add` makes one (the
            # directory polls for it), not on every start.
            store = UserStore(cfg.users_db) if cfg.users_db.exists() else None
            self.users = UserDirectory(store, self.users.shared_token, cfg.users_db)
        except UserError as exc:
            raise TunnelError(str(exc)) from None
        self._users_task = asyncio.get_running_loop().create_task(self.users.run(self))
        await self.plugins.start()
        if self.plugins.handles("Ping"):
            self._ping_task = asyncio.get_running_loop().create_task(ping_loop(self))
        if cfg.access_log_to is not None:
            try:
                self.access_log = AccessLog(cfg.access_log_to, cfg.access_log_format)
            except OSError as exc:
                raise TunnelError(
                    f"accessLog.to {cfg.access_log_to}: cannot open: {exc.strerror}"
                ) from None
        logger.info("tunneld: certificate fingerprint %s", self.cert.fingerprint)
        self.cert_fp = parse_fingerprint(self.cert.fingerprint)
        token = cfg.auth_token.reveal() if cfg.auth_token is not None else ""
        self.auth_key = derive_key(token, self.cert_fp)
        self.users.shared_key = self.auth_key
        self._control = ControlListener(
            self, server_ssl_context(self.cert, cfg.tls_trusted_ca_file)
        )
        # The public ports first: "ready: control" means a client's proxies are reachable.
        await start_vhosts(self)
        if not self.port_reuse:
            self.control_port = await self._control.start(
                cfg.bind_addr, cfg.bind_port, reuse_port=cfg.cluster_reuse_port
            )
            logger.info(
                "tunneld: ready: control on %s:%d", display_host(cfg.bind_addr), self.control_port
            )
        else:
            assert self.https_port is not None
            self.control_port = self.https_port
            logger.info(
                "tunneld: ready: control on %s:%d (shared with the https vhost)",
                display_host(cfg.proxy_bind_addr),
                self.control_port,
            )
        if cfg.cluster_redis_url is not None:
            from tunnel_server.cluster.node import ClusterNode  # redis-py only when clustered

            self.cluster = ClusterNode(
                self, cfg.cluster_redis_url, cfg.cluster_node_name, cfg.cluster_lease_s
            )
            if cfg.cluster_secret is not None:
                await self.cluster.start_relays(cfg.cluster_secret.reveal().encode("utf-8"))
        if cfg.web.port is not None:
            await self._start_dashboard()
        if self.cluster is not None:
            await self.cluster.start(f"{display_host(cfg.bind_addr)}:{self.control_port}")

    @property
    def port_reuse(self) -> bool:
        """bindPort is vhostHTTPSPort: the HTTPS edge hands tunnelc's connections over."""
        cfg = self.config
        return cfg.bind_port != 0 and cfg.bind_port == cfg.vhost_https_port

    def _certificate_issued(self, name: str) -> None:
        """A certificate arrived: tell the clients whose http proxies it serves their URLs."""
        for session in list(self.sessions.values()):
            session.refresh_public_urls()

    async def _start_dashboard(self) -> None:
        """Bind webServer's port now; aiohttp's server (about 16 MiB) and the dashboard load
        on its first connection (tunnel_common/lazysite.py)."""
        from tunnel_common.lazysite import LazySite
        from tunnel_common.webbind import check_web_bind

        cfg = self.config.web
        assert cfg.port is not None
        password = cfg.password.reveal() if cfg.password else None
        try:
            check_web_bind("webServer", cfg.addr, cfg.user, password)
        except ValueError as exc:
            raise TunnelError(str(exc)) from None

        def build() -> web.Application:
            # The dashboard's view of the server (with the users admin) loads with the app.
            from .users.admin import UsersAdmin
            from .view import LiveServerView
            from .web.dashboard import build_dashboard_app

            live = LiveServerView(self)
            return build_dashboard_app(
                live,
                self.stats,
                user=cfg.user,
                password=password,
                enable_prometheus=self.config.enable_prometheus,
                info={"bindPort": self.control_port, "version": __version__},
                users=UsersAdmin(self.users, self._session_infos, self._users_changed),
                http_stats=self.http_stats,
                user_metrics=self.user_metrics,
                certificates=live.certificates if self.edge is not None else None,
                cluster=self.cluster.registry if self.cluster is not None else None,
                commands=self.cluster.commands if self.cluster is not None else None,
                groups=live.groups,
            )

        ssl_context = web_ssl_context(cfg.tls_cert_file, cfg.tls_key_file)
        try:
            self._web = LazySite.bind("tunneld: dashboard", cfg.addr, cfg.port, build, ssl_context)
        except OSError as exc:
            raise TunnelError(
                f"cannot start the dashboard on {cfg.addr}:{cfg.port}: {exc.strerror or exc}"
            ) from None
        host, port = self._web.addresses[0]
        logger.info(
            "tunneld: ready: dashboard on %s://%s:%d/", cfg.scheme, display_host(host), port
        )

    def _session_infos(self) -> list[SessionInfo]:
        from .users.admin import SessionInfo

        return [
            SessionInfo(s.user, s.client_id, s.address, tuple(s.proxies))
            for s in self.sessions.values()
        ]

    def expire_departed(self, now: float) -> None:
        """Forget proxies and users gone longer than departedMetricsTTL (their series and
        rows)."""
        for name in self.proxies.expire_departed(now):
            self.http_stats.pop(name, None)
        self.user_metrics.sample()
        self.user_metrics.expire(now, self.departures.ttl_s)

    def _users_changed(self) -> None:
        """A dashboard action changed the store: apply it now, not at the next poll."""
        self.users.refresh(force=True)
        self.users.enforce(self)

    @property
    def http_vhost(self) -> HTTPVhostServer | None:
        return self._http_vhost

    def served_here(self, name: str) -> bool:
        """Whether a local route serves this TLS server name (passthrough, or "/" of http)."""
        for router in (self.https_router, self.http_router):
            if router is not None and router.lookup(name) is not None:
                return True
        return False

    def _peer_allowed(self, ip: str) -> bool:
        return self.ip_rules.permits(ip)

    def _on_http_access(self, record: RequestRecord) -> None:
        self.http_stats.observe(record.proxy, record.status, record.seconds)
        visitors = self._visitors.get(record.proxy)
        if visitors is not None:
            visitors.request_done(record)

    async def run_session(self, mux: MuxSession, slot: PendingSlot) -> None:
        """Serve one connection whose TLS handshake is done (called by the ControlListener)."""
        session = ServerSession(self, mux, slot)
        try:
            await session.run()
        except Exception:
            logger.exception("tunneld: session %r failed", session)

    @property
    def closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Stop accepting (sync, idempotent)."""
        if self._closing:
            return
        self._closing = True
        self._trim.cancel()
        if self._control is not None:
            self._control.close()
        for vhost in self._vhosts():
            vhost.close()
        if self.cert_manager is not None:
            self.cert_manager.close()

    def _vhosts(self) -> list[EdgeListener | VhostListener | H2Service]:
        listeners = (
            self.edge,
            self._http_vhost,
            self._https_vhost,
            self._tls_vhost,
            self._h2,
            self._tcpmux,
        )
        return [listener for listener in listeners if listener is not None]

    async def shutdown(self, drain_timeout_s: float = DRAIN_TIMEOUT_S) -> None:
        """Stop listeners, GO_AWAY to every client, drain streams until the deadline, close."""
        self.close()
        for session in list(self.sessions.values()):
            session.mux.go_away(ErrorCode.SHUTDOWN, "server shutting down")
        try:
            async with asyncio.timeout(drain_timeout_s):
                await asyncio.gather(*(s.mux.wait_idle() for s in self.sessions.values()))
        except TimeoutError:
            logger.info("tunneld: drain deadline reached; closing remaining streams")
        self.users.flush(self)  # before the proxies go: their last bytes count
        if self.offline is not None:
            self.offline.shutting_down = True  # park what asked for it, for the next start
        for session in list(self.sessions.values()):
            session.release_all("server shutting down")
            session.mux.close(ErrorCode.SHUTDOWN, "server shutting down")
        if self._web is not None:
            await self._web.close()
            self._web = None
        for vhost in self._vhosts():
            await vhost.wait_closed()
        if self.cert_manager is not None:
            await self.cert_manager.wait_closed()
        if self._control is not None:
            await self._control.wait_closed()
        for task in (self._users_task, self._ping_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._users_task = self._ping_task = None
        await self.plugins.aclose()
        if self.oidc is not None:
            await self.oidc.aclose()
        self.users.close()
        if self.access_log is not None:
            self.access_log.close()
            self.access_log = None
        if self.offline is not None:
            self.offline.close()
            await self.offline.wait_closed()
            self.offline = None
        if self.cluster is not None:
            await self.cluster.close()
            self.cluster = None

    # -- sessions -------------------------------------------------------------------------------
    def session_started(self, session: ServerSession) -> str:
        """Register a logged-in session; replace a stale one of the same client id. Returns a
        refusal reason, or "" when accepted."""
        old = self.sessions.get(session.client_id)
        if old is not None:
            logger.info(
                "tunneld: client %s reconnected from %s; replacing its old session from %s",
                session.client_id,
                session.address,
                old.address,
            )
            old.release_all("replaced by a new session")
            old.mux.close(ErrorCode.SESSION_REPLACED, "replaced by a new session")
            del self.sessions[session.client_id]
        elif len(self.sessions) >= self.config.max_clients:
            return f"the server is full ({self.config.max_clients} clients, maxClients)"
        self.sessions[session.client_id] = session
        self.stats.sessions_total += 1
        self.user_metrics.session_started(session.user)
        return ""

    def session_ended(self, session: ServerSession) -> None:
        if self.sessions.get(session.client_id) is session:
            del self.sessions[session.client_id]
            logger.info("tunneld: client %s disconnected", session.client_id)
        if not self._closing:
            # Departed sessions' memory goes back TRIM_INTERVAL_S after the wave's last one.
            self._trim.schedule()

    def proxy_owner(self, name: str) -> ServerSession | None:
        return self.proxies.owner(name)

    def proxy_context(
        self,
        session: ServerSession,
        name: str,
        local_name: str,
        request: NewProxy | None = None,
    ) -> ProxyContext:
        counters = self.proxies.counters(name)
        try:
            rules = IPRules.parse(request.allow_ips, request.deny_ips) if request else IPRules()
        except ValueError as exc:
            raise ProxyRefused(f"allowIPs/denyIPs: {exc}") from None
        visitors = Visitors(self, name, session.user, rules, counters, session_user(session))
        self._visitors[name] = visitors
        return ProxyContext(
            visitors=visitors,
            config=self.config,
            session=session.mux,
            client_id=session.client_id,
            user=session.user,
            local_name=local_name,
            counters=counters,
            ports=self.ports,
            http_router=self.http_router,
            https_router=self.https_router,
            http_port=self.http_port,
            https_port=self.https_port,
            edge=self.edge_service,
            public_host=self.public_host(),
            flows=session.flows,
            groups=self.groups,
            tcpmux_router=self.tcpmux_router,
            tcpmux_port=self.tcpmux_port,
            udp_out=session.udp_out,
            offline=self.offline,
            fd_budget=self.fd_budget,
        )

    def public_host(self) -> str:
        """The host in public URLs. A wildcard address stays as it is: the client shows its
        own serverAddr in its place."""
        return self.config.proxy_bind_addr or "0.0.0.0"

    def kick(self, client_id: str, reason: str = "kicked by an administrator") -> bool:
        session = self.sessions.get(client_id)
        if session is None:
            return False
        logger.info("tunneld: kicking client %s", client_id)
        session.release_all(reason)
        session.mux.close(ErrorCode.KICKED, reason)
        return True
