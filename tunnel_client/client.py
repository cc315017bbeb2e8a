"""TunnelClient: keep one verified TLS session to the server and serve its proxies.

The client logs in with an HMAC answer to the server's nonce, registers every proxy, and then
serves streams and datagrams until the session ends. It reconnects with capped, jittered
exponential backoff, keeping its client id so that the server replaces the stale session
instead of refusing the proxies as already taken.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import random
import secrets
import socket
import ssl
import time
from pathlib import Path
from typing import Final

from protocol import PROTOCOL_VERSION, __version__
from protocol.aio.connection import MuxSession, SessionClosedError
from protocol.aio.splice import dial_failure
from protocol.aio.stream import MuxStream
from protocol.auth import login_proof, proof_matches, server_proof
from protocol.errors import ErrorCode, TunnelError
from protocol.messages import (
    Busy,
    Challenge,
    CloseProxy,
    Hello,
    Login,
    LoginResult,
    Message,
    NewProxyResult,
    ServerProof,
)
from protocol.mux import Role
from protocol.names import peer_text
from protocol.settings import MuxSettings
from protocol.userkey import client_login_key
from tunnel_common import allocator
from tunnel_common.nonces import new_nonce

from .backoff import Backoff
from .config import (
    ClientConfig,
    ProxyConfig,
    load_client_config,
    oidc_without_secret,
    seconds_or_off,
    server_list,
)
from .dial import DialParams, dns_server_address
from .flows import ClientFlows, DatagramProxy
from .health import HealthMonitor
from .held import WAITING_STATE, HeldRetries
from .oidc import OIDCTokenError, OIDCTokenSource
from .plugins.base import PluginError
from .proxies import CLIENT_PROXIES
from .proxies.base import ClientProxy, ProxyStatus
from .proxydetails import proxy_details
from .surfaces import WebSurfaces, captured
from .trust import (
    TLSParams,
    TrustError,
    client_cert_refusal,
    connect_tls,
    default_known_servers_file,
    server_requires_client_cert,
)
from .visitorset import VisitorSet

logger = logging.getLogger(__name__)

LOGIN_TIMEOUT_S: Final = 10.0
# On SIGTERM, open connections get this long to finish before they are reset (as tunneld).
DRAIN_TIMEOUT_S: Final = 5.0
LOCAL_PROBE_TIMEOUT_S: Final = 1.0  # the start-up check that each local service accepts
# OpenSSL's reasons when the peer answered in plain text (an HTTP port, not tunneld's).
_NOT_TLS_REASONS: Final = frozenset(
    {"WRONG_VERSION_NUMBER", "HTTP_REQUEST", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"}
)


class LoginFailed(TunnelError):
    """The login failed for good: wrong token, a server that cannot prove the token, another
    protocol version, a refused name. loginFailExit = true exits on this (and only this)."""


class LoginDeferred(TunnelError):
    """The server asked us to come back later (busy, full, address blocked for a while)."""

    def __init__(self, reason: str, retry_after_s: float) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


class TunnelClient:
    def __init__(
        self,
        config: ClientConfig,
        config_path: Path | None = None,
        *,
        exit_if_all_refused: bool = False,
        trim_memory: bool = False,
    ) -> None:
        self.config = config
        # A one-liner has nothing to do once the server refused every proxy: exit 1 then.
        self.exit_if_all_refused = exit_if_all_refused
        self.exit_code = 0
        self.config_path = config_path
        self.surfaces = WebSurfaces(self)
        # Kept across reconnects, so the server can replace our stale session.
        self.client_id = config.client_id or secrets.token_hex(8)
        self.proxies: dict[str, ClientProxy] = {}
        self.proxy_status: dict[str, ProxyStatus] = {}
        self.session: MuxSession | None = None
        self.logged_in_once = False
        # For the terminal panel: "connecting", "online" or "reconnecting", the reconnect
        # attempt (0 while online), when the next one is due (epoch s) and why the last failed.
        self.connection_state = "connecting"
        self.attempt = 0
        self.next_try_at: float | None = None
        self.last_error: str | None = None
        self._stop = asyncio.Event()
        self._drainer: asyncio.Task[None] | None = None  # the stop's drain, awaited by run()
        # Set, then replaced by a fresh one, whenever a proxy's status changes; tests and the
        # admin API wait on it instead of polling.
        self._status_changed = asyncio.Event()
        self._backoff = Backoff()
        # serverAddr, then serverAddrs: the node tried next is servers[server_index]. After a
        # failure the client moves on at once; the backoff applies after a whole round.
        self.servers = server_list(config)
        self.server_index = 0
        self._oidc = OIDCTokenSource(config)
        self.mux_settings = MuxSettings(
            keepalive_interval_s=seconds_or_off(config.heartbeat_interval),
            keepalive_timeout_s=seconds_or_off(config.heartbeat_timeout),
        )
        self.packet_size = config.udp_packet_size
        self.flows = ClientFlows(self.proxies, lambda: self.packet_size)
        # name -> the public port the server gave a remotePort = 0 proxy (asked for again).
        self._sticky_ports: dict[str, int] = {}
        self.health = HealthMonitor(self._on_health)
        # Proxies refused as held by a possibly stale session, asked for again with backoff.
        self._held = HeldRetries(self._ask_again)
        # `trim_memory` (tunnelc: one client per process): malloc_trim after each login, once
        # a wave of streams has passed (none open, none new since the last look) and after a
        # disconnect, so a burst's buffers and the heap's free top (up to the allocator's 4 MiB
        # trim threshold) go back before the next burst adds its own. Off for clients sharing
        # a process (tests, benches): each trim is a full collection of the whole process.
        self.trim_timer = allocator.TrimTimer(quiet=self._quiet) if trim_memory else None
        self._streams_seen = 0  # streams the server has opened, ever
        self._streams_at_look = 0  # _streams_seen when _quiet last looked
        self._set_proxies(config.proxies)
        self.visitors = VisitorSet(config.visitors, config.user)

    # -- proxies --------------------------------------------------------------------------------
    def _set_proxies(self, configs: tuple[ProxyConfig, ...]) -> None:
        for pc in configs:
            try:
                self.proxies[pc.name] = CLIENT_PROXIES[pc.type](pc, self.surfaces.capture_store())
            except PluginError as exc:
                # As frp does: this proxy stays off, the others run; the error is shown.
                logger.error("tunnelc: proxy %s cannot start: %s", pc.name, exc)
                self.proxy_status[pc.name] = ProxyStatus(
                    pc.name,
                    str(pc.type),
                    "refused",
                    error=str(exc),
                    local=pc.plugin.describe_target() if pc.plugin else "",
                )
                continue
            local = pc.plugin.describe_target() if pc.plugin else f"{pc.local_ip}:{pc.local_port}"
            self.proxy_status[pc.name] = ProxyStatus(pc.name, str(pc.type), "pending", local=local)
            self.health.add(pc.name, pc.local_ip, pc.local_port, pc.health_check)

    def local_address(self, name: str) -> tuple[str, int] | None:
        """Where proxy `name` sends its traffic (the inspector's replays go there too)."""
        proxy = self.proxies.get(name)
        return (proxy.config.local_ip, proxy.config.local_port) if proxy else None

    # -- admin API (AdminController) ------------------------------------------------------------
    def status(self) -> list[dict[str, object]]:
        rows: list[dict[str, object]] = []
        for st in self.proxy_status.values():
            row: dict[str, object] = {
                "name": st.name,
                "type": st.type,
                "state": st.state,
                "public": list(st.public_urls),
                "local": st.local,
                "error": st.error,
            }
            proxy = self.proxies.get(st.name)
            # Why the last connection to the local service failed (None: the last one worked).
            row["local_error"] = getattr(proxy, "local_error", None)
            if proxy is not None:
                row["metadatas"] = dict(proxy.config.metadatas)
                row["annotations"] = dict(proxy.config.annotations)
            if isinstance(proxy, DatagramProxy):
                row["udp"] = proxy.flow_stats()
            if proxy is not None:
                row.update(proxy_details(proxy, self.health.state(st.name)))
            rows.append(row)
        return rows

    def visitor_status(self) -> list[dict[str, object]]:
        return self.visitors.status()

    async def reload(self) -> dict[str, object]:
        """Re-read the config file: add, remove and change proxies, leaving the rest alone."""
        if self.config_path is None:
            raise ValueError("this client was started without a config file; nothing to reload")
        try:
            new = load_client_config(self.config_path)
        except TunnelError as exc:
            raise ValueError(str(exc)) from None
        old = {p.name: p for p in self.config.proxies}
        fresh = {p.name: p for p in new.proxies}
        removed = [name for name in old if name not in fresh]
        added = [name for name in fresh if name not in old]
        changed = [name for name in fresh if name in old and fresh[name] != old[name]]
        for name in removed + changed:
            self.remove_proxy(name)
        self.config = dataclasses.replace(self.config, proxies=new.proxies)
        for name in changed + added:
            self.add_proxy(fresh[name])
        if any(captured(p) for p in new.proxies) and self.config.inspect.enabled:
            await self.surfaces.start_inspector()
        logger.info(
            "tunnelc: reloaded %s: added %s, removed %s, changed %s",
            self.config_path,
            added or "-",
            removed or "-",
            changed or "-",
        )
        return {"added": added, "removed": removed, "changed": changed}

    def add_proxy(self, pc: ProxyConfig) -> None:
        self._set_proxies((pc,))
        if self.session is not None and not self.session.closed:
            self._register(self.session, pc.name)

    def _register(self, session: MuxSession, name: str) -> None:
        """Ask the server for one proxy. A tcp/udp proxy with remotePort 0 asks again for the
        port it was given before, so its public address survives reconnects. A proxy whose
        health check has not passed waits for it (`_on_health` registers it then)."""
        if not self.health.allows(name):
            return
        request = self.proxies[name].new_proxy_request()
        sticky = self._sticky_ports.get(name)
        if sticky is not None and request.remote_port == 0:
            request = dataclasses.replace(request, remote_port=sticky)
        session.send_message(request)

    def _ask_again(self, name: str) -> None:
        if self.session is not None and not self.session.closed and name in self.proxies:
            self._register(self.session, name)

    def remove_proxy(self, name: str) -> None:
        self._sticky_ports.pop(name, None)
        self.health.remove(name)
        self._held.forget(name)
        proxy = self.proxies.pop(name, None)
        self.proxy_status.pop(name, None)
        if proxy is None:
            return
        proxy.close()
        if self.session is not None and not self.session.closed:
            self.session.send_message(CloseProxy(name, "removed by the client"))
        logger.info("tunnelc: proxy %s removed", name)

    async def wait_status(self, name: str, states: tuple[str, ...] = ("running",)) -> ProxyStatus:
        """Wait until proxy `name` is in one of `states` (the caller bounds the wait)."""
        while True:
            status = self.proxy_status.get(name)
            if status is not None and status.state in states:
                return status
            await self._status_changed.wait()

    def _on_health(self, name: str, healthy: bool, reason: str) -> None:
        """A health check changed its verdict: put the proxy on the server or take it off."""
        status = self.proxy_status.get(name)
        if status is None:
            return
        session = self.session if self.session is not None and not self.session.closed else None
        if healthy:
            logger.info("tunnelc: proxy %s is healthy: %s", name, reason)
            if session is not None:
                self._register(session, name)
            return
        logger.warning("tunnelc: proxy %s is unhealthy, taking it offline: %s", name, reason)
        status.state, status.error, status.public_urls = "unhealthy", reason, ()
        self._notify_status()
        if session is not None:  # the server ignores a name it does not have
            session.send_message(CloseProxy(name, f"unhealthy: {reason}"))

    def _notify_status(self) -> None:
        changed, self._status_changed = self._status_changed, asyncio.Event()
        changed.set()

    # -- life cycle ---------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Stop like tunneld: GO_AWAY now, let open connections finish until the drain
        deadline, then reset what is left (never a clean close). A second request, or a stop
        with no connection open, ends the session at once."""
        session = self.session
        if self._stop.is_set() or session is None or session.stream_count() == 0:
            self._stop.set()
            if session is not None:
                session.close(ErrorCode.SHUTDOWN, "client stopping")
            return
        self._stop.set()
        self._drainer = asyncio.get_running_loop().create_task(self._drain(session))

    async def _drain(self, session: MuxSession) -> None:
        session.go_away(ErrorCode.SHUTDOWN, "client stopping")
        logger.info(
            "tunnelc: stopping: waiting up to %gs for %d open connections",
            DRAIN_TIMEOUT_S,
            session.stream_count(),
        )
        try:
            async with asyncio.timeout(DRAIN_TIMEOUT_S):
                await session.wait_idle()
        except TimeoutError:
            logger.info(
                "tunnelc: drain deadline reached; resetting %d open connections",
                session.stream_count(),
            )
        session.close(ErrorCode.SHUTDOWN, "client stopping")

    @property
    def server_text(self) -> str:
        """The node this client is connected or connecting to, as "host:port"."""
        host, port = self.servers[self.server_index]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def run(self) -> int:
        """Run until stopped; returns the process exit code."""
        cfg = self.config
        logger.debug("tunnelc: client %s connecting to %s", self.client_id, self.server_text)
        await self.surfaces.start()
        await self.visitors.start()
        self.health.start()
        await self._probe_local_services()
        try:
            while not self.stopping:
                at_least = 0.0
                self.connection_state = "reconnecting" if self.attempt else "connecting"
                where = self.server_text
                try:
                    session = await self._connect()
                except (LoginFailed, TrustError) as exc:
                    message = str(exc)
                    if cfg.auth_token is None and cfg.auth_method != "oidc" and "token" in message:
                        message = (
                            "no token given, and this server requires one (set auth.token in "
                            "the config, or --token / TUNNELKIT_TOKEN)"
                        )
                    logger.error("tunnelc: login to %s failed: %s", where, message)
                    self.last_error = message
                    if cfg.login_fail_exit and not self.logged_in_once:
                        logger.error(
                            "tunnelc: exiting because loginFailExit = true (set it to false "
                            "to keep retrying)"
                        )
                        return 1
                except LoginDeferred as exc:
                    # Busy or full is not a refusal: retry even with loginFailExit = true.
                    logger.warning("tunnelc: login to %s deferred: %s", where, exc)
                    self.last_error = str(exc)
                    at_least = exc.retry_after_s
                except (OSError, TimeoutError, SessionClosedError) as exc:
                    # A network error (a server restarting, a login cut short) is retried even
                    # with loginFailExit = true: only a definite refusal ends the client.
                    reason = _describe_network_error(exc)
                    logger.error("tunnelc: cannot reach the server at %s: %s", where, reason)
                    self.last_error = reason
                else:
                    self.logged_in_once = True
                    self._backoff.reset()
                    if self.stopping:  # asked to stop while logging in
                        session.close(ErrorCode.SHUTDOWN, "client stopping")
                        break
                    self.attempt = 0
                    self.last_error = None
                    self.connection_state = "online"
                    await self._serve(session)
                    self.last_error = "disconnected from the server"
                if self.stopping:
                    break
                self.server_index = (self.server_index + 1) % len(self.servers)
                if self.server_index != 0 and not at_least:
                    # Fail over to the next node at once; back off after a whole round.
                    self.attempt += 1
                    self.connection_state = "reconnecting"
                    logger.info(
                        "tunnelc: trying the next server, %s (attempt %d)",
                        self.server_text,
                        self.attempt,
                    )
                    continue
                # Full jitter on top of the server's hint spreads a fleet's retries out.
                delay = at_least * (1 + random.random()) + self._backoff.next_delay()
                self.attempt += 1
                self.connection_state = "reconnecting"
                self.next_try_at = time.time() + delay
                logger.info("tunnelc: reconnecting in %.1fs (attempt %d)", delay, self.attempt)
                try:
                    async with asyncio.timeout(delay):
                        await self._stop.wait()
                except TimeoutError:
                    pass  # time to try again
            return self.exit_code
        finally:
            if self.trim_timer is not None:
                self.trim_timer.cancel()
            if self._drainer is not None:
                await self._drainer  # bounded by DRAIN_TIMEOUT_S
            self.health.close()
            await self.health.wait_closed()
            self.visitors.close()
            await self.visitors.wait_closed()
            for proxy in self.proxies.values():
                proxy.close()
            await asyncio.gather(
                *(p.wait_closed() for p in self.proxies.values()), return_exceptions=True
            )
            await self.surfaces.close()

    async def _probe_local_services(self) -> None:
        """Warn at start about an http proxy whose local service does not accept yet.

        The check opens (and closes) one connection, which an HTTP app ignores; tcp proxies
        are not checked, since services like ssh would log the empty connection."""

        async def probe(pc: ProxyConfig) -> None:
            try:
                async with asyncio.timeout(LOCAL_PROBE_TIMEOUT_S):
                    _, writer = await asyncio.open_connection(pc.local_ip, pc.local_port)
            except (OSError, TimeoutError) as exc:
                reason = dial_failure(pc.local_ip, pc.local_port, exc, LOCAL_PROBE_TIMEOUT_S)
                logger.warning(
                    "tunnelc: [proxy=%s] %s: nothing accepts connections there yet; visitors "
                    "get a 502 until it does",
                    pc.name,
                    reason,
                )
                return
            writer.close()
            await writer.wait_closed()

        probes = [probe(p.config) for p in self.proxies.values() if p.config.type == "http"]
        await asyncio.gather(*probes)

    async def _connect(self) -> MuxSession:
        cfg = self.config
        tls = cfg.tls
        params = TLSParams(
            server_name=tls.server_name,
            trusted_ca_file=tls.trusted_ca_file,
            server_fingerprint=tls.server_fingerprint,
            insecure_skip_verify=tls.insecure_skip_verify,
            known_servers_file=tls.known_servers_file or default_known_servers_file(cfg.state_dir),
            cert_file=tls.cert_file,
            key_file=tls.key_file,
            allow_tofu=not oidc_without_secret(cfg),
            dial=DialParams(
                proxy_url=cfg.proxy_url.reveal() if cfg.proxy_url is not None else None,
                dns_server=dns_server_address(cfg.dns_server) if cfg.dns_server else None,
            ),
        )
        _, session, mode = await connect_tls(
            lambda: MuxSession(Role.CLIENT, self.mux_settings),
            *self.servers[self.server_index],
            params,
            timeout=cfg.dial_server_timeout,
        )
        logger.debug("tunnelc: TLS to the server verified (%s)", mode)
        try:
            await self._login(session)
        except BaseException:
            # Abort, not close: a graceful TLS close waits for the server's close_notify,
            # and a caller whose loop ends now (tunnelkit's sync API) would leak the socket.
            session.abort(ErrorCode.NORMAL, "login failed")
            raise
        return session

    async def _login(self, session: MuxSession) -> None:
        """Hello, Challenge, ServerProof, Login, LoginResult (docs/protocol.md section 6.1).

        Nothing derived from the token leaves this client before the server has proved that
        it knows the token, over our nonce and the certificate we saw.
        """
        cfg = self.config
        where = self.server_text
        oidc_token = ""
        if cfg.auth_method == "oidc":
            try:
                oidc_token = await self._oidc.token()
            except OIDCTokenError as exc:
                raise LoginFailed(str(exc)) from None
        async with asyncio.timeout(LOGIN_TIMEOUT_S):
            try:
                hello = await session.next_message()
            except SessionClosedError:
                if server_requires_client_cert(session.transport):
                    # Closed before hello by a server that requires client certificates: it
                    # refused ours, or the lack of one (protocol/auth.py).
                    raise LoginFailed(client_cert_refusal(cfg.tls.cert_file)) from None
                raise
            if isinstance(hello, Busy):
                raise LoginDeferred(
                    f"{peer_text(hello.reason)} (retry in {hello.retry_after_ms} ms)",
                    hello.retry_after_ms / 1000,
                )
            if not isinstance(hello, Hello):
                raise LoginFailed(f"the server sent {type(hello).__name__} instead of Hello")
            # The challenge carries nothing secret; on a version mismatch it still goes out, so
            # the server logs the mismatch too.
            client_nonce = new_nonce()
            session.send_message(
                Challenge(PROTOCOL_VERSION, __version__, client_nonce, user=cfg.user)
            )
            if hello.protocol_version != PROTOCOL_VERSION:
                raise LoginFailed(
                    f"protocol version mismatch: the server (tunnelkit "
                    f"{peer_text(hello.server_version)}) speaks protocol "
                    f"{hello.protocol_version} and this client (tunnelkit {__version__}) speaks "
                    f"{PROTOCOL_VERSION}; install matching versions"
                )
            answer = await session.next_message()
            if isinstance(answer, LoginResult):
                _raise_refusal(answer)
            if not isinstance(answer, ServerProof):
                raise LoginFailed(f"the server sent {type(answer).__name__} instead of a proof")
            cert_fp = _server_cert_fingerprint(session)
            token = cfg.auth_token.reveal() if cfg.auth_token else ""
            # scrypt, once per (token, server certificate) in this process (protocol/auth.py);
            # a user token (tunneld users add) has its own key, bound to the user name.
            # With OIDC and no auth.token the key is the empty token's: the proofs then bind the
            # login to this certificate but prove nothing, so the server was verified by a CA
            # or a pin before we got here (allow_tofu above; docs/security.md, "OIDC logins").
            key = client_login_key(token, cfg.user, cert_fp)
            expected = server_proof(key, client_nonce, hello.nonce, cert_fp, PROTOCOL_VERSION)
            if not proof_matches(expected, answer.proof):
                raise LoginFailed(
                    f"authentication failed: the server at {where} could not prove that it "
                    "knows the token (auth.token differs between tunnelc and tunneld, or this "
                    "is not your server); nothing was sent to it"
                )
            session.send_message(
                Login(
                    protocol_version=PROTOCOL_VERSION,
                    client_version=__version__,
                    client_id=self.client_id,
                    user=cfg.user,
                    hostname=socket.gethostname()[:255],
                    proof=login_proof(
                        key, hello.nonce, client_nonce, cert_fp, self.client_id, PROTOCOL_VERSION
                    ),
                    metas=dict(cfg.metadatas),
                    oidc_token=oidc_token,
                )
            )
            result = await session.next_message()
        if not isinstance(result, LoginResult):
            raise LoginFailed(f"the server sent {type(result).__name__} instead of LoginResult")
        _raise_refusal(result)
        logger.info("tunnelc: logged in to %s as %s", self.server_text, self.client_id)

    async def _serve(self, session: MuxSession) -> None:
        self.session = session
        self.visitors.attach(session)
        session.on_stream = self._on_stream
        session.on_datagram = self.flows.on_datagram
        session.message_filter = self._filter_message
        going_away: list[str] = []
        session.on_go_away = lambda code, reason: going_away.append(reason)
        self.flows.clear()
        if self.trim_timer is not None:
            # What the login left (its 16 MiB scrypt, the config, the imports) goes back
            # before the proxies start: about 0.6 MiB of free heap pages.
            self.trim_timer.trim_now()
        for name in self.proxies:
            self._register(session, name)
        try:
            while True:
                message = await session.next_message()
                if isinstance(message, NewProxyResult):
                    self._on_proxy_result(message)
                elif isinstance(message, CloseProxy):
                    status = self.proxy_status.get(message.name)
                    if status is not None:
                        status.state, status.error = "offline", message.reason
                    logger.warning(
                        "tunnelc: proxy %s closed by the server: %s",
                        peer_text(message.name),
                        peer_text(message.reason),
                    )
                else:
                    logger.warning("tunnelc: ignoring unexpected %s", type(message).__name__)
        except SessionClosedError:
            pass
        finally:
            self.session = None
            self.visitors.attach(None)
            self.flows.clear()
            self._held.cancel_all()
            for status in self.proxy_status.values():
                if status.state in ("running", WAITING_STATE):
                    status.state = "offline"
            self._notify_status()
            for ended in self.proxies.values():
                ended.session_ended()
            if self.trim_timer is not None and not self.stopping:
                self.trim_timer.schedule()
        if not self.stopping:
            reason = going_away[0] if going_away else session.close_reason
            logger.warning("tunnelc: disconnected from the server: %s", reason)

    def _on_proxy_result(self, result: NewProxyResult) -> None:
        status = self.proxy_status.get(result.name)
        if status is None or not self.health.allows(result.name):
            return  # gone, or went unhealthy after asking: a CloseProxy follows the request
        if not result.ok:
            if self._sticky_ports.pop(result.name, None) is not None and self.session is not None:
                # The port it had is taken now: take any port, as the config says.
                logger.info(
                    "tunnelc: proxy %s: its previous port is taken; any port will do", result.name
                )
                self._register(self.session, result.name)
                return
            if result.retry:
                status.state, status.public_urls = WAITING_STATE, ()
                status.error = self._held.schedule(result.name, result.error)
                self._notify_status()
                return
            status.state, status.error, status.public_urls = "refused", result.error, ()
            logger.error(
                "tunnelc: proxy %s refused: %s", peer_text(result.name), peer_text(result.error)
            )
            self._notify_status()
            if self.exit_if_all_refused and all(
                st.state == "refused" for st in self.proxy_status.values()
            ):
                logger.error("tunnelc: the server refused every proxy; exiting")
                self.exit_code = 1
                self.request_stop()
            return
        urls = tuple(self._localize(url) for url in result.public_urls)
        proxy = self.proxies.get(result.name)
        if proxy is not None and proxy.config.remote_port == 0 and urls:
            port = urls[0].rsplit(":", 1)[-1]
            if port.isdigit():
                self._sticky_ports[result.name] = int(port)
        self._held.succeeded(result.name)
        # On success `error` carries a note, e.g. "https pending certificate for NAME"; the
        # server sends the result again once the certificate is there.
        status.state, status.error, status.public_urls = "running", result.error, urls
        note = f" ({peer_text(result.error)})" if result.error else ""
        if proxy is not None:
            proxy.proxy_ready(urls)
        at = f" at {peer_text(' '.join(urls))}" if urls else ""
        logger.info("tunnelc: proxy %s ready%s%s", peer_text(result.name), at, note)
        self._notify_status()

    def _localize(self, url: str) -> str:
        """Show our serverAddr where the server reports a wildcard bind address."""
        for wildcard in ("0.0.0.0", "[::]"):
            marker = f"://{wildcard}:"
            if marker in url:
                host = self.servers[self.server_index][0]
                host = f"[{host}]" if ":" in host else host
                return url.replace(marker, f"://{host}:")
        return url

    def _quiet(self) -> bool:
        """No stream open, and none opened since the last look: the load has passed."""
        seen, self._streams_at_look = self._streams_at_look, self._streams_seen
        session = self.session
        return seen == self._streams_seen and (session is None or session.stream_count() == 0)

    def _on_stream(self, stream: MuxStream) -> None:
        self._streams_seen += 1
        trim = self.trim_timer
        if trim is not None and not trim.pending:
            trim.schedule()
        session = stream.session
        if stream.visitor is not None:
            stream.abort(ErrorCode.REFUSED, "a client does not take visitor streams")
            return
        proxy = self.proxies.get(stream.header.proxy)
        if proxy is None:
            stream.abort(ErrorCode.REFUSED, f"no proxy named {stream.header.proxy!r} here")
            return
        proxy.handle_stream(session, stream)

    def _filter_message(self, message: Message) -> bool:
        """Flow messages are handled at once, before the datagrams that follow them."""
        session = self.session
        return session is not None and self.flows.on_message(session, message)


def _raise_refusal(result: LoginResult) -> None:
    """Raise for a refused login: deferred when the server gave a retry delay, else final."""
    if result.ok:
        return
    if result.retry_after_ms > 0:
        raise LoginDeferred(peer_text(result.error), result.retry_after_ms / 1000)
    raise LoginFailed(peer_text(result.error))


def _server_cert_fingerprint(session: MuxSession) -> bytes:
    """SHA-256 of the certificate this connection's server showed (the proofs cover it)."""
    transport = session.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        raise LoginFailed("the server showed no TLS certificate")
    return hashlib.sha256(der).digest()


def _describe_network_error(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason in _NOT_TLS_REASONS:
        return (
            "this is not a tunneld control port (it does not answer in TLS); is it the vhost "
            "or dashboard port? serverPort must be tunneld's bindPort"
        )
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is tunneld running and is serverPort right?)"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
